"""NE-1000 framing and the streaming decoders of both directions.

Covers the observed nesp-lib exchange, frames split at every byte boundary, garbage before and
after frames, encode→decode round trips in both framings, and random bytes into each decoder.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.errors import ChecksumError
from protocol.newera import (
    Command,
    CommandFrame,
    CommandItem,
    CommandStreamDecoder,
    FrameChecksumError,
    FrameError,
    Framing,
    MessageValueError,
    Mnemonic,
    NeAlarm,
    NeDecodeError,
    NeErrorCode,
    NeStatus,
    PayloadError,
    Reply,
    ReplyFrame,
    ReplyItem,
    ReplyStreamDecoder,
    UnknownCommandError,
    decode_commands,
    decode_replies,
    encode_command,
    encode_rate,
    encode_reply,
    encode_safe_packet,
    parse_version,
)
from protocol.newera.messages import COMMAND_ARGUMENT_CHARS, REPLY_DATA_CHARS
from protocol.pump_state import PumpAlarm

STX = b"\x02"
ETX = b"\x03"

# --- strategies -------------------------------------------------------------------------------

addresses = st.integers(0, 99)
framings = st.sampled_from(list(Framing))


@st.composite
def commands(draw: st.DrawFn) -> Command:
    """Any valid command: every mnemonic, with or without address, any keepable argument."""
    mnemonic = draw(st.sampled_from(list(Mnemonic)))
    argument = ""
    if mnemonic is not Mnemonic.STATUS:
        argument = draw(st.text(st.sampled_from(sorted(COMMAND_ARGUMENT_CHARS)), max_size=24))
    return Command(mnemonic, argument, draw(st.none() | addresses))


@st.composite
def replies(draw: st.DrawFn) -> Reply:
    """Any valid reply: status with data, status with error, or alarm."""
    address = draw(addresses)
    kind = draw(st.sampled_from(["data", "error", "alarm"]))
    if kind == "alarm":
        return Reply(address, alarm=draw(st.sampled_from(list(NeAlarm))))
    status = draw(st.sampled_from(list(NeStatus)))
    if kind == "error":
        return Reply(address, status, error=draw(st.sampled_from(list(NeErrorCode))))
    data = draw(
        st.text(st.sampled_from(sorted(REPLY_DATA_CHARS)), max_size=40).filter(
            lambda d: not d.startswith("?")
        )
    )
    return Reply(address, status, data=data)


def as_decoded(command: Command) -> Command:
    """What a pump decodes a command as: a missing address becomes 0."""
    return Command(command.mnemonic, command.argument, command.target_address)


def feed_in_chunks(
    decoder: ReplyStreamDecoder | CommandStreamDecoder, data: bytes, cuts: Sequence[int]
) -> list[object]:
    items: list[object] = []
    previous = 0
    for cut in [*sorted(cuts), len(data)]:
        items.extend(decoder.feed(data[previous:cut]))
        previous = cut
    return items


# --- the observed nesp-lib exchange (docs/newera.md §9) ---------------------------------------

OBSERVED_COMMANDS = [
    (b"\x02\x09" + b"0SAF0" + b"\x59\xad\x03", Command(Mnemonic.SAFE_MODE, "0", 0), Framing.SAFE),
    (b"0VER\r", Command(Mnemonic.VERSION, "", 0), Framing.BASIC),
    (b"0DIA26.59\r", Command(Mnemonic.DIAMETER, "26.59", 0), Framing.BASIC),
    (b"0DIRINF\r", Command(Mnemonic.DIRECTION, "INF", 0), Framing.BASIC),
    (b"0RAT466.6UM\r", Command(Mnemonic.RATE, "466.6UM", 0), Framing.BASIC),
    (b"0RUN\r", Command(Mnemonic.RUN, "", 0), Framing.BASIC),
    (b"0STP\r", Command(Mnemonic.STOP, "", 0), Framing.BASIC),
]

OBSERVED_REPLIES = [
    (b"\x0200A?R\x03", Reply(0, alarm=NeAlarm.RESET)),
    (b"\x0200S\x03", Reply(0, NeStatus.STOPPED)),
    (b"\x0200SNE1000V3.928\x03", Reply(0, NeStatus.STOPPED, data="NE1000V3.928")),
    (b"\x0200I\x03", Reply(0, NeStatus.INFUSING)),
]


@pytest.mark.parametrize(("wire", "command", "framing"), OBSERVED_COMMANDS)
def test_observed_nesp_lib_command_bytes_are_what_the_encoder_writes(
    wire: bytes, command: Command, framing: Framing
) -> None:
    assert encode_command(command, framing) == wire


@pytest.mark.parametrize(("wire", "command", "framing"), OBSERVED_COMMANDS)
def test_observed_nesp_lib_command_bytes_decode_on_the_pump_side(
    wire: bytes, command: Command, framing: Framing
) -> None:
    assert decode_commands(wire) == (len(wire), [CommandFrame(command, framing, wire)])


@pytest.mark.parametrize(("wire", "reply"), OBSERVED_REPLIES)
def test_observed_pump_reply_bytes_round_trip(wire: bytes, reply: Reply) -> None:
    assert encode_reply(reply) == wire
    assert decode_replies(wire) == (len(wire), [ReplyFrame(reply, Framing.BASIC, wire)])


def test_observed_power_on_alarm_is_a_power_loss() -> None:
    _, [frame] = decode_replies(b"\x0200A?R\x03")
    assert isinstance(frame, ReplyFrame)
    assert frame.reply.status is None
    assert frame.reply.alarm is NeAlarm.RESET
    assert frame.reply.pump_alarm is PumpAlarm.POWER_LOSS


def test_observed_version_reply_is_an_ne1000_with_firmware_3_928() -> None:
    _, [frame] = decode_replies(b"\x0200SNE1000V3.928\x03")
    assert isinstance(frame, ReplyFrame)
    version = parse_version(frame.reply.data)
    assert (version.model, version.firmware) == (1000, "3.928")


def test_observed_rate_command_is_encode_rate_of_28_ml_per_h() -> None:
    command = Command(Mnemonic.RATE, encode_rate(28).argument, 0)
    assert encode_command(command) == b"0RAT466.6UM\r"


def test_whole_observed_session_decodes_in_one_buffer_in_order() -> None:
    wire = b"".join(w for w, _, _ in OBSERVED_COMMANDS)
    consumed, items = decode_commands(wire)
    assert consumed == len(wire)
    assert [item.command for item in items if isinstance(item, CommandFrame)] == [
        c for _, c, _ in OBSERVED_COMMANDS
    ]
    assert len(items) == len(OBSERVED_COMMANDS)


# --- encoding details -------------------------------------------------------------------------


def test_safe_reply_framing_wraps_the_basic_payload() -> None:
    reply = Reply(3, NeStatus.STOPPED, data="NE1000V3.928")
    assert encode_reply(reply, Framing.SAFE) == encode_safe_packet(b"03SNE1000V3.928")


def test_safe_reply_length_byte_is_never_an_ascii_digit() -> None:
    longest = Reply(0, NeStatus.STOPPED, data="x" * 40)
    length = encode_reply(longest, Framing.SAFE)[1]
    assert not ord("0") <= length <= ord("9")


def test_safe_packet_refuses_data_longer_than_the_length_byte_allows() -> None:
    with pytest.raises(MessageValueError):
        encode_safe_packet(b"x" * 252)


# --- round trips ------------------------------------------------------------------------------


@given(commands(), framings)
def test_any_command_round_trips_through_the_pump_side_decoder(
    command: Command, framing: Framing
) -> None:
    wire = encode_command(command, framing)
    assert decode_commands(wire) == (len(wire), [CommandFrame(as_decoded(command), framing, wire)])


@given(replies(), framings)
def test_any_reply_round_trips_through_the_host_side_decoder(
    reply: Reply, framing: Framing
) -> None:
    wire = encode_reply(reply, framing)
    assert decode_replies(wire) == (len(wire), [ReplyFrame(reply, framing, wire)])


@given(st.lists(st.tuples(replies(), framings), min_size=1, max_size=6), st.data())
def test_reply_stream_cut_anywhere_decodes_like_the_whole(
    sequence: list[tuple[Reply, Framing]], data: st.DataObject
) -> None:
    wire = b"".join(encode_reply(r, f) for r, f in sequence)
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=8))
    items = feed_in_chunks(ReplyStreamDecoder(), wire, cuts)
    assert [(i.reply, i.framing) for i in items if isinstance(i, ReplyFrame)] == sequence
    assert len(items) == len(sequence)


@given(st.lists(st.tuples(commands(), framings), min_size=1, max_size=6), st.data())
def test_command_stream_cut_anywhere_decodes_like_the_whole(
    sequence: list[tuple[Command, Framing]], data: st.DataObject
) -> None:
    wire = b"".join(encode_command(c, f) for c, f in sequence)
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=8))
    decoder = CommandStreamDecoder()
    items = feed_in_chunks(decoder, wire, cuts)
    expected = [(as_decoded(c), f) for c, f in sequence]
    assert [(i.command, i.framing) for i in items if isinstance(i, CommandFrame)] == expected
    assert len(items) == len(sequence)
    assert decoder.pending == b""


# --- split at every byte boundary -------------------------------------------------------------

SPLIT_REPLIES = [w for w, _ in OBSERVED_REPLIES] + [
    encode_reply(Reply(0, NeStatus.STOPPED, data="NE1000V3.928"), Framing.SAFE),
    encode_reply(Reply(5, alarm=NeAlarm.SAFE_TIMEOUT), Framing.SAFE),
]
SPLIT_COMMANDS = [w for w, _, _ in OBSERVED_COMMANDS] + [
    encode_command(Command(Mnemonic.RATE, "466.6UM", 0), Framing.SAFE),
    encode_command(Command(Mnemonic.STATUS), Framing.SAFE),
]


@pytest.mark.parametrize("wire", SPLIT_REPLIES)
def test_reply_split_at_every_boundary_decodes_once_complete(wire: bytes) -> None:
    _, whole = decode_replies(wire)
    for cut in range(len(wire) + 1):
        decoder = ReplyStreamDecoder()
        first = decoder.feed(wire[:cut])
        second = decoder.feed(wire[cut:])
        assert first == ([] if cut < len(wire) else whole)
        assert first + second == whole
        assert decoder.pending == b""


@pytest.mark.parametrize("wire", SPLIT_COMMANDS)
def test_command_split_at_every_boundary_decodes_once_complete(wire: bytes) -> None:
    _, whole = decode_commands(wire)
    for cut in range(len(wire) + 1):
        decoder = CommandStreamDecoder()
        first = decoder.feed(wire[:cut])
        second = decoder.feed(wire[cut:])
        assert first == ([] if cut < len(wire) else whole)
        assert first + second == whole
        assert decoder.pending == b""


@pytest.mark.parametrize("wire", SPLIT_REPLIES + SPLIT_COMMANDS)
def test_frame_fed_byte_by_byte_decodes_on_its_last_byte(wire: bytes) -> None:
    decoder: ReplyStreamDecoder | CommandStreamDecoder
    decoder = ReplyStreamDecoder() if wire in SPLIT_REPLIES else CommandStreamDecoder()
    per_byte = [decoder.feed(wire[i : i + 1]) for i in range(len(wire))]
    assert all(items == [] for items in per_byte[:-1])
    assert len(per_byte[-1]) == 1


def test_need_more_bytes_is_zero_consumed_and_no_items() -> None:
    assert decode_replies(b"\x02") == (0, [])
    assert decode_replies(b"\x0200S") == (0, [])
    assert decode_replies(b"\x02\x0700S\xaa") == (0, [])
    assert decode_commands(b"0RA") == (0, [])
    assert decode_commands(b"\x02\x08SAF") == (0, [])


# --- garbage ----------------------------------------------------------------------------------

no_stx = st.binary(max_size=40).map(lambda b: b.replace(STX, b""))


@given(st.binary(max_size=60), replies(), framings)
def test_any_garbage_before_a_reply_never_hides_it(
    garbage: bytes, reply: Reply, framing: Framing
) -> None:
    wire = encode_reply(reply, framing)
    consumed, items = decode_replies(garbage + wire)
    assert consumed == len(garbage + wire)
    assert items[-1] == ReplyFrame(reply, framing, wire)
    assert all(isinstance(i, ReplyFrame | NeDecodeError) for i in items)


@given(no_stx, replies(), framings, no_stx)
def test_garbage_without_stx_around_a_reply_is_skipped_silently(
    before: bytes, reply: Reply, framing: Framing, after: bytes
) -> None:
    wire = encode_reply(reply, framing)
    assert decode_replies(before + wire + after) == (
        len(before + wire + after),
        [ReplyFrame(reply, framing, wire)],
    )


@given(st.binary(max_size=60), commands())
def test_any_garbage_before_a_safe_packet_never_hides_it(garbage: bytes, command: Command) -> None:
    wire = encode_command(command, Framing.SAFE)
    consumed, items = decode_commands(garbage + wire)
    assert consumed == len(garbage + wire)
    assert items[-1] == CommandFrame(as_decoded(command), Framing.SAFE, wire)


@given(st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(STX, b"")), commands())
def test_partial_line_before_a_safe_packet_is_dropped(garbage: bytes, command: Command) -> None:
    wire = encode_command(command, Framing.SAFE)
    assert decode_commands(garbage + wire) == (
        len(garbage + wire),
        [CommandFrame(as_decoded(command), Framing.SAFE, wire)],
    )


@given(
    st.binary(max_size=40).map(lambda b: b.replace(STX, b"") + b"\r"),
    commands(),
)
def test_garbage_lines_before_a_basic_command_are_separate_commands(
    garbage: bytes, command: Command
) -> None:
    wire = encode_command(command, Framing.BASIC)
    consumed, items = decode_commands(garbage + wire)
    assert consumed == len(garbage + wire)
    assert items[-1] == CommandFrame(as_decoded(command), Framing.BASIC, wire)
    assert len(items) == garbage.count(b"\r") + 1


@given(commands(), framings, st.binary(max_size=40))
def test_garbage_after_a_command_leaves_it_first_and_intact(
    command: Command, framing: Framing, garbage: bytes
) -> None:
    wire = encode_command(command, framing)
    _, items = decode_commands(wire + garbage)
    assert items[0] == CommandFrame(as_decoded(command), framing, wire)


def test_partial_basic_line_stays_pending_until_its_cr() -> None:
    assert decode_commands(b"0RUN\r0ST") == (
        5,
        [CommandFrame(Command(Mnemonic.RUN, "", 0), Framing.BASIC, b"0RUN\r")],
    )


def test_bogus_safe_header_swallowing_a_reply_is_given_up_for_the_reply() -> None:
    reply = b"\x0200S\x03"
    consumed, items = decode_replies(b"\x02\x2a" + reply)  # claims 42 bytes, only 5 follow
    assert consumed == 2 + len(reply)
    assert isinstance(items[0], FrameError)
    assert items[1] == ReplyFrame(Reply(0, NeStatus.STOPPED), Framing.BASIC, reply)


def test_basic_reply_cut_by_a_new_stx_is_an_error_then_the_next_reply() -> None:
    wire = b"\x0200SNE10" + b"\x0200I\x03"
    consumed, items = decode_replies(wire)
    assert consumed == len(wire)
    assert isinstance(items[0], FrameError)
    assert items[0].framing is Framing.BASIC
    assert items[0].raw == b"\x0200SNE10"
    assert isinstance(items[1], ReplyFrame)
    assert items[1].reply == Reply(0, NeStatus.INFUSING)


def test_basic_reply_without_etx_is_given_up_after_the_longest_payload() -> None:
    wire = b"\x0200S" + b"x" * 60
    consumed, items = decode_replies(wire)
    assert consumed == len(wire)  # the error, then the rest skipped as garbage
    assert len(items) == 1
    assert isinstance(items[0], FrameError)


# --- bad packets ------------------------------------------------------------------------------


def _corrupt_crc(packet: bytes) -> bytes:
    return packet[:-3] + bytes([packet[-3] ^ 0x01]) + packet[-2:]


def test_bad_crc_command_is_a_checksum_error_item_the_pump_answers_com() -> None:
    packet = _corrupt_crc(encode_command(Command(Mnemonic.RUN, "", 0), Framing.SAFE))
    consumed, [item] = decode_commands(packet)
    assert consumed == len(packet)
    assert isinstance(item, FrameChecksumError)
    assert isinstance(item, ChecksumError)
    assert isinstance(item, FrameError)  # every FrameError of a safe packet is answered ?COM
    assert item.framing is Framing.SAFE
    assert item.raw == packet


def test_bad_crc_reply_is_a_checksum_error_and_the_next_reply_still_decodes() -> None:
    good = encode_reply(Reply(0, NeStatus.STOPPED), Framing.SAFE)
    consumed, items = decode_replies(_corrupt_crc(good) + good)
    assert consumed == 2 * len(good)
    assert isinstance(items[0], FrameChecksumError)
    assert items[1] == ReplyFrame(Reply(0, NeStatus.STOPPED), Framing.SAFE, good)


def test_safe_packet_without_etx_is_a_frame_error_and_its_bytes_are_never_a_command() -> None:
    # The data holds a CR: the content of a rejected packet must never be read as a basic line.
    broken = b"\x02\x090RUN\rxx\x04"  # the length says ETX at index 9; there is 0x04
    consumed, items = decode_commands(broken)
    assert consumed == len(broken)
    assert len(items) == 1
    assert isinstance(items[0], FrameError)
    assert items[0].framing is Framing.SAFE


def test_safe_packet_with_impossible_length_is_a_frame_error() -> None:
    _, items = decode_commands(b"\x02\x03")
    assert isinstance(items[0], FrameError)
    assert items[0].framing is Framing.SAFE


def test_unknown_command_is_an_item_with_its_address_for_the_question_mark_reply() -> None:
    _, [item] = decode_commands(b"07FOO\r")
    assert isinstance(item, UnknownCommandError)
    assert item.address == 7
    assert item.framing is Framing.BASIC
    assert item.raw == b"07FOO\r"


def test_unknown_command_in_a_valid_safe_packet_is_not_a_bad_packet() -> None:
    packet = encode_safe_packet(b"0FOO")
    _, [item] = decode_commands(packet)
    assert isinstance(item, UnknownCommandError)
    assert not isinstance(item, FrameError)
    assert item.framing is Framing.SAFE


def test_malformed_reply_payload_is_a_payload_error_item() -> None:
    _, [item] = decode_replies(b"\x0200Q\x03")
    assert isinstance(item, PayloadError)
    assert item.raw == b"\x0200Q\x03"


def test_overlong_basic_line_is_a_frame_error() -> None:
    consumed, items = decode_commands(b"A" * 300)
    assert consumed == 251
    assert len(items) == 1
    assert isinstance(items[0], FrameError)
    assert items[0].framing is Framing.BASIC


def test_discard_pending_drops_a_half_received_packet() -> None:
    decoder = CommandStreamDecoder()
    assert decoder.feed(b"\x02\x080SA") == []
    assert decoder.discard_pending() == b"\x02\x080SA"
    assert decoder.feed(b"0RUN\r") == [
        CommandFrame(Command(Mnemonic.RUN, "", 0), Framing.BASIC, b"0RUN\r")
    ]


# --- fuzz -------------------------------------------------------------------------------------

Decoder = Callable[[bytes], tuple[int, Sequence[object]]]
fuzz_bytes = st.binary(max_size=300) | st.lists(
    st.sampled_from([b"\x02", b"\x03", b"\r", b"0", b"00S", b"\x07", b"\x0b", b"SAF0", b"\xff"]),
    max_size=40,
).map(b"".join)


@settings(max_examples=400)
@given(fuzz_bytes)
@pytest.mark.hazard("H-CL-03")
def test_invariant_7_random_bytes_into_the_reply_decoder_yield_only_frames_or_typed_errors(
    data: bytes,
) -> None:
    consumed, items = decode_replies(data)
    assert 0 <= consumed <= len(data)
    assert all(isinstance(i, ReplyFrame | NeDecodeError) for i in items)
    if consumed == 0:
        assert items == []


@settings(max_examples=400)
@given(fuzz_bytes)
@pytest.mark.hazard("H-CL-03")
def test_invariant_7_random_bytes_into_the_command_decoder_yield_only_frames_or_typed_errors(
    data: bytes,
) -> None:
    consumed, items = decode_commands(data)
    assert 0 <= consumed <= len(data)
    assert all(isinstance(i, CommandFrame | NeDecodeError) for i in items)
    if consumed == 0:
        assert items == []


@settings(max_examples=200)
@given(fuzz_bytes, st.data())
@pytest.mark.hazard("H-CL-03")
def test_invariant_7_random_bytes_in_random_chunks_never_raise_from_either_stream(
    data: bytes, draw: st.DataObject
) -> None:
    cuts = draw.draw(st.lists(st.integers(0, len(data)), max_size=10))
    reply_decoder = ReplyStreamDecoder()
    command_decoder = CommandStreamDecoder()
    reply_items: list[ReplyItem] = []
    command_items: list[CommandItem] = []
    previous = 0
    for cut in [*sorted(cuts), len(data)]:
        reply_items += reply_decoder.feed(data[previous:cut])
        command_items += command_decoder.feed(data[previous:cut])
        previous = cut
    assert all(isinstance(i, ReplyFrame | NeDecodeError) for i in reply_items)
    assert all(isinstance(i, CommandFrame | NeDecodeError) for i in command_items)
    assert len(reply_decoder.pending) <= len(data)
    assert len(command_decoder.pending) <= len(data)
