"""A control cycle does less work, and what it leaves is the same (see docs/performance.md).

Each shortcut a cycle takes is checked against the long way it replaced: the state's journal text
against ``json.dumps(dump_state(...))``, the kept past days and the metrics' gauges against a
status built afresh, ``evolve`` against ``dataclasses.replace``, the stepping in the loop's thread
against the failure handling of the worker threads, and the journal's ``synchronous`` setting
against what each transaction needs.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from gateway import daemon
from gateway.course_state import (
    Alarm,
    CourseDay,
    CourseState,
    LinkState,
    StateText,
    dump_state,
    evolve,
    load_state,
)
from gateway.metrics import GatewayMetrics
from gateway.status_view import channel_view
from protocol.pump_state import PumpAlarm
from tests.gateway.conftest import API_CHANNEL, STEP_S, Rig, model_gateway

DAY_S = 86_400.0


def _fresh_view(rig: Rig) -> dict[str, Any]:
    """The channel's status built the long way (no kept days)."""
    published = rig.channel._published
    return channel_view(
        channel_id=rig.channel.id,
        pump_url=rig.channel.config.pump,
        state=published.course,
        status=published.status,
        now_s=published.wall_s,
    ).to_json()


def test_evolve_makes_what_replace_makes_and_refuses_what_it_refuses() -> None:
    state = CourseState(days=(CourseDay(1, 0.0, 0.0),))
    day = state.days[0]
    assert evolve(state, link=evolve(state.link, silent_polls=3)) == replace(
        state, link=replace(state.link, silent_polls=3)
    )
    assert evolve(day, delivered_ml=1.5) == replace(day, delivered_ml=1.5)
    assert evolve(state.link, silent_polls=2).silent_polls == 2
    assert state.link.silent_polls == 0  # the original is untouched
    with pytest.raises(TypeError, match="LinkState has no field silent"):
        evolve(LinkState(), silent=1)


def test_the_state_text_is_the_journal_encoding_of_the_state(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig(arm="titer", igm_mg_dl=30.0, hematocrit=0.35)
    text = StateText()
    for _ in range(2):
        rig.run(DAY_S - 2 * 3600.0)
        rig.titer(25.0)
        rig.run(2 * 3600.0 + STEP_S)
        state = rig.channel.course
        assert text.encode(state) == json.dumps(dump_state(state), sort_keys=True)
    assert len(rig.channel.course.days) == 3
    assert len(rig.channel.course.titers) == 3
    rig.channel.submit_weight(73.0, "re-weighed")
    rig.run(STEP_S)  # a weight re-prescribes today: the kept day text must follow
    state = rig.channel.course
    assert text.encode(state) == json.dumps(dump_state(state), sort_keys=True)
    # A string that reads like a slot is escaped: only the top-level keys are spliced.
    tricky = evolve(
        state, alarms=(Alarm("x", 'said "days": null, "titers": null, "link": null', 1.0),)
    )
    encoded = text.encode(tricky)
    assert encoded == json.dumps(dump_state(tricky), sort_keys=True)
    assert load_state(encoded) == tricky
    # What the channel journalled is that text.
    assert rig.journal.channel_state("bed1") == json.dumps(
        dump_state(rig.channel._journalled), sort_keys=True
    )


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(min_value=0.0, allow_infinity=False) | st.sampled_from([0.0, 1e-7, 5e-324]),
            # Not -0.0: it equals 0.0, so a day equal to the kept one keeps its text ("0.0").
            st.floats(allow_nan=True).filter(lambda v: str(v) != "-0.0"),
            st.floats(min_value=0.0, max_value=1e4),
        ),
        min_size=1,
        max_size=5,
    )
)
def test_todays_running_totals_spliced_in_read_as_the_whole_day_encoded(
    totals: list[tuple[float, float, float]],
) -> None:
    """Today's totals change every cycle and go into the kept text of the rest of the day; any
    float (a non-finite one: the whole day encoded as always) reads as the reference text."""
    text = StateText()
    state = CourseState(days=(CourseDay(1, 0.0, 0.0, notes=('"delivered_ml": null',)),))
    for delivered_ml, delivered_max_ml, estimated_ml in totals:
        day = evolve(
            state.days[0],
            delivered_ml=delivered_ml,
            delivered_max_ml=delivered_max_ml,
            estimated_ml=estimated_ml,
        )
        state = evolve(state, days=(day,))
        assert text.encode(state) == json.dumps(dump_state(state), sort_keys=True)


