"""docs/modbus-map.md and protocol/modbus agree: every table row, code, bit and example byte."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pytest

from protocol.modbus import (
    ALARM_BITS,
    MAP_VERSION,
    MAX_READ_COUNT,
    MAX_WRITE_COUNT,
    REGISTERS,
    STATE_VALUES,
    STATUS_SPAN,
    WATCHDOG_TIMEOUT_MAX_S,
    BlockId,
    CommandCode,
    ModbusException,
    Reg,
    Register,
    StatusBlock,
    block_registers,
    block_span,
    decode_status,
    encode_status,
)
from protocol.pump_state import STOPPING_ALARMS, PumpAlarm, PumpState

DOC = Path(__file__).resolve().parents[2] / "docs" / "modbus-map.md"
REGISTER_HEADER = (
    "Address", "Name", "Words", "Access", "Type", "Unit/scale", "Write range", "Description",
)  # fmt: skip

# The example poll of section 10, as the code would build it.
EXAMPLE = StatusBlock(
    state=PumpState.INFUSING,
    alarms=frozenset({PumpAlarm.LOW_BATTERY}),
    rate_setpoint_ml_per_h=Decimal("12.50"),
    measured_rate_ml_per_h=Decimal("12.48"),
    vtbi_ml=Decimal("100.000"),
    vtbi_remaining_ml=Decimal("87.520"),
    volume_infused_ml=Decimal("12.480"),
    watchdog_timeout_s=10,
    uptime_s=90061,
    heartbeat_echo=42,
    last_command=CommandCode.START,
    command_counter=3,
)


def _tables(text: str) -> list[tuple[tuple[str, ...], list[tuple[str, ...]]]]:
    """Every markdown table in ``text`` as (header cells, body rows of cells)."""
    tables: list[tuple[tuple[str, ...], list[tuple[str, ...]]]] = []
    block: list[tuple[str, ...]] = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            block.append(tuple(cell.strip() for cell in line.strip().strip("|").split("|")))
        elif block:
            header, _separator, *rows = block
            tables.append((header, rows))
            block = []
    return tables


def _rows(header_start: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Body rows of every table whose header starts with ``header_start``."""
    rows = [
        row
        for header, body in _tables(DOC.read_text(encoding="utf-8"))
        if header[: len(header_start)] == header_start
        for row in body
    ]
    assert rows, f"no table with header {header_start} in {DOC}"
    return rows


def _unit_scale(register: Register) -> str:
    if register.unit and register.scale != 1:
        return f"{register.scale} {register.unit}"
    if register.unit:
        return f"1 {register.unit}"
    return "-"


def _write_range(register: Register) -> str:
    if not register.access.writable:
        return "-"
    if register is Reg.COMMAND:
        return "command code"
    if register is Reg.RATE_SETPOINT:
        return f"{register.minimum} .. MAX_RATE"
    return f"{register.minimum} .. {register.write_maximum}"


def _code_row(register: Register) -> tuple[str, ...]:
    return (
        str(register.address),
        register.name,
        str(register.words),
        register.access.value,
        register.wire_type.value,
        _unit_scale(register),
        _write_range(register),
        register.description,
    )


def _hex_bytes(label: str) -> bytes:
    match = re.search(rf"^{label}\s+((?:[0-9A-F]{{2}} ?)+)$", DOC.read_text(), re.MULTILINE)
    assert match, f"no '{label}' line in the worked example"
    return bytes.fromhex(match.group(1))


def _crc16_modbus(data: bytes) -> int:
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def test_crc_helper_matches_the_known_modbus_answer() -> None:
    assert _crc16_modbus(bytes.fromhex("01030000000A")).to_bytes(2, "little") == b"\xc5\xcd"


def test_doc_title_states_the_map_version() -> None:
    first_line = DOC.read_text(encoding="utf-8").splitlines()[0]
    assert first_line == f"# Modbus infusion-pump register map, version {MAP_VERSION}"


def test_register_tables_list_exactly_the_code_table_in_order() -> None:
    doc_rows = _rows(REGISTER_HEADER)
    code_rows = [_code_row(register) for register in REGISTERS]
    assert doc_rows == code_rows


