"""Run the demo over the real wire with a fault script, and keep the simulator's ground truth.

:func:`lying_demo` runs :func:`gateway.demo.run_demo` for one flat day (70 kg, 350 mL) with a
fault script written to ``tmp_path``, on a :class:`RecordingPumpModel`, and returns a
:class:`FaultRun`: the demo's summary, the gateway's journal events and the simulator itself, whose
event log (``PumpModel.events``) says when the pump really stopped and whose lifetime total says
what it really pumped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import gateway.demo
from gateway.demo import CHANNEL_ID, DemoOptions, run_demo
from gateway.dosing import Arm
from gateway.journal import Journal, JournalEvent
from protocol.pump_state import PumpAlarm, PumpState
from simulator.model import EventKind, ModelEvent, PumpModel, PumpSnapshot

#: The demo's poll interval, simulated s (its virtual operator polls at the same pace).
POLL_S = DemoOptions().poll_interval_s


class RecordingPumpModel(PumpModel):
    """The demo's simulator, noting its ground-truth lifetime total each time it is read.

    The demo reads it after every gateway tick (and the wire servers on every request), and the
    clock is a manual one that stands still within a tick, so there is a reading at the exact
    instant of every journal event.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: (simulated s, lifetime mL), one per distinct instant, in time order.
        self.lifetime_at: list[tuple[float, float]] = []

    def snapshot(self) -> PumpSnapshot:
        snap = super().snapshot()
        if not self.lifetime_at or self.lifetime_at[-1][0] != snap.monotonic_s:
            self.lifetime_at.append((snap.monotonic_s, snap.lifetime_volume_infused_ml))
        return snap


@dataclass(frozen=True)
class FaultRun:
    summary: dict[str, Any]
    model: RecordingPumpModel
    #: The channel's journal events, in order.
    journal: list[JournalEvent]
    #: The simulator's own event log, in order (state changes, alarms, script entries).
    model_events: tuple[ModelEvent, ...]

    # -- the gateway's side (journal) ---------------------------------------------------------

    def events(self, kind: str) -> list[JournalEvent]:
        return [e for e in self.journal if e.kind == kind]

    def alarms(self, code: str) -> list[JournalEvent]:
        return [e for e in self.events("alarm") if e.payload["code"] == code]

    def alarm_codes(self) -> list[str]:
        return [e.payload["code"] for e in self.events("alarm")]

    def first_alarm_s(self, code: str) -> float:
        """Simulated time of the first ``code`` alarm; fails naming what was raised instead."""
        found = self.alarms(code)
        assert found, f"no {code} alarm; raised: {self.alarm_codes()}\n{self.describe()}"
        return found[0].monotonic_s

    def describe(self, limit: int = 60) -> str:
        """The journal without the per-poll readbacks: what the gateway did, for a failure."""
        lines = [
            f"  {e.monotonic_s / 3600:8.4f} h  {e.kind}: {e.payload}"
            for e in self.journal
            if e.kind not in ("readback", "command_readback")
        ]
        return "\n".join(lines[:limit])

    # -- the pump's side (ground truth) -------------------------------------------------------

    def state_changes(self) -> list[tuple[float, PumpState]]:
        return [
            (e.monotonic_s, e.state)
            for e in self.model_events
            if e.kind is EventKind.STATE and e.state is not None
        ]

    def state_at(self, t: float) -> PumpState:
        """The pump's true state at ``t`` (after everything that happened at ``t``)."""
        state = PumpState.STOPPED  # a model is created stopped
        for when, new in self.state_changes():
            if when > t:
                break
            state = new
        return state

    def stopped_at(self, since: float) -> float | None:
        """First instant at or after ``since`` at which the pump was not infusing, or None."""
        if self.state_at(since) is not PumpState.INFUSING:
            return since
        for when, new in self.state_changes():
            if when > since and new is not PumpState.INFUSING:
                return when
        return None

    def ever_infused(self) -> bool:
        return any(state is PumpState.INFUSING for _, state in self.state_changes())

    def alarm_latched_at(self, alarm: PumpAlarm) -> list[float]:
        return [
            e.monotonic_s
            for e in self.model_events
            if e.kind is EventKind.ALARM and e.alarm is alarm
        ]

    def lifetime_ml_at(self, t: float) -> float:
        """The simulator's lifetime total at ``t``: at the first reading at or after ``t`` (the
        total only grows, so never an underestimate)."""
        for when, lifetime in self.model.lifetime_at:
            if when >= t:
                return lifetime
        return self.model.snapshot().lifetime_volume_infused_ml

    def day1_truth_ml(self) -> float:
        """What the pump really gave in day 1: its lifetime total when the gateway closed day 1,
        or at the end of the run if day 1 never closed (the run stops one poll into the next
        day, so that minute of day 2's infusion is not day 1's)."""
        closes = [e for e in self.events("day_close") if e.payload["day"] == 1]
        if not closes:
            return self.model.snapshot().lifetime_volume_infused_ml
        return self.lifetime_ml_at(closes[0].monotonic_s)


RunLyingDemo = Callable[[str, str], FaultRun]


@pytest.fixture
def lying_demo(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> RunLyingDemo:
    """``lying_demo(protocol, script_toml)``: one flat 70-kg day with that fault script."""

    def run(protocol: str, script_toml: str) -> FaultRun:
        made: list[RecordingPumpModel] = []

        def make(*args: Any, **kwargs: Any) -> RecordingPumpModel:
            made.append(RecordingPumpModel(*args, **kwargs))
            return made[-1]

        monkeypatch.setattr(gateway.demo, "PumpModel", make)
        script = tmp_path / "faults.toml"
        script.write_text(script_toml)
        state_dir = tmp_path / "state"
        summary = run_demo(
            DemoOptions(
                arm=Arm.FLAT,
                protocol=protocol,
                days=1,
                weight_kg=70.0,
                faults=str(script),
                state_dir=state_dir,
            )
        )
        (model,) = made
        assert summary["lifetime_volume_infused_ml"] == pytest.approx(
            model.snapshot().lifetime_volume_infused_ml, abs=0.001
        )
        with Journal(state_dir) as journal:
            events = list(journal.events(CHANNEL_ID))
        return FaultRun(summary, model, events, model.events())

    return run
