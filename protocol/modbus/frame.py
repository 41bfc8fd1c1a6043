"""Modbus frames of the poll: function 23 over TCP (MBAP) and RTU (CRC-16/MODBUS); pure, no I/O.

The driver frames its poll itself (one function-23 request that writes HEARTBEAT and reads the
status block, ``docs/modbus-map.md`` section 1) instead of going through pymodbus's client,
whose per-request machinery (PDU objects, framer, transaction manager) costs about as much as
decoding the whole status block (``docs/performance.md``).  Everything else the driver sends
stays pymodbus's.

Layers, each a pair of pure functions:

* PDU (the same on both transports): :func:`encode_read_write_request` /
  :func:`decode_read_write_reply`, and :func:`encode_read_write_reply` /
  :func:`encode_exception_reply` for the pump's side (and the tests); :class:`ReadWriteRequest`
  is one request's fixed shape, checked once, for a poll that sends it again and again (and
  takes its normal TCP reply apart in one unpack);
* Modbus TCP: ``[transaction id][protocol 0][length][unit] PDU``, all big-endian
  (:func:`encode_tcp_frame`, :func:`tcp_frame_size`, :func:`decode_tcp_frame`);
* Modbus RTU: ``[address] PDU [CRC-16/MODBUS, low byte first]`` (:func:`encode_rtu_frame`,
  :func:`rtu_reply_size`, :func:`decode_rtu_frame`).

Decoders raise only :class:`~protocol.modbus.errors.FrameDecodeError` (a
:class:`~protocol.errors.DecodeError`; a bad CRC is
:class:`~protocol.modbus.errors.FrameCrcError`) for bytes that are not a valid frame or reply,
and :class:`~protocol.modbus.errors.ExceptionReplyError` for a well-formed Modbus exception
reply; encoders raise :class:`~protocol.modbus.errors.FrameEncodeError` for a value the frame
cannot carry.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from enum import IntEnum
from typing import Final, NamedTuple

from protocol.modbus.errors import (
    ExceptionReplyError,
    FrameCrcError,
    FrameDecodeError,
    FrameEncodeError,
    show,
)
from protocol.modbus.requests import MAX_READ_COUNT
from protocol.modbus.words import U16_MAX


class FunctionCode(IntEnum):
    """The Modbus functions of the map's profile (``docs/modbus-map.md`` section 1)."""

    READ_HOLDING_REGISTERS = 3
    WRITE_SINGLE_REGISTER = 6
    WRITE_MULTIPLE_REGISTERS = 16
    READ_WRITE_MULTIPLE_REGISTERS = 23


#: Set in the function code of an exception reply (function | 0x80, then the exception code).
EXCEPTION_FLAG: Final = 0x80
#: Most registers the write part of one function-23 request may carry (Modbus limit).
MAX_READ_WRITE_WRITE_COUNT: Final = 121
#: Bytes of the MBAP header: transaction id, protocol id, length (2 bytes each), unit id.
MBAP_HEADER_BYTES: Final = 7
#: Bytes of a TCP frame before the length field's count starts (transaction, protocol, length).
_MBAP_LENGTH_OFFSET: Final = 6
#: The MBAP protocol id of Modbus.
MBAP_PROTOCOL_ID: Final = 0
#: Largest MBAP length field: the unit id plus the largest PDU (253 bytes).
MBAP_LENGTH_MAX: Final = 254
#: Smallest MBAP length field of a reply: the unit id, a function code and one byte.
_MBAP_LENGTH_MIN: Final = 3
#: Largest RTU address (247); 0 is broadcast, which gets no reply.
RTU_ADDRESS_MAX: Final = 247
#: Bytes of the RTU CRC, sent low byte first.
RTU_CRC_BYTES: Final = 2
#: Bytes of an RTU reply that tell its length: address, function, byte count / exception code.
RTU_HEAD_BYTES: Final = 3
#: Bytes of an RTU exception reply: address, function | 0x80, exception code, CRC.
_RTU_EXCEPTION_BYTES: Final = 5
#: Bytes of an RTU reply to 06 / 16: address, function, two words echoed, CRC.
_RTU_ECHO_BYTES: Final = 8

