"""Modbus frames of the poll (protocol/modbus/frame.py): the worked example of
docs/modbus-map.md, pymodbus's own framing, round trips, and arbitrary bytes into each decoder.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymodbus.framer import FramerRTU, FramerSocket
from pymodbus.pdu import DecodePDU
from pymodbus.pdu.register_message import ReadWriteMultipleRegistersRequest

from protocol.errors import ChecksumError, ProtocolError
from protocol.modbus import (
    MAX_READ_COUNT,
    MAX_READ_WRITE_WRITE_COUNT,
    STATUS_SPAN,
    ExceptionReplyError,
    FrameCrcError,
    FrameDecodeError,
    FrameEncodeError,
    FunctionCode,
    ModbusException,
    ReadWriteRequest,
    Reg,
    RtuFrame,
    TcpFrame,
    crc16_modbus,
    decode_read_write_reply,
    decode_rtu_frame,
    decode_tcp_frame,
    encode_exception_reply,
    encode_read_write_reply,
    encode_read_write_request,
    encode_rtu_frame,
    encode_tcp_frame,
    rtu_reply_size,
    tcp_frame_size,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "modbus-map.md"

words = st.integers(0, 0xFFFF)
units = st.integers(1, 247)
pdus = st.binary(min_size=1, max_size=253)
registers = st.lists(words, min_size=1, max_size=MAX_READ_COUNT)


def _doc_bytes(label: str) -> bytes:
    match = re.search(rf"^{label}\s+((?:[0-9A-F]{{2}} ?)+)$", DOC.read_text(), re.MULTILINE)
    assert match, f"no '{label}' line in the worked example"
    return bytes.fromhex(match.group(1))


# -- the map's worked example and known answers ------------------------------------------------


def test_crc16_modbus_known_answers() -> None:
    assert crc16_modbus(bytes.fromhex("01030000000A")) == 0xCDC5
    assert crc16_modbus(b"") == 0xFFFF
    assert crc16_modbus(b"123456789") == 0x4B37  # the catalogue check value of CRC-16/MODBUS


def test_the_worked_examples_frames_decode() -> None:
    rtu = decode_rtu_frame(_doc_bytes("RTU response"))
    tcp = decode_tcp_frame(_doc_bytes("TCP response"))
    assert rtu == RtuFrame(1, tcp.pdu)
    assert tcp == TcpFrame(1, 1, tcp.pdu)
    assert encode_rtu_frame(1, decode_tcp_frame(_doc_bytes("TCP request")).pdu) == _doc_bytes(
        "RTU request"
    )
    assert tcp_frame_size(_doc_bytes("TCP response")) == len(_doc_bytes("TCP response"))
    assert rtu_reply_size(_doc_bytes("RTU response")) == len(_doc_bytes("RTU response"))


def test_the_poll_request_is_what_pymodbus_sends() -> None:
    """Our function-23 request, byte for byte the one pymodbus 3.16 frames (TCP and RTU)."""
    request = ReadWriteMultipleRegistersRequest(
        read_address=STATUS_SPAN.address,
        read_count=STATUS_SPAN.count,
        write_address=Reg.HEARTBEAT.address,
        write_registers=[0x1234],
        dev_id=1,
        transaction_id=65001,
    )
    pdu = encode_read_write_request(
        STATUS_SPAN.address, STATUS_SPAN.count, Reg.HEARTBEAT.address, (0x1234,)
    )
    decoder = DecodePDU(is_server=True)
    assert FramerSocket(decoder).buildFrame(request) == encode_tcp_frame(65001, 1, pdu)
    request.transaction_id = 0
    assert FramerRTU(decoder).buildFrame(request) == encode_rtu_frame(1, pdu)


@given(tid=words, unit=units, values=registers)
def test_pymodbus_reads_our_replies(tid: int, unit: int, values: list[int]) -> None:
    """The pump's side of the codec, checked by pymodbus's client framing."""
    frame = encode_tcp_frame(tid, unit, encode_read_write_reply(values))
    used, reply = FramerSocket(DecodePDU(is_server=False)).handleFrame(frame, unit, tid)
    assert used == len(frame)
    assert reply is not None
    assert reply.function_code == FunctionCode.READ_WRITE_MULTIPLE_REGISTERS
    assert list(reply.registers) == values


# -- round trips ---------------------------------------------------------------------------------


@given(values=registers)
def test_read_write_reply_round_trip(values: list[int]) -> None:
    assert decode_read_write_reply(encode_read_write_reply(values), len(values)) == tuple(values)


@given(
    function=st.integers(1, 0x7F),
    code=st.integers(1, 0xFF),
    read_count=st.integers(1, MAX_READ_COUNT),
)
def test_an_exception_reply_raises_its_function_and_code(
    function: int, code: int, read_count: int
) -> None:
    with pytest.raises(ExceptionReplyError) as caught:
        decode_read_write_reply(encode_exception_reply(function, code), read_count)
    assert (caught.value.function, caught.value.exception_code) == (function, code)
    known = code in {int(member) for member in ModbusException}
    assert caught.value.exception == (ModbusException(code) if known else None)


@given(
    read_address=words,
    read_count=st.integers(1, MAX_READ_COUNT),
    write_address=words,
    values=st.lists(words, min_size=1, max_size=MAX_READ_WRITE_WRITE_COUNT),
)
def test_read_write_request_layout(
    read_address: int, read_count: int, write_address: int, values: list[int]
) -> None:
    pdu = encode_read_write_request(read_address, read_count, write_address, values)
    head = struct.unpack_from(">BHHHHB", pdu)
    assert head == (23, read_address, read_count, write_address, len(values), 2 * len(values))
    assert list(struct.unpack_from(f">{len(values)}H", pdu, 10)) == values
    assert len(pdu) == 10 + 2 * len(values)


@given(
    read_address=words,
    read_count=st.integers(1, MAX_READ_COUNT),
    write_address=words,
    rounds=st.lists(st.lists(words, min_size=3, max_size=3), min_size=1, max_size=4),
)
def test_a_request_shape_checked_once_packs_each_round_s_values(
    read_address: int, read_count: int, write_address: int, rounds: list[list[int]]
) -> None:
    """One ReadWriteRequest, used again and again as a poll uses it: each PDU is the layout of
    the map with that round's values (the header packed once is never stale)."""
    request = ReadWriteRequest(read_address, read_count, write_address, 3)
    for values in rounds:
        pdu = request.pdu(values)
        head = struct.unpack_from(">BHHHHB", pdu)
        assert head == (23, read_address, read_count, write_address, 3, 6)
        assert list(struct.unpack_from(">3H", pdu, 10)) == values
        assert pdu == encode_read_write_request(read_address, read_count, write_address, values)


