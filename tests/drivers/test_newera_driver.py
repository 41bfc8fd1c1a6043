"""NeweraDriver against the NE-1000 simulator over a real pty and over TCP.

Simulated time is a :class:`ManualClock` the tests advance; real timeouts are short (0.3 s) so
fault tests end quickly.  Transport-neutral behaviour runs over the pty; what depends on the
transport runs over both (a TCP close costs 0.3 s inside pyserial's ``socket://`` handler).
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from drivers import make_pump, open_pump
from drivers.errors import (
    DriverConfigError,
    LinkLostError,
    PumpAlarmError,
    PumpRefusedError,
    PumpTimeoutError,
    UnsupportedPumpError,
)
from drivers.newera import NeweraDriver, NeweraOptions
from protocol.clock import ManualClock
from protocol.newera import (
    FirmwareVersion,
)
from protocol.pump_state import PumpAlarm, PumpState
from simulator.model import PumpModel
from simulator.newera_server import NeweraSimulatorServer
from tests.drivers.newera_support import TIMEOUT_S, approved

pytestmark = pytest.mark.timeout(20)


# --- options --------------------------------------------------------------------------------


def test_options_have_the_documented_defaults_and_limits() -> None:
    driver = make_pump("newera:///dev/ttyUSB0")
    assert isinstance(driver, NeweraDriver)
    assert isinstance(driver.options, NeweraOptions)
    assert (driver.options.baud, driver.options.address, driver.options.safe_timeout_s) == (
        19200,
        0,
        0,
    )
    options = make_pump("newera:///dev/ttyUSB0?baud=9600&address=12&safe_timeout_s=30").options
    assert isinstance(options, NeweraOptions)
    assert (options.baud, options.address, options.safe_timeout_s) == (9600, 12, 30)
    for bad, name in (
        ("baud=115200", "baud"),
        ("address=100", "address"),
        ("safe_timeout_s=256", "safe_timeout_s"),
        ("unit=1", "unit"),
    ):
        with pytest.raises(DriverConfigError, match=name):
            make_pump(f"newera:///dev/ttyUSB0?{bad}")


def test_a_missing_device_is_a_lost_link() -> None:
    with pytest.raises(LinkLostError, match="cannot open"):
        open_pump("newera:///dev/does-not-exist", timeout_s=TIMEOUT_S, retries=0)


# --- identify, rate, start/stop, status (pty and TCP) ---------------------------------------


def test_identify(any_driver: NeweraDriver) -> None:
    identity = any_driver.identity
    assert identity is not None
    assert (identity.vendor, identity.model, identity.firmware) == ("New Era", "NE-1000", "3.928")
    assert identity.max_rate_ml_per_h is None
    assert identity.rate_resolution_ml_per_h == pytest.approx(0.01)
    assert any_driver.diameter_mm == Decimal("26.59")


def test_set_rate_sends_truncated_and_reads_back_exactly(
    any_driver: NeweraDriver, model: PumpModel
) -> None:
    readback = any_driver.set_rate(approved(27.3333))
    assert readback.sent_ml_per_h == pytest.approx(27.33)  # 455.5 µL/min
    assert readback.sent_ml_per_h <= 27.3333
    assert readback.exact
    assert readback.resolution_ml_per_h == pytest.approx(0.006)
    assert model.snapshot().rate_setpoint_ml_per_h == readback.readback_ml_per_h


@pytest.mark.parametrize("rate_ml_per_h", [28.0, 0.5, 0.0123, 1.0 / 3.0, 12.3456, 27.999])
def test_set_rate_never_exceeds_the_approved_rate(
    driver: NeweraDriver, model: PumpModel, rate_ml_per_h: float
) -> None:
    readback = driver.set_rate(approved(rate_ml_per_h))
    assert readback.sent_ml_per_h <= rate_ml_per_h
    assert rate_ml_per_h - readback.sent_ml_per_h < readback.resolution_ml_per_h
    assert readback.exact
    assert model.snapshot().rate_setpoint_ml_per_h <= rate_ml_per_h


def test_start_status_volume_and_stop(
    any_driver: NeweraDriver, model: PumpModel, clock: ManualClock
) -> None:
    sent = any_driver.set_rate(approved(20.0)).sent_ml_per_h  # 333.3 µL/min = 19.998 mL/h
    any_driver.start()
    clock.advance(1800)
    status = any_driver.read_status()
    assert status.state is PumpState.INFUSING
    assert status.rate_ml_per_h == sent
    assert status.volume_infused_ml == pytest.approx(sent / 2, abs=0.01)
    assert status.vtbi_remaining_ml is None  # continuous
    assert status.alarms == frozenset()
    any_driver.stop()  # STP pauses, a second STP stops
    assert model.snapshot().state is PumpState.STOPPED
    assert any_driver.read_status().state is PumpState.STOPPED


def test_stop_of_a_stopped_pump_is_one_command(driver: NeweraDriver, model: PumpModel) -> None:
    driver.stop()
    assert model.snapshot().state is PumpState.STOPPED


def test_vtbi_counts_down_and_completion_is_reported_until_cleared(
    any_driver: NeweraDriver, model: PumpModel, clock: ManualClock
) -> None:
    assert any_driver.set_vtbi(5.0) == 5.0
    assert model.snapshot().vtbi_ml == 5.0
    any_driver.set_rate(approved(10.0))
    any_driver.start()
    clock.advance(900)
    status = any_driver.read_status()
    assert status.state is PumpState.INFUSING
    assert status.vtbi_remaining_ml == pytest.approx(2.5, abs=0.002)
    assert PumpAlarm.VTBI_COMPLETE not in status.alarms
    clock.advance(3600)  # the pump stops itself at 5 mL
    status = any_driver.read_status()
    assert status.state is PumpState.STOPPED
    assert status.volume_infused_ml == pytest.approx(5.0)
    assert status.vtbi_remaining_ml == 0.0
    assert PumpAlarm.VTBI_COMPLETE in status.alarms
    any_driver.clear_alarms()
    status = any_driver.read_status()
    assert PumpAlarm.VTBI_COMPLETE not in status.alarms  # acknowledged: not reported again
    # RUN after a completed VTBI dispenses it again, counted from there.
    any_driver.start()
    clock.advance(900)
    status = any_driver.read_status()
    assert status.vtbi_remaining_ml == pytest.approx(2.5, abs=0.002)
    clock.advance(3600)
    assert PumpAlarm.VTBI_COMPLETE in any_driver.read_status().alarms


def test_a_pump_stopped_before_its_vtbi_is_not_complete(
    driver: NeweraDriver, clock: ManualClock
) -> None:
    driver.set_vtbi(5.0)
    driver.set_rate(approved(10.0))
    driver.start()
    clock.advance(900)
    driver.stop()
    status = driver.read_status()
    assert status.state is PumpState.STOPPED
    assert status.vtbi_remaining_ml == pytest.approx(2.5, abs=0.002)
    assert PumpAlarm.VTBI_COMPLETE not in status.alarms


@pytest.mark.hazard("H-OV-07")
def test_vtbi_in_microlitres_on_a_small_syringe(model: PumpModel, clock: ManualClock) -> None:
    with (
        NeweraSimulatorServer(model, diameter_mm=Decimal("8.0")) as server,
        open_pump(server.pump_url, timeout_s=TIMEOUT_S) as driver,
    ):
        assert isinstance(driver, NeweraDriver)
        assert driver.diameter_mm == Decimal("8.0")
        assert driver.set_vtbi(0.12345) == pytest.approx(0.1234)  # 123.4 µL, truncated
        assert model.snapshot().vtbi_ml == pytest.approx(0.1234)
        driver.set_rate(approved(0.5))
        driver.start()
        clock.advance(3600)
        status = driver.read_status()
        assert status.volume_infused_ml == pytest.approx(0.1234)
        assert PumpAlarm.VTBI_COMPLETE in status.alarms
        with pytest.raises(PumpRefusedError, match="UL"):
            driver.set_vtbi(12.0)  # 12000 µL does not fit the 4-digit field


def test_continuous_vtbi_and_clear_totals(
    driver: NeweraDriver, model: PumpModel, clock: ManualClock
) -> None:
    driver.set_vtbi(4.0)
    driver.set_rate(approved(8.0))
    driver.start()
    clock.advance(900)  # 2 mL
    driver.clear_totals()
    assert driver.read_status().volume_infused_ml == 0.0
    assert driver.read_status().vtbi_remaining_ml == pytest.approx(2.0, abs=0.002)
    assert driver.set_vtbi(0.0) == 0.0
    assert model.snapshot().vtbi_ml == 0.0
    assert driver.read_status().vtbi_remaining_ml is None


def test_arm_watchdog_clamps_to_what_the_pump_holds(driver: NeweraDriver, model: PumpModel) -> None:
    assert driver.arm_watchdog(10.7) == 10.0
    assert model.snapshot().watchdog_timeout_s == 10.0
    assert driver.arm_watchdog(0.2) == 1.0
    assert driver.arm_watchdog(1000.0) == 255.0
    assert driver.read_status().state is PumpState.STOPPED  # safe framing both ways


def test_safe_timeout_option_arms_safe_mode_at_open(server: NeweraSimulatorServer) -> None:
    with open_pump(server.pump_url, timeout_s=TIMEOUT_S, safe_timeout_s=7) as driver:
        assert server.model.snapshot().watchdog_timeout_s == 7.0
        assert driver.read_status().state is PumpState.STOPPED


def test_a_pump_at_another_address(model: PumpModel) -> None:
    with (
        NeweraSimulatorServer(model, address=5) as server,
        open_pump(server.pump_url, timeout_s=TIMEOUT_S) as driver,
    ):
        assert "address=5" in server.pump_url
        assert driver.read_status().state is PumpState.STOPPED
    with (
        NeweraSimulatorServer(model, address=5) as server,
        pytest.raises(PumpTimeoutError),
    ):
        open_pump(server.pump_url.replace("?address=5", ""), timeout_s=TIMEOUT_S, retries=0)


# --- alarms ---------------------------------------------------------------------------------


def test_power_loss_on_a_set_rate_reply_is_latched_and_the_rate_still_set(
    any_driver: NeweraDriver, model: PumpModel
) -> None:
    model.power_loss()
    readback = any_driver.set_rate(approved(12.0))
    assert readback.exact
    assert model.snapshot().rate_setpoint_ml_per_h == pytest.approx(12.0)
    status = any_driver.read_status()
    assert PumpAlarm.POWER_LOSS in status.alarms
    assert status.state is PumpState.ALARM  # stopped with a stopping alarm latched
    assert PumpAlarm.POWER_LOSS in any_driver.read_status().alarms  # latched across calls
    any_driver.clear_alarms()
    status = any_driver.read_status()
    assert status.alarms == frozenset()
    assert status.state is PumpState.STOPPED


def test_a_start_answered_by_an_alarm_is_not_re_sent(
    driver: NeweraDriver, model: PumpModel
) -> None:
    driver.set_rate(approved(10.0))
    model.power_loss()
    with pytest.raises(PumpAlarmError, match=r"A\?R"):
        driver.start()
    assert model.snapshot().state is not PumpState.INFUSING
    assert PumpAlarm.POWER_LOSS in driver.read_status().alarms
    driver.clear_alarms()
    driver.start()
    assert model.snapshot().state is PumpState.INFUSING


def test_safe_mode_timeout_is_latched_and_the_pump_stopped(
    model: PumpModel, clock: ManualClock, server: NeweraSimulatorServer
) -> None:
    with open_pump(server.pump_url, timeout_s=TIMEOUT_S, safe_timeout_s=5) as driver:
        driver.set_rate(approved(10.0))
        driver.start()
        clock.advance(6)
        assert model.snapshot().state is PumpState.ALARM
        status = driver.read_status()
        assert PumpAlarm.COMM_TIMEOUT in status.alarms
        assert status.state is PumpState.ALARM


def test_refusals_name_the_command_and_the_answer(driver: NeweraDriver, model: PumpModel) -> None:
    with pytest.raises(PumpRefusedError, match=r"RUN.*\?NA"):
        driver.start()  # rate 0: not applicable
    with pytest.raises(PumpRefusedError, match="zero rate"):
        driver.set_rate(approved(0.0))


@pytest.mark.parametrize("sim_max_rate_ml_per_h", [10.0])
def test_a_rate_above_the_pump_maximum_is_refused_by_the_pump(
    model: PumpModel, server: NeweraSimulatorServer
) -> None:
    with open_pump(server.pump_url, timeout_s=TIMEOUT_S) as driver:
        with pytest.raises(PumpRefusedError, match=r"RAT.*\?OOR"):
            driver.set_rate(approved(20.0))
        assert model.snapshot().rate_setpoint_ml_per_h == 0.0
        assert driver.set_rate(approved(9.0)).exact


@pytest.mark.parametrize("model_number", [1010, 300, 8000])
def test_an_unsupported_model_is_refused(model: PumpModel, model_number: int) -> None:
    version = FirmwareVersion(model_number, "3.928")
    with NeweraSimulatorServer(model, version=version) as server:
        driver = NeweraDriver(server.pump_url, timeout_s=TIMEOUT_S)
        with pytest.raises(UnsupportedPumpError, match=f"NE-{model_number}.*NE-1000"):
            driver.open()
        driver.close()


@pytest.mark.parametrize("model_number", [500, 1600, 4000])
def test_the_family_is_supported(model: PumpModel, model_number: int) -> None:
    with (
        NeweraSimulatorServer(model, version=FirmwareVersion(model_number, "3.1", 2)) as server,
        open_pump(server.pump_url, timeout_s=TIMEOUT_S) as driver,
    ):
        assert driver.identity is not None
        assert (driver.identity.model, driver.identity.firmware) == (f"NE-{model_number}", "3.1X2")
