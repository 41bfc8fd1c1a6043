"""The course controller: one pure function from what is known to what to do.

:func:`decide` takes a channel's :class:`~gateway.course_state.CourseState`, the latest
observation of its pump (a reading, with the outcomes of the last effects, or silence), the
inputs people and the lab sent, the time and the site's rules, and returns the new state, the
events to journal and the effects to perform.  It does no I/O, reads no clock and touches no
journal, so a 7-day course with faults is a table of (state, observation, inputs) -> effects
that runs in milliseconds.  docs/design.md describes the states and transitions; docs/dosing.md
the clinical rules it holds.

Safety invariants carried here (docs/design.md, "The seven invariants"):

3. Readback: after each command and on each poll, the pump's rate and state are compared with
   what was commanded; above the ceiling, or off by more than one step -> stop and alarm.
4. Never over-deliver: the VTBI is what remains of the day computed from the *upper* bound of
   what was delivered (totalizer plus one display step); catch-up is ``min(ceiling, pump max,
   remaining / remaining time)``.
5. Fail safe on silence: the pump's watchdog is armed on every connection before any start; a
   silent pump is alarmed on the first failed poll and resumed only by an acknowledgement or the
   bounded auto-resume rule.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from drivers.status import PumpStatus
from gateway.course_inputs import (
    AckInput,
    ClockStepInput,
    Input,
    OrderInput,
    ShutdownInput,
    StopInput,
    TiterInput,
    VasopressorsWithdrawnInput,
    WeightInput,
)
from gateway.course_state import (
    TRANSITIONS,
    AckPhase,
    Alarm,
    AlarmCode,
    ChannelState,
    Commanded,
    CourseDay,
    CourseState,
    Prescription,
    ReadbackKey,
    TiterRecord,
    TransitionError,
    evolve,
)
from gateway.display import floor_display
from gateway.dosing import Arm, DailyDose, course_days_max, flat_daily_dose, titer_daily_dose
from gateway.effects import (
    ArmWatchdog,
    ClearPumpAlarms,
    ClearTotals,
    Done,
    Effect,
    Failed,
    Observation,
    Outcome,
    ProgramRate,
    PumpReading,
    RateProgrammed,
    Silence,
    StartPump,
    StopPump,
    VolumeReached,
    WatchdogArmed,
)
from gateway.errors import InputError
from gateway.planner import SECONDS_PER_HOUR, check_start_delay, plan_rate, shortfall_ml
from gateway.rules import (
    ESTIMATE_DIVERGENCE_FRACTION,
    ESTIMATE_DIVERGENCE_ML,
    OVER_DELIVERY_TOLERANCE,
    QUIET_MARGIN_FRACTION,
    QUIET_MARGIN_MIN_S,
    RATE_FLOAT_SLACK_ML_PER_H,
    REPLAN_FRACTION,
    REPLAN_QUIET_S,
    SHORTFALL_ALARM_ML,
    SILENT_POLLS_BEFORE_STOP,
    TOTALIZER_STALL_MIN_ML,
    TOTALIZER_STALL_READINGS,
    UPTIME_AGREEMENT_FRACTION,
    UPTIME_AGREEMENT_S,
    VOLUME_EPSILON_ML,
    CourseRules,
    LateTiterPolicy,
)
from gateway.safety import RateRefusedError, check_rate
from protocol.pump_state import STOPPING_ALARMS, PumpAlarm, PumpState

#: Pump alarms that an automatic resume may clear: the pump's watchdog stopped it while the
#: link was down.  Anything else needs a person at the bedside.
AUTO_RESUMABLE_PUMP_ALARMS = frozenset({PumpAlarm.COMM_TIMEOUT})


@dataclass(frozen=True)
class Event:
    """One journal entry the decision asks for (``kind`` is the stable structlog event name)."""

    kind: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class Decision:
    state: CourseState
    events: tuple[Event, ...]
    effects: tuple[Effect, ...]


def decide(
    state: CourseState,
    observation: Observation | None,
    inputs: Sequence[Input],
    now_s: float,
    rules: CourseRules,
) -> Decision:
    """The one decision of a control round; pure."""
    decider = _Decider(state, now_s, rules)
    try:
        for item in inputs:
            decider.apply(item)
        if decider.effects and isinstance(observation, PumpReading) and not observation.outcomes:
            # The reading predates what the inputs just asked of the pump: act first, then
            # look again (the executor re-polls after performing the effects).
            return decider.result()
        if observation is not None and observation.monotonic_s is not None:
            decider.mono = observation.monotonic_s
        match observation:
            case PumpReading():
                decider.on_reading(observation)
            case Silence():
                decider.on_silence(observation)
            case None:
                pass
    except TransitionError as exc:
        decider.internal_error(str(exc))
    if decider.s.channel is ChannelState.ALARM and not decider.s.alarms_that_stop():
        # Every alarm state says why: one without a stopping alarm is a bug (docs/design.md).
        decider.internal_error("in alarm with no stopping alarm to say why")
    return decider.result()


def _dose_payload(
    day: int, prescription: Prescription, titer: TiterRecord | None
) -> dict[str, Any]:
    return {
        "day": day,
        "why": prescription.why,
        "dose_mg_per_kg": prescription.dose_mg_per_kg,
        "volume_ml": prescription.volume_ml,
        "weight_kg": prescription.weight_kg,
        "igm_mg_dl": titer.igm_mg_dl if titer else None,
        "hematocrit": titer.hematocrit if titer else None,
        "titer_measured_at_s": titer.measured_at_s if titer else None,
        "titer_seq": prescription.titer_seq,
        "capped": prescription.capped,
        "notes": list(prescription.notes),
    }


def _same_draw(record: TiterRecord, item: TiterInput) -> bool:
    """``item`` is ``record`` again: the same blood draw with the same values."""
    return (
        record.measured_at_s == item.measured_at_s
        and record.igm_mg_dl == item.igm_mg_dl
        and record.hematocrit == item.hematocrit
    )


def _two(value: float) -> str:
    """A volume or rate for a person: rounded down to 0.01 (gateway/display.py), never up."""
    return f"{floor_display(value):.2f}"


class _Decider:
    """The working copy of one decision: state replaced field by field, events, effects."""

    def __init__(self, state: CourseState, now_s: float, rules: CourseRules) -> None:
        self.s = state
        self.now = now_s
        self.rules = rules
        self.events: list[Event] = []
        self.effects: list[Effect] = []
        #: A rate program the pump confirmed in this observation: a start may follow.
        self.programmed = False
        #: A reading not journalled (nothing new in it): its place among the events, its
        #: payload and what it showed; journalled after all if anything else is decided.
        self.held_readback: tuple[int, dict[str, Any], ReadbackKey] | None = None
        #: The executor stopped a pump that reached the day's volume before its VTBI was set.
        self.volume_reached = False
        #: A stop was performed in the last round (the next reading must not be infusing).
        self.stop_done = False
        #: A stop failed: no more traffic this round (the pump's watchdog must stop it).
        self.quiet = False
        #: The observer's monotonic clock at this round's observation (s), for durations a
        #: wall-clock step must not change; an observer without one: the wall clock stands in.
        self.mono = now_s

    # -- bookkeeping ------------------------------------------------------------------------

    def result(self) -> Decision:
        if self.held_readback is not None and (self.events or self.effects):
            # Something was decided on this reading: the journal shows the reading first.
            index, payload, key = self.held_readback
            self.held_readback = None
            self.events.insert(index, Event("readback", payload))
            self.put_link(readback_journalled_s=self.now, readback_journalled_key=key)
        return Decision(self.s, tuple(self.events), tuple(self.effects))

    def emit(self, kind: str, **payload: Any) -> None:
        self.events.append(Event(kind, payload))

    def set_state(self, new: ChannelState, reason: str) -> None:
        old = self.s.channel
        if old is new:
            return
        if new not in TRANSITIONS[old]:
            raise TransitionError(f"{old.value} -> {new.value} is not an allowed transition")
        self.s = replace(self.s, channel=new)
        self.emit("state", **{"from": old.value, "to": new.value, "reason": reason})

    def internal_error(self, detail: str) -> None:
        """A bug: stop the pump, alarm, and act on nothing else this round."""
        self.effects = [StopPump(f"internal error: {detail}")]
        self.emit("command", command="stop", reason="internal error")
        alarm = Alarm(AlarmCode.INTERNAL_ERROR.value, detail, self.now)
        self.s = replace(
            self.s,
            channel=ChannelState.ALARM,
            commanded=None,
            alarms=(*self.s.alarms, alarm),
        )
        self.emit("alarm", code=alarm.code, detail=detail, stop=True)

    def put_link(self, **changes: Any) -> None:
        self.s = evolve(self.s, link=evolve(self.s.link, **changes))

    def put_today(self, day: CourseDay) -> None:
        self.s = evolve(self.s, days=(*self.s.days[:-1], day))

    def raise_alarm(
        self, code: str, detail: str, *, stop: bool = True, send_stop: bool = True
    ) -> None:
        """Raise ``code`` once.  A stopping alarm puts the channel in alarm and, unless
        ``send_stop`` is False (a pump that will not stop is left to its watchdog), stops it."""
        if code not in {a.code for a in self.s.alarms}:
            self.s = replace(self.s, alarms=(*self.s.alarms, Alarm(code, detail, self.now, stop)))
            self.emit("alarm", code=code, detail=detail, stop=stop)
        if stop:
            if send_stop:
                self.stop_pump(f"alarm {code}")
            if self.s.channel is not ChannelState.LINK_LOST:
                self.set_state(ChannelState.ALARM, code)

    def clear_alarms(self, reason: str, codes: set[str] | None = None) -> None:
        kept = tuple(a for a in self.s.alarms if codes is not None and a.code not in codes)
        cleared = [a.code for a in self.s.alarms if a not in kept]
        if cleared:
            self.s = replace(self.s, alarms=kept)
            self.emit("alarm_cleared", codes=cleared, reason=reason)

    def stop_pump(self, reason: str) -> None:
        if not any(isinstance(e, StopPump) for e in self.effects):
            self.emit("command", command="stop", reason=reason)
            self.effects.append(StopPump(reason))
        self.s = replace(self.s, commanded=None)

    def ceiling(self) -> float:
        return self.s.ceiling_ml_per_h()

    def completed(self) -> bool:
        return self.s.channel is ChannelState.COMPLETED

    # -- inputs -----------------------------------------------------------------------------

    def apply(self, item: Input) -> None:
        match item:
            case OrderInput():
                self.take_order(item)
            case TiterInput():
                self.take_titer(item)
            case WeightInput():
                self.take_weight(item)
            case AckInput():
                self.emit("ack", operator=item.operator, note=item.note)
                self.s = replace(self.s, resume_requested=True)
                self.clear_alarms(
                    f"acknowledged by {item.operator}",
                    {a.code for a in self.s.alarms if not a.stops},
                )
            case StopInput():
                self.emit("stop", operator=item.operator, reason=item.reason)
                self.stop_pump("operator stop")
                if self.s.channel is not ChannelState.COMPLETED:
                    self.set_state(ChannelState.STOPPED, f"stopped by {item.operator}")
            case VasopressorsWithdrawnInput():
                self.take_vasopressors(item)
            case ClockStepInput(step_s=step_s):
                self.emit("clock_step", step_s=step_s)
                self.raise_alarm(
                    AlarmCode.CLOCK_STEP.value,
                    f"the wall clock stepped {step_s:+.0f} s against the monotonic clock; day "
                    "windows follow the wall clock: check the time source",
                    stop=False,
                )
            case ShutdownInput():
                self.emit("shutdown", reason=item.reason, state=self.s.channel.value)
                if self.s.channel is ChannelState.INFUSING:
                    self.stop_pump(f"gateway shutdown: {item.reason}")
                    self.s = replace(
                        self.s,
                        state_before_loss=ChannelState.INFUSING,
                        lost_since_s=self.now,
                        lost_since_uptime_s=self.s.link.last_uptime_s,
                        lost_since_monotonic_s=self.s.link.last_good_poll_monotonic_s,
                    )
                    self.emit("shutdown_stopped_pump", resume="by the auto-resume rule or an ack")

    def take_order(self, item: OrderInput) -> None:
        if self.s.channel is not ChannelState.AWAITING_ORDER or self.s.order is not None:
            self.emit("order_rejected", state=self.s.channel.value)
            return
        order = item.order
        titers = self.s.titers
        if order.arm is Arm.TITER:
            assert item.igm_mg_dl is not None
            assert item.hematocrit is not None
            titers = (
                *titers,
                TiterRecord(
                    seq=len(titers),
                    igm_mg_dl=item.igm_mg_dl,
                    hematocrit=item.hematocrit,
                    measured_at_s=(
                        order.received_at_s
                        if item.titer_measured_at_s is None
                        else item.titer_measured_at_s
                    ),
                    received_at_s=order.received_at_s,
                    baseline=True,
                ),
            )
        self.s = replace(
            self.s,
            order=order,
            weight_kg=order.weight_kg,
            config_weight_kg=order.weight_kg,
            titers=titers,
        )
        self.emit(
            "order",
            arm=order.arm.value,
            weight_kg=order.weight_kg,
            ceiling_ml_per_kg_per_h=order.ceiling_ml_per_kg_per_h,
            concentration_mg_per_ml=order.concentration_mg_per_ml,
            igm_content_mg_per_ml=order.igm_content_mg_per_ml,
            randomised_at_s=order.randomised_at_s,
            start_override_reason=order.start_override_reason,
            igm_mg_dl=item.igm_mg_dl,
            hematocrit=item.hematocrit,
        )
        for note in item.confirmed_notes:
            self.emit("soft_limit_confirmed", note=note)
        self.set_state(ChannelState.STARTING, "order received")

    def take_titer(self, item: TiterInput) -> None:
        if self.s.order is None or self.s.order.arm is not Arm.TITER:
            self.emit("titer_rejected", reason="the channel has no titer-arm order")
            return
        same = next((t for t in self.s.titers if _same_draw(t, item)), None)
        if same is not None and item.corrects_day is None:
            # The same result again (a retransmission, or typed in after the lab sent it).
            self.emit("titer_duplicate", seq=same.seq, measured_at_s=item.measured_at_s)
            return
        record = TiterRecord(
            seq=len(self.s.titers),
            igm_mg_dl=item.igm_mg_dl,
            hematocrit=item.hematocrit,
            measured_at_s=item.measured_at_s,
            received_at_s=item.received_at_s,
            confirmed_note=item.confirmed_note,
        )
        self.s = replace(self.s, titers=(*self.s.titers, record))
        self.emit(
            "titer",
            seq=record.seq,
            igm_mg_dl=record.igm_mg_dl,
            hematocrit=record.hematocrit,
            measured_at_s=record.measured_at_s,
            corrects_day=item.corrects_day,
            confirmed_note=item.confirmed_note,
        )
        today = self.s.today
        if item.corrects_day is not None:
            if today is None or today.day != item.corrects_day or today.closed:
                self.emit(
                    "titer_correction_rejected",
                    day=item.corrects_day,
                    reason="only the running day's titer can be corrected",
                )
                return
            self.prescribe_today(record, f"titer of day {today.day} corrected")
            return
        if today is not None and today.prescription is None and not today.closed:
            self.try_open_waiting_day()

    def take_weight(self, item: WeightInput) -> None:
        if self.s.order is None:
            self.emit("weight_rejected", reason="no order yet")
            return
        self.s = replace(self.s, weight_kg=item.weight_kg)
        if item.from_config:
            self.s = replace(self.s, config_weight_kg=item.weight_kg)
        self.emit(
            "weight",
            from_config=item.from_config,
            weight_kg=item.weight_kg,
            reason=item.reason,
            confirmed_note=item.confirmed_note,
        )
        today = self.s.today
        if today is not None and today.prescription is not None and not today.closed:
            # The day keeps its titer: only the weight changes (rule 1).
            self.prescribe_today(self.s.titer(today.prescription.titer_seq), "weight corrected")
        # Re-plan against the new ceiling, keeping the command the pump holds: a rate above a
        # lower ceiling is then recognised as ours and lowered, not alarmed (docs/design.md).
        self.s = replace(self.s, replan=True)

    def take_vasopressors(self, item: VasopressorsWithdrawnInput) -> None:
        if self.s.order is None or self.s.order.arm is Arm.FLAT:
            self.emit(
                "vasopressors_withdrawn_ignored",
                at_s=item.at_s,
                reason="the flat arm always runs its 3 days",
            )
            return
        self.s = replace(self.s, vasopressors_withdrawn_at_s=item.at_s)
        self.emit("vasopressors_withdrawn", withdrawn_at_s=item.at_s)
        today = self.s.today
        if (
            today is not None
            and today.prescription is None
            and not today.closed
            and self.s.channel is not ChannelState.COMPLETED
        ):
            # Waiting for a titer that will not be needed: the course ends here.
            self.put_today(replace(today, closed=True, shortfall_ml=0.0, notes=("not given",)))
            self.emit_day_close(self.s.days[-1])
            self.complete("vasopressors withdrawn")

    # -- observations -----------------------------------------------------------------------

    def on_silence(self, obs: Silence) -> None:
        self.take_outcomes(obs.outcomes, connection=None)
        # Counted once per cycle: the first observation of a cycle has no outcomes.
        silent_polls = self.s.link.silent_polls + (0 if obs.outcomes else 1)
        self.put_link(armed_connection=None, silent_polls=silent_polls)
        if self.s.channel is ChannelState.COMPLETED:
            return
        if self.s.channel is ChannelState.LINK_LOST:
            if not obs.outcomes:
                self.stop_while_silent()
            return
        self.s = replace(
            self.s,
            lost_since_s=self.s.link.last_good_poll_s or self.now,
            lost_since_uptime_s=self.s.link.last_uptime_s,
            lost_since_monotonic_s=self.s.link.last_good_poll_monotonic_s,
            state_before_loss=self.s.channel,
            recovering=True,
            commanded=None,
        )
        self.set_state(ChannelState.LINK_LOST, f"pump silent: {obs.error}")
        self.raise_alarm(AlarmCode.PUMP_SILENT.value, obs.error, stop=False)

    def stop_while_silent(self) -> None:
        """From the second silent poll in a row: send a stop on every poll, unheard.

        Silence is the gateway not hearing the pump, not always the pump not hearing the
        gateway: on a line that garbles or delays only the replies, every poll still reaches
        the pump as a valid request and feeds its watchdog, so the pump would infuse on
        unsupervised.  A stop reaches it the same way; on a dead line it does not, and the
        pump's own watchdog stops it (invariant 5).  Its failure is expected and no alarm of
        its own.  One lost poll alone (a blip) sends nothing: the pump runs on, and the
        link's return is seen at the next poll either way (auto-resume rule).
        """
        if self.s.link.silent_polls < SILENT_POLLS_BEFORE_STOP:
            return
        self.emit(
            "command", command="stop", reason="pump silent", silent_polls=self.s.link.silent_polls
        )
        self.effects.append(StopPump("pump silent", unheard=True))

    def on_reading(self, obs: PumpReading) -> None:
        status = obs.status
        if self.s.link.quiet_until_s is not None and self.mono >= self.s.link.quiet_until_s:
            self.put_link(quiet_until_s=None)
            self.emit("quiet_over", pump_state=status.state.value)
        self.take_outcomes(obs.outcomes, connection=obs.connection)
        previous_poll_s = self.s.link.last_good_poll_s
        previous_mono_s = self.s.link.last_good_poll_monotonic_s
        previous_uptime_s = self.s.link.last_uptime_s
        self.put_link(
            last_good_poll_s=self.now,
            last_uptime_s=status.uptime_s,
            last_good_poll_monotonic_s=obs.monotonic_s,
            silent_polls=0,
        )
        self.account(status, previous_poll_s, previous_mono_s)
        if self.stop_done and status.state is PumpState.INFUSING and not self.quiet:
            self.emit("command_failed", command="stop", error="pump still infusing after it")
            self.stop_failed("the pump acknowledged a stop and kept infusing")
        self.put_link(
            last_infusing=status.state is PumpState.INFUSING,
            last_rate_ml_per_h=status.rate_ml_per_h,
        )
        if self.quiet:
            return
        self.note_readback(status)
        if self.s.link.armed_connection != obs.connection:
            identity = obs.identity
            self.put_link(
                pump_max_rate_ml_per_h=identity.max_rate_ml_per_h if identity else None,
                rate_resolution_ml_per_h=identity.rate_resolution_ml_per_h if identity else 0.01,
            )
            self.effects.append(ArmWatchdog(self.rules.pump_watchdog_s))
            return  # nothing starts before the pump holds its watchdog
        if self.s.channel is ChannelState.COMPLETED:
            if status.state is PumpState.INFUSING:
                self.stop_pump("pump infusing after the course completed")
                self.emit("pump_infusing_after_course", rate_ml_per_h=status.rate_ml_per_h)
            return
        if self.s.recovering:
            self.recover(status, previous_poll_s, previous_uptime_s, obs.monotonic_s)
            return
        if self.s.course_start_s is not None and not self.roll_days(status):
            return
        if self.completed():
            return
        if self.s.channel in (ChannelState.ALARM, ChannelState.STOPPED):
            self.hold_stopped(status)
            return
        if self.s.channel is ChannelState.AWAITING_ORDER:
            if status.state is PumpState.INFUSING:  # no order: nothing may run
                self.raise_alarm(AlarmCode.STATE_MISMATCH.value, "pump was infusing with no order")
            return
        if not self.verify(status):
            return
        if self.s.course_start_s is None and not self.begin_course(status):
            return
        self.drive(status)

    def note_readback(self, status: PumpStatus) -> None:
        """Journal the reading (a ``readback`` event) when it shows something new, when a
        checkpoint is due, or (see :meth:`result`) when anything else is decided on it.

        A reading whose state, rate and alarms equal the last journalled one's, within
        ``readback_checkpoint_s`` of it, is held back: at a 1-s poll the journal then grows by a
        few hundred kB a day instead of tens of MB, and nothing an auditor needs is lost (every
        command, alarm and change is journalled; the totalizer at least every checkpoint).
        """
        alarms = sorted(a.value for a in status.alarms)
        payload = {
            "state": status.state.value,
            "rate_ml_per_h": status.rate_ml_per_h,
            "volume_infused_ml": status.volume_infused_ml,
            "volume_resolution_ml": status.volume_resolution_ml,
            "vtbi_remaining_ml": status.vtbi_remaining_ml,
            "alarms": alarms,
            "delivered_ml": self.s.today.delivered_ml if self.s.today else 0.0,
        }
        key = (status.state.value, status.rate_ml_per_h, tuple(alarms))
        last_s = self.s.link.readback_journalled_s
        if (
            last_s is None
            or key != self.s.link.readback_journalled_key
            or self.now - last_s >= self.rules.readback_checkpoint_s
            or self.now < last_s  # the clock went back: say where we are
        ):
            self.emit("readback", **payload)
            self.put_link(readback_journalled_s=self.now, readback_journalled_key=key)
        else:
            self.held_readback = (len(self.events), payload, key)

    def begin_course(self, status: PumpStatus) -> bool:
        """Start the course unless the pump has history a person must see first (item 6)."""
        if not self.s.pump_history_accepted and (
            status.volume_infused_ml > VOLUME_EPSILON_ML or status.state is PumpState.INFUSING
        ):
            self.raise_alarm(
                AlarmCode.PUMP_HAS_HISTORY.value,
                f"before day 1 the pump shows {status.volume_infused_ml:g} mL infused and is "
                f"{status.state.value}: check it is this patient's line and a fresh bag, then "
                "acknowledge to start day 1",
            )
            return False
        self.start_course()
        return self.s.course_start_s is not None

    def take_outcomes(self, outcomes: Sequence[Outcome], *, connection: str | None) -> None:
        for outcome in outcomes:
            match outcome:
                case WatchdogArmed(effect=effect, held_s=held_s):
                    # Held, and no longer than asked (a pump rounds up to whole seconds).
                    confirmed = 0.0 < held_s <= math.ceil(effect.timeout_s) + 1e-9
                    self.put_link(
                        armed_connection=connection,
                        watchdog_held_s=held_s if confirmed else None,
                    )
                    self.emit(
                        "pump_connected",
                        connection=connection,
                        watchdog_requested_s=effect.timeout_s,
                        watchdog_s=held_s,
                        watchdog_confirmed=confirmed,
                        max_rate_ml_per_h=self.s.link.pump_max_rate_ml_per_h,
                    )
                    if not confirmed:
                        self.raise_alarm(
                            AlarmCode.WATCHDOG_UNCONFIRMED.value,
                            f"the pump holds a communication watchdog of {held_s:g} s (asked "
                            f"{effect.timeout_s:g} s): it would not stop itself if the gateway "
                            "died; no start until it holds one",
                        )
                case Done(effect=StopPump()):
                    self.stop_done = True
                case RateProgrammed():
                    self.take_rate_readback(outcome)
                case VolumeReached(totalizer_ml=totalizer_ml):
                    self.emit("volume_reached_before_program", totalizer_ml=totalizer_ml)
                    self.s = replace(self.s, commanded=None)
                    self.volume_reached = True
                case Done(effect=ClearTotals()):
                    self.put_link(last_totalizer_ml=0.0, totals_clear_pending=False)
                    self.emit("totals_cleared", day=self.s.day_number)
                case Done(effect=ClearPumpAlarms()):
                    self.pump_alarms_cleared()
                case Done():
                    pass
                case Failed(effect=effect, error=error):
                    self.take_failure(effect, error, connection)

    def stop_failed(self, detail: str) -> None:
        """A pump that will not stop: alarm, and go quiet so that its own watchdog stops it."""
        held = self.s.link.watchdog_held_s or self.rules.pump_watchdog_s
        quiet_s = held + max(QUIET_MARGIN_MIN_S, QUIET_MARGIN_FRACTION * held)
        self.raise_alarm(
            AlarmCode.STOP_FAILED.value,
            f"{detail}; the gateway stops all traffic to the pump for {quiet_s:.0f} s so that "
            "its own watchdog stops it, then tries again. Go to the pump and stop it by hand.",
            send_stop=False,
        )
        self.put_link(quiet_until_s=self.mono + quiet_s)  # the observer's monotonic clock
        self.s = replace(self.s, commanded=None)
        self.effects = [e for e in self.effects if isinstance(e, StopPump)]
        self.quiet = True

    def pump_alarms_cleared(self) -> None:
        if self.s.ack_phase is AckPhase.CLEARING:
            self.s = replace(self.s, ack_phase=AckPhase.CLEARED)

    def take_failure(self, effect: Effect, error: str, connection: str | None) -> None:
        match effect:
            case StopPump(unheard=True):
                self.emit("stop_unconfirmed", error=error)  # expected: the link is silent
            case StopPump():
                self.emit("command_failed", command="stop", error=error)
                self.stop_failed(f"stop failed: {error}")
            case ClearTotals():
                self.emit("clear_totals_failed", error=error)  # pending: a drop is this clear
            case ClearPumpAlarms():
                self.emit("clear_alarms_failed", error=error)
                self.pump_alarms_cleared()  # the next reading shows what is still there
            case ArmWatchdog():
                self.put_link(armed_connection=connection, watchdog_held_s=None)
                self.raise_alarm(
                    AlarmCode.PUMP_REFUSED.value,
                    f"the pump did not take its communication watchdog: {error}",
                )
            case ProgramRate():
                self.raise_alarm(AlarmCode.PUMP_REFUSED.value, error)
            case StartPump():
                self.raise_alarm(AlarmCode.PUMP_REFUSED.value, f"start: {error}")

    def take_rate_readback(self, outcome: RateProgrammed) -> None:
        readback = outcome.readback
        effect = outcome.effect
        self.emit(
            "command_readback",
            sent_ml_per_h=readback.sent_ml_per_h,
            readback_ml_per_h=readback.readback_ml_per_h,
            resolution_ml_per_h=readback.resolution_ml_per_h,
            vtbi_held_ml=outcome.vtbi_held_ml,
        )
        if (
            readback.readback_ml_per_h
            > effect.approved.ceiling_ml_per_h + RATE_FLOAT_SLACK_ML_PER_H
        ):
            self.raise_alarm(
                AlarmCode.RATE_ABOVE_CEILING.value,
                f"pump holds {readback.readback_ml_per_h} mL/h after command",
            )
            return
        if (
            abs(readback.readback_ml_per_h - readback.sent_ml_per_h)
            > readback.resolution_ml_per_h + RATE_FLOAT_SLACK_ML_PER_H
        ):
            self.raise_alarm(
                AlarmCode.RATE_MISMATCH.value,
                f"sent {readback.sent_ml_per_h}, pump holds {readback.readback_ml_per_h}",
            )
            return
        if outcome.vtbi_held_ml > effect.vtbi_ml + VOLUME_EPSILON_ML:
            self.raise_alarm(
                AlarmCode.STATE_MISMATCH.value,
                f"pump holds VTBI {outcome.vtbi_held_ml} mL, above the "
                f"{effect.vtbi_ml:.3f} mL left",
            )
            return
        self.s = replace(
            self.s,
            commanded=Commanded(
                rate_ml_per_h=readback.readback_ml_per_h,
                vtbi_ml=outcome.vtbi_held_ml,
                ceiling_ml_per_h=effect.approved.ceiling_ml_per_h,
                at_s=self.now,
            ),
            max_commanded_rate_ml_per_h=max(
                self.s.max_commanded_rate_ml_per_h, readback.sent_ml_per_h
            ),
            replan=False,
        )
        self.programmed = True

    # -- accounting (invariant 4) -------------------------------------------------------------

    def integrated_ml(self, previous_poll_s: float | None, previous_mono_s: float | None) -> float:
        """What the read-back rate says was given since the last reading (an upper estimate).

        The gap is measured on the monotonic clock, which a wall-clock step does not move; only
        the first reading of a process (no earlier monotonic reading) falls back to the wall
        clock.  A pump left without traffic stops itself after its watchdog, so a long gap
        counts for at most that long.
        """
        link = self.s.link
        if previous_poll_s is None or not link.last_infusing:
            return 0.0
        if previous_mono_s is not None and self.mono >= previous_mono_s:
            gap_s = self.mono - previous_mono_s
        else:
            gap_s = max(self.now - previous_poll_s, 0.0)
        if link.watchdog_held_s:
            gap_s = min(gap_s, link.watchdog_held_s)
        return link.last_rate_ml_per_h * gap_s / SECONDS_PER_HOUR

    def account(
        self,
        status: PumpStatus,
        previous_poll_s: float | None = None,
        previous_mono_s: float | None = None,
    ) -> None:
        estimate_ml = self.integrated_ml(previous_poll_s, previous_mono_s)
        link = self.s.link
        last = link.last_totalizer_ml
        now_ml = status.volume_infused_ml
        step_ml = status.volume_resolution_ml
        new_last = now_ml
        delta = 0.0 if last is None else now_ml - last
        pending = link.totals_clear_pending
        if last is not None and delta < -VOLUME_EPSILON_ML and pending:
            # The day-boundary clear went through before it could be recorded.
            pending = False
            self.emit("totals_cleared", recovered=True, totalizer_ml=now_ml)
            delta = now_ml
        elif last is not None and delta < 0.0:
            if delta < -VOLUME_EPSILON_ML:
                self.put_link(last_totalizer_ml=now_ml, last_volume_resolution_ml=step_ml)
                # What the pump delivered since the last reading is unknown: never guess low.
                self.raise_alarm(
                    AlarmCode.TOTALIZER_WENT_BACK.value,
                    f"pump totalizer went from {last:.3f} to {now_ml:.3f} mL",
                )
                return
            new_last, delta = last, 0.0  # display noise: keep the higher reading
        # A totalizer that stands still while the pump says it infuses is frozen.
        stalled = 0
        since_ml = 0.0
        if delta <= 0.0 and link.last_infusing and status.state is PumpState.INFUSING:
            stalled = link.stalled_readings + 1
            since_ml = link.estimated_since_advance_ml + estimate_ml
        self.put_link(
            last_totalizer_ml=new_last,
            last_volume_resolution_ml=step_ml,
            totals_clear_pending=pending,
            stalled_readings=stalled,
            estimated_since_advance_ml=since_ml,
        )
        today = self.s.today
        if today is None or today.closed:
            return
        delivered = today.delivered_ml + max(delta, 0.0)
        estimated = today.estimated_ml + estimate_ml
        today = evolve(
            today,
            delivered_ml=delivered,
            delivered_max_ml=delivered + step_ml,
            estimated_ml=estimated,
        )
        self.put_today(today)
        if today.totalizer_distrusted:
            return
        if stalled >= TOTALIZER_STALL_READINGS and since_ml > max(
            2 * step_ml, TOTALIZER_STALL_MIN_ML
        ):
            self.distrust_totalizer(
                f"the totalizer stood at {now_ml:g} mL for {stalled} readings while the pump "
                f"reported infusing at {status.rate_ml_per_h:g} mL/h (about {since_ml:.2f} mL "
                "expected)"
            )
            return
        bound_ml = (
            ESTIMATE_DIVERGENCE_ML
            + ESTIMATE_DIVERGENCE_FRACTION * max(delivered, estimated)
            + step_ml
        )
        if abs(delivered - estimated) > bound_ml:
            self.distrust_totalizer(
                f"the totalizer counts {_two(delivered)} mL today, the read-back rate over time "
                f"{_two(estimated)} mL (allowed difference {_two(bound_ml)} mL)"
            )

    def distrust_totalizer(self, detail: str) -> None:
        """Two signals disagree: stop, alarm, and bound the day by the larger of the two."""
        today = self.s.today
        assert today is not None
        self.put_today(replace(today, totalizer_distrusted=True))
        self.raise_alarm(AlarmCode.TOTALIZER_IMPLAUSIBLE.value, detail)

    # -- verification (invariant 3) -----------------------------------------------------------

    def verify(self, status: PumpStatus) -> bool:
        """Compare the pump with what was commanded; stop and alarm on any disagreement."""
        ceiling = self.ceiling()
        commanded = self.s.commanded
        resolution = self.s.link.rate_resolution_ml_per_h
        if (
            status.state is PumpState.INFUSING
            and status.rate_ml_per_h > ceiling + RATE_FLOAT_SLACK_ML_PER_H
        ):
            lowered = (
                commanded is not None
                and abs(status.rate_ml_per_h - commanded.rate_ml_per_h) <= resolution
                and commanded.ceiling_ml_per_h > ceiling
            )
            if not lowered:
                self.raise_alarm(
                    AlarmCode.RATE_ABOVE_CEILING.value,
                    f"pump reports {status.rate_ml_per_h} mL/h, ceiling {_two(ceiling)}",
                )
                return False
            # A lower weight lowered the ceiling under a rate we commanded: re-plan down now.
            self.emit("replan_lower_ceiling", rate_ml_per_h=status.rate_ml_per_h, ceiling=ceiling)
            self.s = replace(self.s, commanded=None)
            commanded = None
        stopping = {a for a in status.alarms if a in STOPPING_ALARMS}
        if PumpAlarm.POWER_LOSS in stopping:
            # A power cycle may have reset the pump's watchdog: confirm it again.
            self.put_link(armed_connection=None, watchdog_held_s=None)
        if stopping:
            for alarm in sorted(stopping):
                self.raise_alarm(f"pump_{alarm.value}", f"pump reports {alarm.value}")
            return False
        if PumpAlarm.LOW_BATTERY in status.alarms:
            self.raise_alarm(AlarmCode.LOW_BATTERY.value, "pump reports low battery", stop=False)
        if PumpAlarm.RATE_REFUSED in status.alarms:
            self.raise_alarm(AlarmCode.PUMP_REFUSED.value, "pump refused a rate")
            return False
        channel = self.s.channel
        if channel is ChannelState.INFUSING:
            if status.state is not PumpState.INFUSING:
                if PumpAlarm.VTBI_COMPLETE in status.alarms or self.volume_reached:
                    return True  # the pump delivered the day's volume: drive closes the day
                self.raise_alarm(
                    AlarmCode.STATE_MISMATCH.value,
                    f"pump is {status.state.value}, expected infusing",
                )
                return False
            if (
                commanded is not None
                and abs(status.rate_ml_per_h - commanded.rate_ml_per_h)
                > resolution + RATE_FLOAT_SLACK_ML_PER_H
            ):
                self.raise_alarm(
                    AlarmCode.RATE_MISMATCH.value,
                    f"pump holds {status.rate_ml_per_h} mL/h, commanded {commanded.rate_ml_per_h}",
                )
                return False
        elif status.state is PumpState.INFUSING and channel is not ChannelState.STARTING:
            self.raise_alarm(
                AlarmCode.STATE_MISMATCH.value,
                f"pump is infusing while the channel is {channel.value}",
            )
            return False
        today = self.s.today
        if today is not None and today.prescription is not None:
            allowed = max(today.prescription.volume_ml, today.delivered_at_prescription_ml)
            if today.delivered_ml > allowed * (1 + OVER_DELIVERY_TOLERANCE) + VOLUME_EPSILON_ML:
                self.raise_alarm(
                    AlarmCode.OVER_DELIVERY.value,
                    f"delivered {today.delivered_ml:.3f} mL of {allowed:.3f} mL",
                )
                return False
        return True

    # -- course and day windows --------------------------------------------------------------

    def start_course(self) -> None:
        order = self.s.order
        assert order is not None
        if order.randomised_at_s is not None:
            try:
                check = check_start_delay(
                    order.randomised_at_s, self.now, override_reason=order.start_override_reason
                )
            except InputError as exc:
                self.raise_alarm(AlarmCode.START_WINDOW_EXCEEDED.value, str(exc))
                return
            self.emit(
                "start_check",
                randomised_at_s=order.randomised_at_s,
                delay_h=check.delay_h,
                within_window=check.within_window,
                override_reason=check.override_reason,
            )
        else:
            self.emit(
                "start_check",
                randomised_at_s=None,
                note="no randomisation time: the site allows it (require_randomisation_time "
                "= false); the 12-h start rule was not checked",
            )
        self.s = replace(self.s, course_start_s=self.now)
        self.emit("course_start", arm=order.arm.value, weight_kg=self.s.weight_kg)
        self.open_day(1, self.now)

    def choose_titer(self, day: CourseDay) -> TiterRecord | None:
        """Day 1: the order's baseline titer.  Day n: the newest unused titer drawn no earlier
        than the age limit before the window opens (rule 1)."""
        if day.day == 1:
            return next((t for t in self.s.titers if t.baseline), None)
        earliest = day.nominal_start_s - self.rules.titer_max_age_s
        # One blood draw doses one day: a draw entered twice (over HL7 and by hand), or
        # corrected, is two records of one draw, and no day takes a draw another day took.
        drawn_for_a_day = {
            t.measured_at_s
            for t in self.s.titers
            if t.baseline or self.s.titer_used_by(t.seq) is not None
        }
        candidates = [
            t
            for t in self.s.titers
            if not t.baseline
            and t.measured_at_s not in drawn_for_a_day
            and earliest <= t.measured_at_s <= self.now
        ]
        return max(candidates, key=lambda t: (t.measured_at_s, t.seq), default=None)

    def dose(self, titer: TiterRecord | None) -> DailyDose:
        order = self.s.order
        assert order is not None
        assert self.s.weight_kg is not None
        if order.arm is Arm.FLAT:
            return flat_daily_dose(self.s.weight_kg, order.product)
        assert titer is not None
        return titer_daily_dose(
            self.s.weight_kg,
            titer.igm_mg_dl,
            titer.hematocrit,
            order.product,
            baseline=titer.baseline,
        )

    def prescribe_today(self, titer: TiterRecord | None, why: str) -> None:
        today = self.s.today
        assert today is not None
        dose = self.dose(titer)
        notes = list(dose.notes)
        if dose.volume_ml < today.delivered_ml:
            notes.append(
                f"the corrected dose ({_two(dose.volume_ml)} mL) is below what was already given "
                f"({_two(today.delivered_ml)} mL): nothing more today"
            )
        prescription = Prescription(
            volume_ml=dose.volume_ml,
            dose_mg_per_kg=dose.dose_mg_per_kg,
            weight_kg=dose.weight_kg,
            titer_seq=None if titer is None else titer.seq,
            capped=dose.capped,
            notes=tuple(notes),
            why=why,
        )
        self.put_today(
            replace(
                today,
                prescription=prescription,
                delivered_at_prescription_ml=today.delivered_ml,
            )
        )
        self.emit("prescription", **_dose_payload(today.day, prescription, titer))
        self.s = replace(self.s, replan=True)  # keep the held command: see verify()

    def open_day(self, number: int, nominal_start_s: float) -> None:
        day = CourseDay(day=number, nominal_start_s=nominal_start_s, window_start_s=nominal_start_s)
        self.s = replace(self.s, days=(*self.s.days, day), commanded=None)
        self.clear_alarms(
            "a new day", {AlarmCode.PROJECTED_SHORTFALL.value, AlarmCode.TITER_LATE.value}
        )
        titer = None
        arm = self.s.order.arm if self.s.order else Arm.FLAT
        if arm is Arm.TITER:
            titer = self.choose_titer(day)
            if titer is None:
                window = None if self.rules.late_titer is LateTiterPolicy.SHIFT else nominal_start_s
                self.put_today(
                    replace(day, window_start_s=window, late_titer_policy=self.rules.late_titer)
                )
        self.emit(
            "day_open",
            day=number,
            nominal_start_s=nominal_start_s,
            window_start_s=self.s.days[-1].window_start_s,
        )
        if arm is Arm.TITER and titer is None:
            self.stop_pump(f"no fresh titer for day {number}")
            if self.s.channel is ChannelState.STARTING:
                # In alarm, stopped or silent the channel keeps its state: after the ack or
                # the link's return it finds the day still waiting for its titer.
                self.set_state(ChannelState.AWAITING_TITER, f"no fresh titer for day {number}")
            self.raise_alarm(
                AlarmCode.TITER_LATE.value,
                f"day {number}: no titer drawn within "
                f"{self.rules.titer_max_age_s / 3600:g} h before its window; the pump waits "
                f"stopped ({self.rules.late_titer.value}: "
                + (
                    "the day's 24 h start when the titer arrives)"
                    if self.rules.late_titer is LateTiterPolicy.SHIFT
                    else "the window keeps its clock times)"
                ),
                stop=False,
            )
            return
        self.prescribe_today(titer, f"day {number}")

    def try_open_waiting_day(self) -> None:
        """A titer arrived while today waits for one (rule 2)."""
        today = self.s.today
        assert today is not None
        titer = self.choose_titer(today)
        if titer is None:
            self.emit("titer_not_for_today", day=today.day, reason="drawn too early or used")
            return
        if self.rules.late_titer is LateTiterPolicy.SHIFT:
            self.put_today(replace(today, window_start_s=self.now))
            self.emit("window_shifted", day=today.day, window_start_s=self.now)
        self.prescribe_today(titer, f"day {today.day} (late titer)")
        self.clear_alarms("titer received", {AlarmCode.TITER_LATE.value})
        if self.s.channel is ChannelState.AWAITING_TITER:
            self.set_state(ChannelState.STARTING, "titer received")

    def emit_day_close(self, day: CourseDay) -> None:
        self.emit(
            "day_close",
            day=day.day,
            prescribed_ml=day.prescribed_ml or 0.0,
            delivered_ml=day.delivered_ml,
            delivered_max_ml=day.delivered_max_ml,
            estimated_ml=day.estimated_ml,
            totalizer_distrusted=day.totalizer_distrusted,
            shortfall_ml=day.shortfall_ml,
            notes=list(day.notes),
        )

    def course_over_after(self, number: int) -> str | None:
        order = self.s.order
        assert order is not None
        if number >= course_days_max(order.arm):
            return f"day {number} was the last of the course"
        if order.arm is Arm.TITER and self.s.vasopressors_withdrawn_at_s is not None:
            return "vasopressors withdrawn"
        return None

    def complete(self, reason: str) -> None:
        self.stop_pump("course complete")
        self.s = replace(self.s, completed_reason=reason)
        self.set_state(ChannelState.COMPLETED, reason)

    def roll_days(self, status: PumpStatus) -> bool:
        """Close a day whose window is over and open the next; False: look again first."""
        today = self.s.today
        if today is None or today.closed:
            return True
        window = today.window
        if window is None or not window.over(self.now):
            return True
        if status.state is PumpState.INFUSING:
            self.stop_pump(f"day {today.day} window ends")
            return False  # account the last drop on a stopped pump, then close
        prescribed = today.prescribed_ml
        notes = today.notes if prescribed is not None else (*today.notes, "no titer: not given")
        if today.totalizer_distrusted:
            low, high = sorted((today.delivered_ml, today.estimated_ml))
            notes = (
                *notes,
                f"totalizer implausible: by its two counts the pump gave between {_two(low)} and "
                f"{_two(high)} mL (totalizer {_two(today.delivered_ml)}, read-back rate over time "
                f"{_two(today.estimated_ml)}); the day was bounded by the larger",
            )
        closed = replace(
            today,
            closed=True,
            shortfall_ml=shortfall_ml(prescribed or 0.0, today.delivered_ml),
            notes=notes,
        )
        self.put_today(closed)
        self.emit_day_close(closed)
        over = self.course_over_after(today.day)
        if over is not None:
            self.complete(over)
            return False
        self.emit("command", command="clear_totals", reason="new day window")
        self.effects.append(ClearTotals())
        self.put_link(totals_clear_pending=True)
        if self.s.channel in (
            ChannelState.INFUSING,
            ChannelState.DAY_COMPLETE,
            ChannelState.AWAITING_TITER,
        ):
            self.set_state(ChannelState.STARTING, f"day {today.day + 1} begins")
        self.open_day(today.day + 1, window.end_s)
        return False

    # -- driving the pump --------------------------------------------------------------------

    def drive(self, status: PumpStatus) -> None:
        today = self.s.today
        assert today is not None
        if today.prescription is None:
            if status.state is PumpState.INFUSING:
                self.stop_pump("no titer for today yet")
            self.set_state(ChannelState.AWAITING_TITER, f"day {today.day} waits for its titer")
            return
        remaining = shortfall_ml(today.prescription.volume_ml, today.upper_bound_ml)
        vtbi_complete = PumpAlarm.VTBI_COMPLETE in status.alarms or self.volume_reached
        clear_advisories = bool(status.alarms) and not (status.alarms & STOPPING_ALARMS)
        if vtbi_complete and self.s.commanded is None:
            # Left over from a VTBI this day never set (yesterday's, or before a re-plan).
            if clear_advisories:
                self.clear_pump_alarms()
            vtbi_complete = False
        if remaining <= VOLUME_EPSILON_ML or vtbi_complete:
            if self.s.channel is not ChannelState.DAY_COMPLETE:
                if status.state is PumpState.INFUSING:
                    self.stop_pump("day's volume delivered")
                if clear_advisories:
                    self.clear_pump_alarms()
                self.set_state(
                    ChannelState.DAY_COMPLETE,
                    f"day {today.day}: {_two(today.delivered_ml)} mL delivered",
                )
            return
        if self.s.channel is ChannelState.DAY_COMPLETE:
            self.set_state(ChannelState.STARTING, f"day {today.day}: more to give")
        assert today.window is not None
        window_left_s = today.window.remaining_s(self.now)
        limit = self.ceiling()
        pump_max = self.s.link.pump_max_rate_ml_per_h
        if pump_max is not None:
            limit = min(limit, pump_max)
        plan = plan_rate(
            remaining_volume_ml=remaining, remaining_time_s=window_left_s, ceiling_ml_per_h=limit
        )
        if plan.projected_shortfall_ml > SHORTFALL_ALARM_ML:
            self.raise_alarm(
                AlarmCode.PROJECTED_SHORTFALL.value,
                f"day {today.day}: {_two(plan.projected_shortfall_ml)} mL cannot be given by the "
                f"window's end at {_two(limit)} mL/h",
                stop=False,
            )
        if plan.rate_ml_per_h <= 0.0:
            return
        commanded = self.s.commanded
        settled = window_left_s < REPLAN_QUIET_S
        # Two steps of the totalizer's display spread over what is left of the window: a plan
        # that moves by less is the display's truncation, not a change in delivery (late in a
        # day, with 0.1-mL steps, it made the rate flip every poll).
        display_noise_ml_per_h = (
            2 * self.s.link.last_volume_resolution_ml * SECONDS_PER_HOUR / max(window_left_s, 1.0)
        )
        needs_command = (
            commanded is None
            or self.s.replan
            or (
                not settled
                and abs(plan.rate_ml_per_h - commanded.rate_ml_per_h)
                > max(
                    2 * self.s.link.rate_resolution_ml_per_h,
                    REPLAN_FRACTION * commanded.rate_ml_per_h,
                    display_noise_ml_per_h,
                )
            )
        )
        if status.state is not PumpState.INFUSING:
            if self.programmed and not needs_command:
                if self.s.link.watchdog_held_s is None:
                    self.raise_alarm(
                        AlarmCode.WATCHDOG_UNCONFIRMED.value,
                        "no confirmed communication watchdog on this connection: no start",
                    )
                    return
                self.emit("command", command="start")
                self.effects.append(StartPump())
                self.set_state(
                    ChannelState.INFUSING,
                    f"{self.s.commanded.rate_ml_per_h if self.s.commanded else 0} mL/h, "
                    f"{_two(remaining)} mL left today",
                )
                return
            self.program(plan.rate_ml_per_h, remaining, plan.projected_shortfall_ml, status)
            return
        if needs_command:
            self.program(plan.rate_ml_per_h, remaining, plan.projected_shortfall_ml, status)
            return
        if self.s.channel is ChannelState.STARTING:
            self.set_state(ChannelState.INFUSING, "pump infusing at the commanded rate")

    def program(
        self,
        rate_ml_per_h: float,
        remaining_ml: float,
        shortfall_ml: float,
        status: PumpStatus,
    ) -> None:
        """Through the one safety check, or an alarm."""
        order = self.s.order
        assert order is not None
        assert self.s.weight_kg is not None
        try:
            approved = check_rate(
                rate_ml_per_h,
                weight_kg=self.s.weight_kg,
                ceiling_ml_per_kg_per_h=order.ceiling_ml_per_kg_per_h,
                concentration_mg_per_ml=order.concentration_mg_per_ml,
                pump_max_rate_ml_per_h=self.s.link.pump_max_rate_ml_per_h,
            )
        except (RateRefusedError, InputError) as exc:
            self.emit("command_refused", rate_ml_per_h=rate_ml_per_h, reason=str(exc))
            self.raise_alarm(AlarmCode.SAFETY_REFUSED.value, str(exc))
            return
        running = status.state is PumpState.INFUSING
        basis = status.volume_infused_ml if running else None
        vtbi_ml = remaining_ml
        if running and status.vtbi_remaining_ml is not None:
            # Never re-send a VTBI upward: the pump's own count may know better than ours.
            vtbi_ml = min(vtbi_ml, status.vtbi_remaining_ml)
            if vtbi_ml < VOLUME_EPSILON_ML:
                return  # the pump finishes the day by itself
        self.emit(
            "command",
            command="set_rate",
            rate_ml_per_h=approved.rate_ml_per_h,
            vtbi_ml=vtbi_ml,
            ceiling_ml_per_h=approved.ceiling_ml_per_h,
            projected_shortfall_ml=shortfall_ml,
        )
        self.effects.append(ProgramRate(approved, vtbi_ml, basis_totalizer_ml=basis))

    def clear_pump_alarms(self) -> None:
        if not any(isinstance(e, ClearPumpAlarms) for e in self.effects):
            self.effects.append(ClearPumpAlarms())

    # -- alarms, acknowledgements and recovery (invariants 5 and 6) ---------------------------

    def hold_stopped(self, status: PumpStatus) -> None:
        """In alarm or stopped: keep the pump stopped; resume only on an acknowledgement."""
        stopping = any(isinstance(e, StopPump) for e in self.effects)
        if status.state is PumpState.INFUSING and not stopping:  # (a stop is already on its way)
            self.raise_alarm(
                AlarmCode.STATE_MISMATCH.value,
                f"pump was infusing while the channel was {self.s.channel.value}",
            )
        if self.s.resume_requested:
            # Clear the pump's alarms first, then look again (next round) before resuming.
            self.s = replace(self.s, resume_requested=False, ack_phase=AckPhase.CLEARING)
            if self.s.link.watchdog_held_s is None:
                # The pump did not take its watchdog: try again before anything starts.
                self.put_link(armed_connection=None)
            self.clear_pump_alarms()
            return
        if self.s.ack_phase is AckPhase.CLEARED:
            self.s = replace(self.s, ack_phase=None)
            self.resume_after_ack(status)

    def resume_after_ack(self, status: PumpStatus) -> None:
        still = {a for a in status.alarms if a in STOPPING_ALARMS}
        if still:
            self.emit("ack_not_effective", pump_alarms=sorted(a.value for a in still))
            return
        self.clear_alarms("acknowledged by operator")
        self.s = replace(self.s, commanded=None)
        if self.s.order is None:
            self.set_state(ChannelState.AWAITING_ORDER, "acknowledged; no order yet")
            return
        self.set_state(ChannelState.STARTING, "resumed after acknowledgement")
        if self.s.course_start_s is None:
            self.s = replace(self.s, pump_history_accepted=True)
            if not self.begin_course(status):
                return
        today = self.s.today
        if today is not None and today.prescription is None and not today.closed:
            self.try_open_waiting_day()
        self.drive(status)

    def outage(
        self,
        status: PumpStatus,
        lost_since_s: float,
        previous_uptime_s: float | None,
        monotonic_span: tuple[float | None, float | None] = (None, None),
    ) -> tuple[float, str | None]:
        """How long the link was lost, and why that length is not to be trusted (or None).

        The wall clock says one thing, the pump's own uptime (where the protocol has it)
        another: the longer counts, and a disagreement, a clock that went back or a pump that
        restarted make the outage unknown, never zero.
        """
        unknown = None
        then_mono, now_mono = monotonic_span
        if then_mono is not None and now_mono is not None and now_mono >= then_mono:
            # Same process: the monotonic clock measures the outage; a wall step cannot
            # shorten it (the executor reports the step itself as clock_step).
            gap_s = now_mono - then_mono
        else:
            # Across a restart only the wall clock spans the outage: one that went back
            # makes the length unknown, never zero.
            wall_gap_s = self.now - lost_since_s
            if wall_gap_s < 0.0:
                unknown = f"the wall clock went back {-wall_gap_s:.0f} s during the outage"
            gap_s = max(wall_gap_s, 0.0)
        if status.uptime_s is not None and previous_uptime_s is not None:
            pump_gap_s = status.uptime_s - previous_uptime_s
            allowed_s = max(UPTIME_AGREEMENT_S, UPTIME_AGREEMENT_FRACTION * max(pump_gap_s, gap_s))
            if pump_gap_s < 0.0:
                unknown = unknown or "the pump restarted during the outage (its uptime went back)"
            elif abs(pump_gap_s - gap_s) > allowed_s:
                unknown = unknown or (
                    f"the outage lasted {gap_s:.0f} s by the wall clock but {pump_gap_s:.0f} s "
                    "by the pump's own uptime"
                )
            gap_s = max(gap_s, pump_gap_s)
        return gap_s, unknown

    def recover(
        self,
        status: PumpStatus,
        previous_poll_s: float | None,
        previous_uptime_s: float | None = None,
        now_monotonic_s: float | None = None,
    ) -> None:
        """First good reading after silence or a restart: reconcile, then resume or wait."""
        lost_since = self.s.lost_since_s or previous_poll_s or self.now
        uptime_then = (
            self.s.lost_since_uptime_s
            if self.s.lost_since_uptime_s is not None
            else previous_uptime_s
        )
        # Only a loss seen by this process has a monotonic start (a restart clears it).
        then_mono = self.s.lost_since_monotonic_s
        gap_s, unknown = self.outage(status, lost_since, uptime_then, (then_mono, now_monotonic_s))
        before = self.s.state_before_loss or self.s.channel
        today = self.s.today
        self.emit(
            "reconciled",
            gap_s=gap_s,
            outage_unknown=unknown,
            pump_state=status.state.value,
            totalizer_ml=status.volume_infused_ml,
            delivered_ml=today.delivered_ml if today else 0.0,
            state_before=before.value,
            restarted=self.s.restarted,
        )
        if before is ChannelState.LINK_LOST:
            before = ChannelState.INFUSING
        self.s = replace(
            self.s,
            recovering=False,
            restarted=False,
            lost_since_s=None,
            lost_since_uptime_s=None,
            lost_since_monotonic_s=None,
            state_before_loss=None,
        )
        raised = self.s.alarms_that_stop()
        if raised and before is not ChannelState.ALARM:
            # A stopping alarm raised on this very reading (a pump that does not hold its
            # watchdog on the new connection): it holds the channel, whatever the outage was.
            self.clear_alarms("link restored", {AlarmCode.PUMP_SILENT.value})
            self.set_state(ChannelState.ALARM, raised[0].code)
            return
        if self.s.channel is not before:
            self.set_state(before, "link restored")
        if self.s.course_start_s is None and not self.s.alarms_that_stop():
            # Nothing was running yet: nothing to resume.  Carry on as on any reading.
            self.clear_alarms(
                "link restored before the course started", {AlarmCode.PUMP_SILENT.value}
            )
            if (
                self.s.channel is ChannelState.STARTING
                and self.verify(status)
                and self.begin_course(status)
            ):
                self.drive(status)
            return
        others = {a for a in status.alarms if a in STOPPING_ALARMS} - AUTO_RESUMABLE_PUMP_ALARMS
        was_running = before in (ChannelState.INFUSING, ChannelState.STARTING)
        if others or not was_running:
            if not was_running:
                self.clear_alarms(
                    "link restored; nothing was running", {AlarmCode.PUMP_SILENT.value}
                )
                if not others and status.alarms & AUTO_RESUMABLE_PUMP_ALARMS:
                    # The pump's watchdog tripped on a stopped pump: nothing to hold.
                    self.clear_pump_alarms()
            if others or (status.state is PumpState.INFUSING and not was_running):
                self.verify(status)  # raises the pump alarms / state mismatch, stops the pump
            return
        rules = self.rules
        used = today.auto_resumes if today else 0
        if (
            unknown is None
            and rules.auto_resume_enabled
            and gap_s <= rules.auto_resume_max_gap_s
            and used < rules.auto_resume_max_per_day
        ):
            if today is not None:
                self.put_today(replace(today, auto_resumes=used + 1))
            self.emit(
                "auto_resume",
                gap_s=gap_s,
                count_today=used + 1,
                max_per_day=rules.auto_resume_max_per_day,
            )
            self.clear_alarms("auto-resume after a short link drop", {AlarmCode.PUMP_SILENT.value})
            self.s = replace(self.s, commanded=None)
            if self.s.channel is ChannelState.INFUSING and status.state is not PumpState.INFUSING:
                self.set_state(ChannelState.STARTING, "auto-resume")
            if status.alarms & AUTO_RESUMABLE_PUMP_ALARMS:
                self.clear_pump_alarms()
                return  # look again at a pump whose alarm is cleared, then drive
            if self.s.course_start_s is not None and not self.roll_days(status):
                return
            if self.verify(status):
                self.drive(status)
            return
        self.raise_alarm(
            AlarmCode.OUTAGE_NEEDS_ACK.value,
            f"silent {gap_s:.0f} s"
            + (f" ({unknown})" if unknown else "")
            + "; resume needs an operator acknowledgement",
        )