def _reply_frame(tid: int, unit: int, values: list[int]) -> bytes:
    return encode_tcp_frame(tid, unit, encode_read_write_reply(values))


def _generic_registers(
    frame: bytes, tid: int, unit: int, read_count: int
) -> tuple[int, ...] | None:
    """What the general path makes of ``frame``: its registers when it is one whole frame under
    ``tid`` from ``unit``, else None (it raises where it refuses the bytes)."""
    if tcp_frame_size(frame) != len(frame):
        return None
    reply = decode_tcp_frame(frame)
    if (reply.transaction_id, reply.unit) != (tid, unit):
        return None
    return decode_read_write_reply(reply.pdu, read_count)


@given(tid=words, unit=units, values=registers)
def test_the_normal_tcp_reply_is_taken_apart_in_one_unpack(
    tid: int, unit: int, values: list[int]
) -> None:
    request = ReadWriteRequest(0, len(values), 0, 1)
    frame = _reply_frame(tid, unit, values)
    assert _generic_registers(frame, tid, unit, len(values)) == tuple(values)
    assert request.tcp_reply_registers(frame, tid, unit) == tuple(values)


_POLL = ReadWriteRequest(STATUS_SPAN.address, STATUS_SPAN.count, Reg.HEARTBEAT.address, 1)
_STATUS_WORDS = list(range(STATUS_SPAN.count))
_GOOD_REPLY = _reply_frame(7, 1, _STATUS_WORDS)


