"""The status block: round trips, one register per field from the table, only typed errors."""

from __future__ import annotations

import dataclasses
from decimal import Context, Decimal, localcontext
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.errors import DecodeError, EncodeError, ProtocolError
from protocol.modbus import (
    NO_COMMAND,
    STATE_VALUES,
    STATUS_SPAN,
    BlockId,
    CommandCode,
    Reg,
    Register,
    RegisterCountError,
    StatusBlock,
    UnknownAlarmBitError,
    UnknownCommandError,
    UnknownStateError,
    WordRangeError,
    block_registers,
    counts_to_rate_ml_per_h,
    counts_to_volume_ml,
    decode_status,
    encode_alarms,
    encode_status,
)
from protocol.modbus.words import U16_MAX, U32_MAX
from protocol.pump_state import PumpAlarm, PumpState

u16 = st.integers(min_value=0, max_value=U16_MAX)
u32 = st.integers(min_value=0, max_value=U32_MAX)

status_blocks = st.builds(
    StatusBlock,
    state=st.sampled_from(PumpState),
    alarms=st.frozensets(st.sampled_from(PumpAlarm)),
    rate_setpoint_ml_per_h=u32.map(counts_to_rate_ml_per_h),
    measured_rate_ml_per_h=u32.map(counts_to_rate_ml_per_h),
    vtbi_ml=u32.map(counts_to_volume_ml),
    vtbi_remaining_ml=u32.map(counts_to_volume_ml),
    volume_infused_ml=u32.map(counts_to_volume_ml),
    watchdog_timeout_s=u16,
    uptime_s=u32,
    heartbeat_echo=u16,
    last_command=st.none() | st.sampled_from(CommandCode),
    command_counter=u16,
)

EXAMPLE = StatusBlock(
    state=PumpState.INFUSING,
    alarms=frozenset({PumpAlarm.LOW_BATTERY}),
    rate_setpoint_ml_per_h=Decimal("12.50"),
    measured_rate_ml_per_h=Decimal("12.48"),
    vtbi_ml=Decimal("100"),
    vtbi_remaining_ml=Decimal("87.52"),
    volume_infused_ml=Decimal("12.48"),
    watchdog_timeout_s=10,
    uptime_s=90061,
    heartbeat_echo=42,
    last_command=CommandCode.START,
    command_counter=3,
)

# Each StatusBlock field, the register the table gives it, and a second value to change it to.
FIELD_REGISTERS: list[tuple[str, Register, Any]] = [
    ("state", Reg.STATE, PumpState.ALARM),
    ("alarms", Reg.ALARMS, frozenset({PumpAlarm.COMM_TIMEOUT, PumpAlarm.PROGRAM_ERROR})),
    ("rate_setpoint_ml_per_h", Reg.RATE_SETPOINT_ECHO, Decimal("700.01")),
    ("measured_rate_ml_per_h", Reg.MEASURED_RATE, Decimal("700.02")),
    ("vtbi_ml", Reg.VTBI_ECHO, Decimal("70000.001")),
    ("vtbi_remaining_ml", Reg.VTBI_REMAINING, Decimal("70000.002")),
    ("volume_infused_ml", Reg.VOLUME_INFUSED, Decimal("70000.003")),
    ("watchdog_timeout_s", Reg.WATCHDOG_TIMEOUT_ECHO, 11),
    ("uptime_s", Reg.UPTIME, 0x0102_0304),
    ("heartbeat_echo", Reg.HEARTBEAT_ECHO, 43),
    ("last_command", Reg.LAST_COMMAND, CommandCode.STOP),
    ("command_counter", Reg.COMMAND_COUNTER, 4),
]


def test_every_status_field_is_listed_once() -> None:
    fields = [field.name for field in dataclasses.fields(StatusBlock)]
    assert [name for name, _, _ in FIELD_REGISTERS] == fields
    mapped = [register for _, register, _ in FIELD_REGISTERS]
    assert sorted(mapped, key=lambda register: register.address) == list(
        block_registers(BlockId.STATUS)
    )


