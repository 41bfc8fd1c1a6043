"""Timed fault scripts: strict loading, and application at exact simulated times."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from protocol.clock import ManualClock
from protocol.pump_state import PumpAlarm, PumpState
from simulator.errors import FaultScriptError
from simulator.faults import FaultScript, load_fault_script, parse_fault_script
from simulator.model import EventKind, PumpModel

SCENARIOS = Path(__file__).resolve().parents[2] / "simulator" / "scenarios"
WEEK_S = 7 * 24 * 3600.0


def script(*entries: dict[str, Any]) -> FaultScript:
    return parse_fault_script({"faults": list(entries)})


def infusing_model(rate_ml_per_h: float = 100.0) -> tuple[ManualClock, PumpModel]:
    clock = ManualClock()
    model = PumpModel(clock)
    model.set_rate(rate_ml_per_h)
    model.start()
    return clock, model


# ---------------------------------------------------------------- loading


def test_shipped_scenarios_exist_and_load() -> None:
    names = sorted(path.name for path in SCENARIOS.glob("*.toml"))
    assert {"occlusion.toml", "power_loss.toml", "link_drop.toml"} <= set(names)
    for name in names:
        loaded = load_fault_script(SCENARIOS / name)
        assert loaded.faults, name
        assert loaded.description, name


def test_toml_and_json_scripts_load_to_the_same_script(tmp_path: Path) -> None:
    entries = [
        {"at_s": 10, "fault": "occlusion"},
        {"at_s": 20.5, "fault": "slow", "value": 0.25},
        {"at_s": 30, "fault": "occlusion", "action": "clear"},
    ]
    json_file = tmp_path / "s.json"
    json_file.write_text(json.dumps({"faults": entries}))
    toml_file = tmp_path / "s.toml"
    toml_file.write_text(
        "[[faults]]\nat_s = 10\nfault = 'occlusion'\n"
        "[[faults]]\nat_s = 20.5\nfault = 'slow'\nvalue = 0.25\n"
        "[[faults]]\nat_s = 30\nfault = 'occlusion'\naction = 'clear'\n"
    )
    assert load_fault_script(json_file) == load_fault_script(toml_file)


@pytest.mark.parametrize(
    ("entry", "field", "must_mention"),
    [
        ({"at_s": 1, "fault": "oclusion"}, "fault", ["'occlusion'", "'slow'", "oclusion"]),
        ({"at_s": -1, "fault": "occlusion"}, "at_s", ["greater than or equal to 0", "-1"]),
        ({"at_s": "60", "fault": "occlusion"}, "at_s", ["valid number"]),
        ({"at_s": True, "fault": "occlusion"}, "at_s", ["valid number"]),
        ({"at_s": float("nan"), "fault": "occlusion"}, "at_s", ["finite"]),
        ({"fault": "occlusion"}, "at_s", ["required"]),
        ({"at_s": 1}, "fault", ["required"]),
        ({"at_s": 1, "fault": "occlusion", "action": "remove"}, "action", ["'inject'", "'clear'"]),
        ({"at_s": 1, "fault": "power_loss", "action": "clear"}, "action", ["only", "'inject'"]),
        ({"at_s": 1, "fault": "garbage", "value": 1.5}, "value", ["0..1", "1.5"]),
        ({"at_s": 1, "fault": "corrupt", "value": -0.1}, "value", ["0..1"]),
        ({"at_s": 1, "fault": "slow", "value": 4000}, "value", ["0..3600"]),
        ({"at_s": 1, "fault": "garbage"}, "value", ["needs a value", "0..1"]),
        ({"at_s": 1, "fault": "occlusion", "value": 1}, "value", ["takes no value"]),
        ({"at_s": 1, "fault": "slow", "action": "clear", "value": 1}, "value", ["no value"]),
        ({"at_s": 1, "fault": "hang", "when": 3}, "when", ["not permitted", "at_s, fault"]),
    ],
)
def test_bad_entry_is_refused_naming_entry_index_and_field(
    entry: dict[str, Any], field: str, must_mention: list[str]
) -> None:
    good = {"at_s": 0, "fault": "low_battery"}
    with pytest.raises(FaultScriptError) as refused:
        parse_fault_script({"faults": [good, good, entry]}, source="test.toml")
    message = str(refused.value)
    assert refused.value.entry_index == 2
    assert refused.value.field == field
    assert f"faults[2].{field}" in message
    assert "test.toml" in message
    for text in must_mention:
        assert text in message


def test_unknown_top_level_key_is_refused_naming_it() -> None:
    with pytest.raises(FaultScriptError, match=r"fautls: Extra inputs") as refused:
        parse_fault_script({"fautls": []})
    assert refused.value.entry_index is None
    assert "allowed fields: description, faults" in str(refused.value)


def test_script_that_is_not_a_table_is_refused() -> None:
    with pytest.raises(FaultScriptError, match="valid dictionary"):
        parse_fault_script([{"at_s": 1, "fault": "hang"}])


def test_unreadable_or_unparsable_files_are_refused_naming_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    with pytest.raises(FaultScriptError, match=r"missing\.toml: cannot read"):
        load_fault_script(missing)
    broken = tmp_path / "broken.toml"
    broken.write_text("[[faults]\nat_s = 1\n")
    with pytest.raises(FaultScriptError, match=r"broken\.toml: does not parse"):
        load_fault_script(broken)
    broken_json = tmp_path / "broken.json"
    broken_json.write_text("{")
    with pytest.raises(FaultScriptError, match=r"broken\.json: does not parse"):
        load_fault_script(broken_json)
    yaml = tmp_path / "script.yaml"
    yaml.write_text("faults: []")
    with pytest.raises(FaultScriptError, match=r"\.toml or \.json"):
        load_fault_script(yaml)


def test_bad_entry_in_file_names_file_entry_and_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[[faults]]\nat_s = 5\nfault = 'garbage'\nvalue = 2\n")
    with pytest.raises(FaultScriptError, match=r"bad\.toml.*faults\[0\]\.value.*0\.\.1"):
        load_fault_script(path)


# ---------------------------------------------------------------- scheduling


def test_script_events_apply_in_time_order_even_with_one_big_advance() -> None:
    clock, model = infusing_model(100.0)
    model.set_vtbi(80.0)  # would complete at 2880 s if nothing intervened
    model.set_watchdog(5000.0)  # armed at 0, never fed: expires at 5000 s
    model.schedule(
        script(  # written out of order on purpose
            {"at_s": 6000, "fault": "power_loss"},
            {"at_s": 2100, "fault": "occlusion", "action": "clear"},
            {"at_s": 1000, "fault": "low_battery"},
            {"at_s": 2000, "fault": "occlusion"},
        )
    )
    clock.advance(WEEK_S)
    snap = model.snapshot()
    timeline = [(e.monotonic_s, e.kind, e.alarm) for e in model.events()]
    assert timeline == [
        (0.0, EventKind.STATE, None),
        (1000.0, EventKind.SCRIPT, None),
        (1000.0, EventKind.ALARM, PumpAlarm.LOW_BATTERY),
        (2000.0, EventKind.SCRIPT, None),
        (2000.0, EventKind.ALARM, PumpAlarm.OCCLUSION),
        (2000.0, EventKind.STATE, None),
        (2100.0, EventKind.SCRIPT, None),
        (5000.0, EventKind.ALARM, PumpAlarm.COMM_TIMEOUT),
        (6000.0, EventKind.SCRIPT, None),
        (6000.0, EventKind.ALARM, PumpAlarm.POWER_LOSS),
    ]
    assert snap.volume_infused_ml == pytest.approx(100.0 * 2000.0 / 3600.0, abs=1e-9)
    assert PumpAlarm.VTBI_COMPLETE not in snap.alarms
    assert snap.state is PumpState.ALARM


def test_script_entry_between_physics_events_sees_the_pump_as_it_was_then() -> None:
    clock, model = infusing_model(100.0)
    model.set_vtbi(5.0)  # completes at 180 s
    model.schedule(script({"at_s": 200, "fault": "air_in_line"}))
    clock.advance(1000.0)
    timeline = [(e.monotonic_s, e.alarm) for e in model.events() if e.alarm is not None]
    assert timeline == [(180.0, PumpAlarm.VTBI_COMPLETE), (200.0, PumpAlarm.AIR_IN_LINE)]
    assert model.snapshot().volume_infused_ml == 5.0


def test_entries_at_the_same_time_apply_in_written_order() -> None:
    clock = ManualClock()
    model = PumpModel(clock)
    model.schedule(
        script(
            {"at_s": 10, "fault": "slow", "value": 1.0},
            {"at_s": 10, "fault": "slow", "value": 2.0},
            {"at_s": 10, "fault": "slow", "action": "clear"},
            {"at_s": 10, "fault": "slow", "value": 3.0},
        )
    )
    clock.advance(10.0)
    model.advance()
    details = [e.detail for e in model.events() if e.kind is EventKind.SCRIPT]
    assert details == [
        "faults[0]: slow inject 1",
        "faults[1]: slow inject 2",
        "faults[2]: slow clear",
        "faults[3]: slow inject 3",
    ]
    assert model.line.reply_delay_s == 3.0


def test_line_faults_from_a_script_switch_at_their_exact_times() -> None:
    clock = ManualClock()
    model = PumpModel(clock)
    model.schedule(load_fault_script(SCENARIOS / "link_drop.toml"))
    observed: dict[float, tuple[bool, float, float, float]] = {}
    for t in (599.0, 600.0, 899.0, 900.0, 1200.0, 1799.0, 1800.0, 1919.0, 1920.0):
        clock.advance(t - clock.monotonic())
        line = model.line
        model.advance()
        observed[t] = (
            line.hang,
            line.reply_delay_s,
            line.garbage_probability,
            line.corrupt_probability,
        )
    assert observed == {
        599.0: (False, 0.0, 0.0, 0.0),
        600.0: (False, 0.5, 0.0, 0.0),
        899.0: (False, 0.5, 0.0, 0.0),
        900.0: (False, 0.5, 0.1, 0.05),
        1200.0: (False, 0.0, 0.0, 0.0),
        1799.0: (False, 0.0, 0.0, 0.0),
        1800.0: (True, 0.0, 0.0, 0.0),
        1919.0: (True, 0.0, 0.0, 0.0),
        1920.0: (False, 0.0, 0.0, 0.0),
    }


def test_link_drop_scenario_lets_the_pumps_watchdog_stop_it() -> None:
    clock, model = infusing_model(360.0)  # 0.1 mL/s
    model.set_watchdog(30.0)
    model.schedule(load_fault_script(SCENARIOS / "link_drop.toml"))
    for _ in range(3600):  # a host polling once a second, through a transport honouring hang
        clock.advance(1.0)
        if not model.line.hang:
            model.feed_watchdog()
    snap = model.snapshot()
    (expiry,) = [e for e in model.events() if e.alarm is PumpAlarm.COMM_TIMEOUT]
    assert expiry.monotonic_s == 1829.0  # last packet at 1799 s; the line died at 1800 s
    assert snap.state is PumpState.ALARM
    assert snap.lifetime_volume_infused_ml == pytest.approx(182.9, abs=1e-9)


def test_occlusion_scenario_stops_the_pump_at_one_hour_and_it_stays_stopped() -> None:
    clock, model = infusing_model(100.0)
    model.schedule(load_fault_script(SCENARIOS / "occlusion.toml"))
    clock.advance(WEEK_S)
    snap = model.snapshot()
    assert snap.state is PumpState.ALARM  # relieved at 4200 s but still latched
    assert snap.alarms == frozenset({PumpAlarm.OCCLUSION})
    assert snap.volume_infused_ml == pytest.approx(100.0, abs=1e-9)
    model.clear_alarms()
    assert model.snapshot().state is PumpState.STOPPED


def test_power_loss_scenario_cuts_power_at_two_hours() -> None:
    clock = ManualClock()
    model = PumpModel(clock)
    model.set_rate(50.0)
    model.start()
    model.set_rate(80.0)  # while pumping: lost at power loss
    model.schedule(load_fault_script(SCENARIOS / "power_loss.toml"))
    clock.advance(WEEK_S)
    snap = model.snapshot()
    assert snap.state is PumpState.ALARM
    assert PumpAlarm.POWER_LOSS in snap.alarms
    assert snap.rate_setpoint_ml_per_h == 50.0
    assert snap.lifetime_volume_infused_ml == pytest.approx(160.0, abs=1e-9)


def test_script_times_count_from_model_creation_not_clock_zero() -> None:
    clock = ManualClock(start_monotonic=5000.0)
    model = PumpModel(clock)
    model.schedule(script({"at_s": 10, "fault": "door_open"}))
    clock.advance(9.0)
    assert model.snapshot().alarms == frozenset()
    clock.advance(1.0)
    assert model.snapshot().alarms == frozenset({PumpAlarm.DOOR_OPEN})


def test_entry_due_now_applies_when_scheduled() -> None:
    model = PumpModel(ManualClock())
    model.schedule(script({"at_s": 0, "fault": "hang"}))
    assert model.line.hang is True


def test_schedule_refuses_an_entry_already_in_the_past_and_schedules_nothing() -> None:
    clock = ManualClock()
    model = PumpModel(clock)
    clock.advance(100.0)
    with pytest.raises(FaultScriptError, match=r"faults\[1\]\.at_s.*past") as refused:
        model.schedule(script({"at_s": 150, "fault": "hang"}, {"at_s": 50, "fault": "hang"}))
    assert refused.value.entry_index == 1
    assert refused.value.field == "at_s"
    assert model.next_event_time() is None


def test_two_scripts_merge_in_time_order() -> None:
    clock = ManualClock()
    model = PumpModel(clock)
    model.schedule(script({"at_s": 30, "fault": "low_battery"}))
    model.schedule(script({"at_s": 20, "fault": "door_open"}))
    clock.advance(100.0)
    alarms = [(e.monotonic_s, e.alarm) for e in model.events() if e.kind is EventKind.ALARM]
    assert alarms == [(20.0, PumpAlarm.DOOR_OPEN), (30.0, PumpAlarm.LOW_BATTERY)]


def test_reservoir_empty_entry_empties_and_its_clear_refills() -> None:
    clock, model = infusing_model(100.0)
    model.schedule(
        script(
            {"at_s": 36, "fault": "reservoir_empty"},
            {"at_s": 72, "fault": "reservoir_empty", "action": "clear"},
        )
    )
    clock.advance(50.0)
    assert model.snapshot().reservoir_remaining_ml == 0.0
    clock.advance(50.0)
    snap = model.snapshot()
    assert snap.reservoir_remaining_ml == 1000.0
    assert snap.lifetime_volume_infused_ml == pytest.approx(1.0, abs=1e-9)
