"""The model hands out its last snapshot again only while nothing it shows has changed.

A transport reads the snapshot several times per command, mostly at one instant; every change
at that same instant (a setting, a fault, an alarm) must still show at once.
"""

from __future__ import annotations

from protocol.clock import ManualClock
from protocol.pump_state import PumpAlarm, PumpState
from simulator.faults import FaultKind
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
