"""Replay a wire recording as a pump that answers exactly as the recorded one did.

::

    recording = load_recording("bed-4.jsonl")              # RecordingFormatError if corrupt
    with ReplayServer(recording) as server:                # a pty, or listen="tcp://127.0.0.1:0"
        with open_pump(server.pump_url) as pump:           # the same calls as when recording
            ...
    assert server.session.mismatches == []

A recording (:mod:`protocol.recording`, written by the ``record=`` pump URL option) is a list of
*exchanges*: each write of the gateway and everything the pump sent after it, until the next
write.  :class:`ReplaySession` (pure, no I/O) waits for the next recorded request:

* a request **byte-identical** to it gets the recorded reply bytes at once (which may be empty: the
  pump did not answer, and the gateway times out as it did; or hold a late reply or an
  unsolicited alarm, as recorded).  On Modbus TCP the MBAP transaction id (bytes 0-1) is not
  compared, and in the reply each recorded transaction id is rewritten to the one the client
  used for that request; nothing else is touched.
* a request that **does not match** (or comes after the last exchange) is reported: a
  :class:`ReplayMismatchError` in :attr:`ReplaySession.mismatches`, the ``replay_mismatch`` log
  event with the expected and received bytes in hex, and ``on_mismatch``.  It is answered with
  nothing on NE-1000 (a pump that did not understand), and with Modbus exception 04 (SERVER
  DEVICE FAILURE: the replayed pump cannot perform it) on Modbus; the replay does not move on, so
  the next request is compared with the same recorded one.

Bytes the pump sent before the first request are sent when the first client connects (a pty:
at start).  Timing is not replayed: every reply leaves as soon as its request has arrived.

:class:`ReplayServer` carries a session on a pty (NE-1000 and Modbus RTU recordings) or a TCP
port (NE-1000 and Modbus TCP), one client at a time (a second one is disconnected at once, as by
the simulator's servers); after a client leaves, the next one continues where it stopped.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import parse_qsl, urlencode, urlsplit

import structlog

from protocol.newera import decode_commands
from protocol.recording import (
    Exchange,
    Recording,
    RecordingFormatError,
    decode_recording,
    exchanges,
)
from simulator.byte_server import ByteServer
from simulator.errors import SimulatorError

__all__ = [
    "DEFAULT_LISTEN",
    "MODBUS_MISMATCH_EXCEPTION",
    "ReplayError",
    "ReplayMismatchError",
    "ReplayServer",
    "ReplaySession",
    "load_recording",
]

log = structlog.get_logger("simulator.replay")

#: Where a recording replays unless told otherwise: the kind of line it was recorded on.
DEFAULT_LISTEN: Final = {
    "newera": "pty",
    "modbus+rtu": "pty",
    "newera+tcp": "tcp://127.0.0.1:0",
    "modbus+tcp": "tcp://127.0.0.1:0",
}
#: The Modbus exception a request that does not match the recording is answered with: 04, SERVER
#: DEVICE FAILURE (the replayed pump cannot perform it).  Drivers take it as a protocol error.
MODBUS_MISMATCH_EXCEPTION: Final = 0x04
_MBAP_LENGTH: Final = 6
_TID_LENGTH: Final = 2


class ReplayError(SimulatorError):
    """Root of the replay's own errors."""


class ReplayMismatchError(ReplayError):
    """A request the recording does not have next.

    ``exchange`` is the 1-based number of the recorded exchange expected (None: the recording was
    used up), ``line`` its request's line in the recording, ``expected`` its request bytes (None
    when used up) and ``received`` what the client sent.
    """

    def __init__(
        self, *, exchange: int | None, line: int | None, expected: bytes | None, received: bytes
    ) -> None:
        if expected is None:
            where = "after the last recorded exchange"
            wanted = "nothing more"
        else:
            where = f"at exchange {exchange} (recording line {line})"
            wanted = expected.hex()
        super().__init__(
            f"request does not match the recording {where}: expected {wanted}, "
            f"received {received.hex()}"
        )
        self.exchange = exchange
        self.line = line
        self.expected = expected
        self.received = received


def load_recording(path: str | os.PathLike[str]) -> Recording:
    """Read and decode a recording file.

    :raises RecordingFormatError: a corrupt or truncated recording (names line and field).
    :raises OSError: the file cannot be read.
    """
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise RecordingFormatError(
            f"recording line {line}: not UTF-8 text (byte {exc.start})", line=line
        ) from None
    return decode_recording(text)


# -- how each protocol frames a request -------------------------------------------------------


