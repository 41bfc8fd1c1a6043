"""The clinical rules the course controller holds (docs/dosing.md, rules 1-8), and the scenarios
a trial pharmacist reproduced before the controller was rewritten.

Two kinds of test: tables of (state, observation, inputs) -> effects against the pure
:func:`gateway.controller.decide`, and whole courses on the real executor with a model-backed
pump on a manual clock (``make_rig``), so a week of infusion runs in a second.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from drivers.approved_rate import ApprovedRate
from drivers.status import PumpStatus, RateReadback
from gateway.cli.client import render_status
from gateway.config import ControlConfig
from gateway.controller import decide
from gateway.course_inputs import AckInput, OrderInput
from gateway.course_state import (
    TRANSITIONS,
    AlarmCode,
    ChannelState,
    CourseState,
    Order,
    dump_state,
    load_state,
)
from gateway.dosing import Arm
from gateway.effects import (
    ArmWatchdog,
    Done,
    Failed,
    Outcome,
    ProgramRate,
    PumpReading,
    RateProgrammed,
    StartPump,
    StopPump,
    WatchdogArmed,
)
from gateway.errors import InputError
from gateway.intake import order_input
from gateway.planner import DAY_S, SECONDS_PER_HOUR
from gateway.rules import CourseRules, LateTiterPolicy
from gateway.soft_limits import SoftLimitError
from gateway.timestamps import format_instant
from protocol.pump_state import PumpAlarm, PumpState
from tests.gateway.conftest import STEP_S, Rig

H = SECONDS_PER_HOUR
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z, the ManualClock's start
RULES = CourseRules(pump_watchdog_s=30.0)

#: 70 kg, hematocrit 0.35: plasma 31.85 dL; a titer t gives (100 - t) x 31.85 / 6 mL.
PLASMA_DL = 31.85


def titer_volume_ml(igm_mg_dl: float) -> float:
    return (100.0 - igm_mg_dl) * PLASMA_DL / 6.0


def status(
    state: PumpState = PumpState.STOPPED,
    rate: float = 0.0,
    volume: float = 0.0,
    step: float = 0.001,
) -> PumpStatus:
    return PumpStatus(
        state=state,
        rate_ml_per_h=rate,
        volume_infused_ml=volume,
        volume_resolution_ml=step,
        vtbi_remaining_ml=None,
    )


def flat_order(**changes: object) -> Order:
    order = Order(
        arm=Arm.FLAT,
        weight_kg=70.0,
        ceiling_ml_per_kg_per_h=0.4,
        concentration_mg_per_ml=50.0,
        igm_content_mg_per_ml=6.0,
        randomised_at_s=T0 - H,
        start_override_reason=None,
        received_at_s=T0,
    )
    return replace(order, **changes)  # type: ignore[arg-type]


def started(order: Order | None = None, *, titer: float | None = None) -> CourseState:
    """A course whose pump is connected, watchdog armed, day 1 prescribed and programmed."""
    order = order or flat_order()
    item = OrderInput(
        order,
        igm_mg_dl=titer,
        hematocrit=0.35 if titer is not None else None,
        titer_measured_at_s=T0 - H if titer is not None else None,
    )
    state = decide(CourseState(), None, [item], T0, RULES).state
    state = decide(state, PumpReading(status(), None, "c1"), [], T0, RULES).state
    arm = ArmWatchdog(RULES.pump_watchdog_s)
    armed = PumpReading(status(), None, "c1", (WatchdogArmed(arm, 30.0),))
    return decide(state, armed, [], T0, RULES).state


# -- the controller as a table -----------------------------------------------------------------


def test_decide_is_pure_and_its_state_round_trips_exactly() -> None:
    state = started(titer=30.0)
    reading = PumpReading(status(), None, "c1")
    first = decide(state, reading, [], T0 + 60, RULES)
    again = decide(state, reading, [], T0 + 60, RULES)
    assert first == again  # same inputs, same decision: no clock, no I/O inside
    assert load_state(dump_state(first.state)) == first.state


@pytest.mark.hazard("H-CL-01")
def test_a_new_connection_arms_the_watchdog_before_anything_else() -> None:
    state = decide(CourseState(), None, [OrderInput(flat_order())], T0, RULES).state
    decision = decide(state, PumpReading(status(), None, "c1"), [], T0, RULES)
    assert decision.effects == (ArmWatchdog(30.0),)
    assert decision.state.course_start_s is None  # nothing starts on an unarmed pump


@pytest.mark.hazard("H-OV-03")
def test_rule_6_first_program_sets_the_vtbi_from_the_upper_bound() -> None:
    decision = decide(started(), PumpReading(status(), None, "c1"), [], T0, RULES)
    (program,) = decision.effects
    assert isinstance(program, ProgramRate)
    # The day's volume less the upper bound of what was given (one 0.001-mL display step).
    assert program.vtbi_ml == pytest.approx(350.0 - 0.001)
    assert program.approved.rate_ml_per_h == pytest.approx((350.0 - 0.001) / 24)
    assert decision.state.channel is ChannelState.STARTING


def _programmed(readback_ml_per_h: float, vtbi_held: float) -> PumpReading:
    approved = ApprovedRate(350.0 / 24, 28.0)
    effect = ProgramRate(approved, 350.0)
    readback = RateReadback(approved.rate_ml_per_h, 14.58, readback_ml_per_h, 0.01)
    return PumpReading(status(), None, "c1", (RateProgrammed(effect, readback, vtbi_held),))


@pytest.mark.parametrize(
    ("readback", "vtbi_held", "expected", "alarm"),
    [
        (14.58, 350.0, StartPump, None),  # confirmed: start
        (14.60, 350.0, StopPump, AlarmCode.RATE_MISMATCH),  # off by more than one step
        (28.5, 350.0, StopPump, AlarmCode.RATE_ABOVE_CEILING),  # above the approval
        (14.58, 351.0, StopPump, AlarmCode.STATE_MISMATCH),  # holds more VTBI than was left
    ],
)
@pytest.mark.hazard("H-OV-02")
def test_invariant_3_readback_after_every_write(
    readback: float, vtbi_held: float, expected: type, alarm: AlarmCode | None
) -> None:
    state = decide(started(), PumpReading(status(), None, "c1"), [], T0, RULES).state
    decision = decide(state, _programmed(readback, vtbi_held), [], T0, RULES)
    assert [type(e) for e in decision.effects] == [expected]
    codes = {a.code for a in decision.state.alarms}
    assert codes == ({alarm.value} if alarm else set())


def test_a_transition_outside_the_table_stops_the_pump(monkeypatch: pytest.MonkeyPatch) -> None:
    state = started()
    broken = dict(TRANSITIONS)
    broken[ChannelState.STARTING] = frozenset()  # pretend the table forbids starting
    monkeypatch.setattr("gateway.controller.TRANSITIONS", broken)
    decision = decide(state, PumpReading(status(), None, "c1"), [], T0, RULES)
    # The first program round does not change state; the readback round would: force it.
    state = decision.state
    decision = decide(state, _programmed(14.58, 350.0), [], T0, RULES)
    assert [type(e) for e in decision.effects] == [StopPump]
    assert decision.state.channel is ChannelState.ALARM
    assert AlarmCode.INTERNAL_ERROR.value in {a.code for a in decision.state.alarms}


def test_every_state_but_completed_can_reach_alarm_or_link_lost() -> None:
    for state, allowed in TRANSITIONS.items():
        if state is ChannelState.COMPLETED:
            assert allowed == frozenset()
        else:
            assert ChannelState.LINK_LOST in allowed or state is ChannelState.LINK_LOST
            assert ChannelState.ALARM in allowed or state is ChannelState.ALARM


# -- rule 1: a titer belongs to exactly one course day ------------------------------------------


def titer_rig(make_rig: Callable[..., Rig], **control: object) -> Rig:
    return make_rig(
        arm="titer",
        weight_kg=70.0,
        igm_mg_dl=30.0,
        hematocrit=0.35,
        control=ControlConfig(**control),  # type: ignore[arg-type]
    )


def prescribed(rig: Rig) -> list[float]:
    return [d.prescribed_ml for d in rig.journal.days("bed1")]


@pytest.mark.hazard("H-OV-06")
def test_rule_1_a_titer_posted_mid_day_2_changes_neither_day_2_nor_two_days(
    make_rig: Callable[..., Rig],
) -> None:
    rig = titer_rig(make_rig)
    rig.run(DAY_S - H)
    rig.titer(50.0)  # day 2's morning titer, drawn an hour before day 2
    rig.run(H + 13 * H)
    assert prescribed(rig)[1] == pytest.approx(titer_volume_ml(50.0))
    rig.titer(45.0)  # 13 h into day 2: not day 2's
    rig.run(STEP_S)
    assert prescribed(rig)[1] == pytest.approx(titer_volume_ml(50.0))
    rig.run(11 * H)  # day 3 opens: 45 was drawn 11 h before, within the 12-h age limit
    assert prescribed(rig)[2] == pytest.approx(titer_volume_ml(45.0))
    rig.run(DAY_S)  # day 4 opens: no titer is left unused, so day 4 waits
    assert rig.channel.state is ChannelState.AWAITING_TITER
    used = [p["titer_seq"] for p in rig.events("prescription")]
    assert len(used) == len(set(used))  # no titer used by two days


@pytest.mark.hazard("H-UN-03")
def test_rule_1_a_titer_drawn_in_the_future_is_refused(make_rig: Callable[..., Rig]) -> None:
    rig = titer_rig(make_rig)
    rig.run(H)
    before = list(rig.journal.events("bed1"))
    with pytest.raises(InputError, match="measured_at: must be at most 300 s after now"):
        rig.channel.submit_titer(50.0, 0.35, rig.clock.wall() + 10 * DAY_S)
    with pytest.raises(InputError, match="measured_at: must be within 36 h before now"):
        rig.channel.submit_titer(50.0, 0.35, rig.clock.wall() - 2 * DAY_S)
    assert list(rig.journal.events("bed1")) == before  # a refusal changes nothing


@pytest.mark.hazard("H-OV-08")
def test_rule_1_weight_correction_keeps_the_days_own_titer(make_rig: Callable[..., Rig]) -> None:
    rig = titer_rig(make_rig)
    rig.run(23 * H)
    rig.titer(80.0)  # tomorrow's titer, drawn at 23 h of day 1
    rig.channel.submit_weight(75.0, "re-weighed")
    rig.run(STEP_S)
    # Day 1 is recomputed for 75 kg with ITS titer (the baseline 30), not the 80 of tomorrow.
    assert prescribed(rig)[0] == pytest.approx((100 - 30) * 75 * 70 * 0.65 / 100 / 6, rel=1e-9)
    rig.run(2 * H)
    assert prescribed(rig)[1] == pytest.approx((100 - 80) * 75 * 70 * 0.65 / 100 / 6, rel=1e-9)


@pytest.mark.hazard("H-OV-06")
def test_rule_1_a_mid_day_titer_never_cuts_the_running_day(make_rig: Callable[..., Rig]) -> None:
    rig = titer_rig(make_rig)
    rig.run(10 * H)
    rig.titer(95.0)
    rig.run(3 * H)
    assert prescribed(rig)[0] == pytest.approx(titer_volume_ml(30.0))
    assert not rig.events("alarm")
    assert rig.channel.state is ChannelState.INFUSING


@pytest.mark.hazard("H-OV-06")
def test_rule_1_an_explicit_correction_replaces_the_days_titer(
    make_rig: Callable[..., Rig],
) -> None:
    rig = titer_rig(make_rig)
    rig.run(2 * H)
    rig.titer(40.0, corrects_day=1)  # the lab corrected this morning's result
    rig.run(STEP_S)
    assert prescribed(rig)[0] == pytest.approx(titer_volume_ml(40.0))
    assert rig.events("prescription")[-1]["why"] == "titer of day 1 corrected"
    with pytest.raises(InputError, match="corrects_day"):
        rig.titer(40.0, corrects_day=2)


# -- rule 2: a late titer -----------------------------------------------------------------------


@pytest.mark.hazard("H-UN-03")
def test_rule_2_late_titer_shift_runs_the_day_over_a_full_24_h(
    make_rig: Callable[..., Rig],
) -> None:
    rig = titer_rig(make_rig)
    rig.run(DAY_S + STEP_S)
    assert rig.channel.state is ChannelState.AWAITING_TITER
    assert rig.model.snapshot().state is not PumpState.INFUSING
    snap = rig.channel.snapshot()
    (late,) = [a for a in snap["alarms"] if a["code"] == AlarmCode.TITER_LATE.value]
    assert late["stops"] is False
    assert "waiting for its titer" in render_status({"channels": [snap]})
    rig.run(5 * H)
    rig.titer(60.0)
    arrived = rig.clock.wall()
    rig.run(2 * STEP_S)
    day2 = rig.channel.snapshot()["days"][1]
    assert day2["window_start"] == format_instant(arrived)
    assert day2["late_titer_policy"] == "shift"
    # The labelled 24-h rate, not a catch-up.
    assert rig.channel.snapshot()["commanded_rate_ml_per_h"] == pytest.approx(
        titer_volume_ml(60.0) / 24, abs=0.01
    )
    rig.run(DAY_S)
    closed = rig.journal.days("bed1")[1]
    assert closed.closed
    assert closed.delivered_ml == pytest.approx(titer_volume_ml(60.0), rel=0.005)


@pytest.mark.hazard("H-UN-03")
def test_rule_2_late_titer_compress_keeps_the_clock_window(make_rig: Callable[..., Rig]) -> None:
    rig = titer_rig(make_rig, late_titer="compress")
    rig.run(DAY_S + 6 * H)
    rig.titer(60.0)
    rig.run(2 * STEP_S)
    rate = rig.channel.snapshot()["commanded_rate_ml_per_h"]
    # What is left of the window (about 18 h), caught up below the ceiling.
    assert rate == pytest.approx(titer_volume_ml(60.0) / 17.9, rel=0.02)
    assert rate <= 28.0


def test_rule_2_seven_course_days_not_seven_clock_days(make_rig: Callable[..., Rig]) -> None:
    rig = titer_rig(make_rig)
    rig.run(DAY_S - H)
    for day in range(2, 8):
        if day == 4:
            rig.run(6 * H)  # day 4's titer comes 5 h late: the course shifts by 5 h
        rig.titer(50.0)
        rig.run(DAY_S)
    rig.run(6 * H)
    assert rig.channel.state is ChannelState.COMPLETED
    days = rig.journal.days("bed1")
    assert [d.day for d in days] == [1, 2, 3, 4, 5, 6, 7]
    assert all(d.closed for d in days)
    assert rig.clock.wall() - T0 > 7 * DAY_S  # 7 course days took more than 7 clock days


# -- rule 3: vasopressor withdrawal ------------------------------------------------------------


def test_rule_3_vasopressor_withdrawal_never_shortens_the_flat_arm(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig(arm="flat")
    rig.run(H)
    reply = rig.channel.submit_vasopressors_withdrawn()
    assert "flat arm" in reply
    rig.run(3 * DAY_S + STEP_S)
    assert [d.day for d in rig.journal.days("bed1")] == [1, 2, 3]
    assert rig.events("vasopressors_withdrawn_ignored")
    assert sum(d.delivered_ml for d in rig.journal.days("bed1")) == pytest.approx(1050, rel=0.005)


def test_rule_3_vasopressor_withdrawal_ends_the_titer_arm_after_the_day(
    make_rig: Callable[..., Rig],
) -> None:
    rig = titer_rig(make_rig)
    rig.run(H)
    assert "titer arm ends" in rig.channel.submit_vasopressors_withdrawn()
    rig.run(DAY_S)
    assert rig.channel.state is ChannelState.COMPLETED
    assert [d.day for d in rig.journal.days("bed1")] == [1]


# -- rule 4: the ceiling knows the concentration -------------------------------------------------


@pytest.mark.hazard("H-OV-01")
def test_rule_4_a_concentrated_product_lowers_the_volume_ceiling(
    make_rig: Callable[..., Rig],
) -> None:
    # 100 mg/mL: 20 mg/kg/h is 0.2 mL/kg/h = 14 mL/h for 70 kg, not 28.
    rig = make_rig(product={"concentration_mg_per_ml": 100.0, "igm_content_mg_per_ml": 12.0})
    rig.run(H)
    snap = rig.channel.snapshot()
    assert snap["ceiling_ml_per_h"] == pytest.approx(14.0)
    assert snap["ceiling_mg_per_kg_per_h"] == pytest.approx(20.0)
    rig.run(DAY_S)
    assert max(rig.driver.sent) * 100.0 / 70.0 <= 20.0


# -- rule 5: the 12-h start rule ----------------------------------------------------------------


def order_kwargs(**changes: object) -> dict[str, object]:
    from gateway.dosing import Product

    kwargs: dict[str, object] = {
        "arm": Arm.FLAT,
        "weight_kg": 70.0,
        "igm_mg_dl": None,
        "hematocrit": None,
        "ceiling_ml_per_kg_per_h": 0.4,
        "product": Product(),
        "randomised_at_s": T0 - H,
        "start_override_reason": None,
        "titer_measured_at_s": None,
        "confirm": False,
        "now_s": T0,
        "rules": RULES,
    }
    kwargs.update(changes)
    return kwargs


def test_rule_5_an_order_needs_its_randomisation_time() -> None:
    with pytest.raises(InputError, match="randomised_at: must be given"):
        order_input(**order_kwargs(randomised_at_s=None))  # type: ignore[arg-type]
    relaxed = replace(RULES, require_randomisation_time=False)
    item = order_input(**order_kwargs(randomised_at_s=None, rules=relaxed))  # type: ignore[arg-type]
    state = decide(CourseState(), None, [item], T0, relaxed).state
    state = decide(state, PumpReading(status(), None, "c1"), [], T0, relaxed).state
    armed = PumpReading(status(), None, "c1", (WatchdogArmed(ArmWatchdog(30.0), 30.0),))
    decision = decide(state, armed, [], T0, relaxed)
    (check,) = [e.payload for e in decision.events if e.kind == "start_check"]
    assert check["randomised_at_s"] is None
    assert "not checked" in check["note"]


def test_rule_5_a_start_later_than_12_h_needs_an_override() -> None:
    late = order_kwargs(randomised_at_s=T0 - 13 * H)
    with pytest.raises(InputError, match="within 12 h before the start"):
        order_input(**late)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="randomised_at: must be at most 300 s after now"):
        order_input(**order_kwargs(randomised_at_s=T0 + H))  # type: ignore[arg-type]
    item = order_input(**{**late, "start_override_reason": "consent delayed"})  # type: ignore[arg-type]
    state = decide(CourseState(), None, [item], T0, RULES).state
    state = decide(state, PumpReading(status(), None, "c1"), [], T0, RULES).state
    armed = PumpReading(status(), None, "c1", (WatchdogArmed(ArmWatchdog(30.0), 30.0),))
    decision = decide(state, armed, [], T0, RULES)
    (check,) = [e.payload for e in decision.events if e.kind == "start_check"]
    assert check["within_window"] is False
    assert check["override_reason"] == "consent delayed"
    assert check["delay_h"] == pytest.approx(13.0)


def test_rule_5_start_window_alarm_when_the_first_start_comes_too_late(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig(randomised_at=format_instant(T0 - 11.5 * H))
    rig.driver.silent = True  # the pump cannot be reached for the first hour
    rig.run(H)
    rig.driver.silent = False
    rig.run(STEP_S)
    assert AlarmCode.START_WINDOW_EXCEEDED.value in {
        a["code"] for a in rig.channel.snapshot()["alarms"]
    }
    assert rig.driver.sent == []


# -- rule 6: never over, even by rounding -------------------------------------------------------


@pytest.mark.hazard("H-OV-03", "H-OV-05")
def test_rule_6_the_vtbi_counts_the_totalizer_step_against_the_day() -> None:
    state = started()
    # 200 mL shown by a display whose last digit is 0.1 mL: up to 200.1 may have been given.
    state = replace(state, link=replace(state.link, last_totalizer_ml=0.0))
    # ... and the read-back rate over time agrees (the totalizer is plausible).
    (day1,) = state.days
    state = replace(state, days=(replace(day1, estimated_ml=200.0),))
    reading = PumpReading(status(volume=200.0, step=0.1), None, "c1")
    decision = decide(state, reading, [], T0 + 12 * H, RULES)
    (program,) = decision.effects
    assert program.vtbi_ml == pytest.approx(350.0 - 200.0 - 0.1)  # type: ignore[union-attr]


@pytest.mark.hazard("H-OV-03")
def test_rule_6_a_course_never_delivers_more_than_prescribed(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(arm="flat", weight_kg=70.0)
    rig.run(3 * DAY_S + STEP_S)
    days = rig.journal.days("bed1")
    lifetime = rig.model.snapshot().lifetime_volume_infused_ml
    assert lifetime <= sum(d.prescribed_ml for d in days) + 0.01
    assert lifetime == pytest.approx(1050.0, rel=0.005)


# -- rule 7: soft limits ------------------------------------------------------------------------


@pytest.mark.hazard("H-OV-07")
def test_rule_7_unit_mix_ups_need_a_confirmation(make_rig: Callable[..., Rig]) -> None:
    rig = titer_rig(make_rig)
    rig.run(H)
    with pytest.raises(SoftLimitError, match=r"did you mean g/L\? 0.3 g/L = 30 mg/dL"):
        rig.titer(0.3)
    with pytest.raises(SoftLimitError, match="did you mean pounds"):
        rig.channel.submit_weight(154.0)
    with pytest.raises(SoftLimitError, match="more than 10 %"):
        rig.channel.submit_weight(80.0)
    rig.titer(0.3, confirm=True)
    rig.run(STEP_S)
    (titer,) = rig.events("titer")
    assert titer["confirmed_note"].startswith("confirmed outside soft limit")


@pytest.mark.hazard("H-OV-07", "H-OV-08")
def test_rule_7_an_order_outside_the_soft_limits_needs_a_confirmation() -> None:
    with pytest.raises(SoftLimitError, match="did you mean pounds"):
        order_input(**order_kwargs(weight_kg=154.0))  # type: ignore[arg-type]
    item = order_input(**order_kwargs(weight_kg=154.0, confirm=True))  # type: ignore[arg-type]
    events = decide(CourseState(), None, [item], T0, RULES).events
    assert [e.kind for e in events if e.kind == "soft_limit_confirmed"] == ["soft_limit_confirmed"]


# -- rule 8: what the bedside sees --------------------------------------------------------------


def test_rule_8_status_shows_doses_rates_titer_notes_and_projected_shortfall(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig(arm="titer", weight_kg=70.0, igm_mg_dl=5.0, hematocrit=0.2, confirm=False)
    rig.run(2 * H)
    snap = rig.channel.snapshot()
    (day,) = snap["days"]
    assert day["dose_mg_per_kg"] == pytest.approx(350.0)  # capped
    assert day["capped"] is True
    assert any("capped at 350 mg/kg/day" in n for n in day["notes"])
    assert day["titer"]["igm_mg_dl"] == 5.0
    assert day["titer"]["measured_at"].endswith("Z")
    assert day["day_rate_mg_per_kg_per_h"] == pytest.approx(350.0 / 24)
    assert day["projected_shortfall_ml"] == pytest.approx(0.0, abs=0.01)
    assert snap["commanded_rate_mg_per_kg_per_h"] == pytest.approx(
        snap["commanded_rate_ml_per_h"] * 50.0 / 70.0
    )
    text = render_status({"channels": [snap]})
    for expected in ("350.0 mg/kg", "mg/kg/h", "titer 5 mg/dL drawn", "NOTE: dose capped"):
        assert expected in text
    # An interruption that the ceiling cannot make up shows as a projected shortfall at once.
    rig.driver.silent = True
    rig.run(16 * H)
    rig.driver.silent = False
    rig.channel.submit_ack("nurse", "back")
    rig.run(2 * STEP_S)
    day = rig.channel.snapshot()["days"][0]
    assert day["projected_shortfall_ml"] > 1.0
    assert "projected short" in render_status({"channels": [rig.channel.snapshot()]})


def test_rule_8_no_infusion_today_is_said_plainly(make_rig: Callable[..., Rig]) -> None:
    rig = titer_rig(make_rig)
    rig.run(DAY_S - H)
    rig.titer(120.0)
    rig.run(2 * H)
    day2 = rig.channel.snapshot()["days"][1]
    assert day2["prescribed_ml"] == 0.0
    assert any("no infusion today" in n for n in day2["notes"])
    assert rig.channel.state is ChannelState.DAY_COMPLETE


# -- the pure controller over a whole course with faults -----------------------------------------


@pytest.mark.hazard("H-OV-03")
def test_a_seven_day_titer_course_with_faults_runs_fast_and_never_over(
    make_rig: Callable[..., Rig],
) -> None:
    rig = titer_rig(make_rig)
    for day in range(1, 8):
        rig.run(DAY_S - H if day == 1 else DAY_S)
        if day == 3:
            rig.driver.silent = True
            rig.run(STEP_S)
            rig.driver.silent = False
        if day < 7:
            rig.titer(40.0 + 5 * day)
    rig.run(2 * H)
    assert rig.channel.state is ChannelState.COMPLETED
    days = rig.journal.days("bed1")
    assert len(days) == 7
    assert (
        rig.model.snapshot().lifetime_volume_infused_ml <= sum(d.prescribed_ml for d in days) + 0.01
    )


def test_late_titer_policy_is_a_config_setting() -> None:
    assert ControlConfig().late_titer is LateTiterPolicy.SHIFT
    compress = ControlConfig.model_validate({"late_titer": "compress"})
    assert compress.late_titer is LateTiterPolicy.COMPRESS


@pytest.mark.timeout(30)
def test_rule_5_run_refuses_an_order_without_randomisation_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gateway.cli import main

    args = ["run", "--pump", "modbus+tcp://127.0.0.1:1", "--arm", "flat", "--weight-kg", "70"]
    assert main([*args, "--state-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: randomised_at: must be given")
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    late = format_instant(time.time() - 13 * H)
    assert main([*args, "--state-dir", str(tmp_path), "--randomised-at", late]) == 2
    assert "start_override_reason" in capsys.readouterr().err


@pytest.mark.hazard("H-UN-03")
def test_rule_2_a_day_without_titer_opening_during_an_alarm_waits_after_the_ack(
    make_rig: Callable[..., Rig],
) -> None:
    rig = titer_rig(make_rig)
    rig.run(DAY_S - 2 * H)
    rig.model.inject(PumpAlarm.OCCLUSION)
    rig.run(3 * H)  # day 2 opens while the channel is in alarm, with no titer
    assert rig.channel.state is ChannelState.ALARM
    assert not rig.events("alarm") or AlarmCode.INTERNAL_ERROR.value not in {
        e["code"] for e in rig.events("alarm")
    }
    rig.model.clear_condition(PumpAlarm.OCCLUSION)
    rig.channel.submit_ack("nurse", "line flushed")
    rig.run(2 * STEP_S)
    assert rig.channel.state is ChannelState.AWAITING_TITER
    rig.titer(70.0)
    rig.run(2 * STEP_S)
    assert rig.channel.state is ChannelState.INFUSING
    assert prescribed(rig)[1] == pytest.approx(titer_volume_ml(70.0))


@pytest.mark.hazard("H-CL-01")
def test_a_pump_refusing_its_watchdog_is_asked_again_after_the_ack() -> None:
    state = decide(CourseState(), None, [OrderInput(flat_order())], T0, RULES).state
    state = decide(state, PumpReading(status(), None, "c1"), [], T0, RULES).state
    refused = PumpReading(status(), None, "c1", (Failed(ArmWatchdog(30.0), "SAF refused"),))
    decision = decide(state, refused, [], T0, RULES)
    assert [type(e) for e in decision.effects] == [StopPump]
    assert AlarmCode.PUMP_REFUSED.value in {a.code for a in decision.state.alarms}
    state = decide(decision.state, None, [AckInput("biomed")], T0, RULES).state
    done: tuple[Outcome, ...] = ()
    effects: list[type] = []
    for _ in range(6):
        decision = decide(state, PumpReading(status(), None, "c1", done), [], T0, RULES)
        state = decision.state
        effects += [type(e) for e in decision.effects]
        done = tuple(
            WatchdogArmed(e, 30.0) if isinstance(e, ArmWatchdog) else Done(e)
            for e in decision.effects
            if not isinstance(e, ProgramRate)
        )
        if ProgramRate in effects:
            break
    # Asked again, and nothing is programmed before the pump holds its watchdog.
    assert ArmWatchdog in effects
    assert effects.index(ArmWatchdog) < effects.index(ProgramRate)
    assert state.link.watchdog_held_s == 30.0


def test_a_link_drop_while_nothing_runs_leaves_no_alarm_behind(
    make_rig: Callable[..., Rig],
) -> None:
    rig = titer_rig(make_rig)
    rig.run(DAY_S - H)
    rig.titer(120.0)  # no infusion on day 2
    rig.run(2 * H)
    assert rig.channel.state is ChannelState.DAY_COMPLETE
    rig.driver.silent = True
    rig.run(2 * STEP_S)
    assert AlarmCode.PUMP_SILENT.value in {a["code"] for a in rig.channel.snapshot()["alarms"]}
    rig.driver.silent = False
    rig.run(2 * STEP_S)
    assert rig.channel.state is ChannelState.DAY_COMPLETE
    assert rig.channel.snapshot()["alarms"] == []


@pytest.mark.hazard("H-OV-03")
def test_rule_6_a_running_pump_reprogrammed_after_a_slow_commit_never_goes_over(
    make_rig: Callable[..., Rig],
) -> None:
    # Journalling a decision takes a minute of pump time (a slow disk under a scaled clock):
    # the running pump keeps infusing between the reading a VTBI is computed from and the
    # VTBI's write.  The executor takes that off the VTBI, so the day still ends at or below
    # its prescription.
    rig = make_rig(arm="flat", weight_kg=70.0)
    commit = rig.journal.commit

    def slow_commit(*args: Any, **kwargs: Any) -> None:
        commit(*args, **kwargs)
        rig.clock.advance(60.0)

    rig.journal.commit = slow_commit  # type: ignore[method-assign]
    rig.run(DAY_S - 3 * H)
    for weight in (71.0, 70.5, 71.5, 72.0):  # each correction re-programs the running pump
        rig.channel.submit_weight(weight, "re-weighed")
        rig.run(H / 2)
    while not rig.journal.days("bed1")[0].closed:
        rig.run(STEP_S)
    prescribed = rig.journal.days("bed1")[0].prescribed_ml
    assert prescribed == pytest.approx(250.0 * 72.0 / 50.0)
    pump = rig.model.snapshot()
    # Day 1's truth: the pump's lifetime less what its totalizer counted since day 2's clear.
    day1_ml = pump.lifetime_volume_infused_ml - pump.volume_infused_ml
    assert day1_ml <= prescribed + 0.01
    assert day1_ml == pytest.approx(prescribed, rel=0.005)
    assert rig.events("command")  # re-programmed while running, as intended
