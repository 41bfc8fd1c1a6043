"""Framing of NE-1000 messages, and streaming decoders for both directions.

Encoders::

    encode_command(Command(Mnemonic.RUN, address=0))              == b"0RUN\\r"
    encode_command(Command(Mnemonic.SAFE_MODE, "0"), Framing.SAFE) == b"\\x02\\x08SAF0UC\\x03"
    encode_reply(Reply(0, NeStatus.INFUSING))                      == b"\\x0200I\\x03"

Decoder contract (pymodbus framer style, pure, no I/O, no state)::

    consumed, items = decode_replies(buffer)    # what a host reads from a pump
    consumed, items = decode_commands(buffer)   # what a pump reads from a host
    buffer = buffer[consumed:]

* Every complete frame in ``buffer`` is decoded in one call, in order.  ``items`` holds one entry
  per frame: a :class:`ReplyFrame` / :class:`CommandFrame`, or, for a frame that failed, the
  :class:`~protocol.newera.errors.NeDecodeError` instance describing it (with ``raw`` and
  ``framing`` set).  Errors are *returned, never raised*: a decoder does not raise at all.
* ``consumed`` bytes may be dropped; the rest is the start of a frame still arriving.
  ``consumed == 0`` with no items means "need more bytes".
* Bytes that cannot start a frame are skipped silently: on the host side anything but STX; on
  the pump side a partial basic line cut off by an STX.  (On the pump side every other byte
  belongs to some basic command line; a line with junk is an ``UnknownCommandError`` item.)
  An STX inside garbage starts a candidate frame, which may come out as a ``FrameError`` item.
* A broken frame is one error item:

  - safe frame (either side) with a length byte out of range: only its STX is skipped;
  - safe frame with no ETX where its length says, or a bad CRC (``FrameChecksumError``): if a
    later STX inside it starts a complete, valid frame, decoding resumes there (the broken
    frame was noise that swallowed it); otherwise its whole declared length is skipped, so
    nothing inside a rejected packet is ever read as a command;
  - a safe frame still arriving is given up the same way as soon as a complete valid frame
    follows its STX in the buffer (otherwise the decoder waits for its declared length);
  - basic reply cut short by a new STX, or with no ETX within the longest payload;
  - basic command line longer than 251 bytes without CR (the rest is read as a new line).

  A correctly framed message whose content does not parse is a ``PayloadError`` item
  (``UnknownCommandError`` for commands) and its frame is consumed.
* The pump drops a safe packet after a 0.5 s gap: the codec has no clock, so the caller applies
  that rule by discarding its pending bytes (:meth:`StreamDecoder.discard_pending`).

A basic reply and a safe one are told apart by the byte after STX: a digit starts a basic reply
(its address), anything else is a safe length byte (replies are kept short enough for that
byte to never be a digit).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeAlias, TypeVar

from protocol.newera.constants import (
    CR,
    ETX,
    MAX_COMMAND_TEXT_LENGTH,
    MAX_REPLY_PAYLOAD_LENGTH,
    MIN_REPLY_PAYLOAD_LENGTH,
    SAFE_LENGTH_MAX,
    SAFE_LENGTH_OVERHEAD,
    STX,
    Framing,
)
from protocol.newera.crc import crc16_xmodem
from protocol.newera.errors import (
    FrameChecksumError,
    FrameError,
    MessageValueError,
    NeDecodeError,
)
from protocol.newera.messages import Command, Reply, parse_command_text, parse_reply_payload

_STX_BYTE = bytes([STX])
_DIGIT_BYTES = frozenset(b"0123456789")
#: Safe-mode length bytes a reply can have (its payload is 3-43 bytes).
_REPLY_SAFE_LENGTHS = range(
    MIN_REPLY_PAYLOAD_LENGTH + SAFE_LENGTH_OVERHEAD,
    MAX_REPLY_PAYLOAD_LENGTH + SAFE_LENGTH_OVERHEAD + 1,
)
#: Safe-mode length bytes a command can have (its text may be empty: a status query).
_COMMAND_SAFE_LENGTHS = range(SAFE_LENGTH_OVERHEAD, SAFE_LENGTH_MAX + 1)


# --- encoding ---------------------------------------------------------------------------------


def encode_safe_packet(data: bytes) -> bytes:
    """Wrap ``data`` in a safe-mode packet: ``STX len data crc_hi crc_lo ETX``, ``len`` being
    ``len(data) + 4`` and the CRC-16/XMODEM over ``data``, big-endian.

    :raises MessageValueError: ``data`` longer than 251 bytes.
    """
    length = len(data) + SAFE_LENGTH_OVERHEAD
    if length > SAFE_LENGTH_MAX:
        raise MessageValueError(f"safe packet data of {len(data)} bytes is too long")
    return bytes([STX, length]) + data + crc16_xmodem(data).to_bytes(2, "big") + bytes([ETX])


def encode_command(command: Command, framing: Framing = Framing.BASIC) -> bytes:
    """The bytes a host sends: ``b"0RAT466.6UM\\r"`` (basic) or the safe-mode packet of the same
    text."""
    text = command.text.encode("ascii")
    if framing is Framing.SAFE:
        return encode_safe_packet(text)
    return text + bytes([CR])


def encode_reply(reply: Reply, framing: Framing = Framing.BASIC) -> bytes:
    """The bytes a pump sends: ``b"\\x0200S\\x03"`` (basic) or the safe-mode packet of the same
    payload."""
    payload = reply.payload.encode("ascii")
    if framing is Framing.SAFE:
        return encode_safe_packet(payload)
    return _STX_BYTE + payload + bytes([ETX])


# --- decoded items ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplyFrame:
    """A reply decoded from the stream, with its framing and the bytes it came in."""

    reply: Reply
    framing: Framing
    raw: bytes


@dataclass(frozen=True)
class CommandFrame:
    """A command decoded from the stream, with its framing and the bytes it came in."""

    command: Command
    framing: Framing
    raw: bytes


#: What :func:`decode_replies` yields per frame.
ReplyItem: TypeAlias = ReplyFrame | NeDecodeError
#: What :func:`decode_commands` yields per frame.
CommandItem: TypeAlias = CommandFrame | NeDecodeError

_ItemT = TypeVar("_ItemT", ReplyItem, CommandItem)
_T = TypeVar("_T")


@dataclass(frozen=True)
class _Step(Generic[_ItemT]):
    """One frame's worth of decoding, starting at an STX."""

    item: _ItemT
    end: int
    """Index just past the frame (where decoding goes on)."""
    intact: bool
    """The frame's delimiting held (length, ETX, CRC; for a basic reply also its content)."""


