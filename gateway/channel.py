"""One channel: the thin executor around the course controller (docs/design.md).

Each :meth:`Channel.step` is one control cycle::

    poll -> decide -> journal events + new state (one transaction) -> perform effects
         -> poll again with their outcomes -> decide -> ... (until no effects)

All decisions are made by :func:`gateway.controller.decide`, a pure function; this module only
talks to the pump driver, the journal and the clock.  The ``submit_*`` methods are called from
API threads: they check the request (:mod:`gateway.intake`), journal it as received and queue
it for the next cycle, never touching the pump.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import structlog

from drivers.base import PumpDriver
from drivers.errors import DriverError
from drivers.status import PumpStatus
from gateway.config import ChannelConfig, ControlConfig, OrderConfig, course_rules
from gateway.controller import Decision, decide
from gateway.course_inputs import (
    AckInput,
    ClockStepInput,
    Input,
    ShutdownInput,
    StopInput,
    VasopressorsWithdrawnInput,
)
from gateway.course_state import (
    AlarmCode,
    ChannelState,
    CourseState,
    StateError,
    StateText,
    load_state,
)
from gateway.dosing import Arm
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
from gateway.errors import ConfigError, GatewayError
from gateway.intake import order_differences, order_input, titer_input, weight_input
from gateway.journal import DayRecord, Journal, JournalError
from gateway.planner import SECONDS_PER_HOUR
from gateway.rules import MAX_ROUNDS_PER_CYCLE, VOLUME_EPSILON_ML, CourseRules
from gateway.status_view import PastDays, channel_gauges, channel_view
from protocol.clock import Clock
from protocol.pump_state import PumpState

log = structlog.get_logger("gateway.channel")

__all__ = ["AlarmCode", "Channel", "ChannelBusyError", "ChannelState"]


class ChannelBusyError(GatewayError):
    """The channel cannot take this input in its present state (the API answers 409)."""


def restarted(state: CourseState) -> CourseState:
    """The state a new process starts from: reconcile with the pump before anything else."""
    running = state.channel is not ChannelState.COMPLETED and state.order is not None
    return replace(
        state,
        recovering=running,
        restarted=True,
        # The outage began at the last good poll of the process that wrote this state.
        lost_since_s=state.lost_since_s or state.link.last_good_poll_s,
        lost_since_uptime_s=(
            state.lost_since_uptime_s
            if state.lost_since_s is not None
            else state.link.last_uptime_s
        ),
        # Another process: the monotonic clock of the one that wrote this means nothing here.
        lost_since_monotonic_s=None,
        # A quiet period after a failed stop was timed on that clock too: it is over, and the
        # pump is looked at again (a stop that still fails starts a new one).
        link=replace(
            state.link,
            armed_connection=None,
            last_good_poll_monotonic_s=None,
            quiet_until_s=None,
        ),
    )


@dataclass(frozen=True)
class _Published:
    """What one control cycle left for the channel's status: immutable, so any thread may
    build the status from it while the next cycle runs."""

    course: CourseState
    status: PumpStatus | None
    wall_s: float
    journal_failed: str | None


def _day_records(old: CourseState | None, new: CourseState) -> list[DayRecord]:
    """The journal's day rows that changed between two states."""
    before = {d.day: d for d in old.days} if old is not None else {}
    rows = []
    for day in new.days:
        old_day = before.get(day.day)
        if old_day is day or old_day == day:  # a past day is the same object: no compare
            continue
        prescription = day.prescription
        rows.append(
            DayRecord(
                day=day.day,
                window_start_wall_s=(
                    day.window_start_s if day.window_start_s is not None else day.nominal_start_s
                ),
                prescribed_ml=0.0 if prescription is None else prescription.volume_ml,
                delivered_ml=day.delivered_ml,
                closed=day.closed,
                detail={
                    "awaiting_titer": prescription is None and not day.closed,
                    "dose_mg_per_kg": None if prescription is None else prescription.dose_mg_per_kg,
                    "titer_seq": None if prescription is None else prescription.titer_seq,
                    "delivered_max_ml": day.delivered_max_ml,
                    "estimated_ml": day.estimated_ml,
                    "totalizer_distrusted": day.totalizer_distrusted,
                    "shortfall_ml": day.shortfall_ml,
                    "late_titer_policy": day.late_titer_policy,
                    "notes": [*(prescription.notes if prescription else ()), *day.notes],
                },
            )
        )
    return rows


