"""ModbusDriver against the software pump (ModbusSimulatorServer) over TCP and RTU on a pty.

Simulated effects are reached by advancing a ManualClock.  Fault tests use short real timeouts
(timeout_s=0.3) and check that each fault ends in a typed error, in bounded real time, and that
the same driver works again once the fault is gone.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import TypeVar

import pytest

from drivers import make_pump
from drivers.approved_rate import ApprovedRate
from drivers.errors import (
    DriverConfigError,
    DriverError,
    LinkLostError,
    PumpProtocolError,
    PumpRefusedError,
    PumpTimeoutError,
    UnsupportedPumpError,
)
from drivers.modbus import SUPPORTED_PUMPS, ModbusDriver, ModbusRefusedError
from drivers.status import PumpStatus
from gateway.safety import check_rate
from protocol.clock import ManualClock
from protocol.modbus import Identification, ModbusException, Reg
from protocol.pump_state import PumpAlarm, PumpState
from simulator.modbus_datastore import SIMULATOR_MODEL_ID, SIMULATOR_VENDOR_ID
from simulator.modbus_server import ModbusSimulatorServer
from simulator.model import PumpModel
from simulator.pty import NullModem
from simulator.server import SimulatorServer

pytestmark = pytest.mark.timeout(30)

T = TypeVar("T")

#: Below the safety ceiling for 70 kg (0.4 mL/kg/h x 70 kg = 28 mL/h), so the gateway approves
#: rates the pump itself must refuse.
PUMP_MAX_RATE_ML_PER_H = 20.0
WEIGHT_KG = 70.0
TIMEOUT_S = 0.3
#: Real-time slack for a failing request: thread scheduling, pty relays, RTU input draining.
SLACK_S = 1.0


# The plugin's pump (simulator/pytest_plugin.py), set for this module: a Modbus pump whose own
# maximum is below the ceiling, over TCP and over RTU on a pty.


@pytest.fixture
def sim_protocol() -> str:
    return "modbus"


@pytest.fixture
def sim_max_rate_ml_per_h() -> float:
    return PUMP_MAX_RATE_ML_PER_H


@pytest.fixture(params=["tcp", "rtu"])
def sim_listen(request: pytest.FixtureRequest) -> str:
    return "tcp://127.0.0.1:0" if request.param == "tcp" else "pty"


@pytest.fixture
def listen(sim_listen: str) -> str:
    return sim_listen


@pytest.fixture
def server(sim_server: SimulatorServer) -> ModbusSimulatorServer:
    assert isinstance(sim_server, ModbusSimulatorServer)
    return sim_server


def open_driver(url: str, **options: object) -> ModbusDriver:
    driver = make_pump(url, timeout_s=TIMEOUT_S, **options)
    assert isinstance(driver, ModbusDriver)
    try:
        driver.open()
    except BaseException:
        driver.close()
        raise
    return driver


@pytest.fixture
def driver(server: ModbusSimulatorServer) -> Iterator[ModbusDriver]:
    opened = open_driver(server.pump_url)
    yield opened
    opened.close()


def timed(call: Callable[[], object]) -> tuple[BaseException, float]:
    """Run ``call``, which must fail; return the error and the real seconds it took."""
    start = time.monotonic()
    with pytest.raises(DriverError) as caught:
        call()
    return caught.value, time.monotonic() - start


def recovers(call: Callable[[], T], *, within_s: float = 5.0) -> T:
    """``call`` succeeds again within ``within_s`` real seconds (stale replies may be in flight)."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            return call()
        except (PumpTimeoutError, PumpProtocolError, LinkLostError):
            if time.monotonic() > deadline:
                raise


def rate(rate_ml_per_h: float) -> ApprovedRate:
    """An approved rate for a 70 kg patient (ceiling 28 mL/h)."""
    return check_rate(rate_ml_per_h, weight_kg=WEIGHT_KG)


# -- identify ------------------------------------------------------------------------------