@pytest.mark.parametrize("block", list(BlockId))
def test_block_headings_state_the_block_address_range(block: BlockId) -> None:
    span = block_span(block)
    heading = re.search(
        rf"^### {block.value.capitalize()} \(address(?:es)? (\d+)(?:-(\d+))?",
        DOC.read_text(encoding="utf-8"),
        re.MULTILINE,
    )
    assert heading, f"no heading for block {block.value}"
    first, last = int(heading.group(1)), int(heading.group(2) or heading.group(1))
    assert (first, last) == (span.address, span.end - 1)


def test_prose_states_the_poll_size_and_watchdog_limit_of_the_code() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert f"one read of {STATUS_SPAN.count} registers is one poll" in text
    assert f"A write outside 0 .. {WATCHDOG_TIMEOUT_MAX_S} is refused with exception 03" in text


def test_state_table_matches_state_values() -> None:
    doc = {row[1]: int(row[0]) for row in _rows(("Value", "State"))}
    assert doc == {state.name: value for state, value in STATE_VALUES.items()}


def test_alarm_table_matches_alarm_bits_masks_and_stopping_kind() -> None:
    rows = _rows(("Bit", "Mask", "Alarm", "Kind"))
    assert {row[2] for row in rows} == {alarm.name for alarm in PumpAlarm}
    for bit, mask, name, kind, *_ in rows:
        alarm = PumpAlarm[name]
        assert int(bit) == ALARM_BITS[alarm]
        assert int(mask, 16) == 1 << ALARM_BITS[alarm]
        assert kind == ("stopping" if alarm in STOPPING_ALARMS else "advisory")


def test_command_table_matches_command_codes_and_their_ascii() -> None:
    rows = _rows(("Code", "ASCII", "Command"))
    assert {row[2] for row in rows} == {code.name for code in CommandCode}
    for code, letters, name, *_ in rows:
        assert int(code, 16) == CommandCode[name]
        assert int(code, 16).to_bytes(2, "big").decode("ascii") == letters


def test_exception_table_matches_exception_codes_and_request_limits() -> None:
    rows = _rows(("Code", "Name", "When"))
    assert {(int(code, 16), name) for code, name, _ in rows} == {
        (int(code), code.name) for code in ModbusException
    }
    value_row = next(row for row in rows if row[1] == "ILLEGAL_DATA_VALUE")
    assert f"1 .. {MAX_READ_COUNT} (read)" in value_row[2]
    assert f"1 .. {MAX_WRITE_COUNT} (write)" in value_row[2]


def test_worked_example_table_shows_the_encoded_words_of_each_register() -> None:
    registers = encode_status(EXAMPLE)
    rows = _rows(("Address", "Name", "Words", "Value"))
    assert [row[1] for row in rows] == [r.name for r in block_registers(BlockId.STATUS)]
    for address, name, words, _value in rows:
        register = Reg.__dict__[name]
        assert int(address) == register.address
        offset = register.address - STATUS_SPAN.address
        expected = registers[offset : offset + register.words]
        assert [int(word, 16) for word in words.split()] == expected


def test_worked_example_frames_carry_the_example_registers() -> None:
    registers = encode_status(EXAMPLE)
    pdu_request = bytes([0x03]) + STATUS_SPAN.address.to_bytes(2, "big")
    pdu_request += STATUS_SPAN.count.to_bytes(2, "big")
    pdu_response = bytes([0x03, 2 * len(registers)])
    pdu_response += b"".join(word.to_bytes(2, "big") for word in registers)

    tcp_request, tcp_response = _hex_bytes("TCP request"), _hex_bytes("TCP response")
    assert tcp_request[7:] == pdu_request
    assert tcp_response[7:] == pdu_response
    for frame in (tcp_request, tcp_response):
        assert frame[2:4] == b"\x00\x00"  # protocol id
        assert int.from_bytes(frame[4:6], "big") == len(frame) - 6  # MBAP length

    rtu_request, rtu_response = _hex_bytes("RTU request"), _hex_bytes("RTU response")
    for frame, pdu in ((rtu_request, pdu_request), (rtu_response, pdu_response)):
        assert frame[1:-2] == pdu
        assert frame[-2:] == _crc16_modbus(frame[:-2]).to_bytes(2, "little")

    words = [int.from_bytes(tcp_response[i : i + 2], "big") for i in range(9, len(tcp_response), 2)]
    assert decode_status(words) == EXAMPLE