def _with_context(error: NeDecodeError, raw: bytes, framing: Framing) -> NeDecodeError:
    error.raw = raw
    error.framing = framing
    return error


def _safe_step(
    data: bytes,
    start: int,
    lengths: range,
    parse: Callable[[bytes, bytes], _ItemT],
) -> _Step[_ItemT] | None:
    """Decode the safe-mode frame at ``data[start]`` (an STX); ``None`` if it is incomplete."""
    if start + 1 >= len(data):
        return None
    length = data[start + 1]
    if length not in lengths:
        raw = data[start : start + 2]
        error = FrameError(f"safe-mode length byte {length} out of range", raw=raw)
        return _Step(_with_context(error, raw, Framing.SAFE), start + 1, intact=False)
    etx_index = start + length  # the length counts itself, data, CRC and ETX
    if etx_index >= len(data):
        return None
    raw = data[start : etx_index + 1]
    if data[etx_index] != ETX:
        error = FrameError("no ETX where the safe-mode length says", raw=raw)
        return _Step(_with_context(error, raw, Framing.SAFE), etx_index + 1, intact=False)
    body = data[start + 2 : etx_index - 2]
    received_crc = int.from_bytes(data[etx_index - 2 : etx_index], "big")
    computed_crc = crc16_xmodem(body)
    if received_crc != computed_crc:
        error = FrameChecksumError(
            f"CRC {received_crc:#06x} received, {computed_crc:#06x} computed", raw=raw
        )
        return _Step(_with_context(error, raw, Framing.SAFE), etx_index + 1, intact=False)
    return _Step(parse(body, raw), etx_index + 1, intact=True)