def _newera_frame_length(buffer: bytes) -> int | None:
    """End of the first complete command (or of junk the pump would skip), or None."""
    consumed, items = decode_commands(buffer)
    if not items:
        return consumed or None
    first = items[0].raw
    return buffer.find(first) + len(first)


def _mbap_frame_length(buffer: bytes) -> int | None:
    if len(buffer) < _MBAP_LENGTH:
        return None
    length = _MBAP_LENGTH + int.from_bytes(buffer[4:6], "big")
    return length if len(buffer) >= length else None


#: Request length on RTU by function code: (fixed part, index of a byte count or None).
_RTU_REQUEST: Final = {3: (8, None), 6: (8, None), 16: (9, 6), 23: (13, 10)}


def _rtu_frame_length(buffer: bytes) -> int | None:
    if len(buffer) < 2:
        return None
    shape = _RTU_REQUEST.get(buffer[1])
    if shape is None:
        return len(buffer)  # a function the profile does not use: take what came
    fixed, count_at = shape
    if count_at is not None:
        if len(buffer) <= count_at:
            return None
        fixed += buffer[count_at]
    return fixed if len(buffer) >= fixed else None


def _modbus_crc(data: bytes) -> bytes:
    from pymodbus.framer.rtu import FramerRTU  # only RTU replays need pymodbus

    return FramerRTU.compute_CRC(data).to_bytes(2, "big")


def _mbap_refusal(request: bytes) -> bytes:
    if len(request) <= _MBAP_LENGTH + 1:
        return b""  # no unit id and function code to answer
    pdu = bytes([request[7] | 0x80, MODBUS_MISMATCH_EXCEPTION])
    return request[:4] + struct.pack(">HB", len(pdu) + 1, request[6]) + pdu


def _rtu_refusal(request: bytes) -> bytes:
    frame = bytes([request[0], request[1] | 0x80, MODBUS_MISMATCH_EXCEPTION])
    return frame + _modbus_crc(frame)


@dataclass(frozen=True)
class _Dialect:
    frame_length: Callable[[bytes], int | None]
    #: Leading bytes not compared (the MBAP transaction id).
    ignored: int
    #: What a request that does not match is answered with.
    refusal: Callable[[bytes], bytes]


_DIALECTS: Final = {
    "newera": _Dialect(_newera_frame_length, 0, lambda _request: b""),
    "newera+tcp": _Dialect(_newera_frame_length, 0, lambda _request: b""),
    "modbus+tcp": _Dialect(_mbap_frame_length, _TID_LENGTH, _mbap_refusal),
    "modbus+rtu": _Dialect(_rtu_frame_length, 0, _rtu_refusal),
}