class Channel:
    """A course on one pump.  ``step()`` from one thread; the ``submit_*`` methods from any."""

    def __init__(
        self,
        config: ChannelConfig,
        driver: PumpDriver,
        journal: Journal,
        clock: Clock,
        control: ControlConfig,
        *,
        pump_watchdog_s: float | None = None,
        poll_interval_s: float | None = None,
        adopt_config_order: bool = False,
    ) -> None:
        self.id = config.id
        self.config = config
        self.driver = driver
        self.journal = journal
        self.clock = clock
        self.control = control
        self.pump_watchdog_s = pump_watchdog_s or control.pump_watchdog_s
        self.poll_interval_s = poll_interval_s or control.poll_interval_s
        self._last_clocks: tuple[float, float] | None = None
        self._journal_failed: str | None = None
        self.rules: CourseRules = course_rules(control, self.pump_watchdog_s)
        self._inbox: queue.SimpleQueue[Input] = queue.SimpleQueue()
        self._submit_lock = threading.Lock()
        self._log = log.bind(channel=self.id)
        self._link_id = uuid.uuid4().hex[:12]
        self._links = 0
        self._connection: str | None = None
        self._last_status: PumpStatus | None = None
        self._published = _Published(CourseState(), None, clock.wall(), None)
        self._snapshot: tuple[_Published, dict[str, Any]] | None = None
        self._past_days = PastDays()
        self._state_text = StateText()
        stored = journal.channel_state(self.id)
        #: The state as the journal last stored it (the day rows are written as changes to it).
        self._journalled: CourseState | None = None
        if stored is not None:
            try:
                loaded = load_state(stored)
            except StateError as exc:  # named where it was read: a person opens that file
                raise StateError(f"{journal.path}: channel {self.id}: {exc}") from None
            self.course = restarted(loaded)
            self._journalled = self.course
            order = config.order()
            if order is not None:
                self._reconcile_config_order(order, adopt=adopt_config_order)
        else:
            self.course = CourseState()
            first: list[Input] = []
            order = config.order()
            if order is not None:
                first.append(self._order_input(order))
            self._commit(
                decide(self.course, None, first, clock.wall(), self.rules),
                extra=[("channel_created", {"pump": config.pump})],
                first=True,
            )
        self._publish()

    # -- inputs (from any thread) -------------------------------------------------------------

    @property
    def state(self) -> ChannelState:
        return self.course.channel

    def _order_input(self, order: OrderConfig) -> Input:
        return order_input(
            arm=order.arm,
            weight_kg=order.weight_kg,
            igm_mg_dl=order.igm_mg_dl,
            hematocrit=order.hematocrit,
            ceiling_ml_per_kg_per_h=order.ceiling_ml_per_kg_per_h,
            product=order.product.to_product(),
            randomised_at_s=order.randomised_at_s,
            start_override_reason=order.start_override_reason,
            titer_measured_at_s=order.titer_measured_at_s,
            confirm=order.confirm,
            now_s=self.clock.wall(),
            rules=self.rules,
        )

    def _reconcile_config_order(self, config_order: OrderConfig, *, adopt: bool) -> None:
        """The journal owns the course: a config order that says otherwise is refused, unless
        the operator adopts it (only a weight can be adopted: it is a correction)."""
        journal_order = self.course.order
        if journal_order is None:
            return
        differences = order_differences(config_order, self.course)
        if not differences:
            return
        adoptable = {"weight_kg"}
        fixed = [d for d in differences if d[0] not in adoptable]
        text = "; ".join(
            f"{name} {mine!r} (config) vs {theirs!r} (journal)"
            for name, mine, theirs in differences
        )
        if fixed or not adopt:
            how = (
                "a different arm, product, ceiling or randomisation time is a new course: give it "
                "a new channel id"
                if fixed
                else "send a weight correction (infusion-gateway weight) or start with "
                "run --adopt-config-order"
            )
            raise ConfigError(
                f"config channel {self.id} differs from its journal: {text}; the journal's "
                f"course stands ({how})"
            )
        item = replace(
            weight_input(
                weight_kg=config_order.weight_kg,
                reason="adopted from the config at start (run --adopt-config-order)",
                confirm=True,
                state=self.course,
            ),
            from_config=True,
        )
        self._commit(
            decide(self.course, None, [item], self.clock.wall(), self.rules),
            extra=[("config_order_adopted", {"differences": text})],
        )

    def submit_order(self, order: OrderConfig) -> str:
        """A new order for a channel waiting for one; ChannelBusyError otherwise."""
        with self._submit_lock:
            if self.state is not ChannelState.AWAITING_ORDER:
                raise ChannelBusyError(
                    f"channel {self.id} is {self.state.value}: an order is taken only while it "
                    f"is {ChannelState.AWAITING_ORDER.value}"
                )
            item = self._order_input(order)
            self._receive("order", {"order": order.model_dump(mode="json")}, item)
        return "order accepted: the course starts in the next control cycle"

    def submit_titer(
        self,
        igm_mg_dl: float,
        hematocrit: float,
        measured_at_s: float,
        *,
        confirm: bool = False,
        corrects_day: int | None = None,
    ) -> str:
        """A titer drawn at ``measured_at_s``; checked here, applied next cycle."""
        with self._submit_lock:
            item = titer_input(
                igm_mg_dl=igm_mg_dl,
                hematocrit=hematocrit,
                measured_at_s=measured_at_s,
                confirm=confirm,
                corrects_day=corrects_day,
                state=self.course,
                now_s=self.clock.wall(),
            )
            self._receive(
                "titer",
                {
                    "igm_mg_dl": item.igm_mg_dl,
                    "hematocrit": item.hematocrit,
                    "measured_at_s": item.measured_at_s,
                    "corrects_day": corrects_day,
                    "confirmed_note": item.confirmed_note,
                },
                item,
            )
        if corrects_day is not None:
            return f"titer accepted as the corrected titer of day {corrects_day}"
        today = self.course.today
        if today is not None and today.prescription is None and not today.closed:
            return f"titer accepted for day {today.day}, which is waiting for it"
        return "titer accepted: it is used by the next day whose window opens within the age limit"

    def submit_weight(self, weight_kg: float, reason: str = "", *, confirm: bool = False) -> str:
        with self._submit_lock:
            if self.course.order is None:
                raise ChannelBusyError(
                    f"channel {self.id} has no order yet: a weight comes with the order"
                )
            item = weight_input(
                weight_kg=weight_kg, reason=reason, confirm=confirm, state=self.course
            )
            self._receive(
                "weight",
                {
                    "weight_kg": item.weight_kg,
                    "reason": reason,
                    "confirmed_note": item.confirmed_note,
                },
                item,
            )
        return "weight accepted: today's dose and the ceiling are recomputed"

    def submit_vasopressors_withdrawn(self) -> str:
        item = VasopressorsWithdrawnInput(self.clock.wall())
        self._receive("vasopressors", {"withdrawn_wall_s": item.at_s}, item)
        order = self.course.order
        if order is not None and order.arm is Arm.FLAT:
            return (
                "recorded; the flat arm is not shortened by vasopressor withdrawal: "
                "it always runs its 3 days"
            )
        return "recorded: the titer arm ends after the current day"

    def submit_ack(self, operator: str, note: str = "") -> str:
        self._receive("ack", {"operator": operator, "note": note}, AckInput(operator, note))
        return "acknowledged: the channel resumes if the pump no longer reports the condition"

    def submit_stop(self, operator: str, reason: str = "") -> str:
        self._receive("stop", {"operator": operator, "reason": reason}, StopInput(operator, reason))
        return "stop accepted: the pump is stopped in the next control cycle"

    def _receive(self, kind: str, payload: dict[str, Any], item: Input) -> None:
        """Journal an input on arrival (``<kind>_received``), then queue it for the next cycle."""
        self.journal.record(
            self.id,
            f"{kind}_received",
            payload,
            wall_s=self.clock.wall(),
            monotonic_s=self.clock.monotonic(),
        )
        self._log.info(f"{kind}_received", **payload)
        self._inbox.put(item)

    def _drain(self) -> list[Input]:
        items: list[Input] = []
        while True:
            try:
                items.append(self._inbox.get_nowait())
            except queue.Empty:
                return items

    # -- the control cycle --------------------------------------------------------------------

    def step(self) -> None:
        """One control cycle.  Never raises for a pump problem: the controller alarms instead.

        A journal that cannot be written raises :class:`JournalError` after the pump was told
        to stop: nothing may be done that cannot be recorded (the daemon's cycle fails, and
        readiness with it).
        """
        try:
            self._step()
        except JournalError as exc:
            self._journal_failed = str(exc)
            self._log.error("journal_failed", error=str(exc))
            with contextlib.suppress(DriverError):
                self.driver.stop()
            raise
        finally:
            self._publish()

    def _clock_step_s(self) -> float | None:
        """How far the wall clock moved against the monotonic clock since the last cycle, if
        more than two poll intervals (else None)."""
        wall, mono = self.clock.wall(), self.clock.monotonic()
        last, self._last_clocks = self._last_clocks, (wall, mono)
        if last is None:
            return None
        step_s = (wall - last[0]) - (mono - last[1])
        return step_s if abs(step_s) > 2.0 * self.poll_interval_s else None

    def _step(self) -> None:
        inputs: list[Input] = self._drain()
        step_s = self._clock_step_s()
        if step_s is not None:
            inputs.append(ClockStepInput(step_s))
        quiet_until = self.course.link.quiet_until_s
        if quiet_until is not None and self.clock.monotonic() < quiet_until:
            # After a failed stop: no traffic at all, so the pump's own watchdog stops it.
            decision = decide(self.course, None, inputs, self.clock.wall(), self.rules)
            self._commit(decision)
            return
        observation: Observation = self._observe(())
        for _ in range(MAX_ROUNDS_PER_CYCLE):
            decision = decide(self.course, observation, inputs, self.clock.wall(), self.rules)
            inputs = []
            self._commit(decision)
            if not decision.effects:
                return
            observation = self._observe(self._perform(decision.effects))
        # Still acting after every round: something is wrong.  Stop, say so, go on next cycle.
        self._log.error("cycle_rounds_exhausted", rounds=MAX_ROUNDS_PER_CYCLE)
        self.journal.record(
            self.id,
            "cycle_rounds_exhausted",
            {"rounds": MAX_ROUNDS_PER_CYCLE},
            wall_s=self.clock.wall(),
            monotonic_s=self.clock.monotonic(),
        )
        self._perform((StopPump("control cycle did not settle"),))

    def _observe(self, outcomes: Sequence[Outcome]) -> Observation:
        try:
            if self._connection is None or not self.driver.connected:
                self.driver.open()
                self._links += 1
                self._connection = f"{self._link_id}-{self._links}"
            status = self.driver.read_status()
        except DriverError as exc:
            self._connection = None
            return Silence(
                f"{type(exc).__name__}: {exc}", tuple(outcomes), monotonic_s=self.clock.monotonic()
            )
        self._last_status = status
        return PumpReading(
            status,
            self.driver.identity,
            self._connection,
            tuple(outcomes),
            monotonic_s=self.clock.monotonic(),
        )

    def _perform(self, effects: Sequence[Effect]) -> tuple[Outcome, ...]:
        outcomes: list[Outcome] = []
        for effect in effects:
            try:
                outcomes.append(self._perform_one(effect))
            except DriverError as exc:
                outcomes.append(Failed(effect, f"{type(exc).__name__}: {exc}"))
                self._log.warning("effect_failed", effect=type(effect).__name__, error=str(exc))
        return tuple(outcomes)

    def _perform_one(self, effect: Effect) -> Outcome:
        driver = self.driver
        match effect:
            case StopPump():
                driver.stop()
            case ProgramRate(approved=approved, vtbi_ml=vtbi_ml, basis_totalizer_ml=basis):
                if basis is not None:
                    # Mechanics, not a decision: what the running pump gave since the reading
                    # the VTBI was computed from comes off the VTBI (never onto it) ...
                    asked_s = self.clock.monotonic()
                    now = driver.read_status()
                    round_trip_s = self.clock.monotonic() - asked_s
                    vtbi_ml -= max(now.volume_infused_ml - basis, 0.0)
                    # ... and so does what it gives until the VTBI reaches it (a pump counts a
                    # VTBI from when it gets it): one more round trip at its rate, an upper
                    # estimate (nanolitres at 1x; at a HIL rig's 2400x, thousandths of a mL).
                    if now.state is PumpState.INFUSING:
                        vtbi_ml -= now.rate_ml_per_h * round_trip_s / SECONDS_PER_HOUR
                    if vtbi_ml < VOLUME_EPSILON_ML:
                        driver.stop()
                        return VolumeReached(effect, now.volume_infused_ml)
                held_ml = driver.set_vtbi(vtbi_ml)
                return RateProgrammed(effect, driver.set_rate(approved), held_ml)
            case StartPump():
                driver.start()
            case ClearTotals():
                driver.clear_totals()
            case ClearPumpAlarms():
                driver.clear_alarms()
            case ArmWatchdog(timeout_s=timeout_s):
                return WatchdogArmed(effect, driver.arm_watchdog(timeout_s))
        return Done(effect)

    def _commit(
        self,
        decision: Decision,
        *,
        extra: Sequence[tuple[str, dict[str, Any]]] = (),
        first: bool = False,
    ) -> None:
        """Write first, act after: the decision's events and state in one transaction.

        A decision with no event and no effect (a reading that changed nothing the journal
        shows, between checkpoints) writes nothing: there is nothing to act on, and what it
        changed (the running totals) is journalled with the next event or checkpoint, at most
        ``readback_checkpoint_s`` later.  A restart from that state reconciles with the pump's
        totalizer as after any outage, and estimates high where it cannot read it.
        """
        events = [*extra, *((e.kind, e.payload) for e in decision.events)]
        if not events and not decision.effects and not first:
            self.course = decision.state
            return
        self.journal.commit(
            self.id,
            events,
            state=self._state_text.encode(decision.state),
            days=_day_records(None if first else self._journalled, decision.state),
            wall_s=self.clock.wall(),
            monotonic_s=self.clock.monotonic(),
            # A checkpoint (a reading and nothing decided on it) is fsynced with the next
            # durable write: nothing is done on it, so "write first, act after" is not at stake.
            durable=bool(decision.effects) or any(kind != "readback" for kind, _ in events),
        )
        self.course = self._journalled = decision.state
        for kind, payload in events:
            self._log.info(kind, **payload)

    # -- shutdown and status ------------------------------------------------------------------

    def shutdown(self, reason: str) -> None:
        """Orderly stop (SIGTERM): stop a running pump, journal it, release the port."""
        decision = decide(self.course, None, [ShutdownInput(reason)], self.clock.wall(), self.rules)
        self._commit(decision)
        self._perform(decision.effects)
        self.driver.close()
        self._publish()

    def _publish(self) -> None:
        """Make what the cycle left the channel's status; the JSON is built when asked for."""
        self._published = _Published(
            self.course, self._last_status, self.clock.wall(), self._journal_failed
        )

    def snapshot(self) -> dict[str, Any]:
        """The channel's status as JSON-ready data (thread-safe: built from an immutable
        record of the last cycle, once per cycle however often it is asked for)."""
        published = self._published
        cached = self._snapshot
        if cached is None or cached[0] is not published:
            cached = (published, self._view_of(published))
            self._snapshot = cached
        return dict(cached[1])

    def gauges(self) -> dict[str, Any]:
        """What the metrics read of :meth:`snapshot` (its keys and values; ``days``: today's
        only), without building the whole status every cycle."""
        published = self._published
        gauges = channel_gauges(channel_id=self.id, state=published.course, now_s=published.wall_s)
        return self._unless_journal_failed(gauges, published)

    def _view_of(self, published: _Published) -> dict[str, Any]:
        view = channel_view(
            channel_id=self.id,
            pump_url=self.config.pump,
            state=published.course,
            status=published.status,
            now_s=published.wall_s,
            past_days=self._past_days,
        ).to_json(self._past_days)
        return self._unless_journal_failed(view, published)

    @staticmethod
    def _unless_journal_failed(view: dict[str, Any], published: _Published) -> dict[str, Any]:
        if published.journal_failed is not None:
            # Nothing after the failure was recorded: do not claim a state we cannot know.
            view["state"] = "unknown"
            view["alarms"] = [
                *view["alarms"],
                {
                    "code": "journal_failed",
                    "detail": f"{published.journal_failed}: the pump was told to stop",
                    "raised_wall_s": published.wall_s,
                    "stops": True,
                },
            ]
        return view