_ANY_FLOAT = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, -0.0, 5e-324])
_LINK_CHANGES = st.fixed_dictionaries(
    {},
    optional={
        "armed_connection": st.none() | st.text(max_size=8),
        "watchdog_held_s": st.none() | _ANY_FLOAT,
        "last_totalizer_ml": st.none() | _ANY_FLOAT,
        "last_volume_resolution_ml": _ANY_FLOAT,
        "last_good_poll_s": st.none() | _ANY_FLOAT,
        "totals_clear_pending": st.booleans(),
        "last_infusing": st.booleans(),
        "last_rate_ml_per_h": _ANY_FLOAT | st.integers(-5, 5),
        "stalled_readings": st.integers(-(2**70), 2**70),
        "readback_journalled_key": st.none()
        | st.tuples(
            st.text(max_size=6),
            _ANY_FLOAT | st.integers(-3, 3) | st.booleans(),
            st.lists(st.text(max_size=4)).map(tuple),
        ),
        "silent_polls": st.integers(0, 10) | st.booleans(),
    },
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_LINK_CHANGES, min_size=1, max_size=6))
def test_the_link_encoded_field_by_field_reads_as_the_whole_link_encoded(
    changes: list[dict[str, Any]],
) -> None:
    """The link changes every cycle; its fields holding the same objects keep their text and
    the rest are written as json.dumps writes them.  Any value (a non-finite float, a bool or
    an int where a float belongs, quotes and non-ASCII text) reads as the reference text."""
    text = StateText()
    state = CourseState()
    for change in changes:
        state = evolve(state, link=evolve(state.link, **change))
        assert text.encode(state) == json.dumps(dump_state(state), sort_keys=True)


