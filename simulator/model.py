"""The protocol-independent software pump: physics on an injected clock, with fault injection.

The model is the *device*; the wire transports (NE-1000 over a pty or TCP, Modbus TCP/RTU) are the
*sessions* that carry it (the pyvisa-sim split).  Like hardware, the model enforces its own limits:
a rate above its own maximum is refused, not clamped.

**Time is lazy and exact.**  Nothing runs in the background.  Every public method first calls
:meth:`PumpModel.advance`, which integrates up to ``clock.monotonic()`` and processes, in time
order, every event that fell due: the VTBI being reached, the reservoir emptying, the communication
watchdog expiring, and scheduled fault-script entries.  Each event happens at its exact simulated
time, even when ``advance`` is called once after a simulated week.  At the same instant the order
is: delivery end (VTBI / reservoir), then watchdog expiry, then script entries as written.

Volumes are integrated per segment (from the last start, rate change or event) as
``rate x elapsed``, so many small advances do not accumulate rounding error.

**Alarms.**  An alarm is *latched* until :meth:`PumpModel.clear_alarms`, which clears only those
whose condition is gone (an injected occlusion still present stays latched).  While any stopping
alarm (:data:`protocol.pump_state.STOPPING_ALARMS`) is latched the pump is stopped and reports
:attr:`PumpState.ALARM`; once they are cleared it reports STOPPED.  Nothing ever restarts the pump
except :meth:`PumpModel.start`.

**Lying-pump faults** (:data:`simulator.faults.LYING_FAULTS`: ``frozen_totalizer``,
``totalizer_jump``, ``watchdog_not_held``, ``stop_refused``, ``rate_echo_wrong``,
``uptime_frozen``) never change the truth.  :class:`PumpSnapshot` keeps the truth in its plain
fields and what the pump *reports* in its ``reported_*`` fields; the transports serve only the
reported ones.  Inject and clear them with :meth:`PumpModel.inject_fault` /
:meth:`PumpModel.clear_fault` (which take every :class:`FaultKind`) or from a fault script.

**Reset.**  :meth:`PumpModel.reset_to_power_on` makes the pump what it was when created, without
a new model (a test rig resets it between tests over the control API): everything but the lifetime
total, the uptime and the event log.  :meth:`PumpModel.clear_all_faults` ends every fault at once.

**Thread safety.**  One re-entrant lock guards the model and its :class:`LineFaults`; transports
may call any method from any thread.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
import threading
from collections import deque
from dataclasses import dataclass
from enum import StrEnum

from pydantic import ValidationError

from protocol.clock import Clock
from protocol.pump_state import STOPPING_ALARMS, PumpAlarm, PumpState
from simulator.errors import (
    FaultScriptError,
    InvalidFaultError,
    NotApplicableError,
    OutOfRangeError,
    RateRefusedError,
)
from simulator.faults import (
    LYING_FAULTS,
    FaultAction,
    FaultEntry,
    FaultKind,
    FaultScript,
    LineFaults,
)

__all__ = [
    "CONDITION_ALARMS",
    "EVENT_LOG_LENGTH",
    "INJECTABLE_ALARMS",
    "LYING_FAULTS",
    "EventKind",
    "FaultKind",
    "LineFaults",
    "ModelEvent",
    "PumpModel",
    "PumpSnapshot",
]

_SECONDS_PER_HOUR = 3600.0

#: Alarms that :meth:`PumpModel.inject` raises as a physical *condition*: present until
#: :meth:`PumpModel.clear_condition` (for RESERVOIR_EMPTY: until the reservoir holds liquid again).
CONDITION_ALARMS: frozenset[PumpAlarm] = frozenset(
    {
        PumpAlarm.OCCLUSION,
        PumpAlarm.AIR_IN_LINE,
        PumpAlarm.DOOR_OPEN,
        PumpAlarm.LOW_BATTERY,
        PumpAlarm.RESERVOIR_EMPTY,
    }
)

#: Alarms :meth:`PumpModel.inject` accepts: the conditions, and PROGRAM_ERROR as a one-shot alarm.
INJECTABLE_ALARMS: frozenset[PumpAlarm] = CONDITION_ALARMS | {PumpAlarm.PROGRAM_ERROR}

#: How many events :meth:`PumpModel.events` keeps (the oldest are dropped first).
EVENT_LOG_LENGTH: int = 10_000

_FAULT_ALARMS: dict[FaultKind, PumpAlarm] = {
    FaultKind.OCCLUSION: PumpAlarm.OCCLUSION,
    FaultKind.AIR_IN_LINE: PumpAlarm.AIR_IN_LINE,
    FaultKind.DOOR_OPEN: PumpAlarm.DOOR_OPEN,
    FaultKind.LOW_BATTERY: PumpAlarm.LOW_BATTERY,
    FaultKind.RESERVOIR_EMPTY: PumpAlarm.RESERVOIR_EMPTY,
    FaultKind.PROGRAM_ERROR: PumpAlarm.PROGRAM_ERROR,
}

# Order of events due at the same instant.
_PRIORITY_DELIVERY_END = 0
_PRIORITY_WATCHDOG = 1
_PRIORITY_SCRIPT = 2


@dataclass(frozen=True)
class PumpSnapshot:
    """The pump at one instant (``monotonic_s``): the truth, and what it reports (``reported_*``).

    Transports serve the ``reported_*`` fields; they differ from the truth only while a lying-pump
    fault (:data:`~simulator.faults.LYING_FAULTS`) is in force.
    """

    state: PumpState
    rate_setpoint_ml_per_h: float
    measured_rate_ml_per_h: float
    """The setpoint while infusing, else 0."""
    volume_infused_ml: float
    """Totalizer since the last :meth:`PumpModel.clear_totals`."""
    lifetime_volume_infused_ml: float
    """Ground truth since the model was created: never cleared, survives power loss."""
    vtbi_ml: float
    """Volume to be infused; 0 = continuous."""
    vtbi_remaining_ml: float
    """Volume left before the pump stops with VTBI_COMPLETE; 0 when continuous."""
    reservoir_remaining_ml: float
    alarms: frozenset[PumpAlarm]
    """Latched alarms."""
    max_rate_ml_per_h: float
    """The pump's own maximum rate; higher setpoints are refused."""
    watchdog_timeout_s: float
    """Communication watchdog timeout in force (and reported); 0 = off (always 0 while
    ``watchdog_not_held``)."""
    monotonic_s: float
    """Clock time of this snapshot, simulated seconds."""
    watchdog_requested_s: float
    """The timeout last requested with :meth:`PumpModel.set_watchdog` (0 = off); equals
    ``watchdog_timeout_s`` unless ``watchdog_not_held`` (an NE-1000 frames by it)."""
    uptime_s: float
    """Simulated seconds since the model was created (power loss does not reset it)."""
    reported_rate_setpoint_ml_per_h: float
    """The rate setpoint the pump reports: the setpoint, offset by ``rate_echo_wrong``."""
    reported_volume_infused_ml: float
    """The totalizer the pump reports: ``volume_infused_ml`` unless ``frozen_totalizer`` /
    ``totalizer_jump``."""
    reported_uptime_s: float
    """The uptime the pump reports: ``uptime_s`` unless ``uptime_frozen``."""


