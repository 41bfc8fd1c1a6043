"""The pump model's physics and commands, on a manual clock (no sleeping)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.clock import ManualClock
from protocol.pump_state import STOPPING_ALARMS, PumpAlarm, PumpState
from simulator.errors import (
    InvalidFaultError,
    NotApplicableError,
    OutOfRangeError,
    RateRefusedError,
    SimulatorError,
)
from simulator.model import INJECTABLE_ALARMS, EventKind, PumpModel

WEEK_S = 7 * 24 * 3600.0


def infusing_model(
    rate_ml_per_h: float = 100.0, *, reservoir_ml: float = 1000.0, vtbi_ml: float = 0.0
) -> tuple[ManualClock, PumpModel]:
    clock = ManualClock()
    model = PumpModel(clock, reservoir_ml=reservoir_ml)
    model.set_rate(rate_ml_per_h)
    model.set_vtbi(vtbi_ml)
    model.start()
    return clock, model


# ---------------------------------------------------------------- totalizer physics


@given(
    rate=st.floats(min_value=0.001, max_value=500.0),
    seconds=st.floats(min_value=0.0, max_value=WEEK_S),
)
def test_totalizer_after_t_seconds_at_r_equals_r_times_t(rate: float, seconds: float) -> None:
    clock, model = infusing_model(rate, reservoir_ml=100_000.0)
    clock.advance(seconds)
    snap = model.snapshot()
    expected = rate * seconds / 3600.0
    assert snap.volume_infused_ml == pytest.approx(expected, abs=1e-3)
    assert snap.lifetime_volume_infused_ml == pytest.approx(expected, abs=1e-3)
    assert snap.reservoir_remaining_ml == pytest.approx(100_000.0 - expected, abs=1e-3)


@settings(deadline=None)
@given(
    rate=st.floats(min_value=0.001, max_value=500.0),
    step=st.floats(min_value=0.01, max_value=10.0),
)
def test_many_small_advances_do_not_accumulate_error(rate: float, step: float) -> None:
    clock, model = infusing_model(rate, reservoir_ml=100_000.0)
    for _ in range(2000):
        clock.advance(step)
        model.advance()
    expected = rate * clock.monotonic() / 3600.0
    assert model.snapshot().volume_infused_ml == pytest.approx(expected, abs=1e-3)


def test_rate_change_while_infusing_integrates_old_rate_up_to_the_change() -> None:
    clock, model = infusing_model(100.0)
    clock.advance(1800.0)
    model.set_rate(200.0)
    clock.advance(1800.0)
    snap = model.snapshot()
    assert snap.volume_infused_ml == pytest.approx(50.0 + 100.0, abs=1e-9)
    assert snap.measured_rate_ml_per_h == 200.0
    assert snap.state is PumpState.INFUSING


def test_measured_rate_is_zero_unless_infusing() -> None:
    _clock, model = infusing_model(120.0)
    assert model.snapshot().measured_rate_ml_per_h == 120.0
    model.pause()
    assert model.snapshot().measured_rate_ml_per_h == 0.0
    model.stop()
    snap = model.snapshot()
    assert snap.measured_rate_ml_per_h == 0.0
    assert snap.rate_setpoint_ml_per_h == 120.0


def test_nothing_is_delivered_while_paused_or_stopped() -> None:
    clock, model = infusing_model(360.0)  # 0.1 mL/s
    clock.advance(10.0)
    model.pause()
    clock.advance(1000.0)
    assert model.snapshot().volume_infused_ml == pytest.approx(1.0, abs=1e-9)
    model.start()  # resume
    clock.advance(10.0)
    model.stop()
    clock.advance(1000.0)
    assert model.snapshot().volume_infused_ml == pytest.approx(2.0, abs=1e-9)


# ---------------------------------------------------------------- reservoir


def test_reservoir_empties_at_exactly_the_predicted_time() -> None:
    clock, model = infusing_model(100.0, reservoir_ml=10.0)  # empty after 360 s
    clock.advance(359.999)
    assert model.snapshot().state is PumpState.INFUSING
    clock.advance(0.001)
    snap = model.snapshot()
    assert snap.state is PumpState.ALARM
    assert PumpAlarm.RESERVOIR_EMPTY in snap.alarms
    assert snap.reservoir_remaining_ml == 0.0
    assert snap.volume_infused_ml == 10.0


def test_reservoir_empty_event_is_stamped_at_exact_time_after_one_big_advance() -> None:
    clock, model = infusing_model(7.0, reservoir_ml=3.0)
    predicted_s = 3.0 * 3600.0 / 7.0
    clock.advance(WEEK_S)
    snap = model.snapshot()
    assert snap.lifetime_volume_infused_ml == 3.0
    assert snap.measured_rate_ml_per_h == 0.0
    (alarm_event,) = [e for e in model.events() if e.alarm is PumpAlarm.RESERVOIR_EMPTY]
    assert alarm_event.monotonic_s == pytest.approx(predicted_s, abs=1e-9)


def test_empty_reservoir_refuses_start_until_refilled_and_cleared() -> None:
    clock, model = infusing_model(100.0, reservoir_ml=1.0)
    clock.advance(3600.0)
    model.clear_alarms()
    snap = model.snapshot()
    assert PumpAlarm.RESERVOIR_EMPTY in snap.alarms  # condition still present
    assert snap.state is PumpState.ALARM
    with pytest.raises(NotApplicableError, match="reservoir_empty"):
        model.start()
    model.refill(1.0)
    model.clear_alarms()
    assert model.snapshot().state is PumpState.STOPPED
    model.start()
    assert model.snapshot().state is PumpState.INFUSING


def test_refill_is_refused_while_infusing_and_outside_capacity() -> None:
    _clock, model = infusing_model(100.0, reservoir_ml=50.0)
    with pytest.raises(NotApplicableError):
        model.refill(50.0)
    model.stop()
    for bad in (-1.0, 50.001, math.nan, math.inf):
        with pytest.raises(OutOfRangeError, match=r"0\.\.50 mL"):
            model.refill(bad)
    model.refill(20.0)
    assert model.snapshot().reservoir_remaining_ml == 20.0


# ---------------------------------------------------------------- VTBI


def test_vtbi_completes_exactly_and_pump_stops() -> None:
    clock, model = infusing_model(100.0, vtbi_ml=5.0)  # done after 180 s
    clock.advance(179.9)
    assert model.snapshot().state is PumpState.INFUSING
    clock.advance(1000.0)
    snap = model.snapshot()
    assert snap.state is PumpState.STOPPED
    assert snap.alarms == frozenset({PumpAlarm.VTBI_COMPLETE})
    assert snap.volume_infused_ml == 5.0
    assert snap.vtbi_remaining_ml == 0.0
    assert snap.measured_rate_ml_per_h == 0.0
    (done,) = [e for e in model.events() if e.alarm is PumpAlarm.VTBI_COMPLETE]
    assert done.monotonic_s == 180.0


@given(
    rate=st.floats(min_value=0.01, max_value=500.0),
    vtbi=st.floats(min_value=0.001, max_value=500.0),
)
def test_vtbi_is_never_overshot_for_any_rate_and_volume(rate: float, vtbi: float) -> None:
    clock, model = infusing_model(rate, reservoir_ml=1000.0, vtbi_ml=vtbi)
    clock.advance(vtbi * 3600.0 / rate * 0.5)
    assert model.snapshot().volume_infused_ml <= vtbi
    clock.advance(vtbi * 3600.0 / rate)  # well past the predicted completion
    snap = model.snapshot()
    assert snap.volume_infused_ml == pytest.approx(vtbi, abs=1e-9)
    assert snap.volume_infused_ml <= vtbi
    assert snap.state is PumpState.STOPPED


def test_vtbi_set_while_infusing_counts_from_now() -> None:
    clock, model = infusing_model(360.0)  # 0.1 mL/s, continuous
    clock.advance(100.0)
    model.set_vtbi(2.0)
    clock.advance(100.0)
    snap = model.snapshot()
    assert snap.volume_infused_ml == pytest.approx(12.0, abs=1e-9)
    assert snap.state is PumpState.STOPPED


def test_start_after_vtbi_complete_clears_it_and_delivers_the_vtbi_again() -> None:
    clock, model = infusing_model(100.0, vtbi_ml=5.0)
    clock.advance(1000.0)
    model.start()
    snap = model.snapshot()
    assert PumpAlarm.VTBI_COMPLETE not in snap.alarms
    assert snap.vtbi_remaining_ml == 5.0
    clock.advance(1000.0)
    assert model.snapshot().volume_infused_ml == 10.0


def test_stop_keeps_the_remaining_vtbi() -> None:
    clock, model = infusing_model(100.0, vtbi_ml=5.0)
    clock.advance(90.0)
    model.stop()
    model.start()
    clock.advance(1000.0)
    snap = model.snapshot()
    assert snap.volume_infused_ml == 5.0
    assert snap.vtbi_remaining_ml == 0.0


def test_vtbi_reached_as_reservoir_empties_is_vtbi_complete_not_a_stall() -> None:
    clock, model = infusing_model(100.0, reservoir_ml=5.0, vtbi_ml=5.0)
    clock.advance(1000.0)
    snap = model.snapshot()
    assert snap.state is PumpState.STOPPED
    assert snap.alarms == frozenset({PumpAlarm.VTBI_COMPLETE})
    assert snap.reservoir_remaining_ml == 0.0


def test_negative_or_non_finite_vtbi_is_refused_and_changes_nothing() -> None:
    _clock, model = infusing_model(100.0, vtbi_ml=5.0)
    for bad in (-0.1, math.nan, math.inf):
        with pytest.raises(OutOfRangeError, match="VTBI"):
            model.set_vtbi(bad)
    assert model.snapshot().vtbi_ml == 5.0


# ---------------------------------------------------------------- rate limits


@pytest.mark.parametrize("bad_rate", [500.001, 1e9, -0.1, math.nan, math.inf, -math.inf])
def test_refused_rate_leaves_state_and_setpoint_unchanged_and_latches_rate_refused(
    bad_rate: float,
) -> None:
    clock, model = infusing_model(100.0)
    clock.advance(36.0)
    with pytest.raises(RateRefusedError) as refused:
        model.set_rate(bad_rate)
    assert repr(bad_rate) in str(refused.value)
    assert "0..500 mL/h" in str(refused.value)
    clock.advance(36.0)
    snap = model.snapshot()
    assert snap.state is PumpState.INFUSING
    assert snap.rate_setpoint_ml_per_h == 100.0
    assert snap.measured_rate_ml_per_h == 100.0
    assert snap.volume_infused_ml == pytest.approx(2.0, abs=1e-9)
    assert snap.alarms == frozenset({PumpAlarm.RATE_REFUSED})


def test_rate_refused_error_is_a_value_error_and_a_simulator_error() -> None:
    model = PumpModel(ManualClock())
    with pytest.raises(ValueError, match="refused"):
        model.set_rate(501.0)
    with pytest.raises(SimulatorError):
        model.set_rate(-1.0)


def test_rate_at_the_pumps_own_maximum_is_accepted() -> None:
    model = PumpModel(ManualClock(), max_rate_ml_per_h=250.0)
    model.set_rate(250.0)
    snap = model.snapshot()
    assert snap.rate_setpoint_ml_per_h == 250.0
    assert snap.max_rate_ml_per_h == 250.0
    assert snap.alarms == frozenset()


def test_rate_zero_while_infusing_is_not_applicable() -> None:
    _clock, model = infusing_model(100.0)
    with pytest.raises(NotApplicableError):
        model.set_rate(0.0)
    snap = model.snapshot()
    assert snap.rate_setpoint_ml_per_h == 100.0
    assert snap.alarms == frozenset()


@pytest.mark.parametrize(
    ("max_rate", "reservoir"), [(0.0, 10.0), (-1.0, 10.0), (math.nan, 10.0), (10.0, -1.0)]
)
def test_model_refuses_impossible_construction_limits(max_rate: float, reservoir: float) -> None:
    with pytest.raises(OutOfRangeError):
        PumpModel(ManualClock(), max_rate_ml_per_h=max_rate, reservoir_ml=reservoir)


# ---------------------------------------------------------------- start / pause / stop


def test_start_with_rate_zero_is_not_applicable() -> None:
    model = PumpModel(ManualClock())
    with pytest.raises(NotApplicableError, match="rate"):
        model.start()
    assert model.snapshot().state is PumpState.STOPPED


@pytest.mark.parametrize("alarm", sorted(STOPPING_ALARMS & INJECTABLE_ALARMS))
def test_start_is_not_applicable_while_a_stopping_alarm_is_latched(alarm: PumpAlarm) -> None:
    model = PumpModel(ManualClock())
    model.set_rate(10.0)
    model.inject(alarm)
    with pytest.raises(NotApplicableError, match=alarm.value):
        model.start()
    assert model.snapshot().state is PumpState.ALARM


def test_pause_is_not_applicable_when_stopped_and_idempotent_when_paused() -> None:
    _clock, model = infusing_model(100.0)
    model.pause()
    model.pause()
    assert model.snapshot().state is PumpState.PAUSED
    model.stop()
    with pytest.raises(NotApplicableError):
        model.pause()
    assert model.snapshot().state is PumpState.STOPPED


def test_stop_leaves_an_alarmed_pump_alarmed() -> None:
    _clock, model = infusing_model(100.0)
    model.inject(PumpAlarm.DOOR_OPEN)
    model.stop()
    assert model.snapshot().state is PumpState.ALARM


# ---------------------------------------------------------------- alarms and conditions


def test_clear_alarms_never_restarts_the_pump() -> None:
    clock, model = infusing_model(100.0)
    clock.advance(36.0)
    model.inject(PumpAlarm.OCCLUSION)
    model.clear_condition(PumpAlarm.OCCLUSION)
    model.clear_alarms()
    clock.advance(3600.0)
    snap = model.snapshot()
    assert snap.state is PumpState.STOPPED
    assert snap.alarms == frozenset()
    assert snap.measured_rate_ml_per_h == 0.0
    assert snap.volume_infused_ml == pytest.approx(1.0, abs=1e-9)


def test_clear_alarms_keeps_an_injected_occlusion_that_is_still_present() -> None:
    _clock, model = infusing_model(100.0)
    model.inject(PumpAlarm.OCCLUSION)
    model.clear_alarms()
    snap = model.snapshot()
    assert snap.alarms == frozenset({PumpAlarm.OCCLUSION})
    assert snap.state is PumpState.ALARM


def test_latched_alarm_stays_after_its_condition_is_gone_until_cleared() -> None:
    _clock, model = infusing_model(100.0)
    model.inject(PumpAlarm.AIR_IN_LINE)
    model.clear_condition(PumpAlarm.AIR_IN_LINE)
    assert model.snapshot().alarms == frozenset({PumpAlarm.AIR_IN_LINE})
    model.clear_alarms()
    assert model.snapshot().alarms == frozenset()


def test_clear_alarms_clears_only_alarms_without_a_present_condition() -> None:
    _clock, model = infusing_model(100.0)
    model.inject(PumpAlarm.DOOR_OPEN)
    model.inject(PumpAlarm.PROGRAM_ERROR)
    with pytest.raises(RateRefusedError):
        model.set_rate(1000.0)
    model.clear_alarms()
    assert model.snapshot().alarms == frozenset({PumpAlarm.DOOR_OPEN})


def test_clear_alarms_while_infusing_with_advisory_alarms_keeps_infusing() -> None:
    _clock, model = infusing_model(100.0)
    with pytest.raises(RateRefusedError):
        model.set_rate(501.0)
    model.clear_alarms()
    snap = model.snapshot()
    assert snap.state is PumpState.INFUSING
    assert snap.alarms == frozenset()


def test_low_battery_is_advisory_and_does_not_stop_the_pump() -> None:
    clock, model = infusing_model(100.0)
    model.inject(PumpAlarm.LOW_BATTERY)
    clock.advance(36.0)
    snap = model.snapshot()
    assert snap.state is PumpState.INFUSING
    assert snap.alarms == frozenset({PumpAlarm.LOW_BATTERY})
    assert snap.volume_infused_ml == pytest.approx(1.0, abs=1e-9)


def test_injected_stopping_condition_stops_delivery_at_the_injection_time() -> None:
    clock, model = infusing_model(360.0)
    clock.advance(10.0)
    model.inject(PumpAlarm.OCCLUSION)
    clock.advance(100.0)
    snap = model.snapshot()
    assert snap.state is PumpState.ALARM
    assert snap.volume_infused_ml == pytest.approx(1.0, abs=1e-9)


def test_inject_reservoir_empty_empties_it_and_clear_condition_refills_it() -> None:
    clock = ManualClock()
    model = PumpModel(clock, reservoir_ml=40.0)
    model.inject(PumpAlarm.RESERVOIR_EMPTY)
    snap = model.snapshot()
    assert snap.reservoir_remaining_ml == 0.0
    assert snap.state is PumpState.ALARM
    model.clear_condition(PumpAlarm.RESERVOIR_EMPTY)
    assert model.snapshot().reservoir_remaining_ml == 40.0
    model.clear_alarms()
    assert model.snapshot().state is PumpState.STOPPED


@pytest.mark.parametrize(
    "alarm",
    [PumpAlarm.POWER_LOSS, PumpAlarm.COMM_TIMEOUT, PumpAlarm.RATE_REFUSED, PumpAlarm.VTBI_COMPLETE],
)
def test_inject_refuses_alarms_that_are_not_conditions(alarm: PumpAlarm) -> None:
    model = PumpModel(ManualClock())
    with pytest.raises(InvalidFaultError, match="occlusion"):
        model.inject(alarm)
    with pytest.raises(InvalidFaultError):
        model.clear_condition(alarm)
    assert model.snapshot().alarms == frozenset()


def test_clear_totals_zeroes_only_the_clearable_totalizer() -> None:
    clock, model = infusing_model(360.0, vtbi_ml=50.0)
    clock.advance(100.0)
    model.clear_totals()
    clock.advance(100.0)
    snap = model.snapshot()
    assert snap.volume_infused_ml == pytest.approx(10.0, abs=1e-9)
    assert snap.lifetime_volume_infused_ml == pytest.approx(20.0, abs=1e-9)
    assert snap.vtbi_remaining_ml == pytest.approx(30.0, abs=1e-9)
    assert snap.reservoir_remaining_ml == pytest.approx(980.0, abs=1e-9)
    assert snap.state is PumpState.INFUSING


def test_event_log_records_state_changes_and_alarms_in_order_with_sequence_numbers() -> None:
    clock, model = infusing_model(100.0)
    clock.advance(5.0)
    model.inject(PumpAlarm.OCCLUSION)
    events = model.events()
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert [(e.kind, e.monotonic_s) for e in events] == [
        (EventKind.STATE, 0.0),
        (EventKind.ALARM, 5.0),
        (EventKind.STATE, 5.0),
    ]
    assert model.events(since_seq=2) == events[2:]


def test_next_event_time_predicts_vtbi_completion() -> None:
    _clock, model = infusing_model(100.0, vtbi_ml=5.0)
    assert model.next_event_time() == 180.0
    model.stop()
    assert model.next_event_time() is None


def test_snapshot_is_stamped_with_clock_time() -> None:
    clock = ManualClock(start_monotonic=1000.0)
    model = PumpModel(clock)
    clock.advance(2.5)
    assert model.snapshot().monotonic_s == 1002.5
    assert model.started_monotonic_s == 1000.0
