"""Reading and writing register fields inside a block, located by the register table only.

Encoders and decoders never hold an offset of their own: a field's place in a block is always
``register.address - span.address``, taken from :mod:`protocol.modbus.registers`.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from protocol.modbus.errors import RegisterEncodeError
from protocol.modbus.registers import Register, Span, WireType
from protocol.modbus.scaling import Number, from_counts, to_counts
from protocol.modbus.words import (
    check_u16,
    check_words,
    pack_ascii,
    split_u32,
    unpack_ascii,
)


def field_offset(span: Span, register: Register, wire_type: WireType) -> int:
    """Offset of ``register`` in ``span``; a mismatch is a bug in this package, not bad data.

    Not cached: hashing a Register (enums, a Decimal) costs more than these few comparisons,
    and every poll looks up a dozen fields."""
    if register.wire_type is not wire_type:
        raise TypeError(f"{register.name} is {register.wire_type.value}, not {wire_type.value}")
    address = register.address
    if address < span.address or address + register.words > span.address + span.count:
        raise TypeError(f"{register.name} lies outside the span {span}")
    return address - span.address


class BlockReader:
    """Fields of one block read from the pump; the words are checked once, on construction."""

    def __init__(self, registers: Sequence[int], span: Span, *, what: str) -> None:
        """Check ``registers`` holds ``span.count`` words 0..0xFFFF (else RegisterDecodeError)."""
        self._words = check_words(registers, span.count, what=what)
        self._span = span

    def u16(self, register: Register) -> int:
        """The value of a one-register field."""
        return self._words[field_offset(self._span, register, WireType.U16)]

    def u32(self, register: Register) -> int:
        """The value of a two-register field, high word first (the words were checked)."""
        offset = field_offset(self._span, register, WireType.U32)
        return (self._words[offset] << 16) | self._words[offset + 1]

    def scaled(self, register: Register) -> Decimal:
        """The exact engineering value of a scaled u32 field, in ``register.unit``."""
        return from_counts(self.u32(register), register.scale)

    def ascii(self, register: Register) -> str:
        """The text of an ASCII field, NUL padding removed."""
        offset = field_offset(self._span, register, WireType.ASCII)
        return unpack_ascii(self._words[offset : offset + register.words])


class BlockWriter:
    """Builds the words of one block field by field; unwritten words stay 0."""

    def __init__(self, span: Span) -> None:
        self._span = span
        self._words = [0] * span.count

    def u16(self, register: Register, value: int) -> None:
        """Put ``value`` (0..0xFFFF, else RegisterEncodeError) into a one-register field."""
        offset = field_offset(self._span, register, WireType.U16)
        self._words[offset] = check_u16(value, what=register.name)

    def u32(self, register: Register, value: int) -> None:
        """Put ``value`` (0..0xFFFFFFFF, else RegisterEncodeError) into a two-register field."""
        offset = field_offset(self._span, register, WireType.U32)
        try:
            self._words[offset : offset + 2] = split_u32(value)
        except RegisterEncodeError as exc:
            raise RegisterEncodeError(f"{register.name}: {exc}") from None

    def scaled(self, register: Register, value: Number) -> None:
        """Put ``value`` in ``register.unit`` into a scaled u32 field, truncated toward zero."""
        try:
            counts = to_counts(value, register.scale)
        except RegisterEncodeError as exc:
            raise RegisterEncodeError(f"{register.name}: {exc}") from None
        self.u32(register, counts)

    def ascii(self, register: Register, text: str) -> None:
        """Put printable ASCII ``text`` into an ASCII field (else RegisterEncodeError)."""
        offset = field_offset(self._span, register, WireType.ASCII)
        try:
            self._words[offset : offset + register.words] = pack_ascii(text, register.words)
        except RegisterEncodeError as exc:
            raise RegisterEncodeError(f"{register.name}: {exc}") from None

    def words(self) -> list[int]:
        """The block's register values, in address order."""
        return list(self._words)
