"""NE-1000 poll: ``NeweraDriver.read_status()`` against nesp-lib 2.0.0 reading the same facts.

Both poll the same software pump (NE-1000 on a pty, another process, infusing), each on its own
open port on that pty, interleaved (:mod:`bench.timing`); only one of them talks at a time:

* **ours**: ``NeweraDriver.read_status()``: ``DIS`` (volume and status) and ``RAT``, two round
  trips in safe-mode framing (CRC), decoded into a ``PumpStatus``;
* **nesp-lib**: ``pump.status``, ``pump.volume_infused_ml``, ``pump.pumping_rate_ml_per_min``:
  the same three facts the way nesp-lib offers them, three round trips in basic framing.

nesp-lib reads its port without a timeout: a pump that stays silent would block it for ever,
so a deadline cancels its read (pyserial's ``cancel_read``) and the bench fails instead of
hanging.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import nesp_lib

from bench import targets
from bench.figures import Figure, Target
from bench.pumps import Pumps
from bench.timing import per_call_s
from drivers.newera import NeweraDriver

#: Real seconds the whole comparison may take before nesp-lib's blocked read is cancelled.
DEADLINE_S = 300.0


class _Port(nesp_lib.Port):  # type: ignore[misc]
    """nesp-lib's own port, with a way to make a read blocked in it return."""

    def cancel(self) -> None:
        self._Port__serial.cancel_read()


@contextmanager
def _deadline(port: _Port, seconds: float) -> Iterator[None]:
    timer = threading.Timer(seconds, port.cancel)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def _nesp_poll(pump: nesp_lib.Pump) -> Callable[[], object]:
    def poll() -> tuple[object, float, float]:
        return pump.status, pump.volume_infused_ml, pump.pumping_rate_ml_per_min

    return poll


def measure(pumps: Pumps, *, per_round: int, rounds: int) -> list[Figure]:
    """The NE-1000 poll figure (µs per poll), against the first of ``pumps`` (newera, pty)."""
    pump = pumps.pumps[0]
    port = _Port(pump.listening, 19200)
    driver = NeweraDriver(pump.url, timeout_s=2.0)
    try:
        with _deadline(port, DEADLINE_S):
            theirs = nesp_lib.Pump(port)  # basic mode, as nesp-lib starts
            driver.open()
            seconds = per_call_s(
                {"ours": driver.read_status, "nesp": _nesp_poll(theirs)},
                per_round=per_round,
                rounds=rounds,
                warmup=max(1, per_round // 10),
            )
    finally:
        driver.close()
        port.close()
    return [
        Figure(
            key="newera_poll_vs_nesp_lib",
            name="NE-1000 poll vs nesp-lib",
            unit="µs",
            ours=seconds["ours"] * 1e6,
            ours_does=(
                "NeweraDriver.read_status(): DIS and RAT, two round trips in safe-mode framing, "
                "decoded to a PumpStatus"
            ),
            peer=seconds["nesp"] * 1e6,
            peer_does=(
                "nesp-lib 2.0.0: status, volume_infused_ml, pumping_rate_ml_per_min, three round "
                "trips in basic framing"
            ),
            target=Target("<=", targets.NEWERA_POLL_RATIO, on="ratio"),
            method=(
                f"one software pump on a pty ({pumps.where}, infusing), each client on its own "
                f"open port; median of {rounds} interleaved rounds of {per_round} polls each"
            ),
        )
    ]