def test_identify_reads_the_pumps_identity(driver: ModbusDriver) -> None:
    identity = driver.identity
    assert identity is not None
    assert identity.vendor == "infusion-gateway"
    assert identity.model == "IG-SIM-PUMP"
    assert identity.firmware == "1.0.0"
    assert identity.max_rate_ml_per_h == PUMP_MAX_RATE_ML_PER_H
    assert identity.rate_resolution_ml_per_h == 0.01
    assert driver.identify() == identity


def test_the_driver_supports_the_simulators_ids() -> None:
    assert (SIMULATOR_VENDOR_ID, SIMULATOR_MODEL_ID) in SUPPORTED_PUMPS


def _identification(**changes: object) -> Identification:
    fields: dict[str, object] = {
        "vendor_id": SIMULATOR_VENDOR_ID,
        "model_id": SIMULATOR_MODEL_ID,
        "firmware_major": 1,
        "firmware_minor": 0,
        "firmware_patch": 0,
        "max_rate_ml_per_h": Decimal("20"),
        "model_name": "OTHER",
        "serial_number": "X",
    }
    fields.update(changes)
    return Identification(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"map_version": 2}, "map version 2"),
        ({"vendor_id": 0x1234}, "vendor 0x1234 model 0x0001"),
        ({"model_id": 99}, "model 0x0063"),
    ],
)
def test_an_unsupported_pump_is_refused(
    model: PumpModel, listen: str, changes: dict[str, object], message: str
) -> None:
    with ModbusSimulatorServer(
        model, listen=listen, identification=_identification(**changes)
    ) as s:
        driver = make_pump(s.pump_url, timeout_s=TIMEOUT_S)
        try:
            with pytest.raises(UnsupportedPumpError, match=message):
                driver.open()
        finally:
            driver.close()


# -- setpoints -------------------------------------------------------------------------------


def test_set_rate_truncates_and_reads_back_exactly(driver: ModbusDriver, model: PumpModel) -> None:
    readback = driver.set_rate(rate(12.5))
    assert readback.sent_ml_per_h == 12.5
    assert readback.readback_ml_per_h == 12.5
    assert readback.exact
    assert model.snapshot().rate_setpoint_ml_per_h == 12.5
    readback = driver.set_rate(rate(15.489))
    assert readback.sent_ml_per_h == 15.48  # truncated, never rounded up
    assert readback.readback_ml_per_h == 15.48
    assert readback.resolution_ml_per_h == 0.01
    assert readback.exact


def test_set_vtbi_and_continuous(driver: ModbusDriver, model: PumpModel) -> None:
    assert driver.set_vtbi(10.0) == 10.0
    assert driver.set_vtbi(2.5009) == 2.5  # truncated to 0.001 mL
    assert model.snapshot().vtbi_ml == 2.5
    assert driver.read_status().vtbi_remaining_ml == 2.5
    assert driver.set_vtbi(0.0) == 0.0
    assert driver.read_status().vtbi_remaining_ml is None  # continuous


def test_a_rate_above_the_pumps_maximum_is_refused_by_the_pump(
    driver: ModbusDriver, model: PumpModel
) -> None:
    driver.set_rate(rate(10.0))
    with pytest.raises(PumpRefusedError, match="RATE_SETPOINT") as caught:
        driver.set_rate(rate(25.0))  # approved by the gateway (28 mL/h ceiling), not the pump
    assert isinstance(caught.value, ModbusRefusedError)
    assert caught.value.register_name == "RATE_SETPOINT"
    assert caught.value.exception_code is ModbusException.ILLEGAL_DATA_VALUE
    assert model.snapshot().rate_setpoint_ml_per_h == 10.0
    assert PumpAlarm.RATE_REFUSED in driver.read_status().alarms


# -- running ---------------------------------------------------------------------------------


def test_start_status_volume_stop(driver: ModbusDriver, clock: ManualClock) -> None:
    driver.set_rate(rate(12.0))
    driver.set_vtbi(100.0)
    driver.start()
    clock.advance(1800.0)
    status = driver.read_status()
    assert status == PumpStatus(
        state=PumpState.INFUSING,
        rate_ml_per_h=12.0,
        volume_infused_ml=6.0,
        volume_resolution_ml=float(Reg.VOLUME_INFUSED.scale),
        vtbi_remaining_ml=94.0,
        alarms=frozenset(),
        measured_rate_ml_per_h=12.0,
        max_rate_ml_per_h=PUMP_MAX_RATE_ML_PER_H,
        identity=driver.identity,
        uptime_s=1800.0,  # the pump's own UPTIME register
    )
    driver.stop()
    clock.advance(1800.0)
    status = driver.read_status()
    assert status.state is PumpState.STOPPED
    assert status.measured_rate_ml_per_h == 0.0
    assert status.volume_infused_ml == 6.0
    driver.clear_totals()
    assert driver.read_status().volume_infused_ml == 0.0


