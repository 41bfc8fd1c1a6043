"""Typed errors of the NE-1000 codec, all under :class:`protocol.errors.ProtocolError`.

Decode errors carry where they came from (``raw`` bytes, ``framing``, and the pump ``address``
when it could be read), because the streaming decoders hand them back as *values* and the
simulator answers them:

* a :class:`FrameError` from a safe-mode packet (this includes :class:`FrameChecksumError`) is a
  bad packet, which a pump answers ``?COM``;
* an :class:`UnknownCommandError` is a command the pump does not recognise, answered ``?``.
"""

from __future__ import annotations

from protocol.errors import ChecksumError, DecodeError, EncodeError
from protocol.newera.constants import Framing


class UnrepresentableNumberError(EncodeError):
    """A number that does not fit the 4-digit field: negative, NaN, infinite, >= 10000, or a
    positive value so small that truncation would turn it into zero."""


class MessageValueError(EncodeError):
    """A command or reply field that cannot go on the wire (address out of 0-99, a character the
    pump would strip or upper-case, a payload too long for its frame, ...)."""


class NeDecodeError(DecodeError):
    """Root of the codec's decode errors.

    :ivar raw: the bytes the error is about (a whole frame, a line, or a field's text).
    :ivar framing: the framing they arrived in, if known.
    :ivar address: the pump address they name, if it could be read.
    """

    def __init__(
        self,
        message: str,
        *,
        raw: bytes = b"",
        framing: Framing | None = None,
        address: int | None = None,
    ) -> None:
        super().__init__(message)
        self.raw = raw
        self.framing = framing
        self.address = address

    def __repr__(self) -> str:
        framing = None if self.framing is None else self.framing.value
        return (
            f"{type(self).__name__}({self.args[0]!r}, raw={self.raw!r}, "
            f"framing={framing!r}, address={self.address!r})"
        )


class FrameError(NeDecodeError):
    """Bytes that start a frame but do not make a valid one: a safe-mode packet with a length
    out of range or no ETX where its length says; a basic reply cut short by a new STX or not
    terminated in time; a basic command line too long.  A pump answers one from a safe packet
    with ``?COM``."""


class FrameChecksumError(FrameError, ChecksumError):
    """A well-delimited safe-mode packet whose CRC-16/XMODEM does not match its data."""


class PayloadError(NeDecodeError):
    """A correctly framed message whose content does not parse (reply payload, command text or
    one of their fields)."""


class UnknownCommandError(PayloadError):
    """A command text with no known mnemonic (or characters no mnemonic can contain).  A pump
    answers it with the ``?`` error; :attr:`address` says which pump it was for."""
