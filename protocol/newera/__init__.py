"""Codec of the New Era NE-1000 family RS-232 protocol (also sold as WPI Aladdin).

Pure: no I/O, no clock.  Modules:

* :mod:`~protocol.newera.constants`: control bytes, limits, mnemonics, status/alarm/error enums,
  units; the one home of every protocol fact.
* :mod:`~protocol.newera.crc`: CRC-16/XMODEM of safe-mode packets.
* :mod:`~protocol.newera.quantities`: the 4-digit number field, rates (mL/h) and volumes (mL).
* :mod:`~protocol.newera.payloads`: ``DIS`` and ``VER`` reply data.
* :mod:`~protocol.newera.messages`: :class:`Command` and :class:`Reply` and their text.
* :mod:`~protocol.newera.framing`: basic and safe-mode framing, streaming decoders for both
  directions (the decoder contract is in its docstring).
* :mod:`~protocol.newera.errors`: typed errors under :class:`protocol.errors.ProtocolError`.
"""

from protocol.newera.constants import (
    CONTINUOUS_VOLUME_ARGUMENT,
    NE_ALARM_TO_PUMP_ALARM,
    Direction,
    Framing,
    Mnemonic,
    NeAlarm,
    NeErrorCode,
    NeStatus,
    RateUnit,
    VolumeUnit,
)
from protocol.newera.crc import crc16_xmodem
from protocol.newera.errors import (
    FrameChecksumError,
    FrameError,
    MessageValueError,
    NeDecodeError,
    PayloadError,
    UnknownCommandError,
    UnrepresentableNumberError,
)
from protocol.newera.framing import (
    CommandFrame,
    CommandItem,
    CommandStreamDecoder,
    ReplyFrame,
    ReplyItem,
    ReplyStreamDecoder,
    StreamDecoder,
    decode_commands,
    decode_replies,
    encode_command,
    encode_reply,
    encode_safe_packet,
)
from protocol.newera.messages import (
    Command,
    Reply,
    normalize_command_bytes,
    parse_command_text,
    parse_reply_payload,
)
from protocol.newera.payloads import (
    Dispensed,
    FirmwareVersion,
    format_dispensed,
    format_version,
    parse_dispensed,
    parse_version,
)
from protocol.newera.quantities import (
    EncodedRate,
    Number,
    encode_rate,
    encode_volume,
    exact_value,
    format_display_number,
    format_number,
    format_rate,
    format_volume,
    number_resolution,
    parse_number,
    parse_rate,
    parse_volume,
    parse_volume_argument,
    split_rate_argument,
    volume_unit_for_diameter,
)

__all__ = [
    "CONTINUOUS_VOLUME_ARGUMENT",
    "NE_ALARM_TO_PUMP_ALARM",
    "Command",
    "CommandFrame",
    "CommandItem",
    "CommandStreamDecoder",
    "Direction",
    "Dispensed",
    "EncodedRate",
    "FirmwareVersion",
    "FrameChecksumError",
    "FrameError",
    "Framing",
    "MessageValueError",
    "Mnemonic",
    "NeAlarm",
    "NeDecodeError",
    "NeErrorCode",
    "NeStatus",
    "Number",
    "PayloadError",
    "RateUnit",
    "Reply",
    "ReplyFrame",
    "ReplyItem",
    "ReplyStreamDecoder",
    "StreamDecoder",
    "UnknownCommandError",
    "UnrepresentableNumberError",
    "VolumeUnit",
    "crc16_xmodem",
    "decode_commands",
    "decode_replies",
    "encode_command",
    "encode_rate",
    "encode_reply",
    "encode_safe_packet",
    "encode_volume",
    "exact_value",
    "format_dispensed",
    "format_display_number",
    "format_number",
    "format_rate",
    "format_version",
    "format_volume",
    "normalize_command_bytes",
    "number_resolution",
    "parse_command_text",
    "parse_dispensed",
    "parse_number",
    "parse_rate",
    "parse_reply_payload",
    "parse_version",
    "parse_volume",
    "parse_volume_argument",
    "split_rate_argument",
    "volume_unit_for_diameter",
]
