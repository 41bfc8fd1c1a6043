"""Invariants of the pump model over random operation sequences, and under concurrent use."""

from __future__ import annotations

import threading
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.clock import ManualClock
from protocol.pump_state import STOPPING_ALARMS, PumpState
from simulator.errors import SimulatorError
from simulator.model import INJECTABLE_ALARMS, PumpModel, PumpSnapshot

MAX_RATE = 200.0
CAPACITY = 100.0

_alarm = st.sampled_from(sorted(INJECTABLE_ALARMS))
_operation = st.one_of(
    st.tuples(st.just("wait"), st.floats(min_value=0.0, max_value=86_400.0)),
    st.tuples(st.just("set_rate"), st.floats(min_value=-10.0, max_value=MAX_RATE * 1.2)),
    st.tuples(st.just("set_rate"), st.sampled_from([float("nan"), float("inf"), MAX_RATE])),
    st.tuples(st.just("set_vtbi"), st.floats(min_value=0.0, max_value=50.0)),
    st.tuples(st.just("refill"), st.floats(min_value=0.0, max_value=CAPACITY)),
    st.tuples(st.just("set_watchdog"), st.floats(min_value=0.0, max_value=3600.0)),
    st.tuples(st.just("inject"), _alarm),
    st.tuples(st.just("clear_condition"), _alarm),
    st.tuples(
        st.sampled_from(
            [
                "start",
                "pause",
                "stop",
                "clear_alarms",
                "clear_totals",
                "power_loss",
                "feed_watchdog",
            ]
        ),
        st.none(),
    ),
)


def _apply(model: PumpModel, clock: ManualClock, name: str, argument: Any) -> None:
    if name == "wait":
        clock.advance(argument)
        return
    method = getattr(model, name)
    try:
        if argument is None:
            method()
        else:
            method(argument)
    except SimulatorError:
        pass  # refusals are part of the behaviour under test: they must change nothing unsafe


def _check_consistent(snap: PumpSnapshot) -> None:
    assert (snap.state is PumpState.ALARM) == bool(snap.alarms & STOPPING_ALARMS)
    if snap.state is not PumpState.INFUSING:
        assert snap.measured_rate_ml_per_h == 0.0
    assert 0.0 <= snap.rate_setpoint_ml_per_h <= snap.max_rate_ml_per_h
    assert 0.0 <= snap.reservoir_remaining_ml <= CAPACITY
    assert snap.vtbi_remaining_ml >= 0.0
    assert 0.0 <= snap.volume_infused_ml <= snap.lifetime_volume_infused_ml + 1e-9


@settings(max_examples=300, deadline=None)
@given(operations=st.lists(_operation, max_size=40))
def test_lifetime_volume_never_decreases_nor_exceeds_max_rate_times_elapsed(
    operations: list[tuple[str, Any]],
) -> None:
    clock = ManualClock()
    model = PumpModel(clock, max_rate_ml_per_h=MAX_RATE, reservoir_ml=CAPACITY)
    previous = 0.0
    for name, argument in operations:
        _apply(model, clock, name, argument)
        snap = model.snapshot()
        assert snap.lifetime_volume_infused_ml >= previous
        assert snap.lifetime_volume_infused_ml <= MAX_RATE * clock.monotonic() / 3600.0 + 1e-9
        _check_consistent(snap)
        previous = snap.lifetime_volume_infused_ml


@settings(max_examples=100, deadline=None)
@given(operations=st.lists(_operation, max_size=30), tail_s=st.floats(0.0, 86_400.0))
def test_pump_never_starts_itself_while_only_time_passes(
    operations: list[tuple[str, Any]], tail_s: float
) -> None:
    clock = ManualClock()
    model = PumpModel(clock, max_rate_ml_per_h=MAX_RATE, reservoir_ml=CAPACITY)
    for name, argument in operations:
        _apply(model, clock, name, argument)
    before = model.snapshot()
    clock.advance(tail_s)
    after = model.snapshot()
    if before.state is not PumpState.INFUSING:
        assert after.state is not PumpState.INFUSING
        assert after.lifetime_volume_infused_ml == before.lifetime_volume_infused_ml


def test_concurrent_callers_see_a_consistent_monotonic_totalizer() -> None:
    clock = ManualClock()
    model = PumpModel(clock, reservoir_ml=CAPACITY)
    model.set_rate(360.0)  # 0.1 mL/s
    model.set_watchdog(3600.0)
    model.start()
    failures: list[str] = []
    done = threading.Event()

    def transport() -> None:
        seen = 0.0
        while not done.is_set():
            model.feed_watchdog()
            model.set_rate(360.0)
            model.line.mangle(b"\x0200I\x03")
            snap = model.snapshot()
            if snap.lifetime_volume_infused_ml < seen:
                failures.append(f"lifetime went back: {snap.lifetime_volume_infused_ml} < {seen}")
            if snap.state is not PumpState.INFUSING:
                failures.append(f"unexpected state {snap.state}")
            seen = snap.lifetime_volume_infused_ml

    threads = [threading.Thread(target=transport) for _ in range(4)]
    for thread in threads:
        thread.start()
    for _ in range(1000):
        clock.advance(0.01)
        model.advance()
    done.set()
    for thread in threads:
        thread.join(timeout=10.0)
    assert not any(thread.is_alive() for thread in threads)
    assert failures == []
    assert abs(model.snapshot().lifetime_volume_infused_ml - 1.0) < 1e-9