_HEADER: Final = struct.Struct(">HHHB")  # MBAP: transaction id, protocol id, length, unit
_READ_WRITE_REQUEST: Final = struct.Struct(">BHHHHB")  # fn, read addr/count, write addr/count, n
_BYTE_COUNT_REPLIES: Final = frozenset(
    {FunctionCode.READ_HOLDING_REGISTERS, FunctionCode.READ_WRITE_MULTIPLE_REGISTERS}
)
_ECHO_REPLIES: Final = frozenset(
    {FunctionCode.WRITE_SINGLE_REGISTER, FunctionCode.WRITE_MULTIPLE_REGISTERS}
)
_READ_WRITE: Final = int(FunctionCode.READ_WRITE_MULTIPLE_REGISTERS)  # a plain int: read per poll


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE: Final = _crc_table()


def crc16_modbus(data: bytes) -> int:
    """CRC-16/MODBUS of ``data``: reflected poly 0xA001, init 0xFFFF, no xor-out.

    Sent low byte first after an RTU frame.  ``crc16_modbus(bytes.fromhex("01030000000A"))
    == 0xCDC5``.
    """
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ byte) & 0xFF]
    return crc


# -- PDU -----------------------------------------------------------------------------------------


def _check_field(value: int, maximum: int, what: str, minimum: int = 0) -> None:
    if type(value) is int and minimum <= value <= maximum:
        return  # the usual case, decided without the two isinstance calls below
    if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= maximum:
        raise FrameEncodeError(f"{what} {show(value)} is outside {minimum}..{maximum}")


def encode_read_write_request(
    read_address: int, read_count: int, write_address: int, values: Sequence[int]
) -> bytes:
    """The PDU of a function-23 request: write ``values`` from ``write_address``, then read
    ``read_count`` registers from ``read_address`` (the pump writes first).

    Raises :class:`FrameEncodeError` for an address outside 0..0xFFFF, a read count outside
    1..125, 1..121 values or a value outside 0..0xFFFF.
    """
    return ReadWriteRequest(read_address, read_count, write_address, len(values)).pdu(values)


class ReadWriteRequest:
    """A function-23 request of one shape: its addresses and counts, checked once; only the
    written values change from one request to the next.

    Why a class: a poll sends the same request with a new HEARTBEAT each time, and checking the
    four fixed fields again and packing them again cost more than the rest of the request.  It
    also knows the one normal TCP reply to that request, which :meth:`tcp_reply_registers`
    takes apart with one ``struct`` unpack.

    Raises :class:`FrameEncodeError` as :func:`encode_read_write_request` does (an address
    outside 0..0xFFFF, a read count outside 1..125, a write count outside 1..121).
    """

    __slots__ = ("_prefix", "_tcp_length", "_tcp_reply", "_values", "read_count", "write_count")

    def __init__(
        self, read_address: int, read_count: int, write_address: int, write_count: int
    ) -> None:
        _check_field(read_address, U16_MAX, "read address")
        _check_field(read_count, MAX_READ_COUNT, "read count", minimum=1)
        _check_field(write_address, U16_MAX, "write address")
        _check_field(write_count, MAX_READ_WRITE_WRITE_COUNT, "write count", minimum=1)
        #: Registers the request reads.
        self.read_count = read_count
        #: Registers the request writes: the number of values :meth:`pdu` takes.
        self.write_count = write_count
        self._prefix = _READ_WRITE_REQUEST.pack(
            FunctionCode.READ_WRITE_MULTIPLE_REGISTERS,
            read_address,
            read_count,
            write_address,
            write_count,
            2 * write_count,
        )
        self._values = struct.Struct(f">{write_count}H")
        # The normal reply in a TCP frame: MBAP header, function, byte count, the registers.
        self._tcp_reply = struct.Struct(f">HHHBBB{read_count}H")
        self._tcp_length = self._tcp_reply.size - _MBAP_LENGTH_OFFSET  # its MBAP length field

    def pdu(self, values: Sequence[int]) -> bytes:
        """The PDU of this request writing ``values``.

        Raises :class:`FrameEncodeError` for another number of values than the request's write
        count, or a value outside 0..0xFFFF.
        """
        if len(values) != self.write_count:
            raise FrameEncodeError(
                f"write count {len(values)} is not this request's {self.write_count}"
            )
        for value in values:
            _check_field(value, U16_MAX, "written value")
        return self._prefix + self._values.pack(*values)

    def tcp_reply_registers(
        self, frame: bytes, transaction_id: int, unit: int
    ) -> tuple[int, ...] | None:
        """The registers of ``frame`` when it is exactly the normal TCP reply to this request
        under ``transaction_id`` from ``unit``: protocol id 0, the length field, function 23 and
        the byte count of :attr:`read_count` registers, all checked.

        None for any other bytes (a late reply, an exception reply, more or fewer bytes, from
        another unit, ...): the caller then takes them apart with :func:`tcp_frame_size`,
        :func:`decode_tcp_frame` and :func:`decode_read_write_reply`, which skip a late reply or
        say what is wrong.
        """
        if len(frame) != self._tcp_reply.size:
            return None
        fields = self._tcp_reply.unpack(frame)
        if fields[:6] != (
            transaction_id,
            MBAP_PROTOCOL_ID,
            self._tcp_length,
            unit,
            _READ_WRITE,
            2 * self.read_count,
        ):
            return None
        return fields[6:]


