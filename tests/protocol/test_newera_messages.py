"""Typed NE-1000 commands and replies and their text, independent of framing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.errors import EncodeError, ProtocolError
from protocol.newera import (
    NE_ALARM_TO_PUMP_ALARM,
    Command,
    MessageValueError,
    Mnemonic,
    NeAlarm,
    NeErrorCode,
    NeStatus,
    PayloadError,
    Reply,
    UnknownCommandError,
    normalize_command_bytes,
    parse_command_text,
    parse_reply_payload,
)
from protocol.newera.constants import MAX_REPLY_PAYLOAD_LENGTH
from protocol.pump_state import PumpAlarm

# --- commands ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "text"),
    [
        (Command(Mnemonic.STATUS, address=0), "0"),
        (Command(Mnemonic.STATUS), ""),
        (Command(Mnemonic.RATE, "466.6UM", 0), "0RAT466.6UM"),
        (Command(Mnemonic.DIAMETER, "26.59", 12), "12DIA26.59"),
        (Command(Mnemonic.CLEAR_INFUSED, address=3), "3CLDINF"),
        (Command(Mnemonic.POWER_FAIL, "1"), "PF1"),
    ],
)
def test_command_text_is_address_mnemonic_argument(command: Command, text: str) -> None:
    assert command.text == text


def test_command_without_address_targets_pump_zero() -> None:
    assert Command(Mnemonic.RUN).target_address == 0
    assert Command(Mnemonic.RUN, address=7).target_address == 7


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mnemonic": Mnemonic.RUN, "address": 100},
        {"mnemonic": Mnemonic.RUN, "address": -1},
        {"mnemonic": Mnemonic.RUN, "address": True},
        {"mnemonic": Mnemonic.RATE, "argument": "466.6um"},  # the pump would upper-case it
        {"mnemonic": Mnemonic.RATE, "argument": "466.6 UM"},  # the pump would strip the space
        {"mnemonic": Mnemonic.RATE, "argument": "1\r"},
        {"mnemonic": Mnemonic.STATUS, "argument": "RUN"},  # reads back as RUN
        {"mnemonic": Mnemonic.STATUS, "argument": "5"},  # reads back as address 5
        {"mnemonic": "XYZ"},
        {"mnemonic": Mnemonic.RATE, "argument": "1" * 300},
    ],
)
def test_command_refuses_what_would_not_reach_the_pump_unchanged(kwargs: dict[str, object]) -> None:
    with pytest.raises(MessageValueError):
        Command(**kwargs)  # type: ignore[arg-type]


def test_message_value_error_is_an_encode_error() -> None:
    assert issubclass(MessageValueError, EncodeError)


def test_pump_strips_spaces_and_control_characters_and_upper_cases() -> None:
    assert normalize_command_bytes(b" 0 rat\t466.6 um\x00\x7f") == b"0RAT466.6UM"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b"0VER", Command(Mnemonic.VERSION, "", 0)),
        (b"VER", Command(Mnemonic.VERSION, "", 0)),  # missing address = 0
        (b"07VER", Command(Mnemonic.VERSION, "", 7)),  # two digits
        (b"99RUN", Command(Mnemonic.RUN, "", 99)),
        (b"", Command(Mnemonic.STATUS, "", 0)),  # empty: status query to pump 0
        (b"5", Command(Mnemonic.STATUS, "", 5)),
        (b"0 dia 26.59", Command(Mnemonic.DIAMETER, "26.59", 0)),
        (b"0CLDINF", Command(Mnemonic.CLEAR_INFUSED, "", 0)),
        (b"0CLDWDR", Command(Mnemonic.CLEAR_WITHDRAWN, "", 0)),
        (b"0DIRINF", Command(Mnemonic.DIRECTION, "INF", 0)),
        (b"0SAF0", Command(Mnemonic.SAFE_MODE, "0", 0)),
        (b"1AL0", Command(Mnemonic.ALARM, "0", 1)),
        (b"0ADR", Command(Mnemonic.ADDRESS, "", 0)),
        (b"0PUR", Command(Mnemonic.PURGE, "", 0)),
    ],
)
def test_parse_command_text_reads_as_a_pump_does(text: bytes, expected: Command) -> None:
    assert parse_command_text(text) == expected


@pytest.mark.parametrize(
    ("text", "address"),
    [(b"0FOO", 0), (b"12XYZ", 12), (b"123RUN", 12), (b"0CLD", 0), (b"0R\xe9N", 0)],
)
def test_unknown_command_keeps_the_address_so_the_pump_can_answer(
    text: bytes, address: int
) -> None:
    with pytest.raises(UnknownCommandError) as caught:
        parse_command_text(text)
    assert caught.value.address == address
    assert caught.value.raw == text


def test_every_mnemonic_constant_is_recognised() -> None:
    for mnemonic in Mnemonic:
        assert parse_command_text(f"0{mnemonic.value}".encode()).mnemonic is mnemonic


# --- replies ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "payload"),
    [
        (Reply(0, NeStatus.STOPPED), "00S"),
        (Reply(0, NeStatus.STOPPED, data="NE1000V3.928"), "00SNE1000V3.928"),
        (Reply(0, alarm=NeAlarm.RESET), "00A?R"),
        (Reply(42, NeStatus.INFUSING, error=NeErrorCode.OUT_OF_RANGE), "42I?OOR"),
        (Reply(7, NeStatus.STOPPED, error=NeErrorCode.NOT_RECOGNISED), "07S?"),
    ],
)
def test_reply_payload_is_two_digit_address_status_and_data(reply: Reply, payload: str) -> None:
    assert reply.payload == payload
    assert parse_reply_payload(payload.encode()) == reply


@pytest.mark.parametrize(
    ("alarm", "pump_alarm"),
    [
        (NeAlarm.RESET, PumpAlarm.POWER_LOSS),
        (NeAlarm.STALLED, PumpAlarm.RESERVOIR_EMPTY),
        (NeAlarm.SAFE_TIMEOUT, PumpAlarm.COMM_TIMEOUT),
        (NeAlarm.PROGRAM_ERROR, PumpAlarm.PROGRAM_ERROR),
        (NeAlarm.PHASE_OUT_OF_RANGE, PumpAlarm.PROGRAM_ERROR),
    ],
)
def test_ne_alarm_maps_onto_the_protocol_neutral_alarm(
    alarm: NeAlarm, pump_alarm: PumpAlarm
) -> None:
    reply = parse_reply_payload(f"00{alarm.value}".encode())
    assert reply.alarm is alarm
    assert reply.pump_alarm is pump_alarm
    assert alarm.pump_alarm is pump_alarm


def test_every_ne_alarm_has_a_pump_alarm() -> None:
    assert set(NE_ALARM_TO_PUMP_ALARM) == set(NeAlarm)


@given(
    st.integers(0, 99),
    st.sampled_from(NeStatus),
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.", max_size=60),
)
def test_reply_length_limit_is_that_of_the_payload_it_sends(
    address: int, status: NeStatus, data: str
) -> None:
    """The length check counts without building the payload: the same bound, to the byte."""
    fits = len(str(address).zfill(2)) + 1 + len(data) <= MAX_REPLY_PAYLOAD_LENGTH
    if fits:
        assert len(Reply(address, status, data=data).payload) <= MAX_REPLY_PAYLOAD_LENGTH
    else:
        with pytest.raises(MessageValueError, match="payload longer than"):
            Reply(address, status, data=data)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"address": 0},  # neither status nor alarm
        {"address": 0, "status": NeStatus.STOPPED, "alarm": NeAlarm.RESET},
        {"address": 0, "alarm": NeAlarm.RESET, "data": "x"},
        {"address": 0, "alarm": NeAlarm.RESET, "error": NeErrorCode.IGNORED},
        {"address": 0, "status": NeStatus.STOPPED, "error": NeErrorCode.IGNORED, "data": "x"},
        {"address": 0, "status": NeStatus.STOPPED, "data": "?OOR"},  # that is an error
        {"address": 0, "status": NeStatus.STOPPED, "data": "\x03"},
        {"address": 0, "status": NeStatus.STOPPED, "data": "x" * 41},
        {"address": 100, "status": NeStatus.STOPPED},
        {"address": 0, "status": "Q"},
    ],
)
def test_reply_refuses_inconsistent_or_unsendable_fields(kwargs: dict[str, object]) -> None:
    with pytest.raises(MessageValueError):
        Reply(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "payload",
    [b"", b"00", b"0S", b"AAS", b"00Q", b"00A?Z", b"00A?RX", b"00S?XYZ", b"00S\x03", b"00S\xff"],
)
def test_parse_reply_payload_refuses_malformed_payloads(payload: bytes) -> None:
    with pytest.raises(PayloadError):
        parse_reply_payload(payload)


def test_parse_reply_payload_error_keeps_the_address_when_readable() -> None:
    with pytest.raises(PayloadError) as caught:
        parse_reply_payload(b"05Q")
    assert caught.value.address == 5


@given(st.binary(max_size=60))
def test_text_parsers_raise_only_protocol_errors_on_any_bytes(data: bytes) -> None:
    for parse in (parse_command_text, parse_reply_payload):
        try:
            result = parse(data)
        except ProtocolError:
            continue
        assert isinstance(result, Command | Reply)
