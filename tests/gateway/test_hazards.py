"""Controls of docs/safety.md that no other test proved: one test each, named for the hazard.

The rest of the hazard table is proved by tests elsewhere that carry the same ``hazard`` marker
(``python -m tests.trace`` lists them).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from pytest_mock import MockerFixture

import gateway.api_guard
from drivers.errors import PumpProtocolError, PumpRefusedError
from gateway.api_guard import Credentials, FixedToken, Message, RequestGuard
from gateway.config import AutoResumeConfig, ControlConfig
from gateway.controller import decide
from gateway.course_state import AlarmCode, ChannelState
from gateway.effects import ClearPumpAlarms
from gateway.errors import InputError
from gateway.planner import DAY_S, SECONDS_PER_HOUR
from gateway.rules import MAX_ROUNDS_PER_CYCLE
from gateway.safety import check_rate
from protocol.pump_state import PumpState
from tests.gateway.conftest import STEP_S, Rig
from tests.gateway.model_driver import ModelDriver
from tests.gateway.test_channel_faults import alarm_codes

H = SECONDS_PER_HOUR
TOKEN = "hazard-test-token-0123456789-abcdefghij"


@pytest.mark.hazard("H-PS-01")
def test_a_pump_swapped_during_a_short_drop_never_resumes_by_itself(
    make_rig: Callable[..., Rig],
) -> None:
    # A drop short enough for the auto-resume rule; behind it, another pump: its totalizer at
    # zero, its uptime a few seconds.  Neither the count nor the outage can be trusted.
    rig = make_rig(control=ControlConfig(auto_resume=AutoResumeConfig(max_gap_s=3 * STEP_S)))
    rig.run(2 * H)
    delivered = rig.journal.days("bed1")[0].delivered_ml
    rig.driver.silent = True
    rig.run(STEP_S)
    rig.model.stop()
    rig.model.clear_totals()
    rig.driver.uptime_frozen_s = 5.0
    rig.driver.silent = False
    rig.run(2 * STEP_S)
    assert not rig.events("auto_resume")
    assert {AlarmCode.TOTALIZER_WENT_BACK.value, AlarmCode.OUTAGE_NEEDS_ACK.value} & alarm_codes(
        rig
    )
    assert "restarted" in rig.events("reconciled")[-1]["outage_unknown"]
    assert rig.channel.state is ChannelState.ALARM
    assert rig.model.snapshot().state is not PumpState.INFUSING
    assert rig.journal.days("bed1")[0].delivered_ml >= delivered  # the day is not given again


class _RoundingUpDriver(ModelDriver):
    """A backend whose rate encoder rounds up by one step: a codec bug."""

    def _write_rate(self, rate_ml_per_h: float) -> float:
        return super()._write_rate(rate_ml_per_h) + 0.01


@pytest.mark.hazard("H-OV-05")
def test_a_codec_that_rounds_a_rate_up_is_stopped_and_refused(make_rig: Callable[..., Rig]) -> None:
    model = make_rig().model
    model.set_rate(10.0)
    model.start()
    driver = _RoundingUpDriver(model)
    with pytest.raises(PumpProtocolError, match=r"rounded 15\.48 up to 15\.49; stopped"):
        driver.set_rate(check_rate(15.48, weight_kg=70.0))
    assert model.snapshot().state is not PumpState.INFUSING


@pytest.mark.hazard("H-UN-02")
def test_a_pump_refusing_every_rate_is_alarmed_and_not_asked_again_until_a_person_acks(
    make_rig: Callable[..., Rig], mocker: MockerFixture
) -> None:
    rig = make_rig()
    refuse = mocker.patch.object(
        rig.driver, "_write_rate", side_effect=PumpRefusedError("test: rate refused")
    )
    rig.run(2 * H)
    assert AlarmCode.PUMP_REFUSED.value in alarm_codes(rig)
    assert rig.channel.state is ChannelState.ALARM
    assert rig.model.snapshot().state is not PumpState.INFUSING
    assert refuse.call_count == 1  # two hours, one attempt: no loop behind the alarm
    rig.channel.submit_ack("nurse", "pump checked")
    rig.run(H)
    assert refuse.call_count == 2  # one more attempt per acknowledgement
    assert AlarmCode.PUMP_REFUSED.value in alarm_codes(rig)


@pytest.mark.hazard("H-UN-02")
def test_a_cycle_that_never_settles_is_ended_and_the_pump_stopped(
    make_rig: Callable[..., Rig], mocker: MockerFixture
) -> None:
    rig = make_rig()
    rig.run(H)
    assert rig.model.snapshot().state is PumpState.INFUSING

    def restless(*args: Any, **kwargs: Any) -> Any:
        decision = decide(*args, **kwargs)
        return replace(decision, effects=(*decision.effects, ClearPumpAlarms()))

    mocker.patch("gateway.channel.decide", side_effect=restless)
    rig.channel.step()
    assert rig.events("cycle_rounds_exhausted") == [{"rounds": MAX_ROUNDS_PER_CYCLE}]
    assert rig.model.snapshot().state is not PumpState.INFUSING


@pytest.mark.hazard("H-DS-01")
def test_a_body_that_never_arrives_is_408_and_the_app_never_sees_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(gateway.api_guard, "BODY_READ_TIMEOUT_S", 0.05)
    app_called = False
    sent: list[Message] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        nonlocal app_called
        app_called = True

    async def receive() -> Message:
        await asyncio.Event().wait()  # a client that announced a body and sends nothing
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        sent.append(message)

    guard = RequestGuard(app, Credentials(FixedToken(TOKEN)))
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/channels/bed1/weight",
        "headers": [
            (b"authorization", f"Bearer {TOKEN}".encode()),
            (b"content-length", b"40"),
        ],
    }
    asyncio.run(asyncio.wait_for(guard(scope, receive, send), timeout=5.0))
    assert sent[0]["status"] == 408
    assert not app_called


@pytest.mark.hazard("H-OV-06")
def test_one_blood_draw_never_doses_two_days(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(
        arm="titer",
        igm_mg_dl=30.0,
        hematocrit=0.35,
        control=ControlConfig(titer_max_age_h=30.0),
    )
    rig.run(23 * H)
    drawn_at_s = rig.clock.wall()
    rig.channel.submit_titer(50.0, 0.35, drawn_at_s)  # from the lab over HL7
    rig.channel.submit_titer(50.0, 0.35, drawn_at_s)  # the same result, typed in by hand
    rig.run(DAY_S + H + STEP_S)
    draws = {t["seq"]: t["measured_at_s"] for t in rig.events("titer")}
    used = [p["titer_seq"] for p in rig.events("prescription") if p["titer_seq"] in draws]
    assert len(used) == len({draws[seq] for seq in used}), "one blood draw dosed two days"
    assert [d["seq"] for d in rig.events("titer_duplicate")] == [1]  # the copy: no record


@pytest.mark.hazard("H-OV-06")
def test_a_corrected_draw_never_doses_the_next_day(make_rig: Callable[..., Rig]) -> None:
    """Two records of one draw (a value, then a correction): the draw doses one day only."""
    rig = make_rig(
        arm="titer",
        igm_mg_dl=30.0,
        hematocrit=0.35,
        control=ControlConfig(titer_max_age_h=30.0),
    )
    rig.run(23 * H)
    drawn_at_s = rig.clock.wall()
    rig.channel.submit_titer(50.0, 0.35, drawn_at_s)
    rig.run(H + STEP_S)  # day 2 opens on it
    rig.channel.submit_titer(55.0, 0.35, drawn_at_s, corrects_day=2)
    rig.run(DAY_S)  # day 3 opens: no titer of its own
    by_day = {p["day"]: p["titer_seq"] for p in rig.events("prescription")}
    assert by_day[2] == 2  # the correction
    assert 3 not in by_day  # neither record of day 2's draw doses day 3
    assert AlarmCode.TITER_LATE.value in alarm_codes(rig)


@pytest.mark.hazard("H-OV-06")
def test_a_result_already_received_is_refused_at_intake(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(arm="titer", igm_mg_dl=30.0, hematocrit=0.35)
    rig.run(23 * H)
    drawn_at_s = rig.clock.wall()
    rig.channel.submit_titer(50.0, 0.35, drawn_at_s)
    rig.run(STEP_S)
    with pytest.raises(InputError, match=r"measured_at: must be a blood draw not yet recorded"):
        rig.channel.submit_titer(50.0, 0.35, drawn_at_s)
    # Another value for the same draw is a correction of that day: it must say so.
    assert len(rig.events("titer")) == 1
    rig.channel.submit_titer(55.0, 0.35, drawn_at_s)
    rig.run(STEP_S)
    assert len(rig.events("titer")) == 2


@pytest.mark.hazard("H-CL-02")
def test_a_pump_not_heard_twice_in_a_row_is_sent_a_stop_every_poll(
    make_rig: Callable[..., Rig],
) -> None:
    """A line that garbles only the replies still carries every poll to the pump, feeding its
    watchdog: from the second silent poll the gateway sends a stop on every poll (it arrives
    where the polls do; on a dead line the pump's watchdog stops it).  Its failure is expected:
    no stop_failed alarm.  One silent poll alone sends nothing, and the link's return is seen at
    the next poll (auto-resume)."""
    rule = AutoResumeConfig(enabled=True, max_gap_s=4 * STEP_S, max_per_day=3)
    rig = make_rig(control=ControlConfig(auto_resume=rule))
    rig.run(H)

    def silent_stops() -> list[dict[str, Any]]:
        return [c for c in rig.events("command") if c.get("reason") == "pump silent"]

    rig.driver.silent = True
    rig.run(STEP_S)
    assert silent_stops() == []  # a blip: the pump runs on
    rig.run(2 * STEP_S)
    assert [c["silent_polls"] for c in silent_stops()] == [2, 3]
    assert len(rig.events("stop_unconfirmed")) == 2
    codes = {a["code"] for a in rig.channel.snapshot()["alarms"]}
    assert codes == {AlarmCode.PUMP_SILENT.value}  # no stop_failed: the failure is expected
    rig.driver.silent = False
    rig.run(STEP_S)
    assert rig.events("auto_resume")
    assert rig.channel.state is ChannelState.INFUSING


@pytest.mark.hazard("H-CL-02")
def test_a_stop_sent_while_silent_reaches_a_pump_that_hears(
    make_rig: Callable[..., Rig], mocker: MockerFixture
) -> None:
    """The pump hears the gateway, the gateway cannot hear it: the stop stops it."""
    rig = make_rig()
    rig.run(H)
    model = rig.model

    def heard_not_answered(self: ModelDriver) -> None:
        model.feed_watchdog()  # every request reaches the pump ...
        raise PumpProtocolError("reply does not decode (test: garbled replies)")  # ... unread

    mocker.patch.object(ModelDriver, "_check_link", heard_not_answered)
    mocker.patch.object(ModelDriver, "_stop", lambda self: (model.stop(), heard_not_answered(self)))
    rig.run(3 * STEP_S)
    assert model.snapshot().state is PumpState.STOPPED


@pytest.mark.hazard("H-OV-03")
def test_a_vtbi_sent_to_a_running_pump_allows_for_its_way_there(
    make_rig: Callable[..., Rig], mocker: MockerFixture
) -> None:
    """A pump counts a VTBI from when it gets it, and keeps infusing meanwhile: on a rig at a
    high time scale a round trip is simulated seconds.  The executor takes one round trip at
    the pump's rate off the VTBI, so the day still never ends over its prescription."""
    rig = make_rig()
    rig.run(H)
    round_trip_s = 120.0  # simulated: what 50 ms of real time is at 2400x
    read_status = ModelDriver.read_status

    def slow_read(self: ModelDriver) -> Any:
        rig.clock.advance(round_trip_s)  # the pump infuses on while the reply travels
        return read_status(self)

    vtbis = mocker.spy(ModelDriver, "_write_vtbi")
    mocker.patch.object(ModelDriver, "read_status", slow_read)
    rig.channel.submit_weight(66.0, "weighed again")  # a re-plan of the running pump
    rig.channel.step()
    assert vtbis.call_count == 1
    commands = [c for c in rig.events("command") if c["command"] == "set_rate"]
    planned_ml, rate_ml_per_h = commands[-1]["vtbi_ml"], rig.driver.sent[-2]
    written_ml = vtbis.call_args.args[1]
    # Below the plan by at least what the pump gave during the two round trips.
    assert written_ml <= planned_ml - 2 * rate_ml_per_h * round_trip_s / SECONDS_PER_HOUR + 1e-9
    mocker.stopall()
    rig.run(DAY_S)
    (day1,) = [d for d in rig.events("day_close") if d["day"] == 1]
    assert day1["delivered_ml"] <= day1["prescribed_ml"]
