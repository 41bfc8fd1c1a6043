"""Lying-pump faults on the model: what the pump reports or obeys differs from the truth.

The truth (``volume_infused_ml``, ``lifetime_volume_infused_ml``, ``rate_setpoint_ml_per_h``,
``watchdog_requested_s``, ``uptime_s``, the state) keeps its own course; only the ``reported_*``
fields (what the transports serve) and, for ``watchdog_not_held`` / ``stop_refused``, what the
pump obeys, change.
"""

from __future__ import annotations

from typing import Any

import pytest

from protocol.clock import ManualClock
from protocol.pump_state import PumpAlarm, PumpState
from simulator.errors import FaultScriptError, InvalidFaultError
from simulator.faults import LYING_FAULTS, FaultKind, FaultScript, parse_fault_script
from simulator.model import EventKind, PumpModel

DAY_S = 24 * 3600.0


def script(*entries: dict[str, Any]) -> FaultScript:
    return parse_fault_script({"faults": list(entries)})


def infusing_model(rate_ml_per_h: float = 100.0) -> tuple[ManualClock, PumpModel]:
    clock = ManualClock()
    model = PumpModel(clock)
    model.set_rate(rate_ml_per_h)
    model.start()
    return clock, model


def test_the_six_lying_faults_are_fault_kinds() -> None:
    assert {kind.value for kind in LYING_FAULTS} == {
        "frozen_totalizer",
        "totalizer_jump",
        "watchdog_not_held",
        "stop_refused",
        "rate_echo_wrong",
        "uptime_frozen",
    }


def test_without_faults_the_reports_are_the_truth() -> None:
    clock, model = infusing_model()
    clock.advance(600.0)
    model.set_watchdog(30.0)
    snap = model.snapshot()
    assert snap.reported_volume_infused_ml == snap.volume_infused_ml == pytest.approx(100 / 6)
    assert snap.reported_rate_setpoint_ml_per_h == snap.rate_setpoint_ml_per_h == 100.0
    assert snap.reported_uptime_s == snap.uptime_s == 600.0
    assert snap.watchdog_timeout_s == snap.watchdog_requested_s == 30.0
    assert model.active_faults() == {}


# ---------------------------------------------------------------- frozen_totalizer


def test_frozen_totalizer_reports_the_value_when_injected_while_the_truth_counts() -> None:
    clock, model = infusing_model()
    clock.advance(1800.0)
    model.inject_fault(FaultKind.FROZEN_TOTALIZER)
    clock.advance(1800.0)
    snap = model.snapshot()
    assert snap.reported_volume_infused_ml == pytest.approx(50.0)
    assert snap.volume_infused_ml == pytest.approx(100.0)
    assert snap.lifetime_volume_infused_ml == pytest.approx(100.0)
    assert snap.reservoir_remaining_ml == pytest.approx(900.0)
    assert snap.state is PumpState.INFUSING
    model.inject_fault("frozen_totalizer")  # again: the frozen reading stays
    clock.advance(360.0)
    assert model.snapshot().reported_volume_infused_ml == pytest.approx(50.0)
    assert model.active_faults() == {FaultKind.FROZEN_TOTALIZER: None}
    model.clear_fault(FaultKind.FROZEN_TOTALIZER)
    snap = model.snapshot()
    assert snap.reported_volume_infused_ml == snap.volume_infused_ml == pytest.approx(110.0)
    assert model.active_faults() == {}


def test_clear_totals_zeroes_a_frozen_reading_which_stays_frozen() -> None:
    clock, model = infusing_model()
    clock.advance(1800.0)
    model.inject_fault(FaultKind.FROZEN_TOTALIZER)
    model.clear_totals()
    clock.advance(1800.0)
    snap = model.snapshot()
    assert snap.reported_volume_infused_ml == 0.0
    assert snap.volume_infused_ml == pytest.approx(50.0)
    assert snap.lifetime_volume_infused_ml == pytest.approx(100.0)


# ---------------------------------------------------------------- totalizer_jump


