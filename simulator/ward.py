"""Several software pumps in one process, on one clock: what ``infusion-gateway sim --pumps N``
serves, so that a rig can simulate a ward on one machine.

Each pump is its own :class:`~simulator.model.PumpModel` (its own faults, line, seeded RNG and
event log) served by its own transport: its own pty, or its own TCP port, NE-1000 or Modbus.
A Modbus pump answers as unit 1 on its own port, exactly as a one-pump simulator does, so a
driver URL never changes with the size of the ward.  Pumps are numbered 1..N; pump ``n`` is
``/v1/pumps/{n}`` on the control API (:mod:`simulator.control_api`).

All pumps share one clock: changing the time scale changes it for the whole ward.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

from protocol.clock import Clock
from simulator.errors import OutOfRangeError, SimulatorError
from simulator.faults import FaultScript
from simulator.model import PumpModel
from simulator.server import SimulatorServer, serve

__all__ = [
    "MAX_PUMPS",
    "MAX_TIME_SCALE",
    "AdjustableClock",
    "SimulatedPump",
    "Ward",
    "listen_addresses",
]

#: Most pumps one simulator process serves (each has a thread of its own).
MAX_PUMPS: int = 64

#: Fastest time scale the simulator runs at (simulated seconds per real second).
MAX_TIME_SCALE: float = 100_000.0

_MAX_PORT = 65535


class AdjustableClock(Clock, Protocol):
    """A clock whose time scale can change at run time without a jump
    (:meth:`protocol.clock.ScaledClock.set_time_scale`)."""

    def set_time_scale(self, time_scale: float) -> None: ...


def listen_addresses(listen: str, count: int) -> list[str]:
    """Where each of ``count`` pumps listens, given the one ``--listen`` value.

    ``pty``: a pty each.  ``tcp://HOST:0``: any free port each.  ``tcp://HOST:PORT``: PORT,
    PORT+1, ... PORT+count-1 (:class:`OutOfRangeError` if that passes 65535).
    """
    if listen == "pty":
        return ["pty"] * count
    parts = urlsplit(listen)
    host, port = listen.removeprefix("tcp://").rsplit(":", 1)[0], parts.port or 0
    if port == 0:
        return [listen] * count
    if port + count - 1 > _MAX_PORT:
        raise OutOfRangeError(
            f"--listen {listen!r} with --pumps {count}: pumps take ports {port}.."
            f"{port + count - 1}, past {_MAX_PORT}; allowed a first port up to "
            f"{_MAX_PORT - count + 1}, or port 0 (any free ports)"
        )
    return [f"tcp://{host}:{port + offset}" for offset in range(count)]


@dataclass(frozen=True)
class SimulatedPump:
    """One pump of the ward: its number (1..N), its model and the server carrying it."""

    number: int
    protocol: str
    model: PumpModel
    server: SimulatorServer

    @property
    def control_path(self) -> str:
        return f"/v1/pumps/{self.number}"


class Ward:
    """The pumps of one simulator process and the clock they share.  Close it to stop them."""

    def __init__(self, clock: Clock, pumps: Sequence[SimulatedPump]) -> None:
        self.clock = clock
        self._pumps = {pump.number: pump for pump in pumps}

    @classmethod
    def open(
        cls,
        clock: Clock,
        *,
        count: int,
        protocol: str,
        listen: str,
        max_rate_ml_per_h: float = 500.0,
        reservoir_ml: float = 1000.0,
        seed: int = 0,
        script: FaultScript | None = None,
    ) -> Ward:
        """Start ``count`` pumps on ``listen`` (see :func:`listen_addresses`).

        Pump ``n`` line faults draw on ``random.Random(seed + n - 1)``, so one pump alone behaves
        as before and no two pumps share a random sequence; ``script`` is scheduled on every pump.
        If one cannot be served, those already started are closed and the error is raised.
        """
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_PUMPS:
            raise SimulatorError(f"pumps {count!r}: allowed 1..{MAX_PUMPS}")
        started: list[SimulatedPump] = []
        try:
            for number, address in enumerate(listen_addresses(listen, count), start=1):
                model = PumpModel(
                    clock,
                    max_rate_ml_per_h=max_rate_ml_per_h,
                    reservoir_ml=reservoir_ml,
                    rng=random.Random(seed + number - 1),
                )
                if script is not None:
                    model.schedule(script)
                server = serve(model, protocol=protocol, listen=address)
                started.append(SimulatedPump(number, protocol, model, server))
        except BaseException:
            for pump in started:
                pump.server.close()
            raise
        return cls(clock, started)

    def __iter__(self) -> Iterator[SimulatedPump]:
        return iter(self._pumps.values())

    def __len__(self) -> int:
        return len(self._pumps)

    def pump(self, number: int) -> SimulatedPump:
        """Pump ``number``; KeyError if there is none."""
        return self._pumps[number]

    def advance(self) -> None:
        """Let every pump catch up with the clock (alarms and watchdogs happen on time)."""
        for pump in self:
            pump.model.advance()

    def close(self) -> None:
        """Stop every pump's server.  Safe to call twice."""
        for pump in self:
            pump.server.close()