def test_start_after_a_completed_vtbi_is_refused_until_vtbi_is_set_again(
    driver: ModbusDriver, clock: ManualClock
) -> None:
    driver.set_rate(rate(12.0))
    driver.set_vtbi(1.0)
    driver.start()
    clock.advance(3600.0)
    status = driver.read_status()
    assert status.state is PumpState.STOPPED
    assert PumpAlarm.VTBI_COMPLETE in status.alarms
    assert status.volume_infused_ml == 1.0
    with pytest.raises(PumpRefusedError, match="COMMAND"):
        driver.start()
    driver.set_vtbi(1.0)
    driver.start()
    assert driver.read_status().state is PumpState.INFUSING


def test_alarms_are_reported_latched_and_cleared(driver: ModbusDriver, model: PumpModel) -> None:
    driver.set_rate(rate(5.0))
    driver.start()
    model.inject(PumpAlarm.OCCLUSION)
    status = driver.read_status()
    assert status.state is PumpState.ALARM
    assert PumpAlarm.OCCLUSION in status.alarms
    with pytest.raises(PumpRefusedError):
        driver.start()
    driver.clear_alarms()  # the occlusion is still there: the pump keeps it latched
    assert PumpAlarm.OCCLUSION in driver.read_status().alarms
    model.clear_condition(PumpAlarm.OCCLUSION)
    driver.clear_alarms()
    status = driver.read_status()
    assert status.state is PumpState.STOPPED  # clearing never restarts the pump
    assert status.alarms == frozenset()


def test_an_alarm_the_pump_cleared_by_itself_stays_latched_in_a_whole_status(
    driver: ModbusDriver, model: PumpModel
) -> None:
    """The driver's latch outlives the pump's: once they differ, the poll is the pump's status
    with the latched alarms (no field lost); while they agree, it is the pump's status as read."""
    model.inject(PumpAlarm.LOW_BATTERY)
    reported = driver.read_status()
    assert reported.alarms == frozenset({PumpAlarm.LOW_BATTERY})
    model.clear_condition(PumpAlarm.LOW_BATTERY)
    model.clear_alarms()  # cleared on the pump, not through the driver
    latched = driver.read_status()
    assert latched == dataclasses.replace(reported, uptime_s=latched.uptime_s)
    assert latched.identity is driver.identity
    driver.clear_alarms()
    assert driver.read_status().alarms == frozenset()


def test_polling_feeds_the_watchdog_and_its_expiry_stops_the_pump(
    driver: ModbusDriver, clock: ManualClock, model: PumpModel
) -> None:
    assert driver.arm_watchdog(2.2) == 3.0  # rounded up to whole seconds
    assert model.snapshot().watchdog_timeout_s == 3.0
    driver.set_rate(rate(6.0))
    driver.start()
    for _ in range(10):  # each poll writes a new heartbeat
        clock.advance(2.0)
        assert driver.read_status().state is PumpState.INFUSING
    clock.advance(3.0)  # no poll for 3 s
    status = driver.read_status()
    assert status.state is PumpState.ALARM
    assert PumpAlarm.COMM_TIMEOUT in status.alarms
    clock.advance(60.0)
    driver.read_status()
    driver.clear_alarms()
    assert driver.read_status().state is PumpState.STOPPED  # never restarted by itself


def test_a_new_driver_changes_the_heartbeat_the_pump_holds(
    server: ModbusSimulatorServer, clock: ManualClock
) -> None:
    first = open_driver(server.pump_url)
    first.arm_watchdog(5.0)
    first.read_status()  # the pump now holds this driver's first heartbeat
    first.close()
    second = open_driver(server.pump_url)
    try:
        clock.advance(4.0)
        second.read_status()  # must write a value other than the one the pump holds
        clock.advance(4.0)
        assert PumpAlarm.COMM_TIMEOUT not in second.read_status().alarms
    finally:
        second.close()


