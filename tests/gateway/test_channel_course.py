"""Whole courses in virtual time on the model-backed driver: doses, windows, accounting."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from gateway.channel import ChannelState
from gateway.planner import DAY_S
from tests.gateway.conftest import Rig


@pytest.mark.hazard("H-OV-03")
def test_flat_course_three_days_each_within_half_a_percent(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(arm="flat", weight_kg=70.0)
    rig.run(3 * DAY_S + 600)
    days = rig.journal.days("bed1")
    assert [d.day for d in days] == [1, 2, 3]
    for day in days:
        assert day.closed
        assert day.prescribed_ml == pytest.approx(350.0)
        assert day.delivered_ml == pytest.approx(350.0, rel=0.005)
        assert day.delivered_ml <= day.prescribed_ml * 1.0001
    assert rig.channel.state is ChannelState.COMPLETED
    # The pump's own ground truth agrees with the journal.
    assert rig.model.snapshot().lifetime_volume_infused_ml == pytest.approx(
        sum(d.delivered_ml for d in days), abs=0.05
    )
    assert rig.model.snapshot().state.value == "stopped"


@pytest.mark.hazard("H-OV-01")
def test_invariant_1_no_command_above_ceiling_over_a_course(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(arm="flat", weight_kg=30.0, ceiling_ml_per_kg_per_h=0.2, confirm=True)
    rig.run(DAY_S + 300)
    ceiling = 0.2 * 30.0
    assert rig.driver.sent, "the channel commanded nothing"
    assert max(rig.driver.sent) <= ceiling
    # 250 mg/kg/day for 30 kg = 150 mL needs 6.25 mL/h > 6 mL/h: the shortfall is reported.
    day1 = rig.journal.days("bed1")[0]
    assert day1.delivered_ml == pytest.approx(6.0 * 24, rel=0.01)
    closes = rig.events("day_close")
    assert closes[0]["shortfall_ml"] == pytest.approx(150.0 - 144.0, abs=1.0)


@pytest.mark.hazard("H-UN-03")
def test_titer_arm_awaits_fresh_titer_each_morning(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(arm="titer", weight_kg=70.0, igm_mg_dl=30.0, hematocrit=0.35)
    rig.run(DAY_S)
    assert rig.journal.days("bed1")[0].prescribed_ml == pytest.approx(371.583, abs=0.01)
    rig.run(2 * 300)  # day 2 has begun: no titer newer than 12 h
    assert rig.channel.state is ChannelState.AWAITING_TITER
    assert rig.model.snapshot().state.value != "infusing"
    rig.titer(80.0)
    rig.run(600)
    assert rig.channel.state is ChannelState.INFUSING
    day2 = rig.journal.days("bed1")[1]
    assert day2.prescribed_ml == pytest.approx(20 * 31.85 / 6, abs=0.01)


def test_titer_at_target_means_no_infusion_that_day(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(arm="titer", weight_kg=70.0, igm_mg_dl=30.0, hematocrit=0.35)
    rig.run(DAY_S - 3600)
    rig.titer(120.0)  # next morning's titer, drawn before day 2 begins
    rig.run(2 * 3600)
    assert rig.channel.state is ChannelState.DAY_COMPLETE
    assert rig.journal.days("bed1")[1].prescribed_ml == 0.0
    assert any("no infusion today" in " ".join(p["notes"]) for p in rig.events("prescription"))


def test_vasopressor_withdrawal_ends_course_after_current_day(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(arm="titer", weight_kg=70.0, igm_mg_dl=30.0, hematocrit=0.35)
    rig.run(3600)
    rig.channel.submit_vasopressors_withdrawn()
    rig.run(DAY_S)
    assert rig.channel.state is ChannelState.COMPLETED
    assert [d.day for d in rig.journal.days("bed1")] == [1]


@pytest.mark.hazard("H-OV-08")
def test_weight_correction_changes_prescription_and_ceiling(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(arm="flat", weight_kg=70.0)
    rig.run(3600)
    rig.channel.submit_weight(80.0, "re-weighed", confirm=True)
    rig.run(600)
    snap = rig.channel.snapshot()
    assert snap["ceiling_ml_per_h"] == pytest.approx(32.0)
    assert snap["days"][0]["prescribed_ml"] == pytest.approx(400.0)
    assert rig.events("weight")[0]["weight_kg"] == 80.0
