"""The identification block: who the pump is, which map it speaks, how fast it may go.

A host reads it once after connecting: :func:`decode_identification` refuses a pump whose
MAP_VERSION is not :data:`~protocol.modbus.registers.MAP_VERSION` and a word-order test pattern
that does not read 0x1234, 0x5678, before it trusts any other field.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from protocol.modbus.errors import (
    FieldValueError,
    MapVersionError,
    RegisterEncodeError,
    WordOrderError,
    show,
)
from protocol.modbus.layout import BlockReader, BlockWriter
from protocol.modbus.registers import IDENTIFICATION_SPAN, MAP_VERSION, WORD_ORDER_TEST_VALUE, Reg
from protocol.modbus.scaling import to_counts
from protocol.modbus.words import split_u32


@dataclass(frozen=True)
class Identification:
    """The identification block (registers ``IDENTIFICATION_SPAN``).

    ``max_rate_ml_per_h`` is the pump's own highest rate setpoint, in mL/h (0.01 mL/h
    resolution, at least 0.01); a write of RATE_SETPOINT above it is refused with exception 03.
    """

    vendor_id: int
    model_id: int
    firmware_major: int
    firmware_minor: int
    firmware_patch: int
    max_rate_ml_per_h: Decimal
    model_name: str
    """Up to 16 printable ASCII characters."""
    serial_number: str
    """Up to 16 printable ASCII characters."""
    map_version: int = MAP_VERSION

    @property
    def firmware_version(self) -> str:
        """Firmware version as ``"major.minor.patch"``."""
        return f"{self.firmware_major}.{self.firmware_minor}.{self.firmware_patch}"


def encode_identification(identification: Identification) -> list[int]:
    """Encode ``identification`` into the register values of ``IDENTIFICATION_SPAN``.

    Raises a :class:`~protocol.modbus.errors.RegisterEncodeError` for a field that does not fit:
    an integer outside 0..0xFFFF, a maximum rate below 0.01 mL/h or too large, text that is not
    printable ASCII or longer than 16 characters.
    """
    writer = BlockWriter(IDENTIFICATION_SPAN)
    writer.u16(Reg.MAP_VERSION, identification.map_version)
    writer.u16(Reg.VENDOR_ID, identification.vendor_id)
    writer.u32(Reg.WORD_ORDER_TEST, WORD_ORDER_TEST_VALUE)
    writer.u16(Reg.MODEL_ID, identification.model_id)
    writer.u16(Reg.FIRMWARE_MAJOR, identification.firmware_major)
    writer.u16(Reg.FIRMWARE_MINOR, identification.firmware_minor)
    writer.u16(Reg.FIRMWARE_PATCH, identification.firmware_patch)
    writer.scaled(Reg.MAX_RATE, identification.max_rate_ml_per_h)  # names MAX_RATE on error
    if to_counts(identification.max_rate_ml_per_h, Reg.MAX_RATE.scale) == 0:
        raise RegisterEncodeError(
            f"MAX_RATE: {show(identification.max_rate_ml_per_h)} is below one count "
            f"({Reg.MAX_RATE.scale} {Reg.MAX_RATE.unit}); a pump must be able to infuse"
        )
    writer.ascii(Reg.MODEL_NAME, identification.model_name)
    writer.ascii(Reg.SERIAL_NUMBER, identification.serial_number)
    return writer.words()


def decode_identification(registers: Sequence[int]) -> Identification:
    """Decode one read of ``IDENTIFICATION_SPAN`` into an :class:`Identification`.

    Checks, in this order: the register count and word range, MAP_VERSION (raises
    :class:`MapVersionError`, carrying the pump's version), the word-order test pattern (raises
    :class:`WordOrderError`), then the fields (bad ASCII raises ``AsciiDecodeError``, a maximum
    rate of 0 raises :class:`FieldValueError`).  All are ``DecodeError`` subclasses.
    """
    reader = BlockReader(registers, IDENTIFICATION_SPAN, what="identification block")
    map_version = reader.u16(Reg.MAP_VERSION)
    if map_version != MAP_VERSION:
        raise MapVersionError(
            f"pump speaks register map version {map_version}; this code implements {MAP_VERSION}",
            pump_map_version=map_version,
        )
    pattern = reader.u32(Reg.WORD_ORDER_TEST)
    if pattern != WORD_ORDER_TEST_VALUE:
        high, low = split_u32(WORD_ORDER_TEST_VALUE)
        swapped = (low << 16) | high
        reason = "words are swapped" if pattern == swapped else "this is not the expected map"
        raise WordOrderError(
            f"WORD_ORDER_TEST reads 0x{pattern >> 16:04X}, 0x{pattern & 0xFFFF:04X}, "
            f"expected 0x{high:04X}, 0x{low:04X}: {reason}"
        )
    max_rate_ml_per_h = reader.scaled(Reg.MAX_RATE)
    if max_rate_ml_per_h == 0:
        raise FieldValueError("MAX_RATE reads 0: a pump that cannot infuse")
    return Identification(
        vendor_id=reader.u16(Reg.VENDOR_ID),
        model_id=reader.u16(Reg.MODEL_ID),
        firmware_major=reader.u16(Reg.FIRMWARE_MAJOR),
        firmware_minor=reader.u16(Reg.FIRMWARE_MINOR),
        firmware_patch=reader.u16(Reg.FIRMWARE_PATCH),
        max_rate_ml_per_h=max_rate_ml_per_h,
        model_name=reader.ascii(Reg.MODEL_NAME),
        serial_number=reader.ascii(Reg.SERIAL_NUMBER),
        map_version=map_version,
    )
