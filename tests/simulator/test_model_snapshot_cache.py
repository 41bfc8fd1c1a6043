"""The model hands out its last snapshot again only while nothing it shows has changed.

A transport reads the snapshot several times per command, mostly at one instant; every change
at that same instant (a setting, a fault, an alarm) must still show at once.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.clock import ManualClock
from protocol.pump_state import PumpAlarm, PumpState
from simulator.errors import SimulatorError
from simulator.faults import FaultEntry, FaultKind, FaultScript
from simulator.model import EventKind, PumpModel


def test_the_same_snapshot_while_nothing_changes_and_a_new_one_at_once_when_it_does() -> None:
    clock = ManualClock()
    model = PumpModel(clock, max_rate_ml_per_h=100.0, reservoir_ml=50.0)
    first = model.snapshot()
    assert model.snapshot() is first  # nothing changed: the same object
    model.set_rate(10.0)  # same instant
    assert model.snapshot().rate_setpoint_ml_per_h == 10.0
    model.start()
    assert model.snapshot().state is PumpState.INFUSING
    model.inject_fault(FaultKind.RATE_ECHO_WRONG, 1.5)  # a lie changes what is reported
    assert model.snapshot().reported_rate_setpoint_ml_per_h == 11.5
    model.inject(PumpAlarm.OCCLUSION)  # an alarm stops the pump, same instant
    stopped = model.snapshot()
    assert stopped.state is PumpState.ALARM
    assert PumpAlarm.OCCLUSION in stopped.alarms
    clock.advance(60.0)
    assert model.snapshot().monotonic_s == stopped.monotonic_s + 60.0


def test_a_snapshot_follows_the_volume_as_time_goes_on() -> None:
    clock = ManualClock()
    model = PumpModel(clock, max_rate_ml_per_h=100.0, reservoir_ml=50.0)
    model.set_rate(36.0)
    model.start()
    clock.advance(100.0)
    assert model.snapshot().volume_infused_ml == 1.0
    assert model.lifetime_volume_infused_ml() == 1.0
    clock.advance(100.0)
    assert model.snapshot().volume_infused_ml == 2.0
    model.clear_totals()  # same instant
    assert model.snapshot().volume_infused_ml == 0.0
    assert model.lifetime_volume_infused_ml() == 2.0


def test_events_since_a_seq_are_the_newer_ones_oldest_first() -> None:
    clock = ManualClock()
    model = PumpModel(clock, max_rate_ml_per_h=100.0, reservoir_ml=50.0)
    model.set_rate(10.0)
    model.start()
    model.inject(PumpAlarm.AIR_IN_LINE)
    everything = model.events()
    assert [e.seq for e in everything] == list(range(1, len(everything) + 1))
    later = model.events(everything[0].seq)
    assert later == everything[1:]
    assert model.events(everything[-1].seq) == ()
    assert any(e.kind is EventKind.ALARM for e in later)


class _AlwaysAdvancing(PumpModel):
    """The model as it was: every look advances in full (the settled shortcut never taken)."""

    @property
    def _settled_at(self) -> float | None:
        return None

    @_settled_at.setter
    def _settled_at(self, value: float | None) -> None:
        pass


#: What a host and a fault script do to a pump, and reads, in any order: (name, argument).
_OPS = st.one_of(
    st.tuples(st.just("advance"), st.sampled_from([0.0, 0.5, 1.0, 30.0, 600.0])),
    st.tuples(st.just("set_rate"), st.sampled_from([0.0, 1.0, 36.0, 99.0])),
    st.tuples(st.just("set_vtbi"), st.sampled_from([0.0, 0.001, 0.5, 2.0])),
    st.tuples(st.just("set_watchdog"), st.sampled_from([0.0, 1.0, 30.0])),
    st.tuples(
        st.sampled_from(["start", "stop", "pause", "feed_watchdog", "clear_alarms"]), st.none()
    ),
    st.tuples(st.sampled_from(["clear_totals", "power_loss", "snapshot", "events"]), st.none()),
    st.tuples(st.just("inject"), st.sampled_from([PumpAlarm.OCCLUSION, PumpAlarm.AIR_IN_LINE])),
    # A fault script entry due now, or a little later (it applies when its time comes).
    st.tuples(
        st.just("schedule"),
        st.tuples(st.sampled_from(list(FaultKind)), st.sampled_from([0.0, 0.5])),
    ),
)


#: A value for the faults that need one (any accepted value will do).
_VALUE = {
    FaultKind.SLOW: 0.5,
    FaultKind.GARBAGE: 0.5,
    FaultKind.CORRUPT: 0.5,
    FaultKind.DUPLICATE: 0.5,
    FaultKind.RATE_ECHO_WRONG: 1.0,
    FaultKind.TOTALIZER_JUMP: 1.0,
}


def _apply(model: PumpModel, clock: ManualClock, op: tuple[str, object]) -> object:
    name, argument = op
    if name == "advance":
        assert isinstance(argument, float)
        return clock.advance(argument)
    if name == "schedule":
        assert isinstance(argument, tuple)
        fault, after_s = argument
        at_s = clock.monotonic() - model.started_monotonic_s + after_s
        argument = FaultScript(faults=[FaultEntry(at_s=at_s, fault=fault, value=_VALUE.get(fault))])
    method = getattr(model, name)
    try:
        return method() if argument is None else method(argument)
    except SimulatorError as exc:  # a refusal (e.g. start with no rate) is part of the story
        return type(exc).__name__


@settings(max_examples=150, deadline=None)
@given(st.lists(_OPS, max_size=40))
def test_the_settled_shortcut_changes_nothing_any_look_shows(ops: list[tuple[str, object]]) -> None:
    """A look at one instant with nothing changed skips the advance; after any change the next
    look advances in full.  Against a model that always advances in full, every answer, every
    snapshot and every event is the same, whatever the host does, at one instant or over time."""
    clocks = (ManualClock(), ManualClock())
    models = (
        PumpModel(clocks[0], max_rate_ml_per_h=100.0, reservoir_ml=2.0),
        _AlwaysAdvancing(clocks[1], max_rate_ml_per_h=100.0, reservoir_ml=2.0),
    )
    for op in ops:
        answers = [_apply(model, clock, op) for model, clock in zip(models, clocks, strict=True)]
        assert answers[0] == answers[1], op
        assert models[0].snapshot() == models[1].snapshot(), op
    assert models[0].events() == models[1].events()


def test_a_change_that_makes_an_event_due_at_once_is_seen_at_the_next_look() -> None:
    clock = ManualClock()
    model = PumpModel(clock, max_rate_ml_per_h=100.0, reservoir_ml=50.0)
    model.set_rate(36.0)
    model.start()
    clock.advance(100.0)  # 1 mL given
    assert model.snapshot().state is PumpState.INFUSING  # settled at this instant
    model.set_vtbi(0.0005)  # counts from now, and is all but given at once
    clock.advance(0.05)  # 0.0005 mL at 36 mL/h
    stopped = model.snapshot()
    assert stopped.state is PumpState.STOPPED
    assert PumpAlarm.VTBI_COMPLETE in stopped.alarms
