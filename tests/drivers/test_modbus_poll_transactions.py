"""ModbusDriver polls in one transaction (function 23), and in two on a pump without it.

The requests the driver sends are seen where pymodbus's sync clients send them (``execute``),
over TCP and RTU on a pty, against the software pump with and without function 23 (``clock`` and
``model``: tests/drivers/conftest.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog
from pymodbus.client.base import ModbusBaseSyncClient
from pytest_mock import MockerFixture, MockType

from drivers import make_pump
from drivers.errors import LinkLostError
from drivers.modbus import ModbusDriver
from protocol.clock import ManualClock
from protocol.pump_state import PumpAlarm, PumpState
from simulator.modbus_server import ModbusSimulatorServer
from simulator.model import PumpModel

pytestmark = pytest.mark.timeout(30)

TIMEOUT_S = 0.3
READ, WRITE_SINGLE, READ_WRITE = 3, 6, 23


@pytest.fixture(params=["tcp", "rtu"])
def listen(request: pytest.FixtureRequest) -> str:
    return "tcp://127.0.0.1:0" if request.param == "tcp" else "pty"


@pytest.fixture
def sent(mocker: MockerFixture) -> MockType:
    """Every request any pymodbus sync client sends from now on."""
    return mocker.spy(ModbusBaseSyncClient, "execute")


def function_codes(sent: MockType) -> list[int]:
    """The function codes of the requests sent since the last call, in order."""
    codes = [int(call.args[2].function_code) for call in sent.call_args_list]
    sent.reset_mock()
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
    driver: ModbusDriver, sent: MockType, clock: ManualClock, model: PumpModel
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
    old_pump_driver: ModbusDriver, sent: MockType, clock: ManualClock, model: PumpModel
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
    model: PumpModel, sent: MockType
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