def test_totalizer_jump_offsets_the_report_from_now_on() -> None:
    clock, model = infusing_model()
    clock.advance(1800.0)
    model.inject_fault(FaultKind.TOTALIZER_JUMP, 12.5)
    clock.advance(1800.0)
    snap = model.snapshot()
    assert snap.volume_infused_ml == pytest.approx(100.0)
    assert snap.reported_volume_infused_ml == pytest.approx(112.5)
    model.inject_fault(FaultKind.TOTALIZER_JUMP, -30.0)  # a new jump replaces the offset
    assert model.snapshot().reported_volume_infused_ml == pytest.approx(70.0)
    model.inject_fault(FaultKind.TOTALIZER_JUMP, -1000.0)  # never below zero
    assert model.snapshot().reported_volume_infused_ml == 0.0
    assert model.active_faults() == {FaultKind.TOTALIZER_JUMP: -1000.0}
    model.clear_fault(FaultKind.TOTALIZER_JUMP)
    assert model.snapshot().reported_volume_infused_ml == pytest.approx(100.0)


def test_a_jump_on_a_frozen_totalizer_offsets_the_frozen_reading() -> None:
    clock, model = infusing_model()
    clock.advance(1800.0)
    model.inject_fault(FaultKind.FROZEN_TOTALIZER)
    model.inject_fault(FaultKind.TOTALIZER_JUMP, 5)
    clock.advance(1800.0)
    assert model.snapshot().reported_volume_infused_ml == pytest.approx(55.0)


# ---------------------------------------------------------------- watchdog_not_held


def test_watchdog_not_held_accepts_the_request_reports_zero_and_never_times_out() -> None:
    clock, model = infusing_model(1.0)
    model.inject_fault(FaultKind.WATCHDOG_NOT_HELD)
    model.set_watchdog(10.0)  # accepted: no error
    snap = model.snapshot()
    assert snap.watchdog_timeout_s == 0.0
    assert snap.watchdog_requested_s == 10.0
    assert model.next_event_time() == 1000 * 3600.0  # the reservoir's end, no watchdog expiry
    clock.advance(DAY_S)
    snap = model.snapshot()
    assert PumpAlarm.COMM_TIMEOUT not in snap.alarms
    assert snap.state is PumpState.INFUSING


def test_watchdog_not_held_also_drops_a_watchdog_already_armed() -> None:
    clock, model = infusing_model(1.0)
    model.set_watchdog(10.0)
    clock.advance(5.0)
    model.inject_fault(FaultKind.WATCHDOG_NOT_HELD)
    clock.advance(3600.0)
    assert model.snapshot().state is PumpState.INFUSING
    assert model.snapshot().watchdog_timeout_s == 0.0


def test_clearing_watchdog_not_held_holds_the_request_again_timing_from_the_clear() -> None:
    clock, model = infusing_model(1.0)
    model.inject_fault(FaultKind.WATCHDOG_NOT_HELD)
    model.set_watchdog(10.0)
    clock.advance(100.0)
    model.clear_fault(FaultKind.WATCHDOG_NOT_HELD)
    assert model.snapshot().watchdog_timeout_s == 10.0
    clock.advance(9.5)
    assert model.snapshot().state is PumpState.INFUSING
    clock.advance(1.0)
    snap = model.snapshot()
    assert PumpAlarm.COMM_TIMEOUT in snap.alarms
    assert snap.state is PumpState.ALARM
    timeouts = [e for e in model.events() if e.alarm is PumpAlarm.COMM_TIMEOUT]
    assert timeouts[0].monotonic_s == pytest.approx(110.0)


# ---------------------------------------------------------------- stop_refused


def test_stop_refused_acknowledges_stop_and_pause_and_keeps_infusing() -> None:
    clock, model = infusing_model()
    model.inject_fault(FaultKind.STOP_REFUSED)
    model.stop()  # no error
    model.pause()  # no error
    clock.advance(3600.0)
    snap = model.snapshot()
    assert snap.state is PumpState.INFUSING
    assert snap.volume_infused_ml == pytest.approx(100.0)
    model.clear_fault(FaultKind.STOP_REFUSED)
    model.stop()
    assert model.snapshot().state is PumpState.STOPPED


