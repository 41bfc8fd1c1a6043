"""An NE-1000 software pump on a serial line inside this process: no pty, no thread.

:class:`InProcessNewera` plays the same pump as the pty server
(:class:`~simulator.newera_server.NeweraSimulatorServer`: the same
:class:`~simulator.newera_session.NeweraSession`, so the same bytes), but its line is an object:
:meth:`InProcessNewera.open` returns a port with the part of pyserial's ``Serial`` the NE-1000
driver uses (``NeweraDriver(url, link=pump.open)``).  What the driver writes is answered
at once, on the driver's own thread; the driver frames, decodes and checks it as it would a
cable's bytes.

Why: a command over a pty is two thread wake-ups (the simulator's, then the driver's), about
50 µs a round trip on a small VM and more than the gateway's own work per command; a whole course
in virtual time (the demo, a HIL table test) spends most of its time waiting on them.  What it
leaves out is the wire itself (pyserial's device I/O, the pty's line discipline): the pty server
keeps testing that.

The line's faults (:class:`~simulator.faults.LineFaults`) are honoured as the pty server does:
a hung line answers nothing and passes nothing to the pump; replies are mangled (garbage,
corruption, duplicates) and delayed (``reply_delay_s``, in real seconds at the clock's scale).
A read with nothing to read waits the port's ``timeout`` (or until a delayed reply is due), as
a serial port does.  The alarms the pump sends on its own (safe mode) are looked for when the
driver asks what is waiting on a quiet line (it drains the line before every command).
"""

from __future__ import annotations

import time
from collections import deque
from decimal import Decimal
from typing import Final

from protocol.newera import FirmwareVersion
from simulator.faults import reply_delay_real_s
from simulator.model import PumpModel
from simulator.newera_session import (
    DEFAULT_DIAMETER_MM,
    DEFAULT_VERSION,
    NeweraSession,
    pump_url,
)

__all__ = ["IN_PROCESS_PATH", "InProcessNewera", "InProcessPort"]

#: The device path of an in-process pump's URL: it names the pump, nothing opens it.
IN_PROCESS_PATH: Final = "/in-process"


def _as_sent(packet: bytes) -> bytes:
    """What a clean line does to a packet: nothing."""
    return packet


class InProcessNewera:
    """``model`` as an NE-1000 at ``address`` (0-99) on an in-process line.

    One port at a time is live: opening a new one (a reconnect) closes the old one, and the
    pump drops a command half received, as after a line that went quiet.
    """

    def __init__(
        self,
        model: PumpModel,
        *,
        address: int = 0,
        version: FirmwareVersion = DEFAULT_VERSION,
        diameter_mm: Decimal = DEFAULT_DIAMETER_MM,
    ) -> None:
        self._model = model
        self._session = NeweraSession(
            model, address=address, version=version, diameter_mm=diameter_mm
        )
        self._port: InProcessPort | None = None

    @property
    def model(self) -> PumpModel:
        return self._model

    @property
    def pump_url(self) -> str:
        """The pump URL the gateway's config names (``newera:///in-process``, with
        ``?address=N`` when the address is not 0); open it with :meth:`open` as the link."""
        return pump_url("newera://" + IN_PROCESS_PATH, self._session.address)

    def open(self) -> InProcessPort:
        """A new connection to the pump (the driver's ``link``)."""
        if self._port is not None:
            self._port.close()
        self._session.discard_pending()
        self._port = InProcessPort(self)
        return self._port

    def close(self) -> None:
        """Hang up the live port, if any (the pump itself has nothing to release)."""
        if self._port is not None:
            self._port.close()
            self._port = None

    def _answer(self, data: bytes) -> list[tuple[float, bytes]]:
        """What the pump sends for ``data``: (real monotonic time it is on the line, bytes)."""
        line = self._model.line
        if line.hang:
            self._session.discard_pending()  # the line is dead: nothing reaches the pump
            return []
        sent: list[tuple[float, bytes]] = []
        for item in self._session.feed(data):
            output = self._session.answer(item)
            now = time.monotonic()
            # Looked at after the answer: a scripted fault may have begun with it.
            mangle = _as_sent if line.clean else line.mangle
            sent.extend((now, mangle(packet)) for packet in output.unsolicited)
            if output.reply is not None:
                clean = mangle is _as_sent
                delay_s = 0.0 if clean else reply_delay_real_s(line, self._model.clock)
                sent.append((now + delay_s, mangle(output.reply)))
        return sent

    def _unsolicited(self) -> list[bytes]:
        """The alarm packets the pump sends on its own now (safe mode), as they arrive."""
        packets = self._session.poll()
        line = self._model.line
        if not packets or line.hang:
            return []
        return [line.mangle(packet) for packet in packets]


class InProcessPort:
    """One connection to an :class:`InProcessNewera`: ``write``, ``read``, ``in_waiting``,
    ``timeout`` and ``close`` as pyserial's ``Serial`` has them (what the driver uses)."""

    def __init__(self, pump: InProcessNewera) -> None:
        self._pump = pump
        self._open = True
        #: Bytes on their way to the host, each with the real monotonic time it arrives.
        self._line: deque[tuple[float, bytes]] = deque()
        #: Bytes arrived and not read yet.
        self._arrived = bytearray()
        #: How long a read waits for a byte (real s; None: for ever, 0: not at all).
        self.timeout: float | None = None

    @property
    def is_open(self) -> bool:
        return self._open

    def _check_open(self) -> None:
        if not self._open:
            raise OSError("in-process port is closed")

    def write(self, data: bytes, /) -> int:
        self._check_open()
        self._line.extend(self._pump._answer(bytes(data)))
        return len(data)

    @property
    def in_waiting(self) -> int:
        """Bytes ready to read.  On a quiet line (nothing on its way, nothing unread: before a
        command, when the driver drains the line) the pump's own alarm packets are looked for."""
        self._check_open()
        now = time.monotonic()
        if not self._line and not self._arrived:
            self._line.extend((now, packet) for packet in self._pump._unsolicited())
        self._arrive(now)
        return len(self._arrived)

    def read(self, size: int = 1) -> bytes:
        """Up to ``size`` bytes; waits up to :attr:`timeout` for the first one."""
        self._check_open()
        self._arrive(time.monotonic())
        if not self._arrived:
            self._wait_for_bytes()
        data = bytes(self._arrived[:size])
        del self._arrived[:size]
        return data

    def _arrive(self, now: float) -> None:
        line = self._line
        while line and line[0][0] <= now:
            self._arrived += line.popleft()[1]

    def _wait_for_bytes(self) -> None:
        """Nothing to read: wait for the next byte on its way, or the timeout (real time)."""
        timeout = self.timeout
        started = time.monotonic()
        due = self._line[0][0] if self._line else None
        if timeout is not None and (due is None or due - started > timeout):
            time.sleep(max(timeout, 0.0))  # a serial port's read timing out: nothing came
            return
        if due is None:
            raise OSError("in-process port: a read without a timeout would wait for ever")
        time.sleep(max(due - started, 0.0))
        self._arrive(due)

    def close(self) -> None:
        self._open = False
        self._line.clear()
        self._arrived.clear()
