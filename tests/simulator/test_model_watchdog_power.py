"""The communication watchdog and power loss: the pump stops itself and never restarts by itself."""

from __future__ import annotations

import math

import pytest

from protocol.clock import ManualClock
from protocol.pump_state import PumpAlarm, PumpState
from simulator.errors import NotApplicableError, OutOfRangeError
from simulator.model import PumpModel

WEEK_S = 7 * 24 * 3600.0


def infusing_model(rate_ml_per_h: float = 360.0) -> tuple[ManualClock, PumpModel]:
    clock = ManualClock()
    model = PumpModel(clock)
    model.set_rate(rate_ml_per_h)
    model.start()
    return clock, model


# ---------------------------------------------------------------- watchdog


def test_watchdog_expiry_stops_at_its_exact_time_and_never_restarts() -> None:
    clock, model = infusing_model(360.0)  # 0.1 mL/s
    model.set_watchdog(30.0)  # counts as a valid packet at t=0
    clock.advance(29.999)
    assert model.snapshot().state is PumpState.INFUSING
    clock.advance(WEEK_S)
    snap = model.snapshot()
    assert snap.state is PumpState.ALARM
    assert PumpAlarm.COMM_TIMEOUT in snap.alarms
    assert snap.volume_infused_ml == pytest.approx(3.0, abs=1e-9)
    (expiry,) = [e for e in model.events() if e.alarm is PumpAlarm.COMM_TIMEOUT]
    assert expiry.monotonic_s == 30.0


def test_pump_stopped_by_watchdog_stays_stopped_after_packets_resume_and_alarm_clears() -> None:
    clock, model = infusing_model(360.0)
    model.set_watchdog(10.0)
    clock.advance(11.0)
    model.feed_watchdog()
    assert PumpAlarm.COMM_TIMEOUT in model.snapshot().alarms  # feeding does not clear it
    model.clear_alarms()
    for _ in range(100):
        clock.advance(5.0)
        model.feed_watchdog()
    snap = model.snapshot()
    assert snap.state is PumpState.STOPPED
    assert snap.volume_infused_ml == pytest.approx(1.0, abs=1e-9)


def test_watchdog_fed_within_its_timeout_never_expires() -> None:
    clock, model = infusing_model(360.0)
    model.set_watchdog(10.0)
    for _ in range(1000):
        clock.advance(9.99)
        model.feed_watchdog()
    snap = model.snapshot()
    assert snap.state is PumpState.INFUSING
    assert PumpAlarm.COMM_TIMEOUT not in snap.alarms


def test_watchdog_expires_even_when_the_pump_is_stopped() -> None:
    clock = ManualClock()
    model = PumpModel(clock)
    model.set_watchdog(5.0)
    clock.advance(6.0)
    snap = model.snapshot()
    assert snap.state is PumpState.ALARM
    assert snap.alarms == frozenset({PumpAlarm.COMM_TIMEOUT})


def test_watchdog_off_never_expires() -> None:
    clock, model = infusing_model(1.0)
    model.set_watchdog(5.0)
    model.set_watchdog(0.0)
    clock.advance(WEEK_S)
    snap = model.snapshot()
    assert snap.state is PumpState.INFUSING
    assert snap.watchdog_timeout_s == 0.0


def test_watchdog_timer_waits_for_first_valid_packet_after_power_up() -> None:
    clock, model = infusing_model(360.0)
    model.set_watchdog(10.0)
    model.power_loss()
    model.clear_alarms()
    clock.advance(1000.0)  # no packet since power-up: timer not running
    assert model.snapshot().alarms == frozenset()
    model.feed_watchdog()  # first valid packet: timer starts now
    clock.advance(9.0)
    assert model.snapshot().alarms == frozenset()
    clock.advance(1.0)
    snap = model.snapshot()
    assert snap.alarms == frozenset({PumpAlarm.COMM_TIMEOUT})
    assert snap.watchdog_timeout_s == 10.0


def test_watchdog_expiry_is_processed_before_a_late_feed() -> None:
    clock, model = infusing_model(360.0)
    model.set_watchdog(10.0)
    clock.advance(10.5)
    model.feed_watchdog()  # arrives after the deadline: too late
    assert PumpAlarm.COMM_TIMEOUT in model.snapshot().alarms


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf])
def test_invalid_watchdog_timeout_is_refused_and_changes_nothing(bad: float) -> None:
    model = PumpModel(ManualClock())
    model.set_watchdog(7.0)
    with pytest.raises(OutOfRangeError, match="watchdog"):
        model.set_watchdog(bad)
    assert model.snapshot().watchdog_timeout_s == 7.0


# ---------------------------------------------------------------- power loss


def test_power_loss_stops_the_pump_and_latches_power_loss() -> None:
    clock, model = infusing_model(360.0)
    clock.advance(10.0)
    model.power_loss()
    clock.advance(1000.0)
    snap = model.snapshot()
    assert snap.state is PumpState.ALARM
    assert PumpAlarm.POWER_LOSS in snap.alarms
    assert snap.measured_rate_ml_per_h == 0.0
    assert snap.lifetime_volume_infused_ml == pytest.approx(1.0, abs=1e-9)
    with pytest.raises(NotApplicableError, match="power_loss"):
        model.start()


def test_power_loss_restores_the_rate_last_set_while_not_pumping() -> None:
    clock = ManualClock()
    model = PumpModel(clock)
    model.set_rate(20.0)  # stopped: written to non-volatile memory
    model.start()
    model.set_rate(45.0)  # pumping: not written
    model.pause()
    model.set_rate(30.0)  # paused is not pumping: written
    model.start()
    model.set_rate(60.0)  # pumping: not written
    model.power_loss()
    assert model.snapshot().rate_setpoint_ml_per_h == 30.0


def test_power_loss_keeps_totalizers_vtbi_and_watchdog_setting() -> None:
    clock = ManualClock()
    model = PumpModel(clock, reservoir_ml=100.0)
    model.set_rate(360.0)
    model.set_vtbi(50.0)
    model.set_watchdog(60.0)
    model.start()
    for _ in range(2):
        clock.advance(50.0)  # 5 mL each
        model.feed_watchdog()
    model.power_loss()
    snap = model.snapshot()
    assert snap.volume_infused_ml == pytest.approx(10.0, abs=1e-9)
    assert snap.lifetime_volume_infused_ml == pytest.approx(10.0, abs=1e-9)
    assert snap.vtbi_ml == 50.0
    assert snap.vtbi_remaining_ml == pytest.approx(40.0, abs=1e-9)
    assert snap.reservoir_remaining_ml == pytest.approx(90.0, abs=1e-9)
    assert snap.watchdog_timeout_s == 60.0


def test_pump_never_restarts_by_itself_after_power_loss_and_clear() -> None:
    clock, model = infusing_model(360.0)
    model.power_loss()
    model.clear_alarms()
    clock.advance(WEEK_S)
    snap = model.snapshot()
    assert snap.state is PumpState.STOPPED
    assert snap.lifetime_volume_infused_ml == 0.0
    model.start()
    assert model.snapshot().state is PumpState.INFUSING


def test_power_loss_keeps_injected_conditions() -> None:
    _clock, model = infusing_model(360.0)
    model.inject(PumpAlarm.DOOR_OPEN)
    model.power_loss()
    model.clear_alarms()
    assert model.snapshot().alarms == frozenset({PumpAlarm.DOOR_OPEN})
