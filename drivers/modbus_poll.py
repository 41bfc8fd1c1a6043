"""The poll's own Modbus transaction: a request framed by :mod:`protocol.modbus.frame`, sent and
its reply read through the pymodbus client's documented ``send`` / ``recv``.

Why not pymodbus's ``readwrite_registers``: a poll is one function-23 request, and pymodbus's
client spends about as much on each request (PDU objects, its framer, transaction manager and
logging) as the driver spends decoding the whole status block (``docs/performance.md``).  Why still
the pymodbus client: it owns the connection (connect, close, the serial port opened exclusively),
and its ``socket`` is where a wire recording taps in (:mod:`drivers.recording`), so the poll's
bytes go where every other request's bytes go, on the same connection and the same timeout.
``send`` / ``recv`` are the clients' documented transport methods in pymodbus 3.16 (pinned):
``recv(None)`` waits up to the client's timeout for what arrives and returns ``b""`` when
nothing did, as pymodbus's own transactions use it.

Replies are checked as pymodbus checks its own: on TCP a frame with another transaction id is a
late reply to an earlier request and is skipped (ours are numbered where pymodbus's never are,
so neither side can take the other's reply for its own); a frame with our id must come from our
unit.  On RTU (no ids) the reply must come from our address with a good CRC.  Its function and
content are checked by :func:`protocol.modbus.frame.decode_read_write_reply`, or, for the usual
reply (the whole normal reply to our request in one read), by
:meth:`protocol.modbus.frame.ReadWriteRequest.tcp_reply_registers` in one unpack.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Final

from pymodbus.client import ModbusSerialClient, ModbusTcpClient

from protocol.modbus import (
    MBAP_HEADER_BYTES,
    RTU_HEAD_BYTES,
    FrameDecodeError,
    ReadWriteRequest,
    decode_read_write_reply,
    decode_rtu_frame,
    decode_tcp_frame,
    encode_rtu_frame,
    encode_tcp_frame,
    rtu_reply_size,
    tcp_frame_size,
)

__all__ = ["FramedExchange"]

#: Our MBAP transaction ids: pymodbus 3.16 numbers its own requests 1..65000 on a connection,
#: so a late reply to one of them can never carry one of ours, nor the other way round.
FIRST_TRANSACTION_ID: Final = 65001
LAST_TRANSACTION_ID: Final = 0xFFFF

_Client = ModbusTcpClient | ModbusSerialClient


class FramedExchange:
    """Requests framed here, on one driver's pymodbus client (TCP: MBAP; RTU: address + CRC).

    ``trace`` is called as pymodbus calls its ``trace_packet`` hook: ``(True, frame)`` before a
    frame is sent, ``(False, data)`` for bytes received.
    """

    def __init__(
        self, *, unit: int, rtu: bool, timeout_s: float, trace: Callable[[bool, bytes], bytes]
    ) -> None:
        self._unit = unit
        self._rtu = rtu
        self._timeout_s = timeout_s
        self._trace = trace
        self._transaction_id = LAST_TRANSACTION_ID

    def read_write(
        self, client: _Client, request: ReadWriteRequest, values: Sequence[int]
    ) -> tuple[int, ...] | None:
        """Send ``request`` writing ``values`` (function 23); return the registers it read, or
        None when no whole reply came within the timeout.

        On TCP, a first read that is exactly the normal reply to this request (our transaction
        id, our unit, function 23, the byte count asked for) is taken apart in one unpack
        (:meth:`~protocol.modbus.frame.ReadWriteRequest.tcp_reply_registers`).  Anything else
        is read frame by frame (a late reply skipped, see the module's docstring) and decoded by
        :func:`~protocol.modbus.frame.decode_read_write_reply`, which names what is wrong.

        Raises :class:`~protocol.modbus.errors.ExceptionReplyError` for an exception reply,
        :class:`~protocol.modbus.errors.FrameDecodeError` for bytes that are not a reply frame,
        a reply from another unit or one that does not answer the request,
        :class:`~protocol.modbus.errors.FrameEncodeError` for values the request cannot carry,
        and what the client raises when the link fails (pymodbus ``ConnectionException``,
        ``OSError``).
        """
        self._send(client, request.pdu(values))
        deadline = time.monotonic() + self._timeout_s
        data = client.recv(None)
        if not data:
            return None
        data = self._trace(False, data)
        if not self._rtu:
            registers = request.tcp_reply_registers(data, self._transaction_id, self._unit)
            if registers is not None:
                return registers
        reply = self._receive(client, data, deadline)
        return None if reply is None else decode_read_write_reply(reply, request.read_count)

    def _send(self, client: _Client, pdu: bytes) -> None:
        """Frame ``pdu`` for the unit (TCP: under the next transaction id) and send it."""
        if self._rtu:
            frame = encode_rtu_frame(self._unit, pdu)
        else:
            tid = self._transaction_id + 1
            self._transaction_id = tid if tid <= LAST_TRANSACTION_ID else FIRST_TRANSACTION_ID
            frame = encode_tcp_frame(self._transaction_id, self._unit, pdu)
        client.send(self._trace(True, frame))

    def _receive(self, client: _Client, buffer: bytes, deadline: float) -> bytes | None:
        """Our reply's PDU, from ``buffer`` (what arrived so far) and what arrives before
        ``deadline``; None when no whole reply came in time."""
        read = self._rtu_reply if self._rtu else self._tcp_reply
        while True:
            reply, buffer = read(buffer)
            if reply is not None:
                return reply
            if time.monotonic() >= deadline:
                return None
            data = client.recv(None)
            if not data:
                return None
            buffer += self._trace(False, data)

    def _tcp_reply(self, buffer: bytes) -> tuple[bytes | None, bytes]:
        """Our reply's PDU from ``buffer`` (None: not whole yet) and the bytes still to read."""
        while len(buffer) >= MBAP_HEADER_BYTES:
            size = tcp_frame_size(buffer)
            if len(buffer) < size:
                break
            reply = decode_tcp_frame(buffer[:size])
            buffer = buffer[size:]
            if reply.transaction_id != self._transaction_id:
                continue  # a late reply to an earlier request
            if reply.unit != self._unit:
                raise FrameDecodeError(f"reply from unit {reply.unit}, not {self._unit}")
            return reply.pdu, buffer
        return None, buffer

    def _rtu_reply(self, buffer: bytes) -> tuple[bytes | None, bytes]:
        """Our reply's PDU from ``buffer`` (None: not whole yet) and the bytes still to read."""
        if buffer[0] != self._unit:  # not the start of our reply: no need to wait for more
            raise FrameDecodeError(f"reply from address {buffer[0]}, not {self._unit}")
        if len(buffer) < RTU_HEAD_BYTES:
            return None, buffer
        size = rtu_reply_size(buffer)
        if len(buffer) < size:
            return None, buffer
        return decode_rtu_frame(buffer[:size]).pdu, buffer[size:]
