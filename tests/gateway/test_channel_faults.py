"""Each fault the channel must handle: what it does and how fast (invariants 2-6)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from pytest_mock import MockerFixture

from gateway.channel import AlarmCode, ChannelState
from gateway.config import AutoResumeConfig, ControlConfig
from gateway.planner import DAY_S
from gateway.safety import RateRefusedError
from protocol.pump_state import PumpAlarm
from tests.gateway.conftest import STEP_S, Rig


def alarm_codes(rig: Rig) -> set[str]:
    return {a["code"] for a in rig.channel.snapshot()["alarms"]}


@pytest.mark.hazard("H-UN-04")
def test_pump_alarm_stops_alarms_and_waits_for_ack(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    rig.run(3600)
    rig.model.inject(PumpAlarm.OCCLUSION)
    rig.run(STEP_S)
    assert rig.channel.state is ChannelState.ALARM
    assert "pump_occlusion" in alarm_codes(rig)
    stopped_at = rig.model.snapshot().lifetime_volume_infused_ml
    rig.run(3600)  # nobody acknowledges: nothing moves
    assert rig.model.snapshot().lifetime_volume_infused_ml == stopped_at
    rig.channel.submit_ack("nurse a", "line checked")  # but the occlusion is still there
    rig.run(STEP_S)
    assert rig.channel.state is ChannelState.ALARM
    assert rig.events("ack_not_effective")
    rig.model.clear_condition(PumpAlarm.OCCLUSION)
    rig.channel.submit_ack("nurse a", "occlusion cleared")
    rig.run(STEP_S)
    assert rig.channel.state is ChannelState.INFUSING
    assert alarm_codes(rig) == set()


@pytest.mark.hazard("H-UN-01", "H-OV-03")
def test_invariant_4_catch_up_after_interruption_bounded_by_ceiling(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig(weight_kg=70.0)
    rig.run(3600)
    rig.model.inject(PumpAlarm.DOOR_OPEN)
    rig.run(4 * 3600)
    rig.model.clear_condition(PumpAlarm.DOOR_OPEN)
    rig.channel.submit_ack("nurse b")
    rig.run(DAY_S - 5 * 3600 + STEP_S)
    day1 = rig.journal.days("bed1")[0]
    assert day1.closed
    # 4 h lost from 350 mL/day: caught up at up to 28 mL/h, never above it, never over.
    assert max(rig.driver.sent) <= 28.0
    assert max(rig.driver.sent) > 350.0 / 24
    assert day1.delivered_ml == pytest.approx(350.0, rel=0.005)
    assert day1.delivered_ml <= 350.0 * 1.0001


@pytest.mark.hazard("H-UN-01")
def test_invariant_4_shortfall_reported_not_carried(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(weight_kg=70.0)
    rig.run(3600)
    rig.model.inject(PumpAlarm.AIR_IN_LINE)
    rig.run(12 * 3600)
    rig.model.clear_condition(PumpAlarm.AIR_IN_LINE)
    rig.channel.submit_ack("nurse c")
    rig.run(DAY_S - 13 * 3600 + 2 * STEP_S)
    day1, day2 = rig.journal.days("bed1")[:2]
    assert day1.shortfall_ml > 10.0
    assert rig.events("day_close")[0]["shortfall_ml"] == pytest.approx(day1.shortfall_ml)
    assert day2.prescribed_ml == pytest.approx(350.0)  # the shortfall is not added to day 2


@pytest.mark.hazard("H-CL-02")
def test_invariant_5_silent_pump_alarmed_within_two_polls(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(control=ControlConfig(auto_resume=AutoResumeConfig(enabled=False)))
    rig.run(3600)
    rig.driver.silent = True
    rig.run(STEP_S)  # one poll: silence detected on the first failed poll
    assert rig.channel.state is ChannelState.LINK_LOST
    assert AlarmCode.PUMP_SILENT.value in alarm_codes(rig)
    alarm = rig.events("alarm")[-1]
    assert alarm["code"] == "pump_silent"
    # The pump's own watchdog stops it (3 polls here) while the gateway cannot reach it.
    rig.run(4 * STEP_S)
    assert PumpAlarm.COMM_TIMEOUT in rig.model.snapshot().alarms
    rig.driver.silent = False
    rig.run(3 * STEP_S)
    assert rig.channel.state is ChannelState.ALARM  # no auto-resume: needs a person
    assert rig.model.snapshot().state.value != "infusing"
    rig.channel.submit_ack("nurse d")
    rig.run(STEP_S)
    assert rig.channel.state is ChannelState.INFUSING


@pytest.mark.hazard("H-CL-02")
def test_invariant_5_bounded_auto_resume_after_short_drop(make_rig: Callable[..., Rig]) -> None:
    rule = AutoResumeConfig(enabled=True, max_gap_s=4 * STEP_S, max_per_day=1)
    rig = make_rig(control=ControlConfig(auto_resume=rule))
    rig.run(3600)
    rig.driver.silent = True
    rig.run(3 * STEP_S)
    rig.driver.silent = False
    rig.run(STEP_S)
    assert rig.channel.state is ChannelState.INFUSING
    assert rig.events("auto_resume")[0]["count_today"] == 1
    # A second drop the same day exceeds max_per_day: an operator must acknowledge.
    rig.driver.silent = True
    rig.run(STEP_S)
    rig.driver.silent = False
    rig.run(STEP_S)
    assert rig.channel.state is ChannelState.ALARM
    # A long drop never auto-resumes either (checked on a fresh rig).
    rig2 = make_rig(control=ControlConfig(auto_resume=rule))
    rig2.run(3600)
    rig2.driver.silent = True
    rig2.run(10 * STEP_S)
    rig2.driver.silent = False
    rig2.run(STEP_S)
    assert rig2.channel.state is ChannelState.ALARM


@pytest.mark.hazard("H-OV-02")
def test_invariant_3_pump_reporting_other_rate_is_stopped(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    rig.run(3600)
    rig.driver.lie_rate_ml_per_h = rig.channel.snapshot()["commanded_rate_ml_per_h"] + 0.5
    rig.run(STEP_S)
    assert rig.channel.state is ChannelState.ALARM
    assert AlarmCode.RATE_MISMATCH.value in alarm_codes(rig)
    assert rig.model.snapshot().state.value == "stopped"


@pytest.mark.hazard("H-OV-02")
def test_invariant_3_pump_reporting_rate_above_ceiling_is_stopped(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig(weight_kg=70.0)
    rig.run(3600)
    rig.driver.lie_rate_ml_per_h = 28.5
    rig.run(STEP_S)
    assert AlarmCode.RATE_ABOVE_CEILING.value in alarm_codes(rig)
    assert rig.model.snapshot().state.value == "stopped"


@pytest.mark.hazard("H-UN-04")
def test_invariant_3_pump_stopped_behind_our_back_is_alarmed(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    rig.run(3600)
    rig.model.stop()  # someone pressed stop at the bedside
    rig.run(STEP_S)
    assert AlarmCode.STATE_MISMATCH.value in alarm_codes(rig)


@pytest.mark.hazard("H-OV-01", "H-UN-02")
def test_invariant_2_refused_rate_raises_alarm_and_is_journalled(
    make_rig: Callable[..., Rig], mocker: MockerFixture
) -> None:
    # The planner never proposes what the check must refuse, so make the one check stricter
    # than the planner: whatever it refuses must be alarmed, journalled and never sent.
    def refuse(rate_ml_per_h: float, **_: object) -> None:
        raise RateRefusedError(rate_ml_per_h, 1.0, "test: stricter check")

    mocker.patch("gateway.controller.check_rate", side_effect=refuse)
    rig = make_rig()
    rig.run(STEP_S)
    assert AlarmCode.SAFETY_REFUSED.value in alarm_codes(rig)
    refused = rig.events("command_refused")
    assert refused
    assert "stricter check" in refused[0]["reason"]
    assert rig.driver.sent == []
    assert rig.model.snapshot().state.value == "stopped"


@pytest.mark.hazard("H-UN-01")
def test_rule_4_pump_max_below_ceiling_plans_at_pump_max_and_alarms_shortfall(
    make_rig: Callable[..., Rig],
) -> None:
    # Pump max 20 mL/h under a 28 mL/h ceiling (70 kg); an 8-h occlusion: catch-up would need
    # 22.36 mL/h.  The planner plans at the pump's 20, never a rate the check must refuse, and
    # says at once that the day will fall short (advisory: the pump keeps infusing).
    rig = make_rig(max_rate_ml_per_h=20.0)
    rig.run(3600)
    rig.model.inject(PumpAlarm.OCCLUSION)
    rig.run(8 * 3600)
    rig.model.clear_condition(PumpAlarm.OCCLUSION)
    rig.channel.submit_ack("nurse", "occlusion cleared")
    rig.run(2 * STEP_S)
    assert rig.channel.state is ChannelState.INFUSING
    assert max(rig.driver.sent) == pytest.approx(20.0)
    assert not rig.events("command_refused")
    alarms = {a["code"]: a for a in rig.channel.snapshot()["alarms"]}
    assert alarms["projected_shortfall"]["stops"] is False
    day = rig.channel.snapshot()["days"][0]
    assert day["projected_shortfall_ml"] > 1.0
    rig.run(DAY_S - 9 * 3600)
    closed = rig.journal.days("bed1")[0]
    assert closed.closed
    # Given by 12 h: far more than the 14.58 mL the old planner managed, and never over.
    assert 100.0 < closed.delivered_ml < 350.0
    assert closed.shortfall_ml == pytest.approx(350.0 - closed.delivered_ml)


@pytest.mark.hazard("H-UN-04")
def test_power_loss_alarm_needs_ack(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    rig.run(3600)
    rig.model.power_loss()
    rig.run(STEP_S)
    assert "pump_power_loss" in alarm_codes(rig)
    rig.channel.submit_ack("biomed")
    rig.run(STEP_S)
    assert rig.channel.state is ChannelState.INFUSING


@pytest.mark.hazard("H-PS-01")
def test_totalizer_going_back_is_never_guessed(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    rig.run(3600)
    rig.model.clear_totals()
    rig.run(STEP_S)
    assert AlarmCode.TOTALIZER_WENT_BACK.value in alarm_codes(rig)
    assert rig.model.snapshot().state.value == "stopped"


def test_operator_stop_and_resume(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    rig.run(3600)
    rig.channel.submit_stop("dr e", "procedure")
    rig.run(STEP_S)
    assert rig.channel.state is ChannelState.STOPPED
    assert rig.model.snapshot().state.value == "stopped"
    rig.channel.submit_ack("dr e", "back from procedure")
    rig.run(STEP_S)
    assert rig.channel.state is ChannelState.INFUSING


@pytest.mark.hazard("H-JN-01")
def test_invariant_6_restart_mid_day_reconciles_never_from_zero(
    make_rig: Callable[..., Rig],
) -> None:
    rule = AutoResumeConfig(max_gap_s=3 * STEP_S)
    rig = make_rig(weight_kg=70.0, control=ControlConfig(auto_resume=rule))
    rig.run(10 * 3600)
    before = rig.journal.days("bed1")[0].delivered_ml
    assert before == pytest.approx(350.0 * 10 / 24, rel=0.02)
    rig.restart()  # a new process: same state directory, same pump, which kept infusing
    rig.run(STEP_S)
    reconciled = rig.events("reconciled")[-1]
    assert reconciled["restarted"] is True
    assert reconciled["gap_s"] == pytest.approx(STEP_S)
    assert rig.events("auto_resume")
    rig.run(DAY_S - 10 * 3600)
    day1 = rig.journal.days("bed1")[0]
    assert day1.delivered_ml == pytest.approx(350.0, rel=0.005)
    assert day1.delivered_ml <= 350.0 * 1.0001
    assert rig.model.snapshot().lifetime_volume_infused_ml <= 350.0 * 1.0001 + 350.0 / 24


@pytest.mark.hazard("H-JN-01")
def test_invariant_6_restart_after_long_gap_waits_for_ack(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(weight_kg=70.0)  # default rule: at most 120 s of silence
    rig.run(10 * 3600)
    delivered = rig.journal.days("bed1")[0].delivered_ml
    rig.restart()
    rig.clock.advance(3600)  # the gateway was down an hour; the pump's watchdog stopped it
    rig.run(STEP_S)
    assert rig.channel.state is ChannelState.ALARM
    assert not rig.events("auto_resume")
    assert rig.journal.days("bed1")[0].delivered_ml >= delivered  # never from zero
    rig.channel.submit_ack("nurse f", "gateway back")
    rig.run(STEP_S)
    assert rig.channel.state is ChannelState.INFUSING


@pytest.mark.hazard("H-CL-01")
def test_invariant_5_dead_gateway_the_pump_stops_itself(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    rig.run(3600)
    snap = rig.model.snapshot()
    assert snap.state.value == "infusing"
    assert snap.watchdog_timeout_s == rig.channel.pump_watchdog_s  # armed by the channel
    # The gateway dies: no more cycles.  The pump's own watchdog stops it, and it stays stopped.
    rig.clock.advance(rig.channel.pump_watchdog_s + 1.0)
    stopped = rig.model.snapshot()
    assert stopped.state.value == "alarm"
    assert PumpAlarm.COMM_TIMEOUT in stopped.alarms
    rig.clock.advance(DAY_S)
    assert rig.model.snapshot().lifetime_volume_infused_ml == stopped.lifetime_volume_infused_ml
