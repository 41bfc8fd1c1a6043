"""16-bit register words: range checks, 32-bit split/join, ASCII packing.

Byte and word order of the pump map: each register is sent big-endian (high byte first, as
Modbus itself does); a 32-bit value takes two registers, **high word first**.  ASCII text is two
characters per register, the first character in the high byte, NUL-padded at the end.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from protocol.modbus.errors import (
    AsciiDecodeError,
    RegisterCountError,
    RegisterEncodeError,
    WordRangeError,
    show,
)

#: Largest value of one 16-bit register.
U16_MAX: Final = 0xFFFF
#: Largest value of a 32-bit register pair.
U32_MAX: Final = 0xFFFF_FFFF

#: The only type a register value may have (``bool`` is refused: it is never a register value).
_INT_ONLY: Final = frozenset({int})

#: Lowest and highest byte allowed in ASCII text registers (printable ASCII; NUL only as padding).
_ASCII_FIRST: Final = 0x20
_ASCII_LAST: Final = 0x7E


def _is_int(value: object) -> bool:
    """True for a real ``int`` (``bool`` is refused: it is never a register value)."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_words(registers: Sequence[int], count: int, *, what: str) -> tuple[int, ...]:
    """Return ``registers`` as a tuple after checking there are ``count`` words in 0..0xFFFF.

    Raises :class:`RegisterCountError` for a wrong length and :class:`WordRangeError` for a
    value that is not an ``int`` in 0..0xFFFF; ``what`` names the block in the message.
    """
    try:
        length = len(registers)
    except TypeError as exc:
        raise RegisterCountError(f"{what}: registers have no length ({exc})") from None
    if length != count:
        raise RegisterCountError(f"{what}: expected {count} registers, got {length}")
    words = tuple(registers)
    if not words or (
        set(map(type, words)) == _INT_ONLY and min(words) >= 0 and max(words) <= U16_MAX
    ):
        return words  # the common case, checked by C loops (every poll decodes a block)
    for offset, word in enumerate(words):
        if not _is_int(word) or not 0 <= word <= U16_MAX:
            raise WordRangeError(
                f"{what}: register {offset} of the block is {show(word)}, not an integer 0..0xFFFF"
            )
    return words


def check_u16(value: int, *, what: str) -> int:
    """Return ``value`` after checking it fits one register (0..0xFFFF), else raise EncodeError."""
    if not _is_int(value) or not 0 <= value <= U16_MAX:
        raise RegisterEncodeError(f"{what}: {show(value)} is not an integer 0..{U16_MAX}")
    return value


def split_u32(value: int) -> tuple[int, int]:
    """Split a 32-bit unsigned value into ``(high_word, low_word)``, high word first on the wire.

    Raises :class:`RegisterEncodeError` when ``value`` is not an integer 0..0xFFFFFFFF.
    """
    if not _is_int(value) or not 0 <= value <= U32_MAX:
        raise RegisterEncodeError(f"{show(value)} is not an integer 0..{U32_MAX} (u32)")
    return value >> 16, value & U16_MAX


def join_u32(high_word: int, low_word: int) -> int:
    """Join ``(high_word, low_word)`` read from two registers into one 32-bit unsigned value.

    Raises :class:`WordRangeError` when a word is not an integer 0..0xFFFF.
    """
    for word in (high_word, low_word):
        if not _is_int(word) or not 0 <= word <= U16_MAX:
            raise WordRangeError(f"{show(word)} is not a register value 0..0xFFFF")
    return (high_word << 16) | low_word


def pack_ascii(text: str, words: int) -> list[int]:
    """Pack printable ASCII ``text`` into ``words`` registers, two characters each, NUL-padded.

    The first character of each pair goes in the high byte.  Raises :class:`RegisterEncodeError`
    when ``text`` is longer than ``2 * words`` characters or holds a character outside
    printable ASCII (0x20..0x7E).
    """
    if not isinstance(text, str):
        raise RegisterEncodeError(f"{show(text)} is not text")
    capacity = 2 * words
    if len(text) > capacity:
        raise RegisterEncodeError(
            f"{show(text)} has {len(text)} characters; at most {capacity} fit"
        )
    for char in text:
        if not _ASCII_FIRST <= ord(char) <= _ASCII_LAST:
            raise RegisterEncodeError(f"{show(text)} holds {show(char)}, outside printable ASCII")
    raw = text.encode("ascii").ljust(capacity, b"\x00")
    return [(raw[i] << 8) | raw[i + 1] for i in range(0, capacity, 2)]


def unpack_ascii(registers: Sequence[int]) -> str:
    """Unpack registers packed by :func:`pack_ascii` into text, dropping the trailing NULs.

    Raises :class:`WordRangeError` for a word outside 0..0xFFFF and :class:`AsciiDecodeError` for
    a byte outside printable ASCII or a printable byte after the NUL padding has started.
    """
    words = check_words(registers, len(registers), what="ASCII text")
    raw = bytes(byte for word in words for byte in (word >> 8, word & 0xFF))
    text = raw.rstrip(b"\x00")
    for byte in text:
        if byte == 0:
            raise AsciiDecodeError(f"ASCII text {show(raw)}: a character follows the NUL padding")
        if not _ASCII_FIRST <= byte <= _ASCII_LAST:
            raise AsciiDecodeError(f"ASCII text {show(raw)}: byte 0x{byte:02X} is not printable")
    return text.decode("ascii")