def encode_read_write_reply(registers: Sequence[int]) -> bytes:
    """The PDU of a normal function-23 reply carrying ``registers`` (the pump's side).

    Raises :class:`FrameEncodeError` for 0 or more than 125 registers or a word outside
    0..0xFFFF.
    """
    _check_field(len(registers), MAX_READ_COUNT, "register count", minimum=1)
    for word in registers:
        _check_field(word, U16_MAX, "register value")
    return bytes((FunctionCode.READ_WRITE_MULTIPLE_REGISTERS, 2 * len(registers))) + struct.pack(
        f">{len(registers)}H", *registers
    )


def encode_exception_reply(function: int, exception_code: int) -> bytes:
    """The PDU of an exception reply: ``function | 0x80``, then ``exception_code``."""
    _check_field(function, EXCEPTION_FLAG - 1, "function code", minimum=1)
    _check_field(exception_code, 0xFF, "exception code", minimum=1)
    return bytes((function | EXCEPTION_FLAG, exception_code))


def decode_read_write_reply(pdu: bytes, read_count: int) -> tuple[int, ...]:
    """The registers of a reply PDU to a function-23 request that read ``read_count`` registers.

    Raises :class:`ExceptionReplyError` for a well-formed exception reply (of any function:
    the caller tells a late reply from the answer to its request by ``function``), and
    :class:`FrameDecodeError` for a reply of another function or with another register count.
    """
    if not pdu:
        raise FrameDecodeError("empty reply PDU")
    function = pdu[0]
    if function & EXCEPTION_FLAG:
        if len(pdu) != 2:
            raise FrameDecodeError(f"exception reply {pdu.hex(' ')} is not 2 bytes long")
        raise ExceptionReplyError(function & ~EXCEPTION_FLAG, pdu[1])
    if function != FunctionCode.READ_WRITE_MULTIPLE_REGISTERS:
        raise FrameDecodeError(
            f"reply is function {function}, not {int(FunctionCode.READ_WRITE_MULTIPLE_REGISTERS)}"
        )
    byte_count = 2 * read_count
    if len(pdu) < 2 or pdu[1] != byte_count or len(pdu) != 2 + byte_count:
        got = f"{pdu[1]} bytes of registers" if len(pdu) >= 2 else "no byte count"
        raise FrameDecodeError(
            f"expected {read_count} registers ({byte_count} bytes) in a {len(pdu)}-byte "
            f"reply, got {got}"
        )
    return struct.unpack_from(f">{read_count}H", pdu, 2)


# -- Modbus TCP ----------------------------------------------------------------------------------


class TcpFrame(NamedTuple):
    """One Modbus TCP frame: its MBAP transaction id and unit id, and the PDU it carries."""

    transaction_id: int
    unit: int
    pdu: bytes


def encode_tcp_frame(transaction_id: int, unit: int, pdu: bytes) -> bytes:
    """``pdu`` in an MBAP header (protocol 0, length = unit id + PDU)."""
    _check_field(transaction_id, U16_MAX, "transaction id")
    _check_field(unit, 0xFF, "unit id")
    _check_field(len(pdu), MBAP_LENGTH_MAX - 1, "PDU length", minimum=1)
    return _HEADER.pack(transaction_id, MBAP_PROTOCOL_ID, len(pdu) + 1, unit) + pdu