def test_stop_refused_does_not_stop_alarms_from_stopping_the_pump() -> None:
    clock, model = infusing_model()
    model.inject_fault(FaultKind.STOP_REFUSED)
    clock.advance(60.0)
    model.inject(PumpAlarm.OCCLUSION)
    assert model.snapshot().state is PumpState.ALARM


def test_stop_refused_lets_a_paused_pump_stop() -> None:
    _, model = infusing_model()
    model.pause()
    model.inject_fault(FaultKind.STOP_REFUSED)
    model.stop()
    assert model.snapshot().state is PumpState.STOPPED


# ---------------------------------------------------------------- rate_echo_wrong


def test_rate_echo_wrong_offsets_the_reported_setpoint_not_the_delivery() -> None:
    clock, model = infusing_model(100.0)
    model.inject_fault(FaultKind.RATE_ECHO_WRONG, 2.5)
    clock.advance(3600.0)
    snap = model.snapshot()
    assert snap.reported_rate_setpoint_ml_per_h == 102.5
    assert snap.rate_setpoint_ml_per_h == 100.0
    assert snap.measured_rate_ml_per_h == 100.0
    assert snap.volume_infused_ml == pytest.approx(100.0)
    model.set_rate(40.0)  # the offset follows the real setpoint
    assert model.snapshot().reported_rate_setpoint_ml_per_h == 42.5
    model.inject_fault(FaultKind.RATE_ECHO_WRONG, -100.0)
    assert model.snapshot().reported_rate_setpoint_ml_per_h == 0.0  # never below zero
    model.clear_fault(FaultKind.RATE_ECHO_WRONG)
    assert model.snapshot().reported_rate_setpoint_ml_per_h == 40.0


# ---------------------------------------------------------------- uptime_frozen


def test_uptime_frozen_stops_the_reported_uptime() -> None:
    clock = ManualClock()
    model = PumpModel(clock)
    clock.advance(100.0)
    model.inject_fault(FaultKind.UPTIME_FROZEN)
    clock.advance(50.0)
    snap = model.snapshot()
    assert snap.uptime_s == 150.0
    assert snap.reported_uptime_s == 100.0
    model.clear_fault(FaultKind.UPTIME_FROZEN)
    assert model.snapshot().reported_uptime_s == 150.0


# ---------------------------------------------------------------- scripts, API, persistence


def test_a_script_applies_each_lying_fault_at_its_exact_time() -> None:
    clock, model = infusing_model(36.0)  # 0.01 mL/s
    model.schedule(
        script(
            {"at_s": 100, "fault": "frozen_totalizer"},
            {"at_s": 100, "fault": "uptime_frozen"},
            {"at_s": 200, "fault": "rate_echo_wrong", "value": -6},
            {"at_s": 200, "fault": "watchdog_not_held"},
            {"at_s": 300, "fault": "stop_refused"},
            {"at_s": 400, "fault": "totalizer_jump", "value": 2},
            {"at_s": 500, "fault": "frozen_totalizer", "action": "clear"},
        )
    )
    clock.advance(1000.0)  # one advance over all of them
    snap = model.snapshot()
    assert snap.reported_uptime_s == 100.0
    assert snap.reported_rate_setpoint_ml_per_h == 30.0
    assert snap.volume_infused_ml == pytest.approx(10.0)
    assert snap.reported_volume_infused_ml == pytest.approx(12.0)  # unfrozen at 500 s, +2
    assert model.active_faults() == {
        FaultKind.UPTIME_FROZEN: None,
        FaultKind.RATE_ECHO_WRONG: -6.0,
        FaultKind.WATCHDOG_NOT_HELD: None,
        FaultKind.STOP_REFUSED: None,
        FaultKind.TOTALIZER_JUMP: 2.0,
    }
    applied = [(e.monotonic_s, e.detail) for e in model.events() if e.kind is EventKind.SCRIPT]
    assert applied[0] == (100.0, "faults[0]: frozen_totalizer inject")
    assert (200.0, "faults[2]: rate_echo_wrong inject -6") in applied
    assert applied[-1] == (500.0, "faults[6]: frozen_totalizer clear")


