"""docs/newera.md and protocol/newera agree: every table row, worked example and stated limit.

The simulator's part of the page (its alarm mapping, its answers in the observed exchange) is
checked by ``tests/simulator/test_newera_session_doc.py`` with the helpers of this module.
"""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pytest

from protocol.newera import (
    NE_ALARM_TO_PUMP_ALARM,
    CommandFrame,
    Framing,
    Mnemonic,
    NeAlarm,
    NeErrorCode,
    NeStatus,
    RateUnit,
    ReplyFrame,
    VolumeUnit,
    crc16_xmodem,
    decode_commands,
    decode_replies,
    encode_command,
    encode_rate,
    encode_reply,
    encode_safe_packet,
    format_dispensed,
    format_display_number,
    format_number,
    number_resolution,
)
from protocol.newera.constants import (
    ADDRESS_MAX,
    ADDRESS_MIN,
    BAUD_RATES,
    DEFAULT_BAUD_RATE,
    MAX_COMMAND_TEXT_LENGTH,
    MAX_NUMBER_DECIMALS,
    MAX_NUMBER_DIGITS,
    MAX_REPLY_PAYLOAD_LENGTH,
    RATE_UNIT_ML_PER_H,
    SAFE_LENGTH_OVERHEAD,
    SAFE_PACKET_GAP_S,
    SAFE_TIMEOUT_MAX_S,
    VOLUME_UNIT_DIAMETER_THRESHOLD_MM,
    VOLUME_UNIT_ML,
)

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "newera.md"
#: How the command table writes the empty mnemonic (the status query).
EMPTY_MNEMONIC = "(empty)"
#: The header of the observed-exchange table (section 9).
EXCHANGE_HEADER = ("Step", "Host sends", "Command", "Pump answers", "Reply")
#: Marks a reply in the observed exchange that is the simulator's, not a capture.
SIMULATED_MARK = " (sim)"

Table = tuple[tuple[str, ...], list[tuple[str, ...]]]


def doc_text() -> str:
    return DOC.read_text(encoding="utf-8")


def doc_prose() -> str:
    """The page with every run of whitespace (line breaks too) made one space."""
    return " ".join(doc_text().split())


def _tables(text: str) -> list[Table]:
    """Every markdown table in ``text`` (indented ones too) as (header cells, body rows)."""
    tables: list[Table] = []
    block: list[tuple[str, ...]] = []
    for line in [*text.splitlines(), ""]:
        stripped = line.strip()
        if stripped.startswith("|"):
            block.append(tuple(cell.strip() for cell in stripped.strip("|").split("|")))
        elif block:
            header, _separator, *rows = block
            tables.append((header, rows))
            block = []
    return tables


