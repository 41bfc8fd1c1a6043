"""The course controller as a table: (state, observation, inputs) -> (effects, state, alarms).

Each row starts from a flat-arm channel infusing day 1 at its 24-h rate (70 kg, 350 mL, a pump
with a 0.001-mL totalizer step, an hour into the day) and makes one call of the pure
:func:`gateway.controller.decide`.  The rows are what the pump or a person may do next; the
columns are what docs/design.md says the controller does about it: the effects it returns, in
order, the channel state it moves to, the alarms it holds and what it journals.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cache

import pytest

from drivers.status import RateReadback
from gateway.controller import Decision, decide
from gateway.course_inputs import (
    AckInput,
    Input,
    StopInput,
    VasopressorsWithdrawnInput,
    WeightInput,
)
from gateway.course_state import AlarmCode, ChannelState, CourseState
from gateway.effects import (
    ArmWatchdog,
    Done,
    Observation,
    ProgramRate,
    PumpReading,
    RateProgrammed,
    Silence,
    StartPump,
    StopPump,
)
from gateway.planner import SECONDS_PER_HOUR
from protocol.pump_state import PumpAlarm, PumpState
from tests.gateway.test_controller_rules import RULES, T0, started, status

H = SECONDS_PER_HOUR
#: An hour into day 1.
NOW = T0 + H
POLL_S = 15.0


@cache
def infusing() -> tuple[CourseState, float]:
    """Day 1 programmed, started and confirmed infusing; then an hour of readings at its rate.

    Returns the state and the commanded rate (mL/h)."""
    state = started()
    decision = decide(state, PumpReading(status(), None, "c1"), [], T0, RULES)
    (program,) = decision.effects
    assert isinstance(program, ProgramRate)
    rate = program.approved.rate_ml_per_h
    readback = RateReadback(rate, rate, rate, 0.001)
    programmed = (RateProgrammed(program, readback, program.vtbi_ml),)
    decision = decide(decision.state, PumpReading(status(), None, "c1", programmed), [], T0, RULES)
    (start,) = decision.effects
    assert isinstance(start, StartPump)
    running = PumpReading(status(PumpState.INFUSING, rate=rate), None, "c1", (Done(start),))
    state = decide(decision.state, running, [], T0, RULES).state
    # Polled every 15 s, inside the pump's 30-s watchdog (a longer gap counts for only that).
    for poll in range(1, 241):
        seen = status(PumpState.INFUSING, rate=rate, volume=round(rate * poll * POLL_S / H, 3))
        state = decide(state, PumpReading(seen, None, "c1"), [], T0 + POLL_S * poll, RULES).state
    assert state.channel is ChannelState.INFUSING
    assert state.alarms == ()
    return state, rate


def reading(
    *,
    state: PumpState = PumpState.INFUSING,
    rate: float | None = None,
    volume: float | None = None,
    alarms: frozenset[PumpAlarm] = frozenset(),
    connection: str = "c1",
) -> PumpReading:
    """A reading an hour into the day; by default exactly what was commanded."""
    _, commanded = infusing()
    shown = status(
        state,
        rate=commanded if rate is None else rate,
        volume=round(commanded, 3) if volume is None else volume,
    )
    return PumpReading(replace(shown, alarms=alarms), None, connection)


@dataclass(frozen=True)
class Row:
    observation: Observation | None
    inputs: tuple[Input, ...] = ()
    effects: tuple[type, ...] = ()
    channel: ChannelState = ChannelState.INFUSING
    alarms: frozenset[str] = field(default_factory=frozenset)
    #: Event kinds the decision journals (at least these).
    events: frozenset[str] = field(default_factory=frozenset)


TABLE: dict[str, Row] = {
    "the pump does what was commanded: nothing to do": Row(reading()),
    "no observation and no input: nothing to do": Row(None),
    "first silent poll: alarm, link lost, no stop yet": Row(
        Silence("timeout"),
        channel=ChannelState.LINK_LOST,
        alarms=frozenset({AlarmCode.PUMP_SILENT.value}),
    ),
    "an operator stop: stop the pump": Row(
        reading(),
        (StopInput("dr e", "procedure"),),
        (StopPump,),
        ChannelState.STOPPED,
    ),
    "the pump reports an occlusion: stop and alarm": Row(
        reading(state=PumpState.ALARM, alarms=frozenset({PumpAlarm.OCCLUSION})),
        effects=(StopPump,),
        channel=ChannelState.ALARM,
        alarms=frozenset({"pump_occlusion"}),
    ),
    "the pump holds another rate: stop, rate mismatch": Row(
        reading(rate=20.0),
        effects=(StopPump,),
        channel=ChannelState.ALARM,
        alarms=frozenset({AlarmCode.RATE_MISMATCH.value}),
    ),
    "the pump holds a rate above the ceiling: stop": Row(
        reading(rate=30.0),
        effects=(StopPump,),
        channel=ChannelState.ALARM,
        alarms=frozenset({AlarmCode.RATE_ABOVE_CEILING.value}),
    ),
    "the pump stopped behind the gateway's back: stop, state mismatch": Row(
        reading(state=PumpState.STOPPED),
        effects=(StopPump,),
        channel=ChannelState.ALARM,
        alarms=frozenset({AlarmCode.STATE_MISMATCH.value}),
    ),
    "the totalizer went back: stop": Row(
        reading(volume=1.0),
        effects=(StopPump,),
        channel=ChannelState.ALARM,
        alarms=frozenset({AlarmCode.TOTALIZER_WENT_BACK.value}),
    ),
    "a low battery: advisory only, the pump keeps infusing": Row(
        reading(alarms=frozenset({PumpAlarm.LOW_BATTERY})),
        alarms=frozenset({AlarmCode.LOW_BATTERY.value}),
    ),
    "a new connection: arm its watchdog before anything else": Row(
        reading(connection="c2"),
        effects=(ArmWatchdog,),
    ),
    "a weight correction: the running pump is re-programmed": Row(
        reading(),
        (WeightInput(75.0, "re-weighed"),),
        (ProgramRate,),
        events=frozenset({"weight", "prescription", "command"}),
    ),
    "vasopressors withdrawn on the flat arm: journalled, nothing changes": Row(
        reading(),
        (VasopressorsWithdrawnInput(NOW),),
        events=frozenset({"vasopressors_withdrawn_ignored"}),
    ),
    "an acknowledgement with nothing to acknowledge: nothing changes": Row(
        reading(),
        (AckInput("nurse"),),
    ),
}


@pytest.mark.parametrize("row", TABLE.values(), ids=list(TABLE))
def test_the_controller_table(row: Row) -> None:
    state, _ = infusing()
    decision: Decision = decide(state, row.observation, list(row.inputs), NOW, RULES)
    assert tuple(type(e) for e in decision.effects) == row.effects
    assert decision.state.channel is row.channel
    assert {a.code for a in decision.state.alarms} == row.alarms
    assert row.events <= {e.kind for e in decision.events}
    stopping = {a.code for a in decision.state.alarms if a.stops}
    # A stopping alarm always comes with a stop, and a stop with a reason the journal shows.
    assert bool(stopping) <= (StopPump in row.effects)
    if StopPump in row.effects:
        assert any(e.kind == "command" and e.payload["command"] == "stop" for e in decision.events)


def test_every_row_gives_the_same_decision_twice() -> None:
    state, _ = infusing()
    for row in TABLE.values():
        first = decide(state, row.observation, list(row.inputs), NOW, RULES)
        assert decide(state, row.observation, list(row.inputs), NOW, RULES) == first


def test_a_second_silent_poll_sends_an_unheard_stop() -> None:
    state, _ = infusing()
    first = decide(state, Silence("timeout"), [], NOW, RULES)
    second = decide(first.state, Silence("timeout"), [], NOW + 60, RULES)
    (stop,) = second.effects
    assert isinstance(stop, StopPump)
    assert stop.unheard is True  # its failure is expected: the pump's watchdog is the control
    assert second.state.channel is ChannelState.LINK_LOST