class ReplaySession:
    """The recorded pump's side of the conversation, without I/O: :meth:`feed` it what the client
    sends and write back what it returns.  Not thread-safe (one server thread drives it)."""

    def __init__(
        self,
        recording: Recording,
        *,
        on_mismatch: Callable[[ReplayMismatchError], None] | None = None,
    ) -> None:
        self.recording = recording
        self.greeting, self.exchanges = exchanges(recording)
        self._dialect = _DIALECTS[recording.header.protocol]
        self._on_mismatch = on_mismatch
        self._buffer = b""
        self._next = 0
        self._tids: dict[bytes, bytes] = {}  # recorded MBAP transaction id -> the client's
        self.mismatches: list[ReplayMismatchError] = []

    @property
    def replayed(self) -> int:
        """Exchanges answered as recorded so far."""
        return self._next

    @property
    def complete(self) -> bool:
        """Every recorded exchange was replayed."""
        return self._next == len(self.exchanges)

    def summary(self) -> dict[str, int | bool]:
        return {
            "exchanges": len(self.exchanges),
            "replayed": self.replayed,
            "mismatches": len(self.mismatches),
            "complete": self.complete,
        }

    def new_client(self) -> None:
        """A client (re)connected: a request it had half sent is gone."""
        self._buffer = b""

    def feed(self, data: bytes) -> bytes:
        """Take what the client sent; return what the pump answers (possibly nothing)."""
        self._buffer += data
        out = bytearray()
        while self._buffer:
            answer = self._step()
            if answer is None:
                break  # the rest of a request is still on its way
            out += answer
        return bytes(out)

    def _step(self) -> bytes | None:
        buffer = self._buffer
        expected = self.exchanges[self._next] if self._next < len(self.exchanges) else None
        if expected is not None:
            request = expected.request
            seen = min(len(buffer), len(request))
            if self._same(buffer[:seen], request[:seen]):
                if len(buffer) >= len(request):
                    self._buffer = buffer[len(request) :]
                    self._next += 1
                    return self._reply(expected, buffer[: len(request)])
                length = self._dialect.frame_length(buffer)
                if length is None or length >= len(request):
                    return None  # so far so good: wait for the rest
                return self._mismatch(expected, buffer[:length])
        length = self._dialect.frame_length(buffer)
        if length is None:
            return None
        return self._mismatch(expected, buffer[:length])

    def _same(self, received: bytes, recorded: bytes) -> bool:
        ignored = self._dialect.ignored
        return received[ignored:] == recorded[ignored:]

    def _reply(self, exchange: Exchange, received: bytes) -> bytes:
        if not self._dialect.ignored:
            return exchange.reply
        self._tids[exchange.request[:_TID_LENGTH]] = received[:_TID_LENGTH]
        return self._rewrite_tids(exchange.reply)

    def _rewrite_tids(self, reply: bytes) -> bytes:
        """Each MBAP frame of ``reply`` with the client's transaction id for its request."""
        out = bytearray()
        rest = reply
        while (length := _mbap_frame_length(rest)) is not None:
            frame = rest[:length]
            out += self._tids.get(frame[:_TID_LENGTH], frame[:_TID_LENGTH]) + frame[_TID_LENGTH:]
            rest = rest[length:]
        return bytes(out + rest)

    def _mismatch(self, expected: Exchange | None, received: bytes) -> bytes:
        self._buffer = self._buffer[len(received) :]
        error = ReplayMismatchError(
            exchange=None if expected is None else self._next + 1,
            line=None if expected is None else expected.line,
            expected=None if expected is None else expected.request,
            received=received,
        )
        self.mismatches.append(error)
        log.warning(
            "replay_mismatch",
            exchange=error.exchange,
            line=error.line,
            expected=None if expected is None else expected.request.hex(),
            received=received.hex(),
        )
        if self._on_mismatch is not None:
            self._on_mismatch(error)
        return self._dialect.refusal(received)


class ReplayServer(ByteServer):
    """Serves a :class:`ReplaySession` on ``listen``: ``"pty"`` or ``"tcp://HOST:PORT"`` (port
    0: any free port; default: :data:`DEFAULT_LISTEN`, the kind of line it was recorded on).
    :meth:`start` (or ``with``) opens it and starts the thread; :meth:`close` stops and joins it
    and closes everything (safe twice).

    A Modbus TCP recording is served on TCP only, a Modbus RTU one on a pty only; an NE-1000
    recording on either.  ``ValueError`` names a ``listen`` that does not fit the recording.
    """

    def __init__(
        self,
        recording: Recording,
        *,
        listen: str | None = None,
        on_mismatch: Callable[[ReplayMismatchError], None] | None = None,
    ) -> None:
        protocol = recording.header.protocol
        super().__init__(listen or DEFAULT_LISTEN[protocol], name="replay")
        if protocol == "modbus+tcp" and self._tcp_address is None:
            raise ValueError("listen: a modbus+tcp recording replays on tcp://HOST:PORT only")
        if protocol == "modbus+rtu" and self._tcp_address is not None:
            raise ValueError("listen: a modbus+rtu recording replays on a pty only")
        self.session = ReplaySession(recording, on_mismatch=on_mismatch)
        self._greeted = False

    @property
    def pump_url(self) -> str:
        """The URL a driver opens: the recorded one's scheme and options on this transport (a
        Modbus RTU pty says ``parity=N``: a pty refuses parity, and it changes no byte)."""
        header = self.session.recording.header
        params = dict(parse_qsl(urlsplit(header.url).query, keep_blank_values=True))
        family = header.protocol.split("+")[0]
        listening = self.listening
        if listening.startswith("tcp://"):
            url = f"{family}+{listening}"
        elif family == "modbus":
            url = f"modbus+rtu://{listening}"
            params["parity"] = "N"
        else:
            url = f"newera://{listening}"
        return url + ("?" + urlencode(params) if params else "")

    # -- the thread ------------------------------------------------------------------------

    def _received(self, data: bytes) -> None:
        self._write(self.session.feed(data))

    def _connected(self) -> None:
        """A request the last client half sent is gone; bytes the pump sent before the first
        request go to the first client."""
        self.session.new_client()
        if not self._greeted:
            self._greeted = True
            self._write(self.session.greeting)

    def _disconnected(self) -> None:
        self.session.new_client()
