"""ModbusDriver polls in one transaction (function 23), and in two on a pump without it.

The requests the driver sends are seen where they leave it: pymodbus's sync clients (``execute``)
and the poll's own framed request (``FramedExchange.read_write``), over TCP and RTU on a pty,
against the software pump with and without function 23 (``clock`` and ``model``:
tests/drivers/conftest.py); one test reads them off the wire (a recording).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import structlog
from pymodbus.client.base import ModbusBaseSyncClient
from pymodbus.pdu import ModbusPDU

from drivers import make_pump
from drivers.errors import LinkLostError
from drivers.modbus import ModbusDriver
from drivers.modbus_poll import FIRST_TRANSACTION_ID, FramedExchange
from protocol.clock import ManualClock
from protocol.modbus import (
    MBAP_HEADER_BYTES,
    STATUS_SPAN,
    FunctionCode,
    ReadWriteRequest,
    Reg,
    decode_read_write_reply,
    decode_tcp_frame,
    encode_read_write_request,
)
from protocol.pump_state import PumpAlarm, PumpState
from protocol.recording import decode_recording
from simulator.modbus_server import ModbusSimulatorServer
from simulator.model import PumpModel

pytestmark = pytest.mark.timeout(30)

TIMEOUT_S = 0.3
READ = FunctionCode.READ_HOLDING_REGISTERS
WRITE_SINGLE = FunctionCode.WRITE_SINGLE_REGISTER
READ_WRITE = FunctionCode.READ_WRITE_MULTIPLE_REGISTERS


@pytest.fixture(params=["tcp", "rtu"])
def listen(request: pytest.FixtureRequest) -> str:
    return "tcp://127.0.0.1:0" if request.param == "tcp" else "pty"


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The function code of every request any Modbus driver sends from now on, in order."""
    codes: list[int] = []
    execute = ModbusBaseSyncClient.execute
    read_write = FramedExchange.read_write

    def pymodbus_request(
        client: ModbusBaseSyncClient, no_response_expected: bool, request: ModbusPDU
    ) -> ModbusPDU:
        codes.append(int(request.function_code))
        return execute(client, no_response_expected, request)

    def framed_request(
        poll: FramedExchange, client: object, request: ReadWriteRequest, values: Sequence[int]
    ) -> tuple[int, ...] | None:
        codes.append(request.pdu(values)[0])
        return read_write(poll, client, request, values)  # type: ignore[arg-type]

    monkeypatch.setattr(ModbusBaseSyncClient, "execute", pymodbus_request)
    monkeypatch.setattr(FramedExchange, "read_write", framed_request)
    return codes


def function_codes(sent: list[int]) -> list[int]:
    """The function codes of the requests sent since the last call, in order."""
    codes = list(sent)
    sent.clear()
    return codes


def open_driver(server: ModbusSimulatorServer) -> ModbusDriver:
    driver = make_pump(server.pump_url, timeout_s=TIMEOUT_S)
    assert isinstance(driver, ModbusDriver)
    driver.open()
    return driver


@pytest.fixture
def driver(model: PumpModel, listen: str) -> Iterator[ModbusDriver]:
    with ModbusSimulatorServer(model, listen=listen) as server:
        opened = open_driver(server)
        yield opened
        opened.close()


@pytest.fixture
def old_pump_driver(model: PumpModel, listen: str) -> Iterator[ModbusDriver]:
    """A driver on a pump of the map without function 23 (it answers exception 01)."""
    with ModbusSimulatorServer(model, listen=listen, read_write=False) as server:
        opened = open_driver(server)
        yield opened
        opened.close()


def test_a_poll_is_one_transaction(
    driver: ModbusDriver, sent: list[int], clock: ManualClock, model: PumpModel
) -> None:
    driver.read_status()
    # The first poll of a connection reads the heartbeat the pump holds, to write another.
    assert function_codes(sent) == [READ, READ_WRITE]
    assert driver.arm_watchdog(3.0) == 3.0
    function_codes(sent)
    for _ in range(5):  # each poll feeds the watchdog: a new heartbeat every 2 s
        clock.advance(2.0)
        status = driver.read_status()
        assert function_codes(sent) == [READ_WRITE]
        assert status.state is PumpState.STOPPED
        assert PumpAlarm.COMM_TIMEOUT not in status.alarms
    clock.advance(3.0)  # no poll for 3 s
    assert PumpAlarm.COMM_TIMEOUT in model.snapshot().alarms