@pytest.mark.parametrize(
    "frame",
    [
        _reply_frame(8, 1, _STATUS_WORDS),  # a late reply to another request
        _reply_frame(7, 2, _STATUS_WORDS),  # another unit
        _GOOD_REPLY[:2] + b"\x00\x01" + _GOOD_REPLY[4:],  # protocol id 1
        _GOOD_REPLY[:4] + b"\x00\x2a" + _GOOD_REPLY[6:],  # a length field that is not 41
        _GOOD_REPLY[:7] + b"\x03" + _GOOD_REPLY[8:],  # function 3
        _GOOD_REPLY[:8] + b"\x24" + _GOOD_REPLY[9:],  # 18 registers' byte count
        _reply_frame(7, 1, _STATUS_WORDS[:-1]),  # a register short
        _GOOD_REPLY[:-1],  # cut short
        _GOOD_REPLY + b"\x00",  # a byte more (the start of another frame)
        _GOOD_REPLY + _GOOD_REPLY,
        encode_tcp_frame(7, 1, encode_exception_reply(23, 4)),
        b"",
    ],
    ids=[
        "other-transaction-id",
        "other-unit",
        "protocol-id",
        "length-field",
        "other-function",
        "byte-count",
        "a-register-short",
        "cut-short",
        "a-byte-more",
        "two-frames",
        "exception-reply",
        "nothing",
    ],
)
def test_anything_but_the_normal_reply_is_left_to_the_general_path(frame: bytes) -> None:
    assert _POLL.tcp_reply_registers(_GOOD_REPLY, 7, 1) == tuple(_STATUS_WORDS)
    assert _POLL.tcp_reply_registers(frame, 7, 1) is None


@settings(max_examples=400)
@given(
    data=st.one_of(
        st.binary(min_size=len(_GOOD_REPLY), max_size=len(_GOOD_REPLY)),
        st.builds(
            lambda position, byte: (
                _GOOD_REPLY[:position] + bytes((byte,)) + _GOOD_REPLY[position + 1 :]
            ),
            st.integers(0, len(_GOOD_REPLY) - 1),
            st.integers(0, 0xFF),
        ),
    )
)
def test_the_one_unpack_accepts_exactly_what_the_general_path_accepts(data: bytes) -> None:
    """Any frame of the reply's size: the one unpack takes it only when the general path
    (frame size, MBAP header, our id and unit, function, byte count) takes it, with the same
    registers, and leaves it to that path otherwise."""
    fast = _POLL.tcp_reply_registers(data, 7, 1)
    try:
        general = _generic_registers(data, 7, 1, STATUS_SPAN.count)
    except (FrameDecodeError, ExceptionReplyError):
        general = None
    assert fast == general


@given(tid=words, unit=st.integers(0, 0xFF), pdu=pdus)
def test_tcp_frame_round_trip(tid: int, unit: int, pdu: bytes) -> None:
    frame = encode_tcp_frame(tid, unit, pdu)
    if len(pdu) >= 2:  # a reply carries at least a function code and one byte
        assert tcp_frame_size(frame) == len(frame)
        assert decode_tcp_frame(frame) == TcpFrame(tid, unit, pdu)


@given(address=st.integers(0, 0xFF), pdu=pdus)
def test_rtu_frame_round_trip(address: int, pdu: bytes) -> None:
    frame = encode_rtu_frame(address, pdu)
    assert decode_rtu_frame(frame) == RtuFrame(address, pdu)


@given(unit=units, values=registers, code=st.integers(1, 0xFF))
def test_rtu_reply_size_is_the_frames_length(unit: int, values: list[int], code: int) -> None:
    normal = encode_rtu_frame(unit, encode_read_write_reply(values))
    refused = encode_rtu_frame(unit, encode_exception_reply(23, code))
    assert rtu_reply_size(normal[:3]) == len(normal)
    assert rtu_reply_size(refused[:3]) == len(refused)


@given(address=units, pdu=pdus, position=st.integers(0, 300), flip=st.integers(1, 0xFF))
def test_any_corrupted_byte_of_an_rtu_frame_fails_its_crc(
    address: int, pdu: bytes, position: int, flip: int
) -> None:
    frame = bytearray(encode_rtu_frame(address, pdu))
    frame[position % len(frame)] ^= flip
    with pytest.raises(FrameCrcError) as caught:
        decode_rtu_frame(bytes(frame))
    assert isinstance(caught.value, ChecksumError)