def doc_rows(header: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Body rows of every table of the page whose header is exactly ``header``."""
    rows = [row for head, body in _tables(doc_text()) if head == header for row in body]
    assert rows, f"no table with header {header} in {DOC}"
    return rows


def code(cell: str) -> str:
    """A cell's text without its backticks."""
    return cell.replace("`", "")


def hex_bytes(cell: str) -> bytes:
    return bytes.fromhex(cell)


def exchange_rows() -> list[tuple[bytes, str, bytes, str]]:
    """Section 9: (host bytes, command text, pump bytes, reply payload) per step."""
    return [
        (hex_bytes(host), command, hex_bytes(pump), reply.removesuffix(SIMULATED_MARK))
        for _step, host, command, pump, reply in doc_rows(EXCHANGE_HEADER)
    ]


# --- tables ----------------------------------------------------------------------------------


def test_command_table_lists_exactly_the_mnemonics_of_the_code() -> None:
    rows = doc_rows(("Mnemonic", "Argument", "Reply data", "Driver", "Simulator"))
    listed = ["" if row[0] == EMPTY_MNEMONIC else code(row[0]) for row in rows]
    assert len(listed) == len(set(listed)), f"a mnemonic is listed twice: {listed}"
    assert set(listed) == {mnemonic.value for mnemonic in Mnemonic}


def test_status_table_matches_the_status_characters() -> None:
    rows = doc_rows(("Character", "Status", "Meaning"))
    assert {code(row[0]): row[1] for row in rows} == {s.value: s.name for s in NeStatus}
    assert len(rows) == len(NeStatus)


def test_alarm_table_matches_the_alarms_and_their_neutral_names() -> None:
    rows = doc_rows(("Alarm", "Meaning", "Reported as"))
    assert {code(row[0]): row[2] for row in rows} == {
        alarm.value: NE_ALARM_TO_PUMP_ALARM[alarm].name for alarm in NeAlarm
    }
    assert len(rows) == len(NeAlarm)


def test_error_table_matches_the_error_codes() -> None:
    rows = doc_rows(("Error", "Meaning"))
    assert sorted(code(row[0]) for row in rows) == sorted(e.value for e in NeErrorCode)


def test_rate_unit_table_matches_the_units_and_their_factors() -> None:
    rows = doc_rows(("Unit", "Meaning", "In mL/h"))
    assert {RateUnit(code(row[0])): Decimal(row[2]) for row in rows} == dict(RATE_UNIT_ML_PER_H)
    assert len(rows) == len(RateUnit)


def test_volume_unit_table_matches_the_units_and_their_factors() -> None:
    rows = doc_rows(("Unit", "Meaning", "In mL"))
    assert {VolumeUnit(code(row[0])): Decimal(row[2]) for row in rows} == dict(VOLUME_UNIT_ML)
    assert len(rows) == len(VolumeUnit)


def test_number_examples_are_what_the_codec_writes() -> None:
    for value, sent, shown, step in doc_rows(("Value", "Host sends", "Pump shows", "Step")):
        number = Decimal(value)
        assert format_number(number) == code(sent), value
        assert format_display_number(number) == code(shown), value
        assert number_resolution(number) == Decimal(step), value


def test_rate_examples_are_what_encode_rate_sends() -> None:
    header = ("Asked (mL/h)", "`RAT` argument", "Pump runs at (mL/h)", "Step (mL/h)")
    for asked, argument, runs_at, step in doc_rows(header):
        encoded = encode_rate(Decimal(asked))
        assert encoded.argument == code(argument), asked
        assert encoded.rate_ml_per_h == Decimal(runs_at), asked
        assert encoded.resolution_ml_per_h == Decimal(step), asked


def test_dis_examples_are_what_a_pump_shows_and_their_steps() -> None:
    for infused, unit_name, data, step in doc_rows(
        ("Infused (mL)", "Unit", "`DIS` data", "Step (mL)")
    ):
        unit = VolumeUnit(unit_name)
        infused_ml = Decimal(infused)
        assert format_dispensed(infused_ml, 0, unit) == code(data), infused
        assert number_resolution(infused_ml / unit.ml) * unit.ml == Decimal(step), infused


# --- worked examples -------------------------------------------------------------------------


def test_crc_examples_match_the_checksum_and_the_safe_packet() -> None:
    examples = re.findall(
        r"^(\S+)\s+crc 0x([0-9A-F]{4})\s+packet ((?:[0-9A-F]{2} ?)+)$", doc_text(), re.MULTILINE
    )
    assert len(examples) >= 2, "no worked CRC examples in section 3"
    assert ("SAF0", "5543", "02 08 53 41 46 30 55 43 03") in examples
    for text, crc, packet in examples:
        data = text.encode("ascii")
        assert crc16_xmodem(data) == int(crc, 16), text
        assert encode_safe_packet(data) == hex_bytes(packet), text


def test_crc_check_value_is_the_catalogue_one() -> None:
    match = re.search(r"the nine bytes `123456789` give 0x([0-9A-F]{4})", doc_prose())
    assert match
    assert crc16_xmodem(b"123456789") == int(match.group(1), 16)


def test_basic_reply_example_decodes_to_its_payload() -> None:
    match = re.search(r'^((?:[0-9A-F]{2} )+)\s+STX "([^"]+)" ETX$', doc_text(), re.MULTILINE)
    assert match, "no basic reply example in section 2"
    wire = hex_bytes(match.group(1))
    _, items = decode_replies(wire)
    assert len(items) == 1
    item = items[0]
    assert isinstance(item, ReplyFrame)
    assert item.framing is Framing.BASIC
    assert item.reply.payload == match.group(2)


def test_observed_exchange_host_bytes_decode_and_encode_as_the_doc_says() -> None:
    for host, command_text, _pump, _reply in exchange_rows():
        consumed, items = decode_commands(host)
        assert consumed == len(host)
        assert len(items) == 1
        item = items[0]
        assert isinstance(item, CommandFrame), item
        assert item.command.text == command_text
        assert encode_command(item.command, item.framing) == host


def test_observed_exchange_pump_bytes_decode_and_encode_as_the_doc_says() -> None:
    for _host, _command, pump, payload in exchange_rows():
        consumed, items = decode_replies(pump)
        assert consumed == len(pump)
        assert len(items) == 1
        item = items[0]
        assert isinstance(item, ReplyFrame), item
        assert item.reply.payload == payload
        assert encode_reply(item.reply, item.framing) == pump


# --- stated limits ---------------------------------------------------------------------------

_WORDS = {3: "three", 4: "four"}


def _baud_list() -> str:
    *rest, last = (str(rate) for rate in BAUD_RATES)
    return f"{', '.join(rest)} or {last} baud"


@pytest.mark.parametrize(
    "phrase",
    [
        _baud_list(),
        f"it leaves the factory at {DEFAULT_BAUD_RATE} baud",
        f"Each has an address from {ADDRESS_MIN} to {ADDRESS_MAX}",
        f"`SAF<n>` with `n` from 1 to {SAFE_TIMEOUT_MAX_S}",
        f"A pause of {SAFE_PACKET_GAP_S} s or more inside a packet",
        f"to at most {MAX_REPLY_PAYLOAD_LENGTH} characters",
        f"length byte is at most {MAX_REPLY_PAYLOAD_LENGTH + SAFE_LENGTH_OVERHEAD} "
        f"(0x{MAX_REPLY_PAYLOAD_LENGTH + SAFE_LENGTH_OVERHEAD:02X})",
        f"A command's text is at most {MAX_COMMAND_TEXT_LENGTH} characters",
        f"so `len(data) + {SAFE_LENGTH_OVERHEAD}`",
        f"at most {_WORDS[MAX_NUMBER_DIGITS]} digits and one decimal point, with at most "
        f"{_WORDS[MAX_NUMBER_DECIMALS]} digits after the point",
        f"µL for a diameter of {VOLUME_UNIT_DIAMETER_THRESHOLD_MM} mm or less, mL above",
    ],
)
def test_prose_states_the_limits_of_the_code(phrase: str) -> None:
    assert phrase in doc_prose()


def test_reply_length_limit_keeps_safe_length_bytes_below_the_digits() -> None:
    # The claim of section 3 that makes the framings distinguishable.
    largest_safe_reply_length = MAX_REPLY_PAYLOAD_LENGTH + SAFE_LENGTH_OVERHEAD
    assert largest_safe_reply_length < ord("0")


# --- citations of the page -------------------------------------------------------------------

_CITATION = re.compile(r"docs/newera\.md,? (?:§ ?|section )(\d+)")
_INNER_REFERENCE = re.compile(r"\bsections? (\d+)(?!\d|\.\d)")
_CITING_FILES = ("protocol", "drivers", "simulator", "gateway", "tests", "docs")


def _section_numbers() -> set[int]:
    return {int(n) for n in re.findall(r"^## (\d+)\. ", doc_text(), re.MULTILINE)}


def test_sections_are_numbered_one_to_n() -> None:
    numbers = sorted(_section_numbers())
    assert numbers == list(range(1, len(numbers) + 1))


def test_references_inside_the_page_name_existing_sections() -> None:
    sections = _section_numbers()
    # Manual citations ("section 10.2") carry a dot and are not ours.
    cited = {int(n) for n in _INNER_REFERENCE.findall(doc_text())}
    assert cited, "the page refers to none of its sections"
    assert cited <= sections, f"references to missing sections: {sorted(cited - sections)}"


def test_citations_of_the_page_in_the_code_name_existing_sections() -> None:
    sections = _section_numbers()
    bad: list[str] = []
    for top in _CITING_FILES:
        for path in sorted((ROOT / top).rglob("*")):
            if path.suffix not in (".py", ".md") or "__pycache__" in path.parts:
                continue
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                for cited in _CITATION.findall(line):
                    if int(cited) not in sections:
                        bad.append(f"{path.relative_to(ROOT)}:{number}: section {cited}")
    assert not bad, "citations of docs/newera.md sections that do not exist:\n" + "\n".join(bad)