def test_frozen_reading_from_a_script_is_the_value_at_its_exact_time() -> None:
    clock, model = infusing_model(36.0)
    model.schedule(script({"at_s": 250, "fault": "frozen_totalizer"}))
    clock.advance(1000.0)
    assert model.snapshot().reported_volume_infused_ml == pytest.approx(2.5)


@pytest.mark.parametrize(
    ("entry", "must_mention"),
    [
        ({"at_s": 1, "fault": "totalizer_jump"}, ["needs a value"]),
        ({"at_s": 1, "fault": "totalizer_jump", "value": 1e6}, ["-100000..100000"]),
        ({"at_s": 1, "fault": "rate_echo_wrong", "value": -2e4}, ["-10000..10000"]),
        ({"at_s": 1, "fault": "frozen_totalizer", "value": 1}, ["takes no value"]),
        ({"at_s": 1, "fault": "stop_refused", "action": "clear", "value": 1}, ["no value"]),
    ],
)
def test_bad_lying_fault_entries_are_refused(
    entry: dict[str, Any], must_mention: list[str]
) -> None:
    with pytest.raises(FaultScriptError) as caught:
        script(entry)
    assert caught.value.field == "value"
    for text in must_mention:
        assert text in str(caught.value)


def test_negative_offsets_are_allowed_in_scripts() -> None:
    loaded = script(
        {"at_s": 1, "fault": "totalizer_jump", "value": -5},
        {"at_s": 1, "fault": "rate_echo_wrong", "value": -0.5},
    )
    assert [entry.value for entry in loaded.faults] == [-5.0, -0.5]


@pytest.mark.parametrize(
    ("call", "must_mention"),
    [
        (lambda m: m.inject_fault("liar"), "frozen_totalizer"),
        (lambda m: m.inject_fault(FaultKind.TOTALIZER_JUMP), "needs a value"),
        (lambda m: m.inject_fault(FaultKind.RATE_ECHO_WRONG, float("nan")), "finite"),
        (lambda m: m.inject_fault(FaultKind.RATE_ECHO_WRONG, True), "value"),
        (lambda m: m.inject_fault(FaultKind.STOP_REFUSED, 1.0), "takes no value"),
        (lambda m: m.clear_fault(FaultKind.PROGRAM_ERROR), "only"),
    ],
)
def test_the_api_refuses_bad_faults_with_the_script_rules(call: Any, must_mention: str) -> None:
    model = PumpModel(ManualClock())
    with pytest.raises(InvalidFaultError, match=must_mention):
        call(model)
    assert model.active_faults() == {}


def test_inject_fault_takes_every_kind_and_logs_it() -> None:
    _, model = infusing_model()
    model.inject_fault(FaultKind.OCCLUSION)
    assert model.snapshot().state is PumpState.ALARM
    model.clear_fault("occlusion")
    model.inject_fault(FaultKind.SLOW, 0.25)
    assert model.line.reply_delay_s == 0.25
    model.inject_fault(FaultKind.TOTALIZER_JUMP, 1.0)
    details = [e.detail for e in model.events() if e.kind is EventKind.FAULT]
    assert details == [
        "occlusion inject",
        "occlusion clear",
        "slow inject 0.25",
        "totalizer_jump inject 1",
    ]


def test_clearing_a_fault_not_in_force_changes_nothing() -> None:
    model = PumpModel(ManualClock())
    model.clear_fault(FaultKind.UPTIME_FROZEN)
    assert model.active_faults() == {}


def test_lying_faults_survive_a_power_loss() -> None:
    _, model = infusing_model()
    model.inject_fault(FaultKind.FROZEN_TOTALIZER)
    model.inject_fault(FaultKind.WATCHDOG_NOT_HELD)
    model.power_loss()
    assert set(model.active_faults()) == {
        FaultKind.FROZEN_TOTALIZER,
        FaultKind.WATCHDOG_NOT_HELD,
    }
