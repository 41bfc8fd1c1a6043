"""Which reads and writes the pump accepts, by access, alignment and range.

The pump (simulator) calls these before touching its state and answers a refusal with
``error.exception_code``; the driver may call them before sending, to fail early with the same
message.  Refusal rules (also in ``docs/modbus-map.md``):

* quantity outside 1..125 (read) or 1..123 (write), or a word outside 0..0xFFFF: exception 03;
* any address in the request unmapped, a read of a write-only register, a write of a read-only
  register, or a request that covers only part of a multi-word register: exception 02;
* a value outside the register's range, a COMMAND that is not a command code, or a
  RATE_SETPOINT above the pump's MAX_RATE: exception 03.  A refused value is never replaced by a
  fallback, and a refused multi-register write changes nothing (all or nothing).

Refusals that depend on the pump's state (START while alarmed, RATE_SETPOINT 0 while infusing,
START after VTBI_COMPLETE until VTBI is written again) are the pump's to make, also with
exception 03; these functions check only what the map itself fixes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from protocol.modbus.codes import CommandCode
from protocol.modbus.errors import IllegalDataAddressError, IllegalDataValueError, show
from protocol.modbus.registers import Reg, Register, WireType, register_at
from protocol.modbus.scaling import Number, from_counts, rate_ml_per_h_to_counts
from protocol.modbus.words import U16_MAX, join_u32

#: Most registers one function-03 read may ask for (Modbus application protocol limit).
MAX_READ_COUNT: Final = 125
#: Most registers one function-16 write may carry (Modbus application protocol limit).
MAX_WRITE_COUNT: Final = 123

_ADDRESS_SPACE: Final = U16_MAX + 1


@dataclass(frozen=True)
class RegisterWrite:
    """One register of an accepted write and the raw value (counts) it receives."""

    register: Register
    value: int


def _registers_covering(address: int, count: int) -> tuple[Register, ...]:
    """The registers exactly covering ``count`` addresses from ``address``, else exception 02."""
    if not isinstance(address, int) or not 0 <= address < _ADDRESS_SPACE:
        raise IllegalDataAddressError(f"address {show(address)} is outside 0..{U16_MAX}")
    if address + count > _ADDRESS_SPACE:
        raise IllegalDataAddressError(f"{count} registers from {address} run past {U16_MAX}")
    covered: list[Register] = []
    position = address
    while position < address + count:
        register = register_at(position)
        if register is None:
            raise IllegalDataAddressError(f"address {position} is not mapped")
        if register.address != position or register.end > address + count:
            raise IllegalDataAddressError(
                f"{register.name} occupies {register.address}..{register.end - 1}: "
                f"a request must cover all {register.words} of its registers",
                register_name=register.name,
            )
        covered.append(register)
        position = register.end
    return tuple(covered)


def validate_read(address: int, count: int) -> tuple[Register, ...]:
    """Return the registers a function-03 read of ``count`` registers from ``address`` returns.

    Raises :class:`IllegalDataValueError` (exception 03) for a count outside 1..125 and
    :class:`IllegalDataAddressError` (exception 02) for an unmapped or write-only address or a
    read that splits a multi-word register.
    """
    if not isinstance(count, int) or not 1 <= count <= MAX_READ_COUNT:
        raise IllegalDataValueError(f"read quantity {show(count)} is outside 1..{MAX_READ_COUNT}")
    registers = _registers_covering(address, count)
    for register in registers:
        if not register.access.readable:
            raise IllegalDataAddressError(
                f"{register.name} (address {register.address}) is write-only",
                register_name=register.name,
            )
    return registers


def _describe_counts(register: Register, counts: int) -> str:
    """``counts`` with its engineering value, e.g. ``"1548 (15.48 mL/h)"``."""
    if register.unit and register.scale != 1:
        return f"{counts} ({from_counts(counts, register.scale)} {register.unit})"
    if register.unit:
        return f"{counts} {register.unit}"
    return str(counts)


def _check_value(register: Register, value: int, max_rate_counts: int) -> None:
    """Raise IllegalDataValueError (exception 03) unless ``register`` may receive ``value``."""
    if register is Reg.COMMAND:
        if value not in {int(code) for code in CommandCode}:
            codes = ", ".join(f"0x{code:04X} ({code.name})" for code in CommandCode)
            raise IllegalDataValueError(
                f"COMMAND (address {register.address}): 0x{value:04X} is not a command code; "
                f"allowed: {codes}",
                register_name=register.name,
                allowed=(register.minimum, register.write_maximum),
            )
        return
    maximum = register.write_maximum
    if register is Reg.RATE_SETPOINT:
        maximum = min(maximum, max_rate_counts)
    if not register.minimum <= value <= maximum:
        raise IllegalDataValueError(
            f"{register.name} (address {register.address}): {_describe_counts(register, value)} "
            f"is out of range; allowed {_describe_counts(register, register.minimum)} .. "
            f"{_describe_counts(register, maximum)}",
            register_name=register.name,
            allowed=(register.minimum, maximum),
        )


def validate_write(
    address: int, values: Sequence[int], *, max_rate_ml_per_h: Number
) -> tuple[RegisterWrite, ...]:
    """Return the register writes a function 06 / 16 write of ``values`` from ``address`` makes.

    ``max_rate_ml_per_h`` is the pump's MAX_RATE in mL/h; RATE_SETPOINT is capped by it.
    Raises :class:`IllegalDataValueError` (exception 03) for a quantity outside 1..123, a word
    outside 0..0xFFFF or a value out of range; :class:`IllegalDataAddressError` (exception 02) for
    an unmapped or read-only address or a write that splits a multi-word register.  The error
    names the register and the allowed range.
    """
    count = len(values)
    if not 1 <= count <= MAX_WRITE_COUNT:
        raise IllegalDataValueError(f"write quantity {count} is outside 1..{MAX_WRITE_COUNT}")
    for word in values:
        if not isinstance(word, int) or isinstance(word, bool) or not 0 <= word <= U16_MAX:
            raise IllegalDataValueError(
                f"written value {show(word)} is not an integer 0..{U16_MAX}"
            )
    registers = _registers_covering(address, count)
    max_rate_counts = rate_ml_per_h_to_counts(max_rate_ml_per_h)
    writes: list[RegisterWrite] = []
    for register in registers:
        if not register.access.writable:
            raise IllegalDataAddressError(
                f"{register.name} (address {register.address}) is read-only",
                register_name=register.name,
            )
        offset = register.address - address
        if register.wire_type is WireType.U32:
            value = join_u32(values[offset], values[offset + 1])
        else:
            value = values[offset]
        writes.append(RegisterWrite(register=register, value=value))
    for write in writes:
        _check_value(write.register, write.value, max_rate_counts)
    return tuple(writes)
