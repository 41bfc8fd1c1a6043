"""The NE-1000 software pump on a real wire: a pty (a serial device path) or a TCP socket.

::

    with NeweraSimulatorServer(model) as server:      # a pty: server.listening is /dev/pts/N
        with open_pump(server.pump_url) as pump:      # newera:///dev/pts/N
            ...

    NeweraSimulatorServer(model, listen="tcp://127.0.0.1:0")  # newera+tcp://127.0.0.1:<port>

One thread per server reads what the host sends, hands it to a
:class:`~simulator.newera_session.NeweraSession` (which acts on the model and says what the pump
answers) and writes the answers back, applying on the way what a real line does:

* **Line faults** from ``model.line``: ``hang`` reads and drops everything and answers nothing
  (so nothing feeds the watchdog); ``reply_delay_s`` delays each reply (simulated seconds, waited
  as ``delay / clock.time_scale`` real seconds, or as real seconds on a manual clock); every byte
  sent passes through ``model.line.mangle()`` (garbage, corruption).
* **Gap rule**: a safe-mode packet with a gap of 0.5 s (real time) inside is discarded.
* **Unsolicited alarms**: every 20 ms the thread looks at the model (which also makes a watchdog
  expiry happen promptly on a scaled clock); in safe mode a new alarm is sent as an alarm packet.
* **One command at a time**: a delayed reply holds up the commands behind it, as on the pump
  ("it takes nothing new until it starts its reply").

Transports (:class:`~simulator.byte_server.ByteServer`, shared with the replay of a recording):
``"pty"`` (the client opens :attr:`NeweraSimulatorServer.listening`; the server keeps its own
slave fd open so clients may come and go) or ``"tcp://HOST:PORT"`` (port 0 picks a free port; one
client at a time: *a second client is disconnected at once* while the first is connected, like a
serial port opened exclusively; after a disconnect the next one is accepted).
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Final

from protocol.newera import FirmwareVersion
from protocol.newera.constants import SAFE_PACKET_GAP_S
from simulator.byte_server import ByteServer
from simulator.faults import reply_delay_real_s
from simulator.model import PumpModel
from simulator.newera_session import (
    DEFAULT_DIAMETER_MM,
    DEFAULT_VERSION,
    NeweraSession,
    pump_url,
)

__all__ = ["POLL_INTERVAL_S", "NeweraSimulatorServer"]

#: How often (real seconds) the server thread looks at the model for alarms to send on its own.
POLL_INTERVAL_S: Final = 0.02


class NeweraSimulatorServer(ByteServer):
    """Serves ``model`` as an NE-1000 at ``address`` (0-99) on ``listen``: ``"pty"`` or
    ``"tcp://HOST:PORT"``.

    ``version`` is what the pump answers to ``VER`` and ``diameter_mm`` its syringe diameter at
    power-up (mm).  :meth:`start` opens the pty or socket and starts the thread (``with`` does it
    too); :meth:`close` stops and joins the thread and closes everything (safe to call twice).
    """

    def __init__(
        self,
        model: PumpModel,
        *,
        listen: str = "pty",
        address: int = 0,
        version: FirmwareVersion = DEFAULT_VERSION,
        diameter_mm: Decimal = DEFAULT_DIAMETER_MM,
    ) -> None:
        super().__init__(listen, name="newera-sim")
        self._model = model
        self._session = NeweraSession(
            model, address=address, version=version, diameter_mm=diameter_mm
        )
        self._last_rx = 0.0
        self._next_poll = 0.0  # time.monotonic() of the next look at the model
        self._alarm_packets_sent = 0

    # ------------------------------------------------------------------ facts

    @property
    def model(self) -> PumpModel:
        return self._model

    @property
    def session(self) -> NeweraSession:
        """The protocol session (for tests; it is driven by the server thread)."""
        return self._session

    @property
    def address(self) -> int:
        """The pump address, 0-99."""
        return self._session.address

    @property
    def alarm_packets_sent(self) -> int:
        """How many alarm packets the pump has sent on its own (safe mode), lost ones included
        (no client, or a hung line)."""
        return self._alarm_packets_sent

    @property
    def pump_url(self) -> str:
        """The pump URL a driver opens: ``newera:///dev/pts/N`` or
        ``newera+tcp://127.0.0.1:<port>`` (with ``?address=N`` when the address is not 0)."""
        listening = self.listening
        prefix = "newera+" if listening.startswith("tcp://") else "newera://"
        return pump_url(prefix + listening, self.address)

    # ------------------------------------------------------------------ the thread

    def _tick_interval_s(self) -> float:
        now = time.monotonic()
        timeout = max(self._next_poll - now, 0.0)  # at most POLL_INTERVAL_S
        if self._session.pending_is_safe_packet():
            gap_left = self._last_rx + SAFE_PACKET_GAP_S - now
            timeout = min(timeout, max(gap_left, 0.0))
        return timeout

    def _connected(self) -> None:
        self._session.discard_pending()

    def _disconnected(self) -> None:
        self._session.discard_pending()

    def _received(self, data: bytes) -> None:
        """Handle bytes from the host (returns early when the server is closing)."""
        if self._model.line.hang:
            self._session.discard_pending()  # the line is dead: nothing reaches the pump
            return
        self._last_rx = time.monotonic()
        for item in self._session.feed(data):
            output = self._session.answer(item)
            for packet in output.unsolicited:
                self._alarm_packets_sent += 1
                self._send(packet)
            if output.reply is not None:
                if not self._wait_reply_delay():
                    return
                self._send(output.reply)

    def _wait_reply_delay(self) -> bool:
        """Wait the line's reply delay (real seconds); False when told to stop meanwhile."""
        delay_s = reply_delay_real_s(self._model.line, self._model.clock)
        return delay_s <= 0 or self._wait_unless_closed(delay_s)

    def _tick(self) -> None:
        now = time.monotonic()
        if self._session.pending_is_safe_packet() and now - self._last_rx >= SAFE_PACKET_GAP_S:
            self._session.discard_pending()
        # The look at the model is due every POLL_INTERVAL_S, not after every read: a command's
        # answer has just looked (NeweraSession.answer polls), and each look costs the model a
        # step of its clock.
        if now < self._next_poll:
            return
        self._next_poll = now + POLL_INTERVAL_S
        for packet in self._session.poll():
            self._alarm_packets_sent += 1
            self._send(packet)

    def _send(self, packet: bytes) -> None:
        line = self._model.line
        if not line.hang:
            self._write(line.mangle(packet))