def test_a_watchdog_timeout_beyond_the_map_is_refused_without_sending(
    driver: ModbusDriver, model: PumpModel
) -> None:
    with pytest.raises(ModbusRefusedError, match="WATCHDOG_TIMEOUT"):
        driver.arm_watchdog(600.5)
    assert model.snapshot().watchdog_timeout_s == 0.0
    assert driver.arm_watchdog(600.0) == 600.0


# -- faults ----------------------------------------------------------------------------------


def test_hang_times_out_and_the_driver_works_again(driver: ModbusDriver, model: PumpModel) -> None:
    model.line.hang = True
    error, elapsed = timed(driver.read_status)
    assert isinstance(error, PumpTimeoutError)
    attempts = 1 + driver.options.retries
    assert elapsed < attempts * TIMEOUT_S + SLACK_S
    model.line.hang = False
    assert driver.read_status().state is PumpState.STOPPED


def test_one_attempt_times_out_within_about_the_timeout(server: ModbusSimulatorServer) -> None:
    driver = open_driver(server.pump_url, retries=0)
    try:
        server.model.line.hang = True
        error, elapsed = timed(driver.stop)
        assert isinstance(error, PumpTimeoutError)
        assert TIMEOUT_S * 0.9 <= elapsed < TIMEOUT_S + 0.5
    finally:
        server.model.line.hang = False
        driver.close()


def test_slow_replies_within_the_timeout_are_fine(driver: ModbusDriver, model: PumpModel) -> None:
    model.line.reply_delay_s = 0.1  # real seconds: the clock is manual
    start = time.monotonic()
    assert driver.read_status().state is PumpState.STOPPED
    assert time.monotonic() - start >= 0.2  # heartbeat write + status read, each late
    model.line.reply_delay_s = 0.0


def test_replies_slower_than_the_timeout_time_out_then_the_driver_recovers(
    server: ModbusSimulatorServer,
) -> None:
    driver = open_driver(server.pump_url, retries=0)
    try:
        server.model.line.reply_delay_s = 0.6
        error, elapsed = timed(driver.read_status)
        assert isinstance(error, PumpTimeoutError)
        assert elapsed < TIMEOUT_S + SLACK_S
        server.model.line.reply_delay_s = 0.0
        # The late reply may still arrive; TCP skips it by transaction id, RTU (no ids) sees a
        # reply that does not match its request and discards it.
        assert recovers(driver.read_status).state is PumpState.STOPPED
    finally:
        driver.close()


@pytest.mark.hazard("H-CL-03")
def test_corrupted_rtu_replies_are_typed_errors(model: PumpModel) -> None:
    with ModbusSimulatorServer(model, listen="pty") as server:
        driver = open_driver(server.pump_url)
        try:
            model.line.corrupt_probability = 1.0
            error, _ = timed(driver.read_status)
            assert isinstance(error, PumpTimeoutError | PumpProtocolError)
            model.line.corrupt_probability = 0.0
            assert recovers(driver.read_status).state is PumpState.STOPPED
        finally:
            driver.close()


def test_tcp_server_closed_mid_session_then_back_on_the_same_port(model: PumpModel) -> None:
    server = ModbusSimulatorServer(model)
    server.start()
    listening = server.listening
    driver = open_driver(server.pump_url)
    try:
        driver.set_rate(rate(5.0))
        server.close()
        error, elapsed = timed(driver.read_status)
        assert isinstance(error, LinkLostError)
        assert elapsed < TIMEOUT_S + SLACK_S
        assert not driver.connected
        with ModbusSimulatorServer(model, listen=listening):
            status = driver.read_status()  # reconnects by itself
            assert status.rate_ml_per_h == 5.0
            assert driver.connected
    finally:
        server.close()
        driver.close()


