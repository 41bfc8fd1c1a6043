"""Never trust one signal: a pump that lies in one way at a time, on the real executor.

Each test makes the model-backed pump lie about one thing (its totalizer, its watchdog, a stop,
its uptime) or the gateway's own clock step, and checks what the gateway does: the alarm it
raises, that the pump is stopped (by the gateway, or by its own watchdog when it will not stop),
and that the pump's own lifetime total stays at or below the day's prescription.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from pytest_mock import MockerFixture

from gateway.channel import Channel
from gateway.config import AutoResumeConfig, ControlConfig
from gateway.course_state import AlarmCode, ChannelState
from gateway.dosing import Arm
from gateway.errors import ConfigError
from gateway.journal import Journal, JournalError
from gateway.planner import DAY_S, SECONDS_PER_HOUR
from protocol.pump_state import PumpAlarm, PumpState
from tests.gateway.conftest import STEP_S, Rig
from tests.gateway.model_driver import ModelDriver

H = SECONDS_PER_HOUR


def codes(rig: Rig) -> set[str]:
    return {a["code"] for a in rig.channel.snapshot()["alarms"]}


@pytest.mark.hazard("H-OV-04")
def test_frozen_totalizer_is_implausible_and_the_day_is_bounded_by_the_estimate(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig(weight_kg=70.0)
    rig.run(2 * H)
    rig.driver.frozen_volume_ml = rig.driver.read_status().volume_infused_ml
    rig.run(4 * STEP_S)  # within a few readings
    assert AlarmCode.TOTALIZER_IMPLAUSIBLE.value in codes(rig)
    assert rig.channel.state is ChannelState.ALARM
    assert rig.model.snapshot().state is not PumpState.INFUSING
    # A person acknowledges, the totalizer stays frozen: the gateway never re-sends the day's
    # volume on a count it cannot trust, and never gives more than the day's prescription.
    for _ in range(6):
        rig.channel.submit_ack("nurse", "checked the line")
        rig.run(2 * H)
    while not rig.journal.days("bed1")[0].closed:
        rig.run(STEP_S)
    pump = rig.model.snapshot()
    day1_ml = pump.lifetime_volume_infused_ml - pump.volume_infused_ml  # less day 2's
    assert day1_ml <= 350.0 + 0.01
    # The day's record says it could not trust the totalizer, with both counts.
    close = rig.events("day_close")[0]
    assert close["totalizer_distrusted"] is True
    assert close["estimated_ml"] > close["delivered_ml"]
    assert any("totalizer implausible" in note for note in close["notes"])


@pytest.mark.hazard("H-OV-04")
def test_a_totalizer_that_jumps_is_implausible(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(weight_kg=70.0)
    rig.run(3 * H)
    rig.driver.volume_offset_ml = 30.0
    rig.run(STEP_S)
    assert AlarmCode.TOTALIZER_IMPLAUSIBLE.value in codes(rig)
    assert rig.model.snapshot().state is not PumpState.INFUSING


@pytest.mark.hazard("H-OV-04")
def test_the_estimate_agrees_with_an_honest_pump_over_a_day(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(weight_kg=70.0)
    rig.run(DAY_S - STEP_S)
    day = rig.channel.course.today
    assert day is not None
    assert not day.totalizer_distrusted
    assert day.estimated_ml == pytest.approx(day.delivered_ml, abs=1.0)
    assert AlarmCode.TOTALIZER_IMPLAUSIBLE.value not in codes(rig)


@pytest.mark.parametrize("held_s", [0.0, 10_000.0])
@pytest.mark.hazard("H-CL-01")
def test_a_pump_without_the_watchdog_asked_for_is_never_started(
    make_rig: Callable[..., Rig], held_s: float
) -> None:
    rig = make_rig()
    rig.driver.watchdog_reported_s = held_s
    rig.run(2 * STEP_S)
    assert AlarmCode.WATCHDOG_UNCONFIRMED.value in codes(rig)
    assert rig.driver.sent == []
    assert rig.model.snapshot().state is not PumpState.INFUSING
    rig.driver.watchdog_reported_s = None  # the biomed fixes the pump
    rig.channel.submit_ack("biomed", "safe mode on")
    rig.run(3 * STEP_S)
    assert rig.channel.state is ChannelState.INFUSING


@pytest.mark.hazard("H-CL-01")
def test_the_watchdog_is_confirmed_again_after_a_power_loss(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig()
    rig.run(H)
    armed = len(rig.events("pump_connected"))
    rig.model.power_loss()
    rig.run(STEP_S)
    rig.channel.submit_ack("nurse", "power back")
    rig.run(2 * STEP_S)
    assert rig.channel.state is ChannelState.INFUSING
    assert len(rig.events("pump_connected")) > armed


@pytest.mark.hazard("H-OV-09")
def test_a_pump_that_refuses_stop_is_left_to_its_own_watchdog(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig()
    rig.run(H)
    rig.driver.stop_ignored = True
    rig.channel.submit_stop("nurse", "procedure")
    rig.run(STEP_S)
    assert AlarmCode.STOP_FAILED.value in codes(rig)
    quiet_until = rig.channel.course.link.quiet_until_s
    assert quiet_until is not None
    reads = rig.model.snapshot()
    # No traffic at all while quiet: the pump's watchdog (3 polls here) stops it.
    rig.run(rig.channel.pump_watchdog_s + 2 * STEP_S)
    stopped = rig.model.snapshot()
    assert stopped.state is not PumpState.INFUSING
    assert PumpAlarm.COMM_TIMEOUT in stopped.alarms
    assert stopped.lifetime_volume_infused_ml < reads.lifetime_volume_infused_ml + 10 * 14.6 / 12
    assert rig.channel.state is ChannelState.ALARM
    assert AlarmCode.STOP_FAILED.value in codes(rig)  # critical: until a person acknowledges
    assert any(e["command"] == "stop" for e in rig.events("command_failed"))
    assert AlarmCode.INTERNAL_ERROR.value not in codes(rig)
    # Quiet means quiet: the one stop, its retry after the quiet period, nothing between.
    assert len([c for c in rig.events("command") if c["command"] == "stop"]) <= 3


@pytest.mark.hazard("H-OV-10", "H-WP-01")
def test_a_new_course_on_a_pump_with_history_waits_for_a_person(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig(reservoir_ml=10_000.0)
    rig.model.set_rate(10.0)
    rig.model.start()
    rig.clock.advance(H)  # another patient's infusion, or a lost journal
    rig.model.stop()
    rig.run(2 * STEP_S)
    assert AlarmCode.PUMP_HAS_HISTORY.value in codes(rig)
    assert rig.channel.course.course_start_s is None
    rig.channel.submit_ack("nurse", "new bag, this patient's line")
    rig.run(2 * STEP_S)
    assert rig.channel.state is ChannelState.INFUSING
    assert rig.channel.course.course_start_s is not None


@pytest.mark.hazard("H-CK-01")
def test_a_backward_clock_step_cannot_shorten_an_outage(make_rig: Callable[..., Rig]) -> None:
    # The rule allows 3 polls of silence; the link is down for 5, and meanwhile the wall clock
    # is stepped back by 4: by the wall clock the outage looks like 1 poll.  The monotonic
    # clock measures it: no automatic resume.
    rule = AutoResumeConfig(max_gap_s=3 * STEP_S)
    rig = make_rig(control=ControlConfig(auto_resume=rule))
    rig.run(H)
    rig.driver.silent = True
    rig.run(5 * STEP_S)
    rig.clock.step_wall(-4 * STEP_S)
    rig.driver.silent = False
    rig.run(2 * STEP_S)
    assert not rig.events("auto_resume")
    assert rig.events("reconciled")[0]["gap_s"] >= 5 * STEP_S
    assert AlarmCode.OUTAGE_NEEDS_ACK.value in codes(rig)
    assert rig.events("clock_step")


@pytest.mark.hazard("H-CK-01")
def test_a_clock_that_went_back_across_a_restart_makes_the_outage_unknown(
    make_rig: Callable[..., Rig],
) -> None:
    rule = AutoResumeConfig(max_gap_s=3 * STEP_S)
    rig = make_rig(control=ControlConfig(auto_resume=rule))
    rig.run(H)
    rig.restart()
    rig.clock.step_wall(-H)  # the host came back with its clock an hour behind
    rig.run(STEP_S)
    (reconciled,) = rig.events("reconciled")
    assert "went back" in reconciled["outage_unknown"]
    assert not rig.events("auto_resume")
    assert rig.channel.state is ChannelState.ALARM


@pytest.mark.parametrize("step_s", [2 * H, -2 * H])
@pytest.mark.hazard("H-CK-01")
def test_a_wall_clock_step_is_journalled_and_shown(
    make_rig: Callable[..., Rig], step_s: float
) -> None:
    rig = make_rig()
    rig.run(H)
    rig.clock.step_wall(step_s)
    rig.run(STEP_S)
    (step,) = rig.events("clock_step")
    assert step["step_s"] == pytest.approx(step_s)
    alarm = {a["code"]: a for a in rig.channel.snapshot()["alarms"]}[AlarmCode.CLOCK_STEP.value]
    assert alarm["stops"] is False


@pytest.mark.hazard("H-PS-01")
def test_a_frozen_pump_uptime_makes_an_outage_unknown(make_rig: Callable[..., Rig]) -> None:
    rule = AutoResumeConfig(max_gap_s=3 * STEP_S)
    rig = make_rig(control=ControlConfig(auto_resume=rule))
    rig.run(H)
    rig.driver.uptime_frozen_s = rig.model.snapshot().monotonic_s
    rig.driver.silent = True
    rig.run(2 * STEP_S)
    rig.driver.silent = False
    rig.run(STEP_S)
    (reconciled,) = rig.events("reconciled")
    assert "uptime" in reconciled["outage_unknown"]
    assert not rig.events("auto_resume")
    assert AlarmCode.OUTAGE_NEEDS_ACK.value in codes(rig)


@pytest.mark.hazard("H-OV-08")
def test_a_downward_weight_correction_while_infusing_replans_down(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig(weight_kg=70.0, arm="flat")
    rig.run(3 * H)
    rig.driver.lie_rate_ml_per_h = None
    # Catch up first so the running rate sits near the 70-kg ceiling of 28 mL/h.
    rig.model.inject(PumpAlarm.OCCLUSION)
    rig.run(10 * H)
    rig.model.clear_condition(PumpAlarm.OCCLUSION)
    rig.channel.submit_ack("nurse", "cleared")
    rig.run(2 * STEP_S)
    assert rig.channel.snapshot()["commanded_rate_ml_per_h"] > 25.6
    rig.channel.submit_weight(64.0, "re-weighed", confirm=True)  # ceiling 25.6 mL/h now
    rig.run(2 * STEP_S)
    assert AlarmCode.RATE_ABOVE_CEILING.value not in codes(rig)
    assert rig.channel.state is ChannelState.INFUSING
    assert rig.channel.snapshot()["commanded_rate_ml_per_h"] <= 25.6
    assert rig.events("replan_lower_ceiling") or max(rig.driver.sent[-1:]) <= 25.6


def test_invariant_every_alarm_state_says_why(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(control=ControlConfig(auto_resume=AutoResumeConfig(enabled=False)))
    rig.run(H)
    rig.driver.silent = True
    rig.run(3 * STEP_S)
    rig.driver.silent = False
    rig.run(STEP_S)
    snap = rig.channel.snapshot()
    assert snap["state"] == "alarm"
    assert any(a["stops"] for a in snap["alarms"])


def _restart_with(rig: Rig, adopt: bool = False, **changes: object) -> Channel:
    rig.driver.close()
    rig.journal.close()
    rig.journal = Journal(rig.state_dir)
    rig.driver = ModelDriver(rig.model, timeout_s=0.1, retries=0)
    config = rig.channel.config.model_copy(update=changes)
    rig.channel = Channel(
        config,
        rig.driver,
        rig.journal,
        rig.clock,
        rig.channel.control,
        pump_watchdog_s=rig.channel.pump_watchdog_s,
        adopt_config_order=adopt,
    )
    return rig.channel


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"weight_kg": 40.0}, "weight_kg 40.0 (config) vs 70.0 (journal)"),
        ({"arm": Arm.TITER, "igm_mg_dl": 30.0, "hematocrit": 0.35}, "arm 'titer' (config)"),
    ],
)
@pytest.mark.hazard("H-OV-08", "H-WP-01")
def test_a_changed_config_order_is_refused_at_restart(
    make_rig: Callable[..., Rig], changes: dict[str, object], named: str
) -> None:
    rig = make_rig(weight_kg=70.0)
    rig.run(H)
    with pytest.raises(ConfigError, match=re.escape(named)):
        _restart_with(rig, **changes)
    # The journal still holds the course as it was.
    stored = rig.journal.channel_state("bed1")
    assert stored is not None
    assert '"weight_kg": 70.0' in stored


@pytest.mark.hazard("H-OV-08")
def test_a_changed_weight_can_be_adopted_explicitly(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(weight_kg=70.0)
    rig.run(H)
    channel = _restart_with(rig, adopt=True, weight_kg=72.0)
    assert channel.course.weight_kg == 72.0
    assert rig.events("config_order_adopted")
    rig.run(STEP_S)
    assert rig.journal.days("bed1")[0].prescribed_ml == pytest.approx(250.0 * 72.0 / 50.0)
    # A weight corrected over the API and an unchanged config agree at the next restart.
    rig.channel.submit_weight(73.0, "re-weighed")
    rig.run(STEP_S)
    assert _restart_with(rig, weight_kg=72.0).course.weight_kg == 73.0


@pytest.mark.hazard("H-JN-02")
def test_a_journal_that_fails_while_running_stops_the_pump_and_status_stops_claiming(
    make_rig: Callable[..., Rig], mocker: MockerFixture
) -> None:
    rig = make_rig()
    rig.run(H)
    assert rig.model.snapshot().state is PumpState.INFUSING
    mocker.patch.object(rig.journal, "commit", side_effect=JournalError("disk full"))
    with pytest.raises(JournalError):
        rig.channel.step()
    assert rig.model.snapshot().state is not PumpState.INFUSING
    snap = rig.channel.snapshot()
    assert snap["state"] == "unknown"
    assert "journal_failed" in {a["code"] for a in snap["alarms"]}


@pytest.mark.hazard("H-JN-02")
def test_a_deleted_journal_does_not_start_a_silent_day_1(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    rig.run(2 * H)  # the pump has given about 29 mL of day 1
    rig.journal.close()
    (rig.state_dir / "journal.sqlite3").unlink()
    for leftover in rig.state_dir.glob("journal.sqlite3-*"):
        leftover.unlink()
    rig.model.stop()  # the old process's stop on SIGTERM
    rig.restart()  # a new journal, the same pump with its totalizer
    rig.run(2 * STEP_S)
    assert AlarmCode.PUMP_HAS_HISTORY.value in codes(rig)
    assert rig.channel.course.course_start_s is None
    assert rig.model.snapshot().state is not PumpState.INFUSING