def _decode_stream(
    data: bytes,
    next_start: Callable[[bytes, int], int],
    step_at: Callable[[bytes, int], _Step[_ItemT] | None],
    items: list[_ItemT],
) -> int:
    """The loop both decoders share.  ``next_start(data, pos)`` finds the next frame start (or
    ``len(data)``, consuming what lies between); ``step_at`` decodes the frame there (``None``:
    incomplete).  Appends to ``items``; returns the number of bytes consumed."""
    pos = 0
    while True:
        start = next_start(data, pos)
        if start >= len(data):
            return len(data)
        step = step_at(data, start)
        if step is not None and step.intact:
            items.append(step.item)
            pos = step.end
            continue
        if step is not None and data[start] != STX:
            # A basic command line that failed (too long): no framing to resynchronise on.
            items.append(step.item)
            pos = step.end
            continue
        # Incomplete or broken safe frame: look for a complete, valid frame starting inside it.
        stop = len(data) if step is None else step.end
        resume = _find_intact_frame(data, start + 1, stop, step_at)
        if resume is None:
            if step is None:
                return start  # need more bytes
            items.append(step.item)
            pos = step.end
            continue
        # (Only a safe frame gets here: a basic reply or line has no STX inside it.)
        broken = data[start:resume]
        if step is not None and isinstance(step.item, NeDecodeError):
            step.item.raw = broken
            items.append(step.item)
        else:
            items.append(
                FrameError("safe frame cut short by a new frame", raw=broken, framing=Framing.SAFE)
            )
        pos = resume


def _find_intact_frame(
    data: bytes,
    first: int,
    stop: int,
    step_at: Callable[[bytes, int], _Step[_ItemT] | None],
) -> int | None:
    """Index of the first STX in ``data[first:stop]`` that starts a complete, intact frame."""
    index = data.find(_STX_BYTE, first, stop)
    while index != -1:
        step = step_at(data, index)
        if step is not None and step.intact:
            return index
        index = data.find(_STX_BYTE, index + 1, stop)
    return None


# --- pump → host ------------------------------------------------------------------------------


def _parse_reply(payload: bytes, raw: bytes, framing: Framing) -> ReplyItem:
    try:
        return ReplyFrame(parse_reply_payload(payload), framing, raw)
    except NeDecodeError as error:
        return _with_context(error, raw, framing)


def _parse_safe_reply(payload: bytes, raw: bytes) -> ReplyItem:
    return _parse_reply(payload, raw, Framing.SAFE)


def _reply_step(data: bytes, start: int) -> _Step[ReplyItem] | None:
    """Decode the reply at ``data[start]`` (an STX); ``None`` if it is incomplete."""
    if start + 1 >= len(data):
        return None
    if data[start + 1] not in _DIGIT_BYTES:
        return _safe_step(data, start, _REPLY_SAFE_LENGTHS, _parse_safe_reply)
    # Basic reply: STX <payload> ETX, the payload printable, so a new STX means it was cut.
    limit = min(len(data), start + 2 + MAX_REPLY_PAYLOAD_LENGTH)
    for index in range(start + 1, limit):
        byte = data[index]
        if byte == ETX:
            raw = data[start : index + 1]
            item = _parse_reply(data[start + 1 : index], raw, Framing.BASIC)
            return _Step(item, index + 1, intact=isinstance(item, ReplyFrame))
        if byte == STX:
            raw = data[start:index]
            error = FrameError("basic reply cut short by a new STX", raw=raw)
            return _Step(_with_context(error, raw, Framing.BASIC), index, intact=False)
    if limit < start + 2 + MAX_REPLY_PAYLOAD_LENGTH:
        return None
    raw = data[start:limit]
    error = FrameError(f"basic reply without ETX in {MAX_REPLY_PAYLOAD_LENGTH} bytes", raw=raw)
    return _Step(_with_context(error, raw, Framing.BASIC), start + 1, intact=False)


def _next_stx(data: bytes, pos: int) -> int:
    index = data.find(_STX_BYTE, pos)
    return len(data) if index == -1 else index


def decode_replies(data: bytes) -> tuple[int, list[ReplyItem]]:
    """Decode what a host reads from a pump: every complete reply in ``data``, both framings.

    :returns: ``(consumed, items)``, see the module docstring.  Never raises.
    """
    items: list[ReplyItem] = []
    consumed = _decode_stream(bytes(data), _next_stx, _reply_step, items)
    return consumed, items