def test_the_kept_past_days_follow_a_weight_correction(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    rig.run(DAY_S + 3600.0)
    assert rig.channel.course.days[0].closed
    assert rig.channel.snapshot() == _fresh_view(rig)
    rig.channel.submit_weight(75.0, "re-weighed")
    rig.run(STEP_S)
    snap = rig.channel.snapshot()
    assert snap == _fresh_view(rig)
    assert snap["weight_kg"] == 75.0
    # A past day's mg/kg/h is per the current weight: it was built again, not kept.
    day1 = snap["days"][0]
    assert day1["day_rate_mg_per_kg_per_h"] == pytest.approx(
        day1["day_rate_ml_per_h"] * rig.channel.course.order.concentration_mg_per_ml / 75.0
    )


def test_the_gauges_are_what_the_metrics_read_of_the_snapshot(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig()
    seen_states = set()
    for step in range(40):
        if step == 20:
            rig.model.inject(PumpAlarm.OCCLUSION)
        rig.run(STEP_S)
        gauges, snap = rig.channel.gauges(), rig.channel.snapshot()
        today = snap["days"][-1]
        assert gauges["days"] == [
            {k: today[k] for k in ("prescribed_ml", "delivered_ml", "projected_shortfall_ml")}
        ]
        assert {k: v for k, v in gauges.items() if k != "days"} == {
            k: snap[k] for k in gauges if k != "days"
        }
        seen_states.add(gauges["state"])
    assert {"infusing", "alarm"} <= seen_states


def _gauge(metrics: GatewayMetrics, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


def test_metrics_set_again_only_what_changed_and_show_the_same() -> None:
    metrics = GatewayMetrics(channel_ids=["bed1"])
    base = {
        "id": "bed1",
        "commanded_rate_ml_per_h": 5.0,
        "ceiling_ml_per_h": 10.0,
        "day": 1,
        "days": [{"prescribed_ml": 100.0, "delivered_ml": 1.0, "projected_shortfall_ml": None}],
        "last_good_poll_wall_s": 100.0,
    }
    occlusion = {"code": "pump_occlusion", "stops": True}
    for state, alarms, alarm_shown in [
        ("infusing", [], None),  # an alarm series exists once the alarm was seen ...
        ("infusing", [], None),
        ("alarm", [occlusion], 1.0),
        ("alarm", [occlusion], 1.0),
        ("stopped", [], 0.0),  # ... and stays, at 0 once it ended
        ("stopped", [], 0.0),
    ]:
        metrics.update([{**base, "state": state, "alarms": alarms}], now_wall_s=100.0)
        shown = _gauge(metrics, "infusion_gateway_channel_state", channel="bed1", state=state)
        assert shown == 1.0
        others = [
            _gauge(metrics, "infusion_gateway_channel_state", channel="bed1", state=s)
            for s in ("infusing", "alarm", "stopped")
            if s != state
        ]
        assert others == [0.0, 0.0]
        alarm = _gauge(metrics, "infusion_gateway_alarm_active", code="pump_occlusion")
        assert alarm == alarm_shown


def test_a_step_in_the_loop_that_fails_stops_that_pump_and_fails_the_cycle(
    tmp_path: Path,
) -> None:
    gateway = model_gateway(tmp_path)
    gateway.step_in_loop = True
    stops: list[str] = []
    channel = gateway.channels[API_CHANNEL["id"]]
    real_stop = channel.driver.stop
    channel.driver.stop = lambda: stops.append("stop") or real_stop()  # type: ignore[method-assign]
    try:
        assert asyncio.run(gateway.tick()) is True
        assert gateway._step_threads is None  # no worker thread was made

        def broken() -> None:
            raise RuntimeError("a bug in a cycle")

        channel.step = broken  # type: ignore[method-assign]
        assert asyncio.run(gateway.tick()) is False
        assert stops == ["stop"]
        assert gateway.last_cycle_ok is False
        assert gateway.cycles == 2
    finally:
        asyncio.run(gateway.shutdown("test over"))


def test_a_transaction_sets_synchronous_only_when_it_needs_another(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig()
    rig.run(2 * STEP_S)
    statements: list[str] = []
    db = rig.journal._connection
    db.set_trace_callback(statements.append)
    try:
        rig.run(3 * STEP_S)  # three checkpoints, nothing else decided
        pragmas = [s for s in statements if s.startswith("PRAGMA synchronous")]
        assert pragmas in ([], ["PRAGMA synchronous=NORMAL"])
        statements.clear()
        rig.model.inject(PumpAlarm.OCCLUSION)
        rig.channel.step()  # an alarm and a stop: durable
        assert "PRAGMA synchronous=FULL" in statements
    finally:
        db.set_trace_callback(None)
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_a_run_on_a_manual_clock_gives_the_loop_a_turn_at_once_and_then_every_few_ms(
    tmp_path: Path, mocker: Any
) -> None:
    """Ticks on a manual clock follow one another at once; the event loop gets a turn (a stop,
    a signal) at the first wait and then every MANUAL_CLOCK_YIELD_S of real time, not after
    every tick (a turn costs a poll of the selector)."""
    gateway = model_gateway(tmp_path)
    turns = mocker.spy(daemon.asyncio, "sleep")

    async def stopped_at_first_turn() -> int:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_soon(stop.set)  # runs when the loop gets a turn
        await gateway.run(stop, max_ticks=1_000)
        return gateway.cycles

    assert asyncio.run(stopped_at_first_turn()) == 1
    gateway = model_gateway(tmp_path / "again")
    turns.reset_mock()
    started = time.monotonic()
    asyncio.run(gateway.run(asyncio.Event(), max_ticks=300))
    elapsed_s = time.monotonic() - started
    assert gateway.cycles == 300
    assert 1 <= turns.call_count <= 2 + elapsed_s / daemon.MANUAL_CLOCK_YIELD_S
