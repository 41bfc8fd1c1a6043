"""Never trust one signal: the cases the lying-pump matrix does not cover by itself.

Each test drives the product as the fault matrix does (:class:`~tests.faults.matrix_support.
WireRig`: the software pump on its real wire, the real driver, the journal on disk, one manual
clock), or the daemon itself on a model pump, and checks what a person would see and what the
pump really did:

* a wall-clock step while the gateway keeps quiet after a refused stop: the quiet is a duration,
  so it is measured on the monotonic clock, and the pump's own watchdog still stops it in time;
* a forward wall-clock step is no infusion: the read-back estimate must not count it;
* a journal lost while the pump is still infusing (the gateway killed, its state directory
  wiped): no silent day 1, the pump stopped, a person asked;
* a downward weight correction on the wire: the rate comes down with the ceiling, no alarm;
* stored state that does not read (not JSON, the wrong shape, a clock anchor that is not a
  number): the gateway refuses to start with one typed line and leaves the directory free;
* a config order that differs from the journal's: refused by the daemon and the CLI in one line
  naming both values, adopted only when told;
* a refused stop and a failing journal on the daemon: ``/readyz`` fails and the metrics say why.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pytest_mock import MockerFixture

from gateway.api import create_app
from gateway.channel import Channel
from gateway.config import build_config
from gateway.course_state import AlarmCode, StateError
from gateway.daemon import CLOCK_ANCHOR_KEY, Gateway
from gateway.errors import ConfigError, GatewayError
from gateway.journal import JOURNAL_FILENAME, Journal, JournalError
from protocol.clock import ManualClock
from protocol.pump_state import PumpAlarm, PumpState
from simulator.faults import FaultKind
from simulator.model import PumpModel
from tests.faults import matrix_support
from tests.faults.conftest import FaultRun
from tests.faults.matrix_support import (
    CHANNEL_ID,
    POLL_S,
    PREFIX_STEP_S,
    PROTOCOLS,
    SLACK_ML,
    WireRig,
    prescribed_total_ml,
)
from tests.gateway.conftest import RANDOMISED_AT, model_gateway
from tests.gateway.model_driver import ModelDriver

pytestmark = pytest.mark.timeout(120)

H = 3600.0
REPO = Path(__file__).resolve().parents[2]
#: How far the wall clock is stepped (simulated s): far more than the quiet period.
CLOCK_STEP_S = 3 * H
#: Polls of the quiet after a refused stop (306 s here) that pass before the clock steps.
QUIET_POLLS_BEFORE_STEP = 4
ON_BOTH_WIRES = pytest.mark.parametrize("protocol", PROTOCOLS)
#: Polls the gateway may take to see and stop a pump (the issue's bound).
DETECT_POLLS = 2


def _course_to(rig: WireRig, at_s: float) -> None:
    """Run the course to ``at_s`` on the prefix grid, then one poll; the pump is infusing."""
    rig.run_until(at_s, PREFIX_STEP_S)
    rig.cycle()
    assert rig.truth().state is PumpState.INFUSING, rig.story()


def _until_alarm(rig: WireRig, code: str, polls: int) -> float:
    """Cycle every poll until ``code`` is active (at most ``polls`` polls); when it showed."""
    for _ in range(polls):
        if code in rig.active_alarm_codes():
            return rig.now_s
        rig.clock.advance(POLL_S)
        rig.cycle()
    assert code in rig.active_alarm_codes(), rig.story()
    return rig.now_s


# -- the quiet after a refused stop is a duration ------------------------------------------


@pytest.mark.parametrize(
    "step_s",
    [
        pytest.param(CLOCK_STEP_S, id="forward"),
        pytest.param(-CLOCK_STEP_S, id="back"),
    ],
)
def test_a_clock_step_neither_shortens_nor_stretches_the_quiet_after_a_refused_stop(
    step_s: float, tmp_path: Path
) -> None:
    with WireRig("modbus", tmp_path / "state") as rig:
        _course_to(rig, 1 * H)
        rig.model.inject_fault(FaultKind.STOP_REFUSED)
        rig.channel.submit_stop("trust nurse", "procedure")
        rig.cycle()
        alarm_s = _until_alarm(rig, AlarmCode.STOP_FAILED.value, DETECT_POLLS)
        quiet_until = rig.channel.course.link.quiet_until_s  # on the monotonic clock
        assert quiet_until is not None
        quiet_s = quiet_until - rig.clock.monotonic()
        # Late in the quiet (while the pump's watchdog is about to expire), the host's clock
        # jumps.
        for _ in range(QUIET_POLLS_BEFORE_STEP):
            rig.clock.advance(POLL_S)
            rig.cycle()
        assert rig.clock.monotonic() < quiet_until
        rig.clock.step_wall(step_s)
        rig.run(quiet_s + 2 * POLL_S)
        run = rig.fault_run()
        story = run.describe(limit=80)

        # The pump's own watchdog stopped it within its timeout of the alarm: nothing fed it.
        timeouts = [t for t in run.alarm_latched_at(PumpAlarm.COMM_TIMEOUT) if t >= alarm_s]
        assert timeouts, f"the pump's watchdog never stopped it\n{story}"
        assert timeouts[0] <= alarm_s + rig.watchdog_bound_s(), story
        assert run.stopped_at(alarm_s) == timeouts[0], story
        # The gateway looked again once the quiet was over, by the monotonic clock.
        over = [e.monotonic_s for e in run.events("quiet_over")]
        assert over, f"the gateway never looked at the pump again\n{story}"
        assert over[0] <= alarm_s + quiet_s + 2 * POLL_S, story
        assert rig.truth().lifetime_volume_infused_ml <= (
            prescribed_total_ml(rig.channel.course) + SLACK_ML
        )


# -- a forward clock step is no delivery --------------------------------------------------

#: A heavy patient (the soft limit): 31.25 mL/h for 750 mL a day, so one pump watchdog (255 s)
#: of infusion is more than the totalizer check allows (1 mL + 5 %) early in the day.
HEAVY_WEIGHT_KG = 150.0


@pytest.mark.hazard("H-CK-01", "H-OV-04")
def test_a_forward_clock_step_early_in_the_day_does_not_make_an_honest_totalizer_implausible(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(matrix_support, "WEIGHT_KG", HEAVY_WEIGHT_KG)
    with WireRig("modbus", tmp_path / "state") as rig:
        rig.run(10 * 60.0)
        assert rig.truth().state is PumpState.INFUSING, rig.story()
        rig.clock.step_wall(CLOCK_STEP_S)
        rig.run(DETECT_POLLS * POLL_S)
        assert AlarmCode.CLOCK_STEP.value in rig.active_alarm_codes()
        assert AlarmCode.TOTALIZER_IMPLAUSIBLE.value not in rig.active_alarm_codes(), rig.story()
        assert rig.truth().state is PumpState.INFUSING, rig.story()


# -- a frozen totalizer and a person who acknowledges again and again ----------------------

#: The rig's flat day: 70 kg, 350 mL.
DAY1_ML = 350.0


@ON_BOTH_WIRES
@pytest.mark.hazard("H-OV-04")
def test_no_vtbi_sent_on_a_frozen_totalizer_ever_allows_more_than_the_day(
    protocol: str, tmp_path: Path
) -> None:
    """The field's over-delivery: a totalizer that stood still while the pump infused, a gateway
    that raised the rate and re-sent the VTBI.  Here the acknowledgement resumes on a count that
    stays frozen; each VTBI the gateway sends must fit what is left of the day by what the pump
    really gave (the simulator's own total at that instant)."""
    with WireRig(protocol, tmp_path / "state") as rig:
        _course_to(rig, 2 * H)
        fault_s = rig.now_s
        rig.model.inject_fault(FaultKind.FROZEN_TOTALIZER)
        rig.run(1 * H, PREFIX_STEP_S)
        rig.ack("checked the line")  # the count stays frozen: the day runs on the estimate
        rig.run(3 * H, PREFIX_STEP_S)
        run = rig.fault_run()
        assert AlarmCode.TOTALIZER_IMPLAUSIBLE.value in {
            e.payload["code"] for e in run.events("alarm") if e.monotonic_s >= fault_s
        }, run.describe()
        sent = [
            (e.monotonic_s, e.payload["vtbi_ml"])
            for e in run.events("command")
            if e.payload["command"] == "set_rate"
        ]
        assert [t for t, _ in sent if t > fault_s], "never resumed\n" + run.describe()
        for t, vtbi_ml in sent:
            given_ml = run.lifetime_ml_at(t)
            assert given_ml + vtbi_ml <= DAY1_ML + SLACK_ML, (
                f"at {t / H:.3f} h a VTBI of {vtbi_ml:.3f} mL on {given_ml:.3f} mL given\n"
                + run.describe(limit=80)
            )
        assert rig.truth().lifetime_volume_infused_ml <= DAY1_ML + SLACK_ML


# -- a journal lost under an infusing pump -------------------------------------------------


def _restart_on_a_new_journal(rig: WireRig) -> Channel:
    """The gateway was killed (the pump infuses on) and its state directory wiped; a new
    gateway starts from the same configuration, on the same pump."""
    rig.gateway_dies()
    for path in rig.state_dir.glob(f"{JOURNAL_FILENAME}*"):
        path.unlink()
    return rig.gateway_starts()


@ON_BOTH_WIRES
@pytest.mark.hazard("H-OV-10", "H-JN-02")
def test_a_lost_journal_under_an_infusing_pump_stops_it_and_asks_a_person(
    protocol: str, tmp_path: Path
) -> None:
    with WireRig(protocol, tmp_path / "state") as rig:
        _course_to(rig, 2 * H)  # about 29 mL of day 1 on the pump's totalizer
        before = rig.truth()
        channel = _restart_on_a_new_journal(rig)
        restart_s = rig.now_s
        # Step the channel directly: the rig's invariants count prescriptions of this journal
        # only, and the pump's lifetime already holds the old journal's day.
        for _ in range(DETECT_POLLS + 1):
            channel.step()
            rig.clock.advance(POLL_S)
        run = FaultRun({}, rig.model, list(rig.journal.events(CHANNEL_ID)), rig.model.events())
        story = run.describe()
        codes = {a["code"] for a in channel.snapshot()["alarms"]}
        assert AlarmCode.PUMP_HAS_HISTORY.value in codes, f"{codes}\n{story}"
        assert channel.course.course_start_s is None, story  # no silent day 1
        stopped_s = run.stopped_at(restart_s)
        assert stopped_s is not None, story
        assert stopped_s <= restart_s + DETECT_POLLS * POLL_S, story
        # Nothing more than the old rate for those polls (the new gateway raised nothing).
        assert rig.truth().lifetime_volume_infused_ml <= (
            before.lifetime_volume_infused_ml
            + before.rate_setpoint_ml_per_h * DETECT_POLLS * POLL_S / H
            + SLACK_ML
        )
        assert not [e for e in run.events("command") if e.payload["command"] == "start"]


# -- a downward weight correction on the wire ----------------------------------------------

#: Half the rig's 70 kg: the ceiling (0.4 mL/kg/h) falls to 14 mL/h, under the 14.58 mL/h the
#: pump runs at for 350 mL a day.
CORRECTED_WEIGHT_KG = 35.0


@ON_BOTH_WIRES
@pytest.mark.hazard("H-OV-08")
def test_a_downward_weight_correction_lowers_the_running_rate_on_the_wire(
    protocol: str, tmp_path: Path
) -> None:
    with WireRig(protocol, tmp_path / "state") as rig:
        _course_to(rig, 1 * H)
        ceiling_before = rig.channel.snapshot()["ceiling_ml_per_h"]
        rig.channel.submit_weight(CORRECTED_WEIGHT_KG, "re-weighed", confirm=True)
        # From the cycle that applies the correction on, the pump never runs above the ceiling
        # in force.  (Stepped directly: the rig's invariants hold the highest rate ever
        # commanded to today's ceiling, which a lower weight rightly lowers under it.)
        for _ in range(DETECT_POLLS):
            rig.channel.step()
            snap = rig.channel.snapshot()
            truth = rig.truth()
            assert truth.state is PumpState.INFUSING, rig.story()
            assert truth.rate_setpoint_ml_per_h <= snap["ceiling_ml_per_h"], rig.story()
            assert snap["commanded_rate_ml_per_h"] <= snap["ceiling_ml_per_h"]
            rig.clock.advance(POLL_S)
        ceiling = snap["ceiling_ml_per_h"]
        assert ceiling < 14.58 < ceiling_before  # the running rate was above the new ceiling
        assert snap["state"] == "infusing"
        assert not [a for a in snap["alarms"] if a["stops"]], snap["alarms"]
        alarms = {e.payload["code"] for e in rig.journal.events(CHANNEL_ID, "alarm")}
        assert AlarmCode.RATE_ABOVE_CEILING.value not in alarms
        (day1,) = rig.journal.days(CHANNEL_ID)
        assert day1.prescribed_ml == pytest.approx(250.0 * CORRECTED_WEIGHT_KG / 50.0)
        assert rig.truth().lifetime_volume_infused_ml <= day1.prescribed_ml


# -- stored state that does not read -------------------------------------------------------


def _journal_with_state(state_dir: Path, text: str) -> None:
    """A journal whose stored channel state for ``bed1`` is ``text`` (as a bad disk or a bad
    hand might leave it)."""
    with Journal(state_dir) as journal:
        journal.record(CHANNEL_ID, "channel_created", {}, wall_s=0.0, monotonic_s=0.0, state={})
    raw = sqlite3.connect(state_dir / JOURNAL_FILENAME, isolation_level=None)
    try:
        raw.execute("UPDATE channel_state SET state = ? WHERE channel = ?", (text, CHANNEL_ID))
    finally:
        raw.close()


def _gateway_config(state_dir: Path, time_scale: float = 1.0) -> dict[str, object]:
    return {
        "state_dir": str(state_dir),
        "time_scale": time_scale,
        "channels": [{"id": CHANNEL_ID, "pump": "modbus+tcp://127.0.0.1:1"}],
    }


def _model_driver(url: str) -> ModelDriver:
    """A pump for a gateway that must refuse to start before it talks to one."""
    return ModelDriver(PumpModel(ManualClock(), max_rate_ml_per_h=200.0, reservoir_ml=5000.0))


def _refused_by_the_cli(config: Path) -> str:
    """``infusion-gateway run --config config``, which must refuse to start: exit 2, no
    traceback, one ``error:`` line, returned."""
    run = subprocess.run(
        [sys.executable, "-m", "gateway", "run", "--config", str(config), "--log-json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, run.stderr
    return errors[0]


BAD_STATES = [
    pytest.param("{not json", "not valid JSON", id="not_json"),
    pytest.param('["a", "list"]', "not an object", id="not_an_object"),
    pytest.param('{"version": 99}', "version 99", id="unknown_version"),
]


@pytest.mark.parametrize(("text", "words"), BAD_STATES)
@pytest.mark.hazard("H-JN-02")
def test_stored_state_that_does_not_read_refuses_the_start_in_one_line(
    tmp_path: Path, text: str, words: str
) -> None:
    _journal_with_state(tmp_path, text)
    config = build_config(_gateway_config(tmp_path))
    with pytest.raises(StateError) as refused:
        Gateway(config, driver_factory=_model_driver)
    message = str(refused.value)
    assert words in message
    assert message.startswith(f"{tmp_path / JOURNAL_FILENAME}: channel {CHANNEL_ID}: ")  # where
    assert "\n" not in message
    assert isinstance(refused.value, GatewayError)  # the CLI's one line and exit 2
    with Journal(tmp_path) as journal:  # the refusal released the directory ...
        assert journal.channel_state(CHANNEL_ID) == text  # ... and left the evidence as it was


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest.mark.hazard("H-JN-02")
def test_the_cli_refuses_stored_state_that_is_not_json_with_exit_2_and_one_line(
    tmp_path: Path,
) -> None:
    _journal_with_state(tmp_path, "{not json")
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'state_dir = "{tmp_path}"\n\n[[channels]]\nid = "{CHANNEL_ID}"\n'
        'pump = "modbus+tcp://127.0.0.1:1"\n'
    )
    assert "not valid JSON" in _refused_by_the_cli(config)


@pytest.mark.hazard("H-JN-02", "H-CK-01")
def test_a_stored_clock_anchor_that_is_not_a_number_refuses_the_start_in_one_line(
    tmp_path: Path,
) -> None:
    config = build_config(_gateway_config(tmp_path, time_scale=1200.0))
    with Journal(tmp_path) as journal:
        journal.set_meta("time_scale", repr(1200.0))
        journal.set_meta(CLOCK_ANCHOR_KEY, "not a number")
    with pytest.raises(GatewayError) as refused:
        Gateway(config, driver_factory=_model_driver)
    assert CLOCK_ANCHOR_KEY in str(refused.value)
    assert "\n" not in str(refused.value)
    Journal(tmp_path).close()  # released


# -- the journal owns the course: a changed config order at restart -----------------------


def _ordered_config(state_dir: Path, weight_kg: float) -> dict[str, object]:
    config = _gateway_config(state_dir)
    config["channels"] = [
        {
            "id": CHANNEL_ID,
            "pump": "modbus+tcp://127.0.0.1:1",
            "arm": "flat",
            "weight_kg": weight_kg,
            "randomised_at": RANDOMISED_AT,
        }
    ]
    return config


def _course_at(state_dir: Path, weight_kg: float) -> None:
    """A daemon that started a course for ``weight_kg`` and was stopped."""
    gateway = Gateway(
        build_config(_ordered_config(state_dir, weight_kg)),
        clock=ManualClock(),
        driver_factory=_model_driver,
    )
    asyncio.run(gateway.tick())
    assert gateway.channels[CHANNEL_ID].course.course_start_s is not None
    asyncio.run(gateway.shutdown("restart"))


@pytest.mark.hazard("H-OV-08", "H-WP-01")
def test_the_daemon_refuses_a_changed_config_weight_and_adopts_it_only_when_told(
    tmp_path: Path,
) -> None:
    _course_at(tmp_path, 70.0)
    changed = build_config(_ordered_config(tmp_path, 40.0))
    with pytest.raises(ConfigError) as refused:
        Gateway(changed, clock=ManualClock(), driver_factory=_model_driver)
    message = str(refused.value)
    assert "weight_kg 40.0 (config) vs 70.0 (journal)" in message
    assert "run --adopt-config-order" in message
    assert "\n" not in message
    gateway = Gateway(
        changed, clock=ManualClock(), driver_factory=_model_driver, adopt_config_order=True
    )
    try:
        assert gateway.channels[CHANNEL_ID].course.weight_kg == 40.0
        (adopted,) = gateway.journal.events(CHANNEL_ID, "config_order_adopted")
        assert "weight_kg 40.0 (config) vs 70.0 (journal)" in adopted.payload["differences"]
    finally:
        asyncio.run(gateway.shutdown("test over"))


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest.mark.hazard("H-OV-08")
def test_the_cli_refuses_a_changed_config_weight_with_exit_2_and_one_line(
    tmp_path: Path,
) -> None:
    state_dir = tmp_path / "state"
    _course_at(state_dir, 70.0)
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'state_dir = "{state_dir}"\n\n[[channels]]\nid = "{CHANNEL_ID}"\n'
        'pump = "modbus+tcp://127.0.0.1:1"\narm = "flat"\nweight_kg = 40.0\n'
        f'randomised_at = "{RANDOMISED_AT}"\n'
    )
    assert "weight_kg 40.0 (config) vs 70.0 (journal)" in _refused_by_the_cli(config)


# -- the daemon says so: /readyz and the metrics -------------------------------------------


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    gw = model_gateway(tmp_path)
    yield gw
    asyncio.run(gw.shutdown("test over"))


def _driver(gateway: Gateway) -> ModelDriver:
    driver = gateway.channels[CHANNEL_ID].driver
    assert isinstance(driver, ModelDriver)
    return driver


@pytest.mark.hazard("H-OV-09")
def test_a_refused_stop_fails_readyz_and_shows_in_the_metrics(gateway: Gateway) -> None:
    code = AlarmCode.STOP_FAILED.value
    series = f'infusion_gateway_alarm_active{{channel="{CHANNEL_ID}",code="{code}",stops="true"}}'
    asyncio.run(gateway.tick())
    assert gateway.channels[CHANNEL_ID].state.value == "infusing"
    _driver(gateway).stop_ignored = True
    gateway.channels[CHANNEL_ID].submit_stop("trust nurse", "procedure")
    asyncio.run(gateway.tick())
    with TestClient(create_app(gateway, None)) as client:
        ready = client.get("/readyz")
        metrics = client.get("/metrics").text
    assert ready.status_code == 503
    assert f"channel {CHANNEL_ID}: alarm {code}" in ready.json()["problems"]
    assert f"{series} 1.0" in metrics
    failed = [e.payload for e in gateway.journal.events(CHANNEL_ID, "command_failed")]
    assert [f["command"] for f in failed] == ["stop"]
    assert failed[0]["error"]


@pytest.mark.hazard("H-JN-02")
def test_a_journal_that_fails_on_the_daemon_stops_the_pump_and_fails_readyz(
    gateway: Gateway, mocker: MockerFixture
) -> None:
    asyncio.run(gateway.tick())
    model = _driver(gateway).model
    assert model.snapshot().state is PumpState.INFUSING
    mocker.patch.object(gateway.journal, "commit", side_effect=JournalError("disk full"))
    mocker.patch.object(gateway.journal, "record", side_effect=JournalError("disk full"))
    gateway.clock.advance(60.0)  # type: ignore[attr-defined]
    assert asyncio.run(gateway.tick()) is False
    assert model.snapshot().state is not PumpState.INFUSING
    ok, problems = gateway.ready()
    assert not ok
    assert f"channel {CHANNEL_ID}: alarm journal_failed" in problems
    (snap,) = gateway.snapshots()
    assert snap["state"] == "unknown"