# --- host → pump ------------------------------------------------------------------------------


def _parse_command(text: bytes, raw: bytes, framing: Framing) -> CommandItem:
    try:
        return CommandFrame(parse_command_text(text), framing, raw)
    except NeDecodeError as error:
        return _with_context(error, raw, framing)


def _parse_safe_command(text: bytes, raw: bytes) -> CommandItem:
    return _parse_command(text, raw, Framing.SAFE)


def _command_step(data: bytes, start: int) -> _Step[CommandItem] | None:
    """Decode the command starting at ``data[start]``; ``None`` if it is incomplete."""
    if data[start] == STX:
        return _safe_step(data, start, _COMMAND_SAFE_LENGTHS, _parse_safe_command)
    # Basic line: up to CR.  _next_command_start guarantees no STX comes before the CR.
    end = data.find(bytes([CR]), start, start + MAX_COMMAND_TEXT_LENGTH + 1)
    if end != -1:
        raw = data[start : end + 1]
        return _Step(_parse_command(data[start:end], raw, Framing.BASIC), end + 1, intact=True)
    if len(data) - start <= MAX_COMMAND_TEXT_LENGTH:
        return None
    raw = data[start : start + MAX_COMMAND_TEXT_LENGTH]
    error = FrameError(f"basic command line longer than {MAX_COMMAND_TEXT_LENGTH} bytes", raw=raw)
    return _Step(
        _with_context(error, raw, Framing.BASIC), start + MAX_COMMAND_TEXT_LENGTH, intact=False
    )


def _next_command_start(data: bytes, pos: int) -> int:
    """Where the next command starts: ``pos``, unless the line from ``pos`` is interrupted by an
    STX before its CR, in which case that partial line is dropped and the STX is next."""
    if pos >= len(data):
        return len(data)
    stx = data.find(_STX_BYTE, pos)
    if stx == -1:
        return pos
    cr = data.find(bytes([CR]), pos, stx)
    return pos if cr != -1 else stx


def decode_commands(data: bytes) -> tuple[int, list[CommandItem]]:
    """Decode what a pump reads from a host: every complete basic line and safe packet.

    :returns: ``(consumed, items)``, see the module docstring.  Never raises.  An
        :class:`~protocol.newera.errors.UnknownCommandError` item is answered ``?``; a
        :class:`~protocol.newera.errors.FrameError` from a safe packet ``?COM``.
    """
    items: list[CommandItem] = []
    consumed = _decode_stream(bytes(data), _next_command_start, _command_step, items)
    return consumed, items


# --- buffering --------------------------------------------------------------------------------


class StreamDecoder(Generic[_T]):
    """Keeps the pending bytes between calls of a ``(consumed, items)`` decoder.  Pure: feed it
    whatever the transport delivered, in any chunks."""

    def __init__(self, decode: Callable[[bytes], tuple[int, list[_T]]]) -> None:
        self._decode: Callable[[bytes], tuple[int, list[_T]]] = decode
        self._pending = b""

    def feed(self, data: bytes) -> list[_T]:
        """Add ``data``; return the items of every frame it completed (possibly none)."""
        buffer = self._pending + bytes(data)
        consumed, items = self._decode(buffer)
        self._pending = buffer[consumed:]
        return items

    @property
    def pending(self) -> bytes:
        """Bytes of a frame still arriving."""
        return self._pending

    def discard_pending(self) -> bytes:
        """Drop and return the pending bytes (the pump's 0.5 s inter-byte gap rule, or a host's
        reply timeout)."""
        pending, self._pending = self._pending, b""
        return pending


class ReplyStreamDecoder(StreamDecoder[ReplyItem]):
    """Host side: decodes replies (:func:`decode_replies`) from a byte stream."""

    def __init__(self) -> None:
        super().__init__(decode_replies)


class CommandStreamDecoder(StreamDecoder[CommandItem]):
    """Pump side: decodes commands (:func:`decode_commands`) from a byte stream."""

    def __init__(self) -> None:
        super().__init__(decode_commands)
