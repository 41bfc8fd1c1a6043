"""Which reads and writes the pump accepts, and the Modbus exception it answers a refusal with."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.errors import ProtocolError
from protocol.modbus import (
    IDENTIFICATION_SPAN,
    MAX_READ_COUNT,
    MAX_WRITE_COUNT,
    REGISTERS,
    SETPOINTS_SPAN,
    STATUS_SPAN,
    WATCHDOG_TIMEOUT_MAX_S,
    BlockId,
    CommandCode,
    IllegalDataAddressError,
    IllegalDataValueError,
    ModbusException,
    Reg,
    Register,
    RegisterWrite,
    RequestRefusedError,
    WireType,
    block_registers,
    rate_ml_per_h_to_counts,
    split_u32,
    validate_read,
    validate_write,
)
from protocol.modbus.words import U16_MAX

MAX_RATE_ML_PER_H = Decimal("500.00")
MAX_RATE_COUNTS = rate_ml_per_h_to_counts(MAX_RATE_ML_PER_H)


def write(address: int, *values: int) -> tuple[RegisterWrite, ...]:
    return validate_write(address, list(values), max_rate_ml_per_h=MAX_RATE_ML_PER_H)


def test_refusals_carry_the_modbus_exception_code() -> None:
    assert IllegalDataAddressError.exception_code is ModbusException.ILLEGAL_DATA_ADDRESS
    assert int(IllegalDataAddressError.exception_code) == 0x02
    assert IllegalDataValueError.exception_code is ModbusException.ILLEGAL_DATA_VALUE
    assert int(IllegalDataValueError.exception_code) == 0x03
    assert issubclass(RequestRefusedError, ProtocolError)


# --- reads ---------------------------------------------------------------------------------------


def test_one_read_of_the_status_span_is_accepted_and_returns_the_status_registers() -> None:
    registers = validate_read(STATUS_SPAN.address, STATUS_SPAN.count)
    assert registers == block_registers(BlockId.STATUS)


def test_one_read_of_the_identification_span_is_accepted() -> None:
    registers = validate_read(IDENTIFICATION_SPAN.address, IDENTIFICATION_SPAN.count)
    assert registers == block_registers(BlockId.IDENTIFICATION)


@pytest.mark.parametrize(
    ("address", "count"),
    [
        (STATUS_SPAN.address, STATUS_SPAN.count + 1),  # runs past the block
        (IDENTIFICATION_SPAN.end, 1),  # gap after identification
        (Reg.COMMAND.address, 1),  # write-only
        (Reg.ALARMS.address + 1, 1),  # low word of a u32 alone
        (Reg.ALARMS.address, 1),  # high word of a u32 alone
        (Reg.MODEL_NAME.address, 4),  # half of an ascii field
        (-1, 1),
        (U16_MAX, 2),
    ],
    ids=["past-end", "gap", "write-only", "u32-low-half", "u32-high-half", "ascii-half",
         "negative", "past-address-space"],
)  # fmt: skip
def test_read_of_unmapped_write_only_or_split_registers_is_exception_02(
    address: int, count: int
) -> None:
    with pytest.raises(IllegalDataAddressError) as caught:
        validate_read(address, count)
    assert caught.value.exception_code == 0x02


@pytest.mark.parametrize("count", [0, MAX_READ_COUNT + 1])
def test_read_quantity_outside_1_to_125_is_exception_03(count: int) -> None:
    with pytest.raises(IllegalDataValueError):
        validate_read(STATUS_SPAN.address, count)


# --- writes --------------------------------------------------------------------------------------


def test_rate_and_vtbi_in_one_write_are_accepted_high_word_first() -> None:
    rate = rate_ml_per_h_to_counts(Decimal("12.50"))
    writes = write(SETPOINTS_SPAN.address, *split_u32(rate), *split_u32(100_000))
    assert writes == (
        RegisterWrite(register=Reg.RATE_SETPOINT, value=1250),
        RegisterWrite(register=Reg.VTBI, value=100_000),
    )


def test_rate_at_the_pump_maximum_is_accepted_and_one_count_above_is_exception_03() -> None:
    assert write(Reg.RATE_SETPOINT.address, *split_u32(MAX_RATE_COUNTS))[0].value == 50_000
    with pytest.raises(IllegalDataValueError) as caught:
        write(Reg.RATE_SETPOINT.address, *split_u32(MAX_RATE_COUNTS + 1))
    error = caught.value
    assert error.exception_code == 0x03
    assert error.register_name == "RATE_SETPOINT"
    assert error.allowed == (0, MAX_RATE_COUNTS)
    assert "RATE_SETPOINT" in str(error)
    assert "500.01 mL/h" in str(error)
    assert "500.00 mL/h" in str(error)


def test_a_refused_value_in_a_multi_register_write_refuses_the_whole_write() -> None:
    with pytest.raises(IllegalDataValueError, match="RATE_SETPOINT"):
        write(SETPOINTS_SPAN.address, *split_u32(MAX_RATE_COUNTS + 1), *split_u32(1000))


@pytest.mark.parametrize(
    ("address", "values"),
    [
        (Reg.RATE_SETPOINT.address, [0x0000]),  # function 06 to a u32: high half only
        (Reg.RATE_SETPOINT.address + 1, [0x04E2]),  # low half only
        (Reg.RATE_SETPOINT.address + 1, [0, 0, 0]),  # starts mid-register
        (Reg.STATE.address, [1]),  # read-only
        (Reg.MAP_VERSION.address, [1]),  # read-only identification
        (Reg.COMMAND.address + 1, [0]),  # unmapped
        (Reg.HEARTBEAT.address, [1, 2]),  # runs into the gap after the watchdog block
    ],
    ids=["u32-high-half", "u32-low-half", "mid-register", "read-only-status", "read-only-id",
         "unmapped", "past-block"],
)  # fmt: skip
def test_write_to_unmapped_read_only_or_split_registers_is_exception_02(
    address: int, values: list[int]
) -> None:
    with pytest.raises(IllegalDataAddressError) as caught:
        write(address, *values)
    assert caught.value.exception_code == 0x02


@pytest.mark.parametrize("code", list(CommandCode))
def test_every_command_code_is_accepted(code: CommandCode) -> None:
    assert write(Reg.COMMAND.address, code) == (RegisterWrite(register=Reg.COMMAND, value=code),)


@pytest.mark.parametrize("value", [0, 1, 2, 3, 4, 0x524F, U16_MAX])
def test_unknown_command_code_is_exception_03_naming_the_allowed_codes(value: int) -> None:
    with pytest.raises(IllegalDataValueError, match="START") as caught:
        write(Reg.COMMAND.address, value)
    assert caught.value.register_name == "COMMAND"


def test_watchdog_timeout_range_is_0_to_600_seconds() -> None:
    assert write(Reg.WATCHDOG_TIMEOUT.address, 0)[0].value == 0
    assert write(Reg.WATCHDOG_TIMEOUT.address, WATCHDOG_TIMEOUT_MAX_S)[0].value == 600
    with pytest.raises(IllegalDataValueError, match="WATCHDOG_TIMEOUT") as caught:
        write(Reg.WATCHDOG_TIMEOUT.address, WATCHDOG_TIMEOUT_MAX_S + 1)
    assert caught.value.allowed == (0, WATCHDOG_TIMEOUT_MAX_S)


@given(st.integers(min_value=0, max_value=U16_MAX))
def test_any_heartbeat_value_is_accepted(value: int) -> None:
    assert write(Reg.HEARTBEAT.address, value) == (
        RegisterWrite(register=Reg.HEARTBEAT, value=value),
    )


def test_timeout_and_heartbeat_in_one_write_are_accepted() -> None:
    writes = write(Reg.WATCHDOG_TIMEOUT.address, 10, 7)
    assert [(w.register.name, w.value) for w in writes] == [
        ("WATCHDOG_TIMEOUT", 10),
        ("HEARTBEAT", 7),
    ]


@pytest.mark.parametrize(
    "values",
    [[], [0] * (MAX_WRITE_COUNT + 1), [U16_MAX + 1], [-1]],
    ids=["empty", "too-many", "above-u16", "negative"],
)
def test_bad_write_quantity_or_word_is_exception_03(values: list[int]) -> None:
    with pytest.raises(IllegalDataValueError):
        validate_write(Reg.HEARTBEAT.address, values, max_rate_ml_per_h=MAX_RATE_ML_PER_H)


WRITABLE = [register for register in REGISTERS if register.access.writable]


@given(register=st.sampled_from(WRITABLE), data=st.data())
def test_every_in_range_value_of_every_writable_register_is_accepted(
    register: Register, data: st.DataObject
) -> None:
    if register is Reg.COMMAND:
        value = int(data.draw(st.sampled_from(CommandCode)))
    else:
        upper = MAX_RATE_COUNTS if register is Reg.RATE_SETPOINT else register.write_maximum
        value = data.draw(st.integers(min_value=register.minimum, max_value=upper))
    words = list(split_u32(value)) if register.wire_type is WireType.U32 else [value]
    assert write(register.address, *words) == (RegisterWrite(register=register, value=value),)


@given(
    address=st.integers(min_value=-2, max_value=U16_MAX + 2),
    values=st.lists(st.integers(min_value=-2, max_value=U16_MAX + 2), max_size=8),
)
def test_validate_write_accepts_only_legal_writes_and_refuses_with_typed_errors(
    address: int, values: list[int]
) -> None:
    try:
        writes = validate_write(address, values, max_rate_ml_per_h=MAX_RATE_ML_PER_H)
    except RequestRefusedError as exc:
        refusal: RequestRefusedError | None = exc
    else:
        refusal = None
    if refusal is None:
        assert sum(w.register.words for w in writes) == len(values)
        for w in writes:
            assert w.register.access.writable
            assert w.register.minimum <= w.value <= w.register.write_maximum
            if w.register is Reg.RATE_SETPOINT:
                assert w.value <= MAX_RATE_COUNTS
    else:
        assert refusal.exception_code in {0x02, 0x03}


@given(
    address=st.integers(min_value=-2, max_value=U16_MAX + 2),
    count=st.integers(min_value=-1, max_value=MAX_READ_COUNT + 2),
)
def test_validate_read_accepts_only_whole_readable_registers(address: int, count: int) -> None:
    try:
        registers = validate_read(address, count)
    except RequestRefusedError as exc:
        refusal: RequestRefusedError | None = exc
    else:
        refusal = None
    if refusal is None:
        assert registers[0].address == address
        assert sum(register.words for register in registers) == count
        assert all(register.access.readable for register in registers)
    else:
        assert refusal.exception_code in {0x02, 0x03}