@pytest.mark.parametrize(
    ("field", "register", "other"), FIELD_REGISTERS, ids=[name for name, _, _ in FIELD_REGISTERS]
)
def test_each_field_lives_exactly_in_its_table_register(
    field: str, register: Register, other: Any
) -> None:
    changed = dataclasses.replace(EXAMPLE, **{field: other})
    before, after = encode_status(EXAMPLE), encode_status(changed)
    differing = {
        STATUS_SPAN.address + i
        for i, (a, b) in enumerate(zip(before, after, strict=True))
        if a != b
    }
    assert differing
    assert differing <= set(register.addresses)
    assert getattr(decode_status(after), field) == other


def test_example_poll_encodes_to_known_registers() -> None:
    assert encode_status(EXAMPLE) == [
        0x0002, 0x000A, 0x0000, 0x0010, 0x0000, 0x04E2, 0x0000, 0x04E0, 0x0001, 0x86A0,
        0x0001, 0x55E0, 0x0000, 0x30C0, 0x0001, 0x5FCD, 0x002A, 0x524E, 0x0003,
    ]  # fmt: skip


@given(status_blocks)
def test_status_round_trips_through_registers(status: StatusBlock) -> None:
    registers = encode_status(status)
    assert len(registers) == STATUS_SPAN.count
    assert all(0 <= word <= U16_MAX for word in registers)
    assert decode_status(registers) == status


@given(status_blocks)
def test_registers_round_trip_through_status(status: StatusBlock) -> None:
    registers = encode_status(status)
    assert encode_status(decode_status(registers)) == registers


def _offset(register: Register) -> int:
    return register.address - STATUS_SPAN.address


@st.composite
def valid_register_blocks(draw: st.DrawFn) -> list[int]:
    """Any status block a pump may send: every word random but the enumerated ones valid."""
    words = draw(st.lists(u16, min_size=STATUS_SPAN.count, max_size=STATUS_SPAN.count))
    words[_offset(Reg.STATE)] = STATE_VALUES[draw(st.sampled_from(PumpState))]
    alarms = encode_alarms(draw(st.frozensets(st.sampled_from(PumpAlarm))))
    words[_offset(Reg.ALARMS) : _offset(Reg.ALARMS) + 2] = [alarms >> 16, alarms & U16_MAX]
    last = draw(st.none() | st.sampled_from(CommandCode))
    words[_offset(Reg.LAST_COMMAND)] = NO_COMMAND if last is None else int(last)
    return words


@given(valid_register_blocks())
def test_scaled_fields_decode_to_the_exact_product_exponent_and_all(words: list[int]) -> None:
    """Each scaled field is ``Decimal(counts) * scale`` in a 60-digit context, as decoding has
    always computed it, down to the exponent (12.50 stays 12.50, 0 mL stays 0.000)."""
    status = decode_status(words)
    scaled = [(field, register) for field, register, _ in FIELD_REGISTERS if register.scale != 1]
    assert [field for field, _ in scaled] == [
        "rate_setpoint_ml_per_h",
        "measured_rate_ml_per_h",
        "vtbi_ml",
        "vtbi_remaining_ml",
        "volume_infused_ml",
    ]
    for field, register in scaled:
        value = getattr(status, field)
        assert isinstance(value, Decimal), field
        at = _offset(register)
        with localcontext(Context(prec=60)):
            expected = Decimal((words[at] << 16) | words[at + 1]) * register.scale
        assert value == expected, field
        assert value.as_tuple() == expected.as_tuple(), field


def test_encode_status_truncates_finer_values_toward_zero() -> None:
    fine = dataclasses.replace(
        EXAMPLE,
        rate_setpoint_ml_per_h=Decimal("12.509"),
        volume_infused_ml=Decimal("12.4809"),
    )
    decoded = decode_status(encode_status(fine))
    assert decoded.rate_setpoint_ml_per_h == Decimal("12.50")
    assert decoded.volume_infused_ml == Decimal("12.480")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("rate_setpoint_ml_per_h", Decimal("-0.01")),
        ("measured_rate_ml_per_h", Decimal("42949672.96")),
        ("vtbi_ml", Decimal("NaN")),
        ("heartbeat_echo", U16_MAX + 1),
        ("watchdog_timeout_s", -1),
        ("uptime_s", U32_MAX + 1),
        ("command_counter", 1.5),
        ("state", "infusing-ish"),
        ("last_command", 7),
    ],
)
def test_encode_status_refuses_unrepresentable_fields_with_encode_error(
    field: str, value: Any
) -> None:
    with pytest.raises(EncodeError):
        encode_status(dataclasses.replace(EXAMPLE, **{field: value}))