def tcp_frame_size(head: bytes) -> int:
    """The whole size in bytes of the TCP frame whose first :data:`MBAP_HEADER_BYTES` (or more)
    bytes are ``head``, from its length field.

    Raises :class:`FrameDecodeError` for fewer bytes than a header, a protocol id other than 0
    or a length field outside 3..254: bytes that cannot start a reply.
    """
    if len(head) < MBAP_HEADER_BYTES:
        raise FrameDecodeError(f"{len(head)} bytes are not an MBAP header ({MBAP_HEADER_BYTES})")
    _, protocol_id, length, _ = _HEADER.unpack_from(head)
    if protocol_id != MBAP_PROTOCOL_ID:
        raise FrameDecodeError(f"MBAP protocol id {protocol_id}, not {MBAP_PROTOCOL_ID}")
    if not _MBAP_LENGTH_MIN <= length <= MBAP_LENGTH_MAX:
        raise FrameDecodeError(
            f"MBAP length {length} is outside {_MBAP_LENGTH_MIN}..{MBAP_LENGTH_MAX}"
        )
    return _MBAP_LENGTH_OFFSET + int(length)


def decode_tcp_frame(frame: bytes) -> TcpFrame:
    """Decode exactly one whole TCP frame (its size is :func:`tcp_frame_size`).

    Raises :class:`FrameDecodeError` for a bad header or a frame whose length is not the one
    its header states.
    """
    size = tcp_frame_size(frame)
    if len(frame) != size:
        raise FrameDecodeError(f"MBAP header states {size} bytes, the frame has {len(frame)}")
    transaction_id, _, _, unit = _HEADER.unpack_from(frame)
    return TcpFrame(transaction_id, unit, frame[MBAP_HEADER_BYTES:])


# -- Modbus RTU ----------------------------------------------------------------------------------


class RtuFrame(NamedTuple):
    """One Modbus RTU frame: the address it came from or goes to, and the PDU it carries."""

    address: int
    pdu: bytes


def encode_rtu_frame(address: int, pdu: bytes) -> bytes:
    """``address``, ``pdu``, then the CRC-16/MODBUS of both, low byte first."""
    _check_field(address, 0xFF, "RTU address")
    _check_field(len(pdu), MBAP_LENGTH_MAX - 1, "PDU length", minimum=1)
    body = bytes((address,)) + pdu
    return body + crc16_modbus(body).to_bytes(RTU_CRC_BYTES, "little")


def rtu_reply_size(head: bytes) -> int:
    """The whole size in bytes of the RTU reply whose first :data:`RTU_HEAD_BYTES` (or more)
    bytes are ``head``: an exception reply, or a normal reply to one of the profile's functions
    (RTU frames carry no length: the function and byte count tell it).

    Raises :class:`FrameDecodeError` for fewer bytes than that, or a function that is none of
    :class:`FunctionCode`.
    """
    if len(head) < RTU_HEAD_BYTES:
        raise FrameDecodeError(f"{len(head)} bytes do not tell an RTU reply's length")
    function = head[1]
    if function & EXCEPTION_FLAG:
        return _RTU_EXCEPTION_BYTES
    if function in _BYTE_COUNT_REPLIES:
        return RTU_HEAD_BYTES + head[2] + RTU_CRC_BYTES
    if function in _ECHO_REPLIES:
        return _RTU_ECHO_BYTES
    raise FrameDecodeError(f"function {function} is not a function of the profile")


def decode_rtu_frame(frame: bytes) -> RtuFrame:
    """Decode exactly one whole RTU frame after checking its CRC.

    Raises :class:`FrameCrcError` for a CRC that does not match, :class:`FrameDecodeError` for
    fewer than 4 bytes (address, function, CRC).
    """
    if len(frame) < 2 + RTU_CRC_BYTES:
        raise FrameDecodeError(f"{len(frame)} bytes are too short for an RTU frame")
    body, sent = frame[:-RTU_CRC_BYTES], int.from_bytes(frame[-RTU_CRC_BYTES:], "little")
    computed = crc16_modbus(body)
    if sent != computed:
        raise FrameCrcError(f"RTU frame CRC 0x{sent:04X}, computed 0x{computed:04X}")
    return RtuFrame(body[0], body[1:])
