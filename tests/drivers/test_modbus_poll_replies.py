"""The poll's own function-23 transaction against replies the software pump never sends.

A scripted Modbus TCP pump (byte level, :class:`~simulator.byte_server.ByteServer`) answers the
driver's identification and heartbeat reads properly, then answers each poll the way a test
asks: garbled, cut short, under another transaction id, as an exception, or late.  Each ends in
a typed driver error within the timeout's bounds (never a hang or a crash), and the next good
reply is read normally.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Iterator
from decimal import Decimal

import pytest

from drivers import make_pump
from drivers.errors import DriverError, PumpProtocolError, PumpTimeoutError
from drivers.modbus import ModbusDriver, ModbusRefusedError
from protocol.modbus import (
    IDENTIFICATION_SPAN,
    MBAP_HEADER_BYTES,
    STATUS_SPAN,
    FunctionCode,
    Identification,
    ModbusException,
    StatusBlock,
    decode_tcp_frame,
    encode_exception_reply,
    encode_identification,
    encode_read_write_reply,
    encode_status,
    encode_tcp_frame,
    tcp_frame_size,
)
from protocol.pump_state import PumpState
from simulator.byte_server import ByteServer
from simulator.modbus_datastore import SIMULATOR_MODEL_ID, SIMULATOR_VENDOR_ID

pytestmark = pytest.mark.timeout(30)

TIMEOUT_S = 0.3
UNIT = 1
#: Real-time slack for a failing request: thread scheduling on a loaded machine.
SLACK_S = 1.0

STATUS = encode_status(
    StatusBlock(
        state=PumpState.STOPPED,
        alarms=frozenset(),
        rate_setpoint_ml_per_h=Decimal("12.5"),
        measured_rate_ml_per_h=Decimal(0),
        vtbi_ml=Decimal(0),
        vtbi_remaining_ml=Decimal(0),
        volume_infused_ml=Decimal("1.25"),
        watchdog_timeout_s=0,
        uptime_s=60,
        heartbeat_echo=0,
        last_command=None,
        command_counter=0,
    )
)
IDENTIFICATION = encode_identification(
    Identification(
        vendor_id=SIMULATOR_VENDOR_ID,
        model_id=SIMULATOR_MODEL_ID,
        firmware_major=1,
        firmware_minor=0,
        firmware_patch=0,
        max_rate_ml_per_h=Decimal(20),
        model_name="SCRIPTED",
        serial_number="1",
    )
)

#: How the pump answers a poll: from the request's transaction id, the bytes it sends back.
Answer = Callable[[int], bytes]


def _registers_reply(function: int, words: list[int]) -> bytes:
    return bytes((function, 2 * len(words))) + struct.pack(f">{len(words)}H", *words)


def good(tid: int) -> bytes:
    return encode_tcp_frame(tid, UNIT, encode_read_write_reply(STATUS))


class ScriptedPump(ByteServer):
    """Answers 03 (identification, one register, the status block) and 06 properly; each
    function-23 request with the next of :attr:`answers` (then a good reply)."""

    def __init__(self) -> None:
        super().__init__("tcp://127.0.0.1:0", name="scripted-modbus")
        self.answers: list[Answer] = []
        self._buffer = b""

    @property
    def pump_url(self) -> str:
        return f"modbus+{self.listening}?unit={UNIT}"

    def _received(self, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) >= MBAP_HEADER_BYTES:
            size = tcp_frame_size(self._buffer)
            if len(self._buffer) < size:
                return
            frame = decode_tcp_frame(self._buffer[:size])
            self._buffer = self._buffer[size:]
            self._write(self._answer(frame.transaction_id, frame.pdu))

    def _answer(self, tid: int, pdu: bytes) -> bytes:
        function = pdu[0]
        if function == FunctionCode.READ_WRITE_MULTIPLE_REGISTERS:
            return (self.answers.pop(0) if self.answers else good)(tid)
        if function == FunctionCode.WRITE_SINGLE_REGISTER:
            return encode_tcp_frame(tid, UNIT, pdu)  # the echo
        address, count = struct.unpack_from(">HH", pdu, 1)
        words = {
            IDENTIFICATION_SPAN.address: IDENTIFICATION,
            STATUS_SPAN.address: STATUS,
        }.get(address, [0] * count)
        return encode_tcp_frame(tid, UNIT, _registers_reply(function, list(words)))


@pytest.fixture
def pump() -> Iterator[ScriptedPump]:
    with ScriptedPump() as server:
        yield server


@pytest.fixture
def driver(pump: ScriptedPump) -> Iterator[ModbusDriver]:
    opened = make_pump(pump.pump_url, timeout_s=TIMEOUT_S, retries=0)
    assert isinstance(opened, ModbusDriver)
    try:
        opened.open()
        opened.read_status()  # the first poll reads the heartbeat held; later ones do not
        yield opened
    finally:
        opened.close()


def failing_poll(driver: ModbusDriver) -> tuple[DriverError, float]:
    start = time.monotonic()
    with pytest.raises(DriverError) as caught:
        driver.read_status()
    return caught.value, time.monotonic() - start


def exception_reply(function: int, code: int) -> Answer:
    return lambda tid: encode_tcp_frame(tid, UNIT, encode_exception_reply(function, code))


@pytest.mark.parametrize(
    ("answer", "error", "message"),
    [
        (
            lambda tid: good(tid)[:2] + b"\x00\x07" + good(tid)[4:],
            PumpProtocolError,
            "protocol id 7",
        ),
        (lambda tid: good(tid)[:4] + b"\x00\x01" + good(tid)[6:], PumpProtocolError, "length 1"),
        (lambda tid: good(tid)[:20], PumpTimeoutError, "only bytes that were not the reply"),
        (lambda tid: good(tid ^ 1), PumpTimeoutError, "no reply from unit 1"),
        (
            lambda tid: encode_tcp_frame(tid, 9, encode_read_write_reply(STATUS)),
            PumpProtocolError,
            "unit 9",
        ),
        (
            lambda tid: encode_tcp_frame(tid, UNIT, encode_read_write_reply(STATUS[:5])),
            PumpProtocolError,
            "expected 19 registers",
        ),
        (
            lambda tid: encode_tcp_frame(tid, UNIT, _registers_reply(3, STATUS)),
            PumpProtocolError,
            "reply is function 3, not 23",
        ),
        (exception_reply(3, 2), PumpProtocolError, "exception reply to function 3, not 23"),
        (exception_reply(23, 4), PumpProtocolError, "Modbus exception 04 on HEARTBEAT"),
        (exception_reply(23, 2), ModbusRefusedError, "ILLEGAL_DATA_ADDRESS"),
    ],
    ids=[
        "garbled-protocol-id",
        "garbled-length",
        "cut-short",
        "other-transaction-id",
        "other-unit",
        "too-few-registers",
        "other-function",
        "other-functions-exception",
        "server-device-failure",
        "refused",
    ],
)
@pytest.mark.hazard("H-CL-03")
def test_a_bad_poll_reply_is_a_typed_error_and_the_next_poll_works(
    pump: ScriptedPump,
    driver: ModbusDriver,
    answer: Answer,
    error: type[DriverError],
    message: str,
) -> None:
    pump.answers = [answer]
    caught, elapsed = failing_poll(driver)
    assert type(caught) is error
    assert message in str(caught)
    assert elapsed < TIMEOUT_S + SLACK_S
    status = driver.read_status()
    assert status.rate_ml_per_h == 12.5
    assert status.volume_infused_ml == 1.25


def test_a_late_reply_to_an_earlier_request_is_skipped(
    pump: ScriptedPump, driver: ModbusDriver
) -> None:
    """Another transaction id first (a late reply), then ours, in one burst: ours is read."""
    pump.answers = [lambda tid: good((tid - 1) & 0xFFFF) + good(tid)]
    assert driver.read_status().rate_ml_per_h == 12.5


def test_a_refused_function_23_falls_back_to_two_requests(
    pump: ScriptedPump, driver: ModbusDriver
) -> None:
    pump.answers = [exception_reply(23, ModbusException.ILLEGAL_FUNCTION)]
    assert driver.read_status().rate_ml_per_h == 12.5  # 06 then 03, at once
    pump.answers = [exception_reply(23, 4)]  # would fail, were 23 offered again
    assert driver.read_status().state is PumpState.STOPPED