def test_the_status_read_in_the_same_transaction_is_the_pumps(
    driver: ModbusDriver, clock: ManualClock, model: PumpModel
) -> None:
    model.set_rate(12.5)
    model.start()
    clock.advance(3600.0)
    status = driver.read_status()
    assert status.state is PumpState.INFUSING
    assert status.rate_ml_per_h == 12.5
    assert status.volume_infused_ml == pytest.approx(12.5, abs=0.001)


def test_a_pump_without_function_23_is_polled_with_two_requests_logged_once(
    old_pump_driver: ModbusDriver, sent: list[int], clock: ManualClock, model: PumpModel
) -> None:
    with structlog.testing.capture_logs() as logs:
        old_pump_driver.read_status()
        assert function_codes(sent) == [READ, READ_WRITE, WRITE_SINGLE, READ]
        old_pump_driver.arm_watchdog(3.0)
        function_codes(sent)
        for _ in range(5):
            clock.advance(2.0)
            status = old_pump_driver.read_status()
            assert function_codes(sent) == [WRITE_SINGLE, READ]  # 23 is not offered again
            assert PumpAlarm.COMM_TIMEOUT not in status.alarms  # the 06 write feeds it
    events = [entry for entry in logs if entry["event"] == "modbus_read_write_unsupported"]
    assert len(events) == 1
    assert events[0]["pump"] == old_pump_driver.url.redacted()
    assert events[0]["unit"] == 1
    assert events[0]["log_level"] == "info"


def test_function_23_is_offered_again_on_the_next_connection(
    model: PumpModel, sent: list[int]
) -> None:
    """The refusal is remembered per connection: the pump on the other end may be replaced."""
    old_pump = ModbusSimulatorServer(model, read_write=False)
    old_pump.start()
    listening = old_pump.listening
    driver = open_driver(old_pump)
    try:
        driver.read_status()
        assert READ_WRITE in function_codes(sent)
        old_pump.close()
        with pytest.raises(LinkLostError):  # that pump is gone
            driver.read_status()
        with ModbusSimulatorServer(model, listen=listening):
            driver.read_status()  # reconnects to the new pump, which has function 23
            function_codes(sent)
            driver.read_status()
            assert function_codes(sent) == [READ_WRITE]
    finally:
        old_pump.close()
        driver.close()


def test_the_polls_own_request_on_the_wire(model: PumpModel, tmp_path: Path) -> None:
    """A recording shows the function-23 request as framed by protocol.modbus.frame, answered
    under its own transaction id with the status block."""
    path = tmp_path / "poll.jsonl"
    with ModbusSimulatorServer(model, listen="tcp://127.0.0.1:0") as server:
        driver = make_pump(f"{server.pump_url}&record={path}", timeout_s=TIMEOUT_S)
        try:
            driver.open()
            assert driver.read_status().state is PumpState.STOPPED
        finally:
            driver.close()
    records = decode_recording(path.read_text()).records
    sent_frames = [decode_tcp_frame(r.data) for r in records if r.dir == "tx"]
    received = b"".join(r.data for r in records if r.dir == "rx")
    poll = sent_frames[-1]
    heartbeat = int.from_bytes(poll.pdu[-2:], "big")
    assert poll.pdu == encode_read_write_request(
        STATUS_SPAN.address, STATUS_SPAN.count, Reg.HEARTBEAT.address, (heartbeat,)
    )
    assert poll.transaction_id == FIRST_TRANSACTION_ID
    assert poll.unit == 1
    reply = decode_tcp_frame(received[-(MBAP_HEADER_BYTES + 2 + 2 * STATUS_SPAN.count) :])
    assert reply.transaction_id == poll.transaction_id
    registers = decode_read_write_reply(reply.pdu, STATUS_SPAN.count)
    echo = Reg.HEARTBEAT_ECHO.address - STATUS_SPAN.address
    assert registers[echo] == heartbeat  # written, then read in the same transaction
