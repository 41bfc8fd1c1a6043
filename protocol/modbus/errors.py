"""Typed errors of the Modbus pump register map.

Four families, each under the project's :class:`~protocol.errors.ProtocolError` root:

* :class:`RegisterDecodeError` (a :class:`~protocol.errors.DecodeError`): registers read from a pump
  that do not decode (wrong count, a word outside 0..0xFFFF, an unknown state, alarm bit or
  command code, a swapped word order, an unsupported map version, bad ASCII).
* :class:`RegisterEncodeError` (an :class:`~protocol.errors.EncodeError`): a value that has no
  register representation (negative, too large, not finite, non-ASCII text).
* :class:`RequestRefusedError`: a read or write request the pump refuses; it carries the Modbus
  exception code the pump answers with (02 illegal data address, 03 illegal data value).
* Frames (:mod:`protocol.modbus.frame`): :class:`FrameDecodeError` (a
  :class:`~protocol.errors.DecodeError`; :class:`FrameCrcError` for a bad RTU CRC) for bytes that
  are not a valid frame or reply, :class:`FrameEncodeError` for a value a frame cannot carry, and
  :class:`ExceptionReplyError` for a well-formed exception reply of the pump.
"""

from __future__ import annotations

from enum import IntEnum

from protocol.errors import ChecksumError, DecodeError, EncodeError, ProtocolError


class ModbusException(IntEnum):
    """Modbus exception codes the pump answers a refused request with."""

    ILLEGAL_FUNCTION = 0x01
    ILLEGAL_DATA_ADDRESS = 0x02
    ILLEGAL_DATA_VALUE = 0x03


def show(value: object, limit: int = 40) -> str:
    """``repr(value)`` for an error message: never raises, shortened beyond ``limit`` characters.

    (``repr`` of an ``int`` with more than 4300 digits raises ``ValueError``; a message must not.)
    """
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


class RegisterDecodeError(DecodeError):
    """Registers that do not decode to a valid block or field."""


class RegisterCountError(RegisterDecodeError):
    """A block read returned the wrong number of registers."""


class WordRangeError(RegisterDecodeError):
    """A register value that is not an integer in 0..0xFFFF."""


class UnknownStateError(RegisterDecodeError):
    """A STATE register value that names no :class:`~protocol.pump_state.PumpState`."""


class UnknownAlarmBitError(RegisterDecodeError):
    """An ALARMS bit that names no :class:`~protocol.pump_state.PumpAlarm`."""


class UnknownCommandError(RegisterDecodeError):
    """A LAST_COMMAND value that is neither 0 nor a command code."""


class WordOrderError(RegisterDecodeError):
    """The word-order test pattern does not read 0x1234, 0x5678 (swapped words or wrong map)."""


class MapVersionError(RegisterDecodeError):
    """The pump speaks a register map version this code does not implement."""

    def __init__(self, message: str, *, pump_map_version: int) -> None:
        super().__init__(message)
        self.pump_map_version = pump_map_version


class AsciiDecodeError(RegisterDecodeError):
    """ASCII text registers holding a byte outside printable ASCII, or text after NUL padding."""


class FieldValueError(RegisterDecodeError):
    """A field whose value is representable but meaningless (e.g. a maximum rate of 0)."""


class RegisterEncodeError(EncodeError):
    """A value that cannot be put into its register(s): negative, too large, not finite, ..."""


class RequestRefusedError(ProtocolError):
    """A read or write the pump refuses; :attr:`exception_code` is the Modbus exception it sends.

    ``register_name`` names the register at fault when there is one; ``allowed`` is the allowed
    raw range ``(minimum, maximum)`` in register counts when the refusal is about a value range.
    """

    exception_code: ModbusException = ModbusException.ILLEGAL_DATA_VALUE

    def __init__(
        self,
        message: str,
        *,
        register_name: str | None = None,
        allowed: tuple[int, int] | None = None,
    ) -> None:
        super().__init__(message)
        self.register_name = register_name
        self.allowed = allowed


class IllegalDataAddressError(RequestRefusedError):
    """Refused with exception 02: unmapped address, wrong access, or a split multi-word register."""

    exception_code = ModbusException.ILLEGAL_DATA_ADDRESS


class IllegalDataValueError(RequestRefusedError):
    """Refused with exception 03: a value out of range, an unknown command, a bad quantity."""

    exception_code = ModbusException.ILLEGAL_DATA_VALUE


class FrameDecodeError(DecodeError):
    """Bytes that are not a valid Modbus frame, or a reply that does not answer the request
    (another function, another register count)."""


class FrameCrcError(FrameDecodeError, ChecksumError):
    """An RTU frame whose CRC-16/MODBUS does not match its content."""


class FrameEncodeError(EncodeError):
    """A value a Modbus frame cannot carry (an address, count or word out of range)."""


class ExceptionReplyError(ProtocolError):
    """A well-formed Modbus exception reply: ``function`` (without the 0x80 flag) and the
    ``exception_code`` the pump sent (:attr:`exception` names it when the map knows it)."""

    def __init__(self, function: int, exception_code: int) -> None:
        known = exception_code in ModbusException.__members__.values()
        self.exception = ModbusException(exception_code) if known else None
        name = f" {self.exception.name}" if self.exception is not None else ""
        super().__init__(f"exception {exception_code:02d}{name} to function {function}")
        self.function = function
        self.exception_code = exception_code