# -- refusals ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("encode", "message"),
    [
        (lambda: encode_read_write_request(-1, 1, 0, [0]), "read address -1"),
        (lambda: encode_read_write_request(0, 126, 0, [0]), "read count 126"),
        (lambda: encode_read_write_request(0, 0, 0, [0]), "read count 0"),
        (lambda: encode_read_write_request(0, 1, 0x10000, [0]), "write address 65536"),
        (lambda: encode_read_write_request(0, 1, 0, []), "write count 0"),
        (lambda: encode_read_write_request(0, 1, 0, [0] * 122), "write count 122"),
        (lambda: encode_read_write_request(0, 1, 0, [True]), "written value True"),
        (lambda: ReadWriteRequest(0, 1, 0, 1).pdu([0x10000]), "written value 65536"),
        (lambda: ReadWriteRequest(0, 1, 0, 1).pdu([1, 2]), "write count 2 is not"),
        (lambda: ReadWriteRequest(0, 1, 0, 0).pdu([]), "write count 0"),
        (lambda: ReadWriteRequest(0, 126, 0, 1).pdu([0]), "read count 126"),
        (lambda: encode_read_write_reply([0x10000]), "register value 65536"),
        (lambda: encode_exception_reply(0x80, 1), "function code 128"),
        (lambda: encode_tcp_frame(0x10000, 1, b"\x03"), "transaction id 65536"),
        (lambda: encode_tcp_frame(1, 1, b""), "PDU length 0"),
        (lambda: encode_rtu_frame(256, b"\x03"), "RTU address 256"),
    ],
)
def test_values_a_frame_cannot_carry_are_refused(encode: Callable[[], bytes], message: str) -> None:
    with pytest.raises(FrameEncodeError, match=message):
        encode()


@pytest.mark.parametrize(
    ("pdu", "message"),
    [
        (b"", "empty reply PDU"),
        (b"\x03\x02\x00\x01", "reply is function 3, not 23"),
        (b"\x97", "exception reply 97 is not 2 bytes long"),
        (b"\x17\x02\x00\x01", "expected 19 registers"),
        (b"\x17", "got no byte count"),
    ],
)
def test_replies_that_do_not_answer_the_poll(pdu: bytes, message: str) -> None:
    with pytest.raises(FrameDecodeError, match=message):
        decode_read_write_reply(pdu, STATUS_SPAN.count)


# -- arbitrary bytes: only the package's typed errors, never a crash ----------------------------

_DECODERS: list[Callable[[bytes], object]] = [
    tcp_frame_size,
    decode_tcp_frame,
    rtu_reply_size,
    decode_rtu_frame,
    lambda data: decode_read_write_reply(data, STATUS_SPAN.count),
    lambda data: decode_read_write_reply(data, 1),
]
_GOOD = [
    encode_tcp_frame(7, 1, encode_read_write_reply(list(range(STATUS_SPAN.count)))),
    encode_rtu_frame(1, encode_read_write_reply(list(range(STATUS_SPAN.count)))),
    encode_read_write_reply(list(range(STATUS_SPAN.count))),
    encode_exception_reply(23, 1),
]


@st.composite
def fuzz_bytes(draw: st.DrawFn) -> bytes:
    """Random bytes, or a good frame / PDU cut, extended or with a byte changed."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=300))
    data = bytearray(draw(st.sampled_from(_GOOD)))
    position = draw(st.integers(0, len(data) - 1))
    data[position] = draw(st.integers(0, 0xFF))
    return bytes(data[: draw(st.integers(0, len(data)))]) + draw(st.binary(max_size=8))


@settings(max_examples=400)
@given(data=fuzz_bytes(), which=st.integers(0, len(_DECODERS) - 1))
@pytest.mark.hazard("H-CL-03")
def test_invariant_7_random_bytes_into_the_poll_decoders_raise_only_typed_errors(
    data: bytes, which: int
) -> None:
    try:
        outcome: object = _DECODERS[which](data)
    except (FrameDecodeError, ExceptionReplyError) as exc:
        outcome = exc
    assert isinstance(outcome, int | TcpFrame | RtuFrame | tuple | ProtocolError)