class EventKind(StrEnum):
    """What a :class:`ModelEvent` records."""

    ALARM = "alarm"  # an alarm was latched
    ALARM_CLEARED = "alarm_cleared"  # a latched alarm was cleared
    STATE = "state"  # the reported PumpState changed
    SCRIPT = "script"  # a fault-script entry was applied
    FAULT = "fault"  # a fault was injected or cleared with inject_fault / clear_fault
    RESET = "reset"  # reset_to_power_on: the pump as it was at power-on (lifetime total kept)


@dataclass(frozen=True)
class ModelEvent:
    """One entry of the model's event log, stamped with its exact simulated time."""

    seq: int
    """1, 2, 3, ... in the order the events happened."""
    monotonic_s: float
    kind: EventKind
    detail: str
    alarm: PumpAlarm | None = None
    state: PumpState | None = None
    """For STATE events: the new state."""


def _is_finite_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class PumpModel:
    """A software infusion pump.

    ``clock`` supplies simulated time; ``max_rate_ml_per_h`` is the pump's own ceiling (rates above
    it are refused); ``reservoir_ml`` is the reservoir (syringe/bag) capacity, full at creation;
    ``rng`` drives line faults (default: ``random.Random(0)``, so runs are reproducible).

    Creating the model is a power-up: the watchdog timer waits for the first valid packet.
    """

    def __init__(
        self,
        clock: Clock,
        *,
        max_rate_ml_per_h: float = 500.0,
        reservoir_ml: float = 1000.0,
        rng: random.Random | None = None,
    ) -> None:
        if not _is_finite_number(max_rate_ml_per_h) or max_rate_ml_per_h <= 0:
            raise OutOfRangeError(
                f"max_rate_ml_per_h must be a finite number > 0, got {max_rate_ml_per_h!r}"
            )
        if not _is_finite_number(reservoir_ml) or reservoir_ml < 0:
            raise OutOfRangeError(
                f"reservoir_ml must be a finite number >= 0, got {reservoir_ml!r}"
            )
        self._lock = threading.RLock()
        self._advancing = False
        #: The clock reading of the last whole advance, while nothing has changed since (None:
        #: the next look advances in full).
        self._settled_at: float | None = None
        self._clock = clock
        self._rng = rng if rng is not None else random.Random(0)
        self._max_rate = float(max_rate_ml_per_h)
        self._capacity = float(reservoir_ml)
        self._started = clock.monotonic()
        self._t = self._started

        # Settings.
        self._rate = 0.0
        self._nonvolatile_rate = 0.0  # last rate set while not pumping: what a power cycle restores
        self._vtbi = 0.0
        self._watchdog_timeout = 0.0
        self._last_packet: float | None = None  # None: timer waits for the first valid packet

        # Run state: STOPPED, INFUSING or PAUSED; ALARM is derived from the latched alarms.
        self._running = PumpState.STOPPED

        # Quantities at the start of the current segment (``_segment_start``); while infusing the
        # present values are these +/- rate x (t - _segment_start).
        self._segment_start = self._t
        self._volume = 0.0
        self._lifetime = 0.0
        self._vtbi_remaining = 0.0
        self._reservoir = self._capacity

        self._latched: set[PumpAlarm] = set()
        self._conditions: set[PumpAlarm] = set()  # injected; RESERVOIR_EMPTY is derived instead

        # Lying-pump faults in force, with their values; and the readings they froze.
        self._lies: dict[FaultKind, float | None] = {}
        self._frozen_volume = 0.0
        self._frozen_uptime = 0.0

        # Scheduled script entries: (time, insertion order, index in its script, entry).
        self._pending: list[tuple[float, int, int, FaultEntry]] = []
        self._insertion = itertools.count()

        self._events: deque[ModelEvent] = deque(maxlen=EVENT_LOG_LENGTH)
        self._last_snapshot: tuple[tuple[object, ...], PumpSnapshot] | None = None
        self._event_seq = 0
        self._reported_state = self._state()
        self._line = LineFaults(self._lock, self._rng, self._advance)

    # ------------------------------------------------------------------ read-only facts

    @property
    def clock(self) -> Clock:
        return self._clock

    @property
    def rng(self) -> random.Random:
        """The model's seeded RNG (used by :attr:`line`)."""
        return self._rng

    @property
    def line(self) -> LineFaults:
        """Line faults the transports consult."""
        return self._line

    @property
    def max_rate_ml_per_h(self) -> float:
        return self._max_rate

    @property
    def reservoir_capacity_ml(self) -> float:
        return self._capacity

    @property
    def started_monotonic_s(self) -> float:
        """Clock time at which the model was created; fault-script times count from here."""
        return self._started

    # ------------------------------------------------------------------ time

    def advance(self) -> None:
        """Integrate up to ``clock.monotonic()``, processing due events in time order."""
        with self._lock:
            self._advance()

    def next_event_time(self) -> float | None:
        """Clock time of the next event the model knows of (delivery end, watchdog expiry, script
        entry), or None.  A transport may sleep until then and call :meth:`advance` to catch
        alarms promptly (e.g. NE-1000 safe mode sends an alarm packet on its own)."""
        with self._lock:
            self._advance()
            upcoming = self._next_event()
            return None if upcoming is None else upcoming[0]

    # ------------------------------------------------------------------ reading

    def snapshot(self) -> PumpSnapshot:
        """The pump's state now.

        A transport reads it several times per command; the last one is returned again while
        nothing it is built from has changed (:meth:`_snapshot_inputs`)."""
        with self._lock:
            self._advance()
            inputs = self._snapshot_inputs()
            kept = self._last_snapshot
            if kept is not None and kept[0] == inputs:
                return kept[1]
            snapshot = self._build_snapshot()
            self._last_snapshot = (inputs, snapshot)
            return snapshot

    def lifetime_volume_infused_ml(self) -> float:
        """The ground truth :attr:`PumpSnapshot.lifetime_volume_infused_ml` now."""
        with self._lock:
            self._advance()
            return self._lifetime + self._delivered(self._t)

    def _snapshot_inputs(self) -> tuple[object, ...]:
        """Everything :meth:`_build_snapshot` reads (lock held)."""
        return (
            self._t,
            self._running,
            self._rate,
            self._segment_start,
            self._volume,
            self._lifetime,
            self._vtbi,
            self._vtbi_remaining,
            self._reservoir,
            frozenset(self._latched),
            self._max_rate,
            self._watchdog_timeout,
            self._started,
            tuple(self._lies.items()),
            self._frozen_volume,
            self._frozen_uptime,
        )

    def _build_snapshot(self) -> PumpSnapshot:
        """The snapshot of the pump now (lock held, advanced)."""
        delivered = self._delivered(self._t)
        infusing = self._running is PumpState.INFUSING
        volume = self._volume + delivered
        uptime = self._t - self._started
        return PumpSnapshot(
            state=self._state(),
            rate_setpoint_ml_per_h=self._rate,
            measured_rate_ml_per_h=self._rate if infusing else 0.0,
            volume_infused_ml=volume,
            lifetime_volume_infused_ml=self._lifetime + delivered,
            vtbi_ml=self._vtbi,
            vtbi_remaining_ml=(
                max(0.0, self._vtbi_remaining - delivered) if self._vtbi > 0 else 0.0
            ),
            reservoir_remaining_ml=max(0.0, self._reservoir - delivered),
            alarms=frozenset(self._latched),
            max_rate_ml_per_h=self._max_rate,
            watchdog_timeout_s=self._watchdog_in_force(),
            monotonic_s=self._t,
            watchdog_requested_s=self._watchdog_timeout,
            uptime_s=uptime,
            reported_rate_setpoint_ml_per_h=self._reported_rate(),
            reported_volume_infused_ml=self._reported_volume(volume),
            reported_uptime_s=(
                self._frozen_uptime if FaultKind.UPTIME_FROZEN in self._lies else uptime
            ),
        )

    def events(self, since_seq: int = 0) -> tuple[ModelEvent, ...]:
        """Logged events with ``seq > since_seq``, oldest first (log: :data:`EVENT_LOG_LENGTH`)."""
        with self._lock:
            self._advance()
            return self._events_after(since_seq)

    def newest_event_seq(self) -> int:
        """The ``seq`` of the newest logged event now (0: none yet): whether :meth:`events`
        has anything after a ``seq`` already seen, without building a snapshot."""
        with self._lock:
            self._advance()
            return self._event_seq

    def look(self, since_seq: int = 0) -> tuple[PumpSnapshot, tuple[ModelEvent, ...]]:
        """:meth:`snapshot` and :meth:`events` at one instant, in one look: what a transport
        reads before and after each command (each look advances the model to the clock)."""
        with self._lock:
            return self.snapshot(), self._events_after(since_seq)

    def _events_after(self, since_seq: int) -> tuple[ModelEvent, ...]:
        """Logged events with ``seq > since_seq``, oldest first (lock held)."""
        events = self._events
        if not events or events[-1].seq <= since_seq:
            return ()
        newer = []
        for event in reversed(events):  # newest first: stop at the first one seen
            if event.seq <= since_seq:
                break
            newer.append(event)
        return tuple(reversed(newer))

    # ------------------------------------------------------------------ commands

    def set_rate(self, rate_ml_per_h: float) -> None:
        """Set the rate setpoint, mL/h, within 0..max_rate_ml_per_h.

        Refused (:class:`RateRefusedError`, advisory RATE_REFUSED latched, nothing else changes)
        when above the pump's maximum, negative, NaN or infinite.  While infusing the change takes
        effect now; 0 while infusing is :class:`NotApplicableError` (stop the pump instead).  A rate
        set while not pumping is kept over a power loss; one set while pumping is not (NE-1000).
        """
        with self._lock:
            self._advance_to_change()
            if not _is_finite_number(rate_ml_per_h) or not (0.0 <= rate_ml_per_h <= self._max_rate):
                self._latch(PumpAlarm.RATE_REFUSED, f"rate {rate_ml_per_h!r} mL/h refused")
                self._note_state()
                raise RateRefusedError(
                    f"rate {rate_ml_per_h!r} mL/h refused: allowed 0..{self._max_rate:g} mL/h"
                )
            if rate_ml_per_h == 0 and self._running is PumpState.INFUSING:
                raise NotApplicableError("rate 0 mL/h not applicable while infusing: stop instead")
            self._commit()
            self._rate = float(rate_ml_per_h)
            if self._running is not PumpState.INFUSING:
                self._nonvolatile_rate = self._rate

    def set_vtbi(self, volume_ml: float) -> None:
        """Set the volume to be infused, mL (0 = continuous); the remaining volume restarts from it.

        While infusing it counts from now.  Negative, NaN or infinite: :class:`OutOfRangeError`.
        """
        with self._lock:
            self._advance_to_change()
            if not _is_finite_number(volume_ml) or volume_ml < 0:
                raise OutOfRangeError(
                    f"VTBI {volume_ml!r} mL refused: allowed 0 (continuous) or a finite volume > 0"
                )
            self._commit()
            self._vtbi = float(volume_ml)
            self._vtbi_remaining = self._vtbi

    def start(self) -> None:
        """Start (or resume from pause) infusing at the rate setpoint.

        :class:`NotApplicableError` while a stopping alarm is latched, the reservoir is empty or the
        rate is 0.  Clears VTBI_COMPLETE; after a completed VTBI the same VTBI is delivered again
        (as on NE-1000: ``RUN`` after the volume was dispensed dispenses it again).  Starting while
        already infusing changes nothing.
        """
        with self._lock:
            self._advance_to_change()
            stopping = sorted(a.value for a in self._latched & STOPPING_ALARMS)
            if stopping:
                raise NotApplicableError(
                    f"start not applicable: stopping alarm(s) latched: {', '.join(stopping)}; "
                    "clear them first"
                )
            if self._running is PumpState.INFUSING:
                return
            if self._reservoir <= 0:
                raise NotApplicableError("start not applicable: reservoir empty; refill first")
            if self._rate <= 0:
                raise NotApplicableError("start not applicable: rate setpoint is 0 mL/h")
            self._unlatch(PumpAlarm.VTBI_COMPLETE)
            if self._vtbi > 0 and self._vtbi_remaining <= 0:
                self._vtbi_remaining = self._vtbi
            self._segment_start = self._t
            self._running = PumpState.INFUSING
            self._note_state()

    def pause(self) -> None:
        """Infusing -> paused.  Already paused: nothing.  Stopped or alarmed: NotApplicableError.

        While ``stop_refused`` is in force an infusing pump accepts it and keeps infusing.
        """
        with self._lock:
            self._advance_to_change()
            if self._running is PumpState.PAUSED or self._refuses_stop():
                return
            if self._running is not PumpState.INFUSING:
                raise NotApplicableError(f"pause not applicable: pump is {self._state().value}")
            self._commit()
            self._running = PumpState.PAUSED
            self._note_state()

    def stop(self) -> None:
        """Stop (from infusing or paused).  An alarmed pump stays alarmed.

        While ``stop_refused`` is in force an infusing pump accepts it and keeps infusing.
        """
        with self._lock:
            self._advance_to_change()
            if self._refuses_stop():
                return
            self._commit()
            self._running = PumpState.STOPPED
            self._note_state()

    def clear_alarms(self) -> None:
        """Clear the latched alarms whose condition is gone; never restarts the pump.

        Alarms whose condition is still present (an injected occlusion not yet cleared, an empty
        reservoir) stay latched.  An alarmed pump with no stopping alarm left reports STOPPED.
        """
        with self._lock:
            self._advance_to_change()
            for alarm in sorted(self._latched, key=lambda a: a.value):
                if not self._condition_present(alarm):
                    self._unlatch(alarm)
            self._note_state()

    def clear_totals(self) -> None:
        """Zero the clearable totalizer ``volume_infused_ml`` (nothing else; a frozen reading of
        ``frozen_totalizer`` becomes 0 and stays frozen)."""
        with self._lock:
            self._advance_to_change()
            self._commit()
            self._volume = 0.0
            self._frozen_volume = 0.0

    def set_watchdog(self, timeout_s: float) -> None:
        """Set the communication watchdog timeout, seconds (0 = off).

        The setting survives power loss.  The command itself counts as a valid packet: the timer
        (re)starts now.  Negative, NaN or infinite: :class:`OutOfRangeError`.  While
        ``watchdog_not_held`` is in force it is accepted and remembered but not held.
        """
        with self._lock:
            self._advance_to_change()
            if not _is_finite_number(timeout_s) or timeout_s < 0:
                raise OutOfRangeError(
                    f"watchdog timeout {timeout_s!r} s refused: allowed 0 (off) or finite > 0"
                )
            self._watchdog_timeout = float(timeout_s)
            self._last_packet = self._t

    def feed_watchdog(self) -> None:
        """A valid packet or heartbeat arrived: restart the watchdog timer.

        Transports call this on every valid packet.  After a power-up the timer runs only from the
        first call.  Feeding never clears COMM_TIMEOUT nor restarts the pump.
        """
        with self._lock:
            self._advance_to_change()
            self._last_packet = self._t

    def refill(self, volume_ml: float) -> None:
        """Load a fresh reservoir holding ``volume_ml`` (0..capacity).  Not while infusing."""
        with self._lock:
            self._advance_to_change()
            if not _is_finite_number(volume_ml) or not (0.0 <= volume_ml <= self._capacity):
                raise OutOfRangeError(
                    f"refill {volume_ml!r} mL refused: allowed 0..{self._capacity:g} mL"
                )
            if self._running is PumpState.INFUSING:
                raise NotApplicableError("refill not applicable while infusing: stop first")
            self._reservoir = float(volume_ml)

    # ------------------------------------------------------------------ fault injection

    def inject(self, alarm: PumpAlarm) -> None:
        """Raise a condition alarm now (see :data:`INJECTABLE_ALARMS`).

        OCCLUSION, AIR_IN_LINE, DOOR_OPEN, LOW_BATTERY stay present until :meth:`clear_condition`;
        RESERVOIR_EMPTY empties the reservoir; PROGRAM_ERROR is latched until cleared.  Stopping
        alarms stop the pump.  Others: :class:`InvalidFaultError`.
        """
        with self._lock:
            self._advance_to_change()
            self._inject(alarm)

    def clear_condition(self, alarm: PumpAlarm) -> None:
        """End an injected condition; the latched alarm stays until :meth:`clear_alarms`.

        RESERVOIR_EMPTY refills an empty reservoir to capacity.  PROGRAM_ERROR has no condition:
        nothing to do.
        """
        with self._lock:
            self._advance_to_change()
            self._clear_condition(alarm)

    def power_loss(self) -> None:
        """An instantaneous power cycle.

        The pump stops and latches POWER_LOSS; the rate setpoint returns to the last value set
        while not pumping; totalizers, VTBI, watchdog setting and injected conditions persist; the
        watchdog timer waits for the first valid packet again.  It never restarts by itself.
        """
        with self._lock:
            self._advance_to_change()
            self._power_loss()

    def inject_fault(self, fault: FaultKind | str, value: float | None = None) -> None:
        """Inject any :class:`FaultKind` now, as a script entry would (same ``value`` rules).

        The lying-pump faults (:data:`~simulator.faults.LYING_FAULTS`) are injected only this way
        or by a script.  A bad kind or value: :class:`InvalidFaultError` naming what is allowed.
        """
        entry = _direct_entry(fault, FaultAction.INJECT, value)
        with self._lock:
            self._advance_to_change()
            self._log(EventKind.FAULT, _describe(entry))
            self._apply_fault(entry)
            self._note_state()

    def clear_fault(self, fault: FaultKind | str) -> None:
        """Clear a fault now, as a script ``clear`` entry would (:class:`InvalidFaultError` for
        an inject-only kind).  Clearing a fault that is not in force changes nothing."""
        entry = _direct_entry(fault, FaultAction.CLEAR, None)
        with self._lock:
            self._advance_to_change()
            self._log(EventKind.FAULT, _describe(entry))
            self._apply_fault(entry)
            self._note_state()

    def active_faults(self) -> dict[FaultKind, float | None]:
        """The lying-pump faults in force now, with their values (None: the kind takes none)."""
        with self._lock:
            self._advance()
            return dict(self._lies)

    def active_conditions(self) -> frozenset[PumpAlarm]:
        """The injected physical conditions present now (an occlusion not yet relieved, ...);
        RESERVOIR_EMPTY is not one of them: it is the reservoir's own state."""
        with self._lock:
            self._advance()
            return frozenset(self._conditions)

    def scheduled_faults(self) -> tuple[tuple[float, FaultEntry], ...]:
        """Script entries still to come, as ``(clock time due, entry)``, in the order they apply."""
        with self._lock:
            self._advance()
            return tuple((due, entry) for due, _, _, entry in sorted(self._pending))

    def clear_all_faults(self) -> None:
        """End every fault: conditions, lying-pump faults and line faults now, and drop every
        scheduled entry.  Latched alarms stay latched (:meth:`clear_alarms` is the host's)."""
        with self._lock:
            self._advance_to_change()
            self._pending.clear()
            self._conditions.clear()
            self._lies.clear()
            self._line.reset()
            self._log(EventKind.FAULT, "all faults cleared")

    def reset_to_power_on(self) -> None:
        """The pump as it was when it was created, without restarting the process: stopped,
        rate, VTBI and watchdog 0, totalizer 0, reservoir full, no alarm, no fault (injected,
        lying, line or scheduled).  Kept: the lifetime total (the ground truth of everything ever
        delivered), the uptime and the clock on which fault-script times count, the event log.
        The watchdog timer waits for the first valid packet, as at power-up."""
        with self._lock:
            self._advance_to_change()
            self._commit()
            self._running = PumpState.STOPPED
            self._rate = self._nonvolatile_rate = 0.0
            self._vtbi = self._vtbi_remaining = 0.0
            self._watchdog_timeout = 0.0
            self._last_packet = None
            self._volume = 0.0
            self._reservoir = self._capacity
            self._pending.clear()
            self._conditions.clear()
            self._lies.clear()
            self._frozen_volume = self._frozen_uptime = 0.0
            self._line.reset()
            for alarm in sorted(self._latched, key=lambda a: a.value):
                self._unlatch(alarm)
            self._log(EventKind.RESET, "reset to power-on state")
            self._note_state()

    def schedule(self, script: FaultScript) -> None:
        """Apply each entry of ``script`` at ``started_monotonic_s + at_s``, during :meth:`advance`.

        May be called more than once; the scripts merge.  An entry already in the past:
        :class:`FaultScriptError` (nothing is scheduled).
        """
        with self._lock:
            self._advance_to_change()
            elapsed = self._t - self._started
            for index, entry in enumerate(script.faults):
                if entry.at_s < elapsed:
                    raise FaultScriptError(
                        f"faults[{index}].at_s: {entry.at_s:g} s is already in the past "
                        f"(the model is {elapsed:g} s old); allowed >= {elapsed:g}",
                        entry_index=index,
                        field="at_s",
                    )
            for index, entry in script.in_time_order():
                heapq.heappush(
                    self._pending,
                    (self._started + entry.at_s, next(self._insertion), index, entry),
                )
            self._advance()  # entries due now apply now

    # ------------------------------------------------------------------ internals (lock held)

    def _state(self) -> PumpState:
        if self._latched & STOPPING_ALARMS:
            return PumpState.ALARM
        return self._running

    def _log(
        self,
        kind: EventKind,
        detail: str,
        *,
        alarm: PumpAlarm | None = None,
        state: PumpState | None = None,
    ) -> None:
        self._event_seq += 1
        self._events.append(ModelEvent(self._event_seq, self._t, kind, detail, alarm, state))

    def _note_state(self) -> None:
        state = self._state()
        if state is not self._reported_state:
            self._log(
                EventKind.STATE, f"{self._reported_state.value} -> {state.value}", state=state
            )
            self._reported_state = state

    def _latch(self, alarm: PumpAlarm, detail: str) -> None:
        if alarm in STOPPING_ALARMS and self._running is not PumpState.STOPPED:
            self._commit()
            self._running = PumpState.STOPPED
        if alarm not in self._latched:
            self._latched.add(alarm)
            self._log(EventKind.ALARM, detail, alarm=alarm)

    def _unlatch(self, alarm: PumpAlarm) -> None:
        if alarm in self._latched:
            self._latched.discard(alarm)
            self._log(EventKind.ALARM_CLEARED, f"{alarm.value} cleared", alarm=alarm)

    def _condition_present(self, alarm: PumpAlarm) -> bool:
        if alarm is PumpAlarm.RESERVOIR_EMPTY:
            return self._reservoir - self._delivered(self._t) <= 0
        return alarm in self._conditions

    def _delivered(self, t: float) -> float:
        """Volume delivered in the current segment up to ``t``, capped by VTBI and reservoir."""
        if self._running is not PumpState.INFUSING:
            return 0.0
        volume = self._rate * (t - self._segment_start) / _SECONDS_PER_HOUR
        cap = self._reservoir
        if self._vtbi > 0:
            cap = min(cap, self._vtbi_remaining)
        return min(max(volume, 0.0), cap)

    def _add_volume(self, volume_ml: float) -> None:
        self._volume += volume_ml
        self._lifetime += volume_ml
        self._reservoir = max(0.0, self._reservoir - volume_ml)
        if self._vtbi > 0:
            self._vtbi_remaining = max(0.0, self._vtbi_remaining - volume_ml)

    def _commit(self) -> None:
        """Fold the current segment into the totals; a new segment starts at ``_t``."""
        self._add_volume(self._delivered(self._t))
        self._segment_start = self._t

    def _delivery_end(self) -> tuple[float, float, bool] | None:
        """(time, volume, is_vtbi) at which the current infusion must stop, or None."""
        if self._running is not PumpState.INFUSING or self._rate <= 0:
            return None
        vtbi_volume = self._vtbi_remaining if self._vtbi > 0 else math.inf
        volume = min(vtbi_volume, self._reservoir)
        time = self._segment_start + volume * _SECONDS_PER_HOUR / self._rate
        return time, volume, vtbi_volume <= self._reservoir

    def _watchdog_in_force(self) -> float:
        return 0.0 if FaultKind.WATCHDOG_NOT_HELD in self._lies else self._watchdog_timeout

    def _watchdog_deadline(self) -> float | None:
        timeout = self._watchdog_in_force()
        if timeout <= 0 or self._last_packet is None:
            return None
        return self._last_packet + timeout

    def _refuses_stop(self) -> bool:
        return FaultKind.STOP_REFUSED in self._lies and self._running is PumpState.INFUSING

    def _reported_rate(self) -> float:
        offset = self._lies.get(FaultKind.RATE_ECHO_WRONG)
        return self._rate if offset is None else max(0.0, self._rate + offset)

    def _reported_volume(self, volume_ml: float) -> float:
        if FaultKind.FROZEN_TOTALIZER in self._lies:
            volume_ml = self._frozen_volume
        offset = self._lies.get(FaultKind.TOTALIZER_JUMP)
        return volume_ml if offset is None else max(0.0, volume_ml + offset)

    def _next_event(self) -> tuple[float, int] | None:
        """(time, priority) of the next due event."""
        # The earliest; at the same time the first in priority order (checked in that order).
        upcoming: tuple[float, int] | None = None
        end = self._delivery_end()
        if end is not None:
            upcoming = (end[0], _PRIORITY_DELIVERY_END)
        deadline = self._watchdog_deadline()
        if deadline is not None and (upcoming is None or deadline < upcoming[0]):
            upcoming = (deadline, _PRIORITY_WATCHDOG)
        if self._pending and (upcoming is None or self._pending[0][0] < upcoming[0]):
            upcoming = (self._pending[0][0], _PRIORITY_SCRIPT)
        return upcoming

    def _advance(self) -> None:
        """Integrate up to the clock's time, processing due events (lock held).

        Skipped when the clock has not moved since a whole advance that left nothing due and
        nothing has changed since (:meth:`_advance_to_change` says so): a command's answer looks
        at the model a dozen times at one instant, and each look would otherwise work out the
        next event again."""
        if self._clock.monotonic() == self._settled_at:
            return
        if self._advancing:
            return  # re-entered from an event (e.g. a script entry setting a line fault)
        self._advancing = True
        try:
            reading = self._clock.monotonic()
            now = max(reading, self._t)
            while (upcoming := self._next_event()) is not None and upcoming[0] <= now:
                time, priority = upcoming
                self._t = max(self._t, time)
                if priority == _PRIORITY_DELIVERY_END:
                    self._end_delivery()
                elif priority == _PRIORITY_WATCHDOG:
                    self._expire_watchdog()
                else:
                    _, _, index, entry = heapq.heappop(self._pending)
                    self._apply_entry(index, entry)
                self._note_state()
            self._t = now
            self._settled_at = reading
        finally:
            self._advancing = False

    def _advance_to_change(self) -> None:
        """:meth:`_advance` before a change to the model (lock held): the next look advances in
        full, so an event the change makes due at this very instant is processed then."""
        self._advance()
        self._settled_at = None

    def _end_delivery(self) -> None:
        end = self._delivery_end()
        assert end is not None
        _, volume, is_vtbi = end
        self._add_volume(volume)  # exactly the volume left: no rounding past the limit
        self._segment_start = self._t
        self._running = PumpState.STOPPED
        if is_vtbi:
            self._latch(PumpAlarm.VTBI_COMPLETE, f"VTBI {self._vtbi:g} mL delivered")
        else:
            self._latch(PumpAlarm.RESERVOIR_EMPTY, "reservoir empty: motor stalled")

    def _expire_watchdog(self) -> None:
        self._last_packet = None  # runs again from the next valid packet
        self._latch(
            PumpAlarm.COMM_TIMEOUT,
            f"no valid packet for {self._watchdog_timeout:g} s: watchdog stopped the pump",
        )

    def _inject(self, alarm: PumpAlarm) -> None:
        if alarm not in INJECTABLE_ALARMS:
            allowed = ", ".join(sorted(a.value for a in INJECTABLE_ALARMS))
            raise InvalidFaultError(
                f"cannot inject {alarm!r}: allowed {allowed} (power loss: power_loss())"
            )
        self._commit()
        if alarm is PumpAlarm.RESERVOIR_EMPTY:
            self._reservoir = 0.0
        elif alarm in CONDITION_ALARMS:
            self._conditions.add(alarm)
        self._latch(alarm, f"{alarm.value} injected")
        self._note_state()

    def _clear_condition(self, alarm: PumpAlarm) -> None:
        if alarm not in INJECTABLE_ALARMS:
            allowed = ", ".join(sorted(a.value for a in INJECTABLE_ALARMS))
            raise InvalidFaultError(f"cannot clear condition {alarm!r}: allowed {allowed}")
        if alarm is PumpAlarm.RESERVOIR_EMPTY:
            if self._condition_present(alarm):
                self._reservoir = self._capacity
        else:
            self._conditions.discard(alarm)

    def _power_loss(self) -> None:
        self._commit()
        self._running = PumpState.STOPPED
        self._rate = self._nonvolatile_rate
        self._last_packet = None
        self._latch(PumpAlarm.POWER_LOSS, "power interrupted")
        self._note_state()

    def _apply_entry(self, index: int, entry: FaultEntry) -> None:
        self._log(EventKind.SCRIPT, f"faults[{index}]: {_describe(entry)}")
        self._apply_fault(entry)

    def _apply_fault(self, entry: FaultEntry) -> None:
        inject = entry.action is FaultAction.INJECT
        if entry.fault in LYING_FAULTS:
            self._apply_lie(entry.fault, inject, entry.value)
            return
        alarm = _FAULT_ALARMS.get(entry.fault)
        if alarm is not None:
            if inject:
                self._inject(alarm)
            else:
                self._clear_condition(alarm)
        elif entry.fault is FaultKind.POWER_LOSS:
            self._power_loss()
        elif entry.fault is FaultKind.HANG:
            self._line.hang = inject
        elif entry.fault is FaultKind.GARBAGE:
            self._line.garbage_probability = entry.value if entry.value is not None else 0.0
        elif entry.fault is FaultKind.CORRUPT:
            self._line.corrupt_probability = entry.value if entry.value is not None else 0.0
        elif entry.fault is FaultKind.DUPLICATE:
            self._line.duplicate_probability = entry.value if entry.value is not None else 0.0
        elif entry.fault is FaultKind.SLOW:
            self._line.reply_delay_s = entry.value if entry.value is not None else 0.0
        else:  # pragma: no cover - every FaultKind is handled above
            raise AssertionError(f"unhandled fault kind {entry.fault!r}")

    def _apply_lie(self, fault: FaultKind, inject: bool, value: float | None) -> None:
        if not inject:
            held_again = fault is FaultKind.WATCHDOG_NOT_HELD and fault in self._lies
            self._lies.pop(fault, None)
            if held_again and self._last_packet is not None:
                self._last_packet = self._t  # held again: a full timeout from now
            return
        if fault in self._lies and fault in (FaultKind.FROZEN_TOTALIZER, FaultKind.UPTIME_FROZEN):
            return  # already frozen: keep the frozen reading
        if fault is FaultKind.FROZEN_TOTALIZER:
            self._frozen_volume = self._volume + self._delivered(self._t)
        elif fault is FaultKind.UPTIME_FROZEN:
            self._frozen_uptime = self._t - self._started
        self._lies[fault] = value


def _describe(entry: FaultEntry) -> str:
    return f"{entry.fault.value} {entry.action.value}" + (
        "" if entry.value is None else f" {entry.value:g}"
    )


def _direct_entry(fault: FaultKind | str, action: FaultAction, value: float | None) -> FaultEntry:
    """``fault``/``action``/``value`` checked by the script rules, as an entry due now."""
    data: dict[str, object] = {"at_s": 0.0, "fault": fault, "action": action}
    if value is not None:
        data["value"] = float(value) if _is_finite_number(value) else value
    try:
        return FaultEntry.model_validate(data)
    except ValidationError as error:
        details = "; ".join(
            f"{'.'.join(str(x) for x in item['loc'])}: "
            + str(item["msg"]).removeprefix("Value error, ")
            for item in error.errors()
        )
        raise InvalidFaultError(f"cannot {action.value} fault {fault!r}: {details}") from None
