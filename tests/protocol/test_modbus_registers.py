"""Sanity of the one register table: layout, naming, blocks, alarm and state coverage."""

from __future__ import annotations

from itertools import pairwise

import pytest

from protocol.modbus import (
    ALARM_BITS,
    MAP_VERSION,
    MAX_READ_COUNT,
    REGISTER_BY_NAME,
    REGISTERS,
    STATE_VALUES,
    STATUS_SPAN,
    Access,
    BlockId,
    CommandCode,
    Reg,
    Register,
    WireType,
    block_registers,
    block_span,
    register_at,
)
from protocol.modbus.words import U16_MAX, U32_MAX
from protocol.pump_state import PumpAlarm, PumpState


def test_no_two_registers_share_an_address() -> None:
    occupied: dict[int, str] = {}
    for register in REGISTERS:
        for address in register.addresses:
            assert address not in occupied, f"{register.name} overlaps {occupied[address]}"
            occupied[address] = register.name
    assert len(occupied) == sum(register.words for register in REGISTERS)


def test_table_is_sorted_by_address_and_names_are_unique() -> None:
    addresses = [register.address for register in REGISTERS]
    assert addresses == sorted(addresses)
    assert len(REGISTER_BY_NAME) == len(REGISTERS)


def test_every_reg_attribute_is_a_table_row_under_its_own_name() -> None:
    attributes = {name: value for name, value in vars(Reg).items() if isinstance(value, Register)}
    assert {register.name for register in REGISTERS} == set(attributes)
    for name, register in attributes.items():
        assert register.name == name
        assert REGISTER_BY_NAME[name] is register


@pytest.mark.parametrize("block", list(BlockId))
def test_each_block_is_contiguous(block: BlockId) -> None:
    registers = block_registers(block)
    assert registers, f"block {block} is empty"
    for before, after in pairwise(registers):
        assert before.end == after.address, f"gap or overlap between {before.name}, {after.name}"
    span = block_span(block)
    assert span.count == sum(register.words for register in registers)


def test_blocks_do_not_interleave() -> None:
    spans = sorted((block_span(block) for block in BlockId), key=lambda span: span.address)
    for before, after in pairwise(spans):
        assert before.end <= after.address


def test_status_block_is_one_read_and_holds_only_readable_registers() -> None:
    assert STATUS_SPAN.count <= MAX_READ_COUNT
    assert all(register.access is Access.R for register in block_registers(BlockId.STATUS))


def test_identification_block_is_one_read() -> None:
    assert block_span(BlockId.IDENTIFICATION).count <= MAX_READ_COUNT


def test_map_version_is_register_zero_and_starts_at_one() -> None:
    assert MAP_VERSION == 1
    assert Reg.MAP_VERSION.address == 0
    assert Reg.MAP_VERSION.wire_type is WireType.U16


@pytest.mark.parametrize("register", REGISTERS, ids=lambda register: register.name)
def test_word_count_matches_wire_type(register: Register) -> None:
    if register.wire_type is WireType.U16:
        assert register.words == 1
    elif register.wire_type is WireType.U32:
        assert register.words == 2
        assert register.address % 2 == 0, "u32 registers start at even addresses"
    else:
        assert register.words >= 1


@pytest.mark.parametrize("register", REGISTERS, ids=lambda register: register.name)
def test_scaled_registers_state_their_unit_and_write_ranges_fit_the_type(
    register: Register,
) -> None:
    if register.scale != 1:
        assert register.unit, f"{register.name} is scaled but names no unit"
    type_maximum = U32_MAX if register.wire_type is WireType.U32 else U16_MAX
    assert 0 <= register.minimum <= register.write_maximum <= type_maximum


def test_only_setpoints_command_and_watchdog_are_writable() -> None:
    writable = {register.name for register in REGISTERS if register.access.writable}
    assert writable == {"RATE_SETPOINT", "VTBI", "COMMAND", "WATCHDOG_TIMEOUT", "HEARTBEAT"}
    assert Reg.COMMAND.access is Access.W
    assert not Reg.COMMAND.access.readable


def test_command_range_spans_every_code() -> None:
    assert Reg.COMMAND.minimum == min(CommandCode)
    assert Reg.COMMAND.write_maximum == max(CommandCode)


def test_register_at_finds_every_word_and_nothing_between_blocks() -> None:
    for register in REGISTERS:
        for address in register.addresses:
            assert register_at(address) is register
    mapped = {address for register in REGISTERS for address in register.addresses}
    for address in range(0, STATUS_SPAN.end + 10):
        if address not in mapped:
            assert register_at(address) is None


def test_every_pump_alarm_has_its_own_bit_in_the_32_bit_alarm_field() -> None:
    assert set(ALARM_BITS) == set(PumpAlarm)
    bits = list(ALARM_BITS.values())
    assert len(set(bits)) == len(bits)
    assert all(0 <= bit < 32 for bit in bits)
    assert Reg.ALARMS.wire_type is WireType.U32


def test_every_pump_state_has_its_own_nonzero_value() -> None:
    assert set(STATE_VALUES) == set(PumpState)
    values = list(STATE_VALUES.values())
    assert len(set(values)) == len(values)
    assert 0 not in values
    assert all(0 < value <= U16_MAX for value in values)


def test_command_codes_are_distinct_and_never_small_integers() -> None:
    codes = [int(code) for code in CommandCode]
    assert len(set(codes)) == len(codes)
    assert all(0x0100 <= code <= U16_MAX for code in codes)