def test_rtu_cable_pulled_is_link_lost(model: PumpModel) -> None:
    server = ModbusSimulatorServer(model, listen="pty")  # owns its null modem
    server.start()
    driver = open_driver(server.pump_url)
    try:
        server.close()  # the cable goes with it: the device path disappears
        error, elapsed = timed(driver.read_status)
        assert isinstance(error, LinkLostError)
        assert elapsed < TIMEOUT_S + SLACK_S
    finally:
        server.close()
        driver.close()


def test_rtu_pump_gone_then_back_on_the_same_line(model: PumpModel) -> None:
    with NullModem() as cable:
        server = ModbusSimulatorServer(model, listen="pty", cable=cable)
        server.start()
        driver = open_driver(server.pump_url)
        try:
            driver.set_rate(rate(5.0))
            server.close()  # the line stays: nobody answers on it
            error, elapsed = timed(driver.read_status)
            assert isinstance(error, PumpTimeoutError)
            assert elapsed < (1 + driver.options.retries) * TIMEOUT_S + SLACK_S
            with ModbusSimulatorServer(model, listen="pty", cable=cable):
                assert driver.read_status().rate_ml_per_h == 5.0
        finally:
            server.close()
            driver.close()


def test_nothing_listening_is_link_lost(model: PumpModel) -> None:
    with ModbusSimulatorServer(model) as server:
        url = server.pump_url
    driver = make_pump(url, timeout_s=TIMEOUT_S)
    try:
        error, elapsed = timed(driver.open)
        assert isinstance(error, LinkLostError)
        assert elapsed < SLACK_S
    finally:
        driver.close()


def test_a_wrong_unit_id_times_out(server: ModbusSimulatorServer) -> None:
    url = server.pump_url.replace("unit=1", "unit=2")
    driver = make_pump(url, timeout_s=TIMEOUT_S, retries=0)
    try:
        error, _ = timed(driver.open)
        assert isinstance(error, PumpTimeoutError)
        assert "unit 2" in str(error)
    finally:
        driver.close()


def test_the_serial_port_is_opened_exclusively(model: PumpModel) -> None:
    with ModbusSimulatorServer(model, listen="pty") as server:
        first = open_driver(server.pump_url)
        second = make_pump(server.pump_url, timeout_s=TIMEOUT_S)
        try:
            error, _ = timed(second.open)
            assert isinstance(error, LinkLostError)
            first.read_status()
        finally:
            second.close()
            first.close()


def test_close_is_idempotent_and_a_closed_driver_refuses(driver: ModbusDriver) -> None:
    driver.close()
    driver.close()
    with pytest.raises(LinkLostError):
        driver.read_status()


# -- options ---------------------------------------------------------------------------------


def test_options_from_the_url() -> None:
    driver = make_pump("modbus+rtu:///dev/ttyUSB0?baud=9600&parity=N&unit=17")
    assert isinstance(driver, ModbusDriver)
    assert driver.options.model_dump() == {
        "timeout_s": 1.0,
        "retries": 2,
        "unit": 17,
        "baud": 9600,
        "parity": "N",
        "record": None,
    }
    defaults = make_pump("modbus+rtu:///dev/ttyUSB0").options.model_dump()
    assert (defaults["unit"], defaults["baud"], defaults["parity"]) == (1, 19200, "E")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("modbus+rtu:///dev/ttyUSB0?baud=12345", "'baud'"),
        ("modbus+rtu:///dev/ttyUSB0?parity=X", "'parity'"),
        ("modbus+rtu:///dev/ttyUSB0?unit=0", "'unit'"),
        ("modbus+rtu:///dev/ttyUSB0?unit=248", "'unit'"),
        ("modbus+rtu:///dev/ttyUSB0?slave=1", "'slave': unknown"),
        ("modbus+tcp://127.0.0.1:502?baud=9600", "'baud': only for modbus\\+rtu"),
        ("modbus+tcp://127.0.0.1:502?parity=E", "'parity': only for modbus\\+rtu"),
    ],
)
def test_bad_options_are_refused(url: str, message: str) -> None:
    with pytest.raises(DriverConfigError, match=message):
        make_pump(url)


def test_only_modbus_urls() -> None:
    with pytest.raises(DriverConfigError, match="modbus"):
        ModbusDriver("newera+tcp://127.0.0.1:4001")
