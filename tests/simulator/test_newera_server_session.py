"""The NE-1000 session without a transport: bytes in, model calls, bytes out."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.clock import ManualClock
from protocol.newera import (
    Framing,
    NeAlarm,
    NeErrorCode,
    NeStatus,
    Reply,
    ReplyFrame,
    decode_replies,
    encode_reply,
    encode_safe_packet,
)
from protocol.pump_state import PumpAlarm, PumpState
from simulator.model import PumpModel
from simulator.newera_session import NE_ALARM_FOR, NeweraSession

pytestmark = pytest.mark.timeout(60)


def make_session(**kw: object) -> tuple[NeweraSession, PumpModel, ManualClock]:
    clock = ManualClock()
    model = PumpModel(clock, max_rate_ml_per_h=100.0)
    return NeweraSession(model, **kw), model, clock  # type: ignore[arg-type]


def replies(data: bytes) -> list[ReplyFrame]:
    consumed, items = decode_replies(data)
    assert consumed == len(data)
    assert all(isinstance(item, ReplyFrame) for item in items), items
    return [item for item in items if isinstance(item, ReplyFrame)]


def test_several_commands_in_one_chunk_are_answered_in_order() -> None:
    session, model, _ = make_session()
    out = replies(session.exchange(b"0RAT10MH\r0RUN\r0RAT\r0STP\r0STP\r"))
    assert [(f.reply.status, f.reply.data) for f in out] == [
        (NeStatus.STOPPED, ""),
        (NeStatus.INFUSING, ""),
        (NeStatus.INFUSING, "10.00MH"),
        (NeStatus.PAUSED, ""),
        (NeStatus.STOPPED, ""),
    ]
    assert model.snapshot().state is PumpState.STOPPED


def test_a_command_split_anywhere_is_answered_once_complete() -> None:
    session, _, _ = make_session()
    packet = encode_safe_packet(b"0VER")
    for cut in range(1, len(packet)):
        assert session.exchange(packet[:cut]) == b""
        (frame,) = replies(session.exchange(packet[cut:]))
        assert frame.reply.data == "NE1000V3.928"


def test_pending_alarms_are_reported_oldest_first_one_per_reply() -> None:
    session, model, _clock = make_session()
    model.set_rate(10.0)
    model.start()
    model.power_loss()
    model.inject(PumpAlarm.PROGRAM_ERROR)
    assert session.pending_alarms == (NeAlarm.RESET, NeAlarm.PROGRAM_ERROR)
    alarms = [replies(session.exchange(b"0\r"))[0].reply.alarm for _ in range(3)]
    assert alarms == [NeAlarm.RESET, NeAlarm.PROGRAM_ERROR, None]
    assert session.pending_alarms == ()


def test_alarms_without_an_ne_code_are_not_reported() -> None:
    session, model, _ = make_session()
    model.inject(PumpAlarm.LOW_BATTERY)
    (frame,) = replies(session.exchange(b"0\r"))
    assert frame.reply.alarm is None
    assert set(NE_ALARM_FOR) == {
        PumpAlarm.POWER_LOSS,
        PumpAlarm.COMM_TIMEOUT,
        PumpAlarm.RESERVOIR_EMPTY,
        PumpAlarm.OCCLUSION,
        PumpAlarm.AIR_IN_LINE,
        PumpAlarm.DOOR_OPEN,
        PumpAlarm.PROGRAM_ERROR,
    }


def test_poll_sends_alarm_packets_only_in_safe_mode_and_only_once() -> None:
    session, model, clock = make_session()
    model.power_loss()
    assert session.poll() == []  # basic mode: reported with the next reply only
    session.exchange(encode_safe_packet(b"0SAF5"))  # carries A?R, now in safe mode
    clock.advance(6)
    packets = session.poll()
    assert packets == [encode_reply(Reply(0, alarm=NeAlarm.SAFE_TIMEOUT), Framing.SAFE)]
    assert session.poll() == []
    assert session.pending_alarms == (NeAlarm.SAFE_TIMEOUT,)


def test_an_alarm_occurring_just_before_a_command_goes_out_first_in_safe_mode() -> None:
    session, _model, clock = make_session()
    session.exchange(encode_safe_packet(b"0SAF5"))
    clock.advance(6)  # expired; the transport has not polled yet
    (item,) = session.feed(encode_safe_packet(b"0"))
    output = session.answer(item)
    assert len(output.unsolicited) == 1
    assert output.reply is not None
    (frame,) = replies(output.reply)
    assert frame.reply.alarm is NeAlarm.SAFE_TIMEOUT


def test_discard_pending_drops_a_half_packet() -> None:
    session, _, _ = make_session()
    packet = encode_safe_packet(b"0VER")
    session.exchange(packet[:3])
    assert session.pending_is_safe_packet()
    assert session.discard_pending() == packet[:3]
    assert not session.pending_is_safe_packet()
    # The rest alone is junk without CR: nothing; a new packet cuts it off.
    assert session.exchange(packet[3:]) == b""
    (frame,) = replies(session.exchange(encode_safe_packet(b"0")))
    assert frame.reply.data == ""


def test_an_unknown_command_does_not_carry_a_pending_alarm() -> None:
    session, model, _ = make_session()
    model.power_loss()
    (frame,) = replies(session.exchange(b"0FOO\r"))
    assert frame.reply.error is NeErrorCode.NOT_RECOGNISED
    (frame,) = replies(session.exchange(b"0\r"))
    assert frame.reply.alarm is NeAlarm.RESET


def test_address_is_checked() -> None:
    with pytest.raises(ValueError, match="address"):
        make_session(address=-1)
    session, _, _ = make_session(address=42)
    assert session.exchange(b"0VER\r") == b""
    assert session.exchange(b"VER\r") == b""  # no address digits: pump 0
    (frame,) = replies(session.exchange(b"42VER\r"))
    assert frame.reply.address == 42
    assert session.exchange(b"42FOO\r") != b""
    assert session.exchange(b"41FOO\r") == b""


@given(st.binary(max_size=300))
def test_any_bytes_get_decodable_answers_and_never_raise(data: bytes) -> None:
    session, model, _ = make_session()
    out = session.exchange(data)
    replies(out)
    assert model.snapshot().rate_setpoint_ml_per_h <= 100.0


@given(
    st.lists(
        st.sampled_from(
            [
                "",
                "RUN",
                "STP",
                "RAT5MH",
                "RAT",
                "DIS",
                "VOL1",
                "SAF3",
                "SAF0",
                "CLDINF",
                "DIA10",
                "VOLUL",
                "RAT999MH",
                "PUR",
            ]
        ),
        max_size=30,
    ),
    st.lists(st.floats(min_value=0, max_value=5000), max_size=30),
)
def test_random_command_sequences_keep_the_protocol_invariants(
    mnemonics: list[str], advances: list[float]
) -> None:
    session, model, clock = make_session()
    for index, mnemonic in enumerate(mnemonics):
        if index < len(advances):
            clock.advance(advances[index])
        framing = Framing.SAFE if session.safe_mode else Framing.BASIC
        text = ("0" + mnemonic).encode()
        data = encode_safe_packet(text) if framing is Framing.SAFE else text + b"\r"
        frames = replies(session.exchange(data))
        assert frames, mnemonic
        reply = frames[-1]
        assert reply.framing is (Framing.SAFE if session.safe_mode else Framing.BASIC)
        if reply.reply.alarm is None:
            state = model.snapshot().state
            expected = {
                PumpState.INFUSING: NeStatus.INFUSING,
                PumpState.PAUSED: NeStatus.PAUSED,
            }.get(state, NeStatus.STOPPED)
            assert reply.reply.status is expected
