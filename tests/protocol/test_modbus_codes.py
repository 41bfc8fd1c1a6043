"""Alarm bits, state values and command codes encode and decode both ways, and refuse unknowns."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.errors import DecodeError
from protocol.modbus import (
    ALARM_BITS,
    NO_COMMAND,
    STATE_VALUES,
    CommandCode,
    RegisterEncodeError,
    UnknownAlarmBitError,
    UnknownCommandError,
    UnknownStateError,
    decode_alarms,
    decode_last_command,
    decode_state,
    encode_alarms,
    encode_last_command,
    encode_state,
)
from protocol.modbus.words import U32_MAX
from protocol.pump_state import PumpAlarm, PumpState

UNASSIGNED_ALARM_BITS = sorted(set(range(32)) - set(ALARM_BITS.values()))


@given(st.frozensets(st.sampled_from(PumpAlarm)))
def test_alarm_sets_round_trip_through_the_bit_field(alarms: frozenset[PumpAlarm]) -> None:
    bits = encode_alarms(alarms)
    assert 0 <= bits <= U32_MAX
    assert bin(bits).count("1") == len(alarms)
    assert decode_alarms(bits) == alarms


@pytest.mark.parametrize("alarm", list(PumpAlarm))
def test_each_alarm_sets_exactly_its_own_bit(alarm: PumpAlarm) -> None:
    assert encode_alarms([alarm]) == 1 << ALARM_BITS[alarm]
    assert decode_alarms(1 << ALARM_BITS[alarm]) == frozenset({alarm})


@pytest.mark.parametrize("bit", UNASSIGNED_ALARM_BITS)
def test_an_unassigned_alarm_bit_is_a_decode_error(bit: int) -> None:
    with pytest.raises(UnknownAlarmBitError, match=f"0x{1 << bit:08X}"):
        decode_alarms((1 << bit) | 1)


@pytest.mark.parametrize("bad", [-1, U32_MAX + 1, True, "1"])
def test_alarm_field_outside_u32_is_a_decode_error(bad: object) -> None:
    with pytest.raises(UnknownAlarmBitError):
        decode_alarms(bad)  # type: ignore[arg-type]


def test_encoding_something_that_is_not_an_alarm_is_an_encode_error() -> None:
    with pytest.raises(RegisterEncodeError):
        encode_alarms(["occlusion"])  # type: ignore[list-item]


@pytest.mark.parametrize("state", list(PumpState))
def test_states_round_trip(state: PumpState) -> None:
    assert decode_state(encode_state(state)) is state
    assert encode_state(state) == STATE_VALUES[state]


@pytest.mark.parametrize("value", [0, 5, 0xFFFF, -1, None, True, 2.0, "2"])
def test_unknown_state_value_is_a_decode_error(value: object) -> None:
    with pytest.raises(UnknownStateError):
        decode_state(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("command", [*CommandCode, None])
def test_last_command_round_trips_with_zero_meaning_none(command: CommandCode | None) -> None:
    value = encode_last_command(command)
    assert decode_last_command(value) == command
    if command is None:
        assert value == NO_COMMAND == 0


@pytest.mark.parametrize("value", [1, 2, 0x5354, 0xFFFF, -1, True])
def test_unknown_last_command_is_a_decode_error(value: int) -> None:
    with pytest.raises(UnknownCommandError) as caught:
        decode_last_command(value)
    assert isinstance(caught.value, DecodeError)


def test_command_codes_are_their_ascii_mnemonics() -> None:
    mnemonics = {code.name: int(code).to_bytes(2, "big").decode("ascii") for code in CommandCode}
    assert mnemonics == {"START": "RN", "STOP": "SP", "CLEAR_ALARMS": "CA", "CLEAR_TOTALS": "CT"}