def test_encode_error_names_the_register() -> None:
    with pytest.raises(EncodeError, match="MEASURED_RATE"):
        encode_status(dataclasses.replace(EXAMPLE, measured_rate_ml_per_h=Decimal(-1)))


def _with(register: Register, *words: int) -> list[int]:
    registers = encode_status(EXAMPLE)
    offset = register.address - STATUS_SPAN.address
    registers[offset : offset + len(words)] = words
    return registers


@pytest.mark.parametrize(
    ("registers", "error"),
    [
        (encode_status(EXAMPLE)[:-1], RegisterCountError),
        ([*encode_status(EXAMPLE), 0], RegisterCountError),
        ([], RegisterCountError),
        (_with(Reg.STATE, 0x10000), WordRangeError),
        (_with(Reg.HEARTBEAT_ECHO, -1), WordRangeError),
        (_with(Reg.COMMAND_COUNTER, 10**5000), WordRangeError),
        (_with(Reg.STATE, 0), UnknownStateError),
        (_with(Reg.STATE, 5), UnknownStateError),
        (_with(Reg.ALARMS, 0x8000, 0x0000), UnknownAlarmBitError),
        (_with(Reg.ALARMS, 0x0000, 0x0400), UnknownAlarmBitError),
        (_with(Reg.LAST_COMMAND, 1), UnknownCommandError),
    ],
    ids=[
        "short", "long", "empty", "word-above-u16", "negative-word", "int-too-long-to-print",
        "state-0", "state-5",
        "alarm-bit-31", "alarm-bit-10", "unknown-command",
    ],
)  # fmt: skip
def test_bad_status_registers_raise_typed_decode_errors(
    registers: list[int], error: type[DecodeError]
) -> None:
    with pytest.raises(error) as caught:
        decode_status(registers)
    assert isinstance(caught.value, DecodeError)


def test_a_block_of_zeros_is_not_a_valid_status() -> None:
    with pytest.raises(UnknownStateError):
        decode_status([0] * STATUS_SPAN.count)


def _decode_or_error(registers: object) -> StatusBlock | ProtocolError:
    """decode_status's result, or the ProtocolError it raised; any other exception propagates."""
    try:
        return decode_status(registers)  # type: ignore[arg-type]
    except ProtocolError as exc:
        return exc


def _assert_round_trip_or_decode_error(registers: object) -> None:
    """Registers either decode to a block that encodes back to them, or raise a DecodeError."""
    outcome = _decode_or_error(registers)
    if isinstance(outcome, StatusBlock):
        assert encode_status(outcome) == registers
    else:
        assert isinstance(outcome, DecodeError)


junk = st.one_of(
    st.integers(),
    st.booleans(),
    st.floats(),
    st.none(),
    st.text(max_size=2),
)


@given(st.lists(st.integers(min_value=-(2**33), max_value=2**33), max_size=2 * STATUS_SPAN.count))
@pytest.mark.hazard("H-CL-03")
def test_invariant_7_decode_status_of_random_integer_lists_raises_only_decode_errors(
    registers: list[int],
) -> None:
    _assert_round_trip_or_decode_error(registers)


@given(st.lists(u16, min_size=STATUS_SPAN.count, max_size=STATUS_SPAN.count))
@pytest.mark.hazard("H-CL-03")
def test_invariant_7_decode_status_of_random_full_blocks_raises_only_decode_errors(
    registers: list[int],
) -> None:
    _assert_round_trip_or_decode_error(registers)


@given(st.lists(junk, min_size=STATUS_SPAN.count, max_size=STATUS_SPAN.count))
def test_decode_status_of_non_integer_words_raises_only_decode_errors(
    registers: list[object],
) -> None:
    _assert_round_trip_or_decode_error(registers)
