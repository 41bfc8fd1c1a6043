"""Which titer doses which day, and what a late or missing one does (docs/dosing.md, rules 1-3, 9).

``test_controller_rules.py`` holds each rule's main test; these hold the parts of the rules it
leaves out: of two fresh titers the newer serves the day, a titer drawn too long before a window
serves no day, a correction below what was already given stops the day without an alarm, a
``compress`` window that ends with no titer closes as not given, vasopressor withdrawal closes a
day still waiting for its titer, and a day-2 titer is never flagged as an enrolment titer.  All
on the real executor with a model pump on a manual clock.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from gateway.config import ControlConfig
from gateway.course_state import AlarmCode, ChannelState
from gateway.planner import DAY_S, SECONDS_PER_HOUR
from protocol.pump_state import PumpState
from tests.gateway.conftest import STEP_S, Rig
from tests.gateway.test_channel_faults import alarm_codes
from tests.gateway.test_controller_rules import prescribed, titer_rig, titer_volume_ml

H = SECONDS_PER_HOUR


@pytest.mark.hazard("H-OV-06")
def test_rule_1_of_two_fresh_titers_the_newer_serves_the_day_and_the_older_none(
    make_rig: Callable[..., Rig],
) -> None:
    rig = titer_rig(make_rig)
    rig.run(DAY_S - 10 * H)
    rig.titer(40.0)  # drawn 10 h before day 2: fresh enough ...
    rig.run(9 * H)
    rig.titer(50.0)  # ... but this one, an hour before day 2, is newer
    rig.run(2 * H)
    assert prescribed(rig)[1] == pytest.approx(titer_volume_ml(50.0))
    (_, day2) = rig.events("prescription")
    assert day2["igm_mg_dl"] == 50.0
    # The 40 was never used, but it is 34 h old when day 3 opens: day 3 waits for its own.
    rig.run(DAY_S)
    assert rig.channel.state is ChannelState.AWAITING_TITER
    assert len(rig.events("prescription")) == 2


@pytest.mark.hazard("H-UN-03")
def test_rule_1_a_titer_drawn_longer_than_the_age_limit_before_the_window_serves_no_day(
    make_rig: Callable[..., Rig],
) -> None:
    rig = titer_rig(make_rig)
    rig.run(DAY_S - 13 * H)
    rig.titer(50.0)  # 13 h before day 2 opens: older than the 12-h limit by then
    rig.run(13 * H + STEP_S)
    assert rig.channel.state is ChannelState.AWAITING_TITER
    assert len(prescribed(rig)) == 2
    assert rig.journal.days("bed1")[1].prescribed_ml == 0.0  # no prescription yet
    assert AlarmCode.TITER_LATE.value in alarm_codes(rig)
    assert rig.model.snapshot().state is not PumpState.INFUSING


@pytest.mark.hazard("H-OV-06")
def test_rule_1_a_correction_below_what_was_given_stops_the_day_and_says_so(
    make_rig: Callable[..., Rig],
) -> None:
    rig = titer_rig(make_rig)
    rig.run(20 * H)  # about 310 mL of day 1's 371.58 given
    assert rig.journal.days("bed1")[0].delivered_ml > titer_volume_ml(90.0)
    rig.titer(90.0, corrects_day=1)  # the lab says this morning's titer was 90, not 30
    rig.run(2 * STEP_S)
    day1 = rig.channel.snapshot()["days"][0]
    assert day1["prescribed_ml"] == pytest.approx(titer_volume_ml(90.0))
    assert any("nothing more today" in note for note in day1["notes"])
    assert rig.channel.state is ChannelState.DAY_COMPLETE
    assert rig.model.snapshot().state is not PumpState.INFUSING
    assert not rig.events("alarm")  # a journalled correction, not an over-delivery
    (correction,) = [p for p in rig.events("prescription") if p["day"] == 1 and p["why"] != "day 1"]
    assert correction["why"] == "titer of day 1 corrected"
    # Nothing more is given for the rest of the day.
    given = rig.model.snapshot().lifetime_volume_infused_ml
    rig.run(3 * H)
    assert rig.model.snapshot().lifetime_volume_infused_ml == given


@pytest.mark.hazard("H-UN-03")
def test_rule_2_a_compress_window_that_ends_without_a_titer_closes_as_not_given(
    make_rig: Callable[..., Rig],
) -> None:
    rig = titer_rig(make_rig, late_titer="compress")
    rig.run(DAY_S + STEP_S)
    assert rig.channel.state is ChannelState.AWAITING_TITER
    (late,) = [a for a in rig.events("alarm") if a["code"] == AlarmCode.TITER_LATE.value]
    assert "compress" in late["detail"]
    rig.run(DAY_S)  # no titer all day 2: its window ends on its clock time
    day2 = rig.journal.days("bed1")[1]
    assert day2.closed
    assert day2.delivered_ml == 0.0
    assert day2.window_start_wall_s == rig.journal.days("bed1")[0].window_start_wall_s + DAY_S
    assert "no titer: not given" in rig.channel.snapshot()["days"][1]["notes"]
    # Day 3 opened on its clock time and waits for its own titer, which then doses it.
    assert rig.channel.state is ChannelState.AWAITING_TITER
    rig.titer(60.0)
    rig.run(2 * STEP_S)
    assert prescribed(rig)[2] == pytest.approx(titer_volume_ml(60.0))
    assert rig.channel.state is ChannelState.INFUSING


@pytest.mark.hazard("H-UN-03")
def test_rule_2_the_late_titer_alarm_is_journalled_and_clears_when_the_titer_comes(
    make_rig: Callable[..., Rig],
) -> None:
    rig = titer_rig(make_rig)
    rig.run(DAY_S + STEP_S)
    assert AlarmCode.TITER_LATE.value in {a["code"] for a in rig.events("alarm")}
    rig.run(2 * H)
    rig.titer(55.0)
    rig.run(2 * STEP_S)
    assert AlarmCode.TITER_LATE.value not in alarm_codes(rig)
    assert rig.events("window_shifted")
    assert rig.channel.state is ChannelState.INFUSING


def test_rule_3_withdrawal_while_a_day_waits_for_its_titer_ends_the_course_at_once(
    make_rig: Callable[..., Rig],
) -> None:
    rig = titer_rig(make_rig)
    rig.run(DAY_S + STEP_S)
    assert rig.channel.state is ChannelState.AWAITING_TITER
    reply = rig.channel.submit_vasopressors_withdrawn()
    assert reply == "recorded: the titer arm ends after the current day"
    rig.run(STEP_S)
    assert rig.channel.state is ChannelState.COMPLETED
    assert rig.events("vasopressors_withdrawn")
    day2 = rig.journal.days("bed1")[1]
    assert day2.closed
    assert day2.delivered_ml == 0.0
    assert rig.channel.snapshot()["days"][1]["notes"] == ["not given"]
    # A titer now changes nothing: the course is over.
    rig.titer(50.0)
    rig.run(2 * H)
    assert [d.day for d in rig.journal.days("bed1")] == [1, 2]
    assert rig.model.snapshot().state is not PumpState.INFUSING


def test_rule_3_withdrawal_on_the_titer_arm_lets_the_running_day_finish(
    make_rig: Callable[..., Rig],
) -> None:
    rig = titer_rig(make_rig)
    rig.run(4 * H)
    rig.channel.submit_vasopressors_withdrawn()
    rig.run(STEP_S)
    assert rig.channel.state is ChannelState.INFUSING  # day 1 still runs to its end
    rig.run(DAY_S - 4 * H)
    (day1,) = rig.journal.days("bed1")
    assert day1.closed
    assert day1.delivered_ml == pytest.approx(titer_volume_ml(30.0), rel=0.005)
    assert rig.channel.state is ChannelState.COMPLETED


@pytest.mark.parametrize("policy", ["shift", "compress"])
def test_rule_2_the_policy_is_shown_on_the_waiting_day(
    make_rig: Callable[..., Rig], policy: str
) -> None:
    rig = make_rig(
        arm="titer",
        weight_kg=70.0,
        igm_mg_dl=30.0,
        hematocrit=0.35,
        control=ControlConfig.model_validate({"late_titer": policy}),
    )
    rig.run(DAY_S + STEP_S)
    day2 = rig.channel.snapshot()["days"][1]
    assert day2["awaiting_titer"] is True
    assert day2["late_titer_policy"] == policy


def test_rule_9_only_the_orders_baseline_titer_is_flagged_against_the_enrolment_criterion(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig(arm="titer", weight_kg=70.0, igm_mg_dl=65.0, hematocrit=0.35)
    rig.run(DAY_S - H)
    rig.titer(65.0)  # day 2's morning titer: not an enrolment titer, however high
    rig.run(2 * H)
    day1, day2 = rig.channel.snapshot()["days"]
    assert any("enrolment criterion" in note for note in day1["notes"])
    assert day2["titer"]["igm_mg_dl"] == 65.0
    assert not any("enrolment" in note for note in day2["notes"])
