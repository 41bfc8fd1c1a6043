"""Journal rows -> what the course report draws: per channel and per day, typed series and numbers.

Pure: no I/O, no matplotlib, so every number the picture shows is testable as data.  The day's
numbers (prescribed, delivered, shortfall) are the ``days`` table's, exactly; the series and
markers come from the events, each in the day it belongs to by journal order (a day's events
run from its ``day_open`` to the next day's; what came before day 1 opened belongs to day 1).
Times are hours after the day's window start, on the journal's wall clock.

Readbacks are not one per poll: the journal may keep a readback only when something changed
(state, rate, alarms) plus a periodic checkpoint and one on every command.  So the rates and
limits are *step* series (a value holds until the next one; a point is kept only where the value
changes, however often it was journalled), volumes are straight lines between samples, and
nothing counts rows.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from gateway.dosing import mg_per_kg
from gateway.journal import DayRecord, JournalEvent
from gateway.planner import SECONDS_PER_HOUR
from gateway.report.trumpet import TrumpetCurve, TrumpetError, trumpet_curve
from protocol.pump_state import PumpState

#: A day's panel shows at least its 24 h window.
DAY_H: Final[float] = 24.0

# Event kinds and payload fields as gateway/controller.py journals them.
_READBACK = "readback"
_COMMAND = "command"
_PRESCRIPTION = "prescription"
_DAY_OPEN = "day_open"
_ORDER = "order"
_STATE = "state"
_TOTALS_CLEARED = "totals_cleared"
_SET_RATE = "set_rate"
_STOP_COMMAND = "stop"
#: Events after which the pump's totalizer samples no longer continue one steady period.
_BREAKS_STEADY = frozenset({_COMMAND, _TOTALS_CLEARED, "shutdown", "pump_connected", "clock_step"})


class MarkerKind(StrEnum):
    """What the figure marks where it happened (the controller's event kinds)."""

    ALARM = "alarm"
    ACK = "ack"
    STOP = "stop"
    TITER = "titer"
    WEIGHT = "weight"
    VASOPRESSORS = "vasopressors_withdrawn"


@dataclass(frozen=True)
class Marker:
    at_h: float
    kind: MarkerKind
    #: What a person reads beside the mark ("pump_reservoir_empty", "ack by ...", "titer ...").
    label: str
    event_id: int


@dataclass(frozen=True)
class Series:
    """Values against hours after the day's window start.

    ``step``: each value holds until the next time (rates, limits), and the last holds to the
    day's end; otherwise straight lines between samples (volumes).
    """

    at_h: tuple[float, ...]
    values: tuple[float, ...]
    step: bool

    def value_at(self, at_h: float) -> float | None:
        """The series' value at ``at_h`` (None before its first point)."""
        i = bisect.bisect_right(self.at_h, at_h)
        if i == 0:
            return None
        if self.step or i == len(self.at_h):
            return self.values[i - 1]
        h0, h1 = self.at_h[i - 1], self.at_h[i]
        v0, v1 = self.values[i - 1], self.values[i]
        return v0 if h1 == h0 else v0 + (v1 - v0) * (at_h - h0) / (h1 - h0)

    @property
    def last(self) -> float | None:
        return self.values[-1] if self.values else None


@dataclass(frozen=True)
class DayReport:
    day: int
    window_start_wall_s: float
    #: The day's panel: from its first event (or the window start) to its last event.
    start_h: float
    end_h: float
    closed: bool
    # The numbers, from the ``days`` table.
    prescribed_ml: float
    delivered_ml: float
    #: Set when the day closed (None while it runs).
    shortfall_ml: float | None
    dose_mg_per_kg: float | None
    #: ``delivered_ml`` as mg/kg, at the product concentration and the day's weight.
    delivered_mg_per_kg: float | None
    titer_mg_dl: float | None
    weight_kg: float | None
    notes: tuple[str, ...]
    # The series.
    commanded_ml_per_h: Series
    #: The pump's read-back rate while it infuses, 0 while it does not.
    pump_rate_ml_per_h: Series
    ceiling_ml_per_h: Series
    #: The gateway's delivered volume of the day (its accounting of the pump's totalizer).
    delivered_series_ml: Series
    prescribed_series_ml: Series
    markers: tuple[Marker, ...]
    #: The day's longest steady period's trumpet curve, or None and why not.
    trumpet: TrumpetCurve | None
    #: When that steady period began (hours into the day's window).
    trumpet_period_start_h: float | None
    trumpet_note: str


@dataclass(frozen=True)
class ChannelReport:
    channel: str
    arm: str | None
    weight_kg: float | None
    concentration_mg_per_ml: float | None
    #: The channel's state after its last journalled transition.
    state: str | None
    days: tuple[DayReport, ...]


@dataclass(frozen=True)
class CourseReport:
    #: Where the journal was read (shown on the report).
    source: str
    channels: tuple[ChannelReport, ...]


def build_course_report(
    source: str,
    events: Sequence[JournalEvent],
    days: dict[str, tuple[DayRecord, ...]],
) -> CourseReport:
    """Every channel of the journal rows (events in journal order)."""
    by_channel: dict[str, list[JournalEvent]] = {}
    for event in events:
        by_channel.setdefault(event.channel, []).append(event)
    names = sorted(set(by_channel) | set(days))
    return CourseReport(
        source,
        tuple(build_channel(n, by_channel.get(n, []), days.get(n, ())) for n in names),
    )


def build_channel(
    channel: str, events: Sequence[JournalEvent], days: Sequence[DayRecord]
) -> ChannelReport:
    """One channel's days, from its events (in journal order) and its ``days`` rows."""
    carry = _Carry()
    reports = []
    segments = _segments(events, [d.day for d in days])
    for record in days:
        reports.append(_build_day(record, segments.get(record.day, []), carry))
    # Events after the last day's segment do not exist (the last day takes the rest), but a
    # channel without days still has an order, a weight and a state.
    if not days:
        for event in events:
            carry.take_course_facts(event)
    return ChannelReport(
        channel=channel,
        arm=carry.arm,
        weight_kg=carry.weight_kg,
        concentration_mg_per_ml=carry.concentration_mg_per_ml,
        state=carry.state,
        days=tuple(reports),
    )


def _segments(
    events: Iterable[JournalEvent], day_numbers: list[int]
) -> dict[int, list[JournalEvent]]:
    """Each day's events: from its ``day_open`` to the next one; before day 1's, day 1's."""
    found: dict[int, list[JournalEvent]] = {}
    current = day_numbers[0] if day_numbers else None
    for event in events:
        if event.kind == _DAY_OPEN:
            current = int(event.payload["day"])
        if current is not None:
            found.setdefault(current, []).append(event)
    return found


@dataclass
class _Carry:
    """What holds from one day into the next while the events are walked."""

    arm: str | None = None
    weight_kg: float | None = None
    concentration_mg_per_ml: float | None = None
    state: str | None = None
    commanded_ml_per_h: float = 0.0
    pump_rate_ml_per_h: float = 0.0
    ceiling_ml_per_h: float | None = None

    def take_course_facts(self, event: JournalEvent) -> None:
        p = event.payload
        if event.kind == _ORDER:
            self.arm = p.get("arm")
            self.weight_kg = _number(p.get("weight_kg"))
            self.concentration_mg_per_ml = _number(p.get("concentration_mg_per_ml"))
        elif event.kind == MarkerKind.WEIGHT:
            self.weight_kg = _number(p.get("weight_kg"))
        elif event.kind == _STATE:
            self.state = p.get("to")


@dataclass
class _StepBuilder:
    """A step series, keeping a point only where the value changes."""

    at_h: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)

    def put(self, at_h: float, value: float | None) -> None:
        if value is None or (self.values and self.values[-1] == value):
            return
        self.at_h.append(at_h)
        self.values.append(value)

    def build(self, end_h: float) -> Series:
        at_h, values = list(self.at_h), list(self.values)
        if values and at_h[-1] < end_h:
            at_h.append(end_h)
            values.append(values[-1])
        return Series(tuple(at_h), tuple(values), step=True)


@dataclass
class _Period:
    """One steady period: its rate, (monotonic s, totalizer mL) samples and their steps."""

    rate_ml_per_h: float
    start_wall_s: float
    samples: list[tuple[float, float]] = field(default_factory=list)
    steps_ml: list[float] = field(default_factory=list)

    @property
    def duration_s(self) -> float:
        return self.samples[-1][0] - self.samples[0][0]


@dataclass
class _SteadyPeriods:
    """The day's steady periods: one pump rate, infusing, totalizer counting up, no command."""

    periods: list[_Period] = field(default_factory=list)
    current: _Period | None = None

    def end(self) -> None:
        if self.current is not None and len(self.current.samples) >= 2:
            self.periods.append(self.current)
        self.current = None

    def take(self, event: JournalEvent) -> None:
        if event.kind in _BREAKS_STEADY:
            self.end()
            return
        if event.kind != _READBACK:
            return
        p = event.payload
        rate = float(p["rate_ml_per_h"])
        volume = float(p["volume_infused_ml"])
        infusing = p["state"] == PumpState.INFUSING.value
        now = self.current
        if now is not None and (
            not infusing or rate != now.rate_ml_per_h or volume < now.samples[-1][1]
        ):
            self.end()
            now = None
        if not infusing or rate <= 0.0:
            return
        if now is None:
            now = self.current = _Period(rate, event.wall_s)
        # Monotonic time: a wall-clock step inside a period must not look like a flow change.
        sample = (event.monotonic_s, volume)
        step_ml = float(p.get("volume_resolution_ml") or 0.0)
        if now.samples and now.samples[-1][0] >= sample[0]:
            now.samples[-1], now.steps_ml[-1] = sample, step_ml  # same instant: the latest
        else:
            now.samples.append(sample)
            now.steps_ml.append(step_ml)

    def curve(self) -> tuple[TrumpetCurve | None, float | None, str]:
        """The longest steady period's trumpet curve and start (wall s), or None and why not."""
        self.end()
        if not self.periods:
            return None, None, "no steady infusion this day"
        longest = max(self.periods, key=lambda period: period.duration_s)
        try:
            curve = trumpet_curve(
                longest.samples, longest.rate_ml_per_h, resolution_ml=longest.steps_ml
            )
        except TrumpetError as exc:
            return None, longest.start_wall_s, str(exc)
        return curve, longest.start_wall_s, ""


def _build_day(record: DayRecord, events: Sequence[JournalEvent], carry: _Carry) -> DayReport:
    origin = record.window_start_wall_s

    def hours(event: JournalEvent) -> float:
        return (event.wall_s - origin) / SECONDS_PER_HOUR

    start_h = min(0.0, hours(events[0])) if events else 0.0
    end_h = max(hours(events[-1]), start_h) if events else start_h
    commanded, pump_rate, ceiling, prescribed = (_StepBuilder() for _ in range(4))
    commanded.put(start_h, carry.commanded_ml_per_h)
    pump_rate.put(start_h, carry.pump_rate_ml_per_h)
    ceiling.put(start_h, carry.ceiling_ml_per_h)
    delivered_h: list[float] = []
    delivered_ml: list[float] = []
    markers: list[Marker] = []
    steady = _SteadyPeriods()
    titer_mg_dl: float | None = None
    day_weight_kg: float | None = None
    for event in events:
        at_h, p = hours(event), event.payload
        carry.take_course_facts(event)
        steady.take(event)
        if event.kind == _COMMAND and p.get("command") == _SET_RATE:
            carry.commanded_ml_per_h = float(p["rate_ml_per_h"])
            carry.ceiling_ml_per_h = float(p["ceiling_ml_per_h"])
            commanded.put(at_h, carry.commanded_ml_per_h)
            ceiling.put(at_h, carry.ceiling_ml_per_h)
        elif event.kind == _COMMAND and p.get("command") == _STOP_COMMAND:
            carry.commanded_ml_per_h = 0.0
            commanded.put(at_h, 0.0)
        elif event.kind == _READBACK:
            infusing = p["state"] == PumpState.INFUSING.value
            carry.pump_rate_ml_per_h = float(p["rate_ml_per_h"]) if infusing else 0.0
            pump_rate.put(at_h, carry.pump_rate_ml_per_h)
            delivered_h.append(at_h)
            delivered_ml.append(float(p["delivered_ml"]))
        elif event.kind == _PRESCRIPTION and int(p["day"]) == record.day:
            prescribed.put(at_h, float(p["volume_ml"]))
            titer_mg_dl = _number(p.get("igm_mg_dl"))
            day_weight_kg = _number(p.get("weight_kg"))
        marker = _marker(event, at_h)
        if marker is not None:
            markers.append(marker)
    trumpet, steady_start_wall_s, trumpet_note = steady.curve()
    weight_kg = day_weight_kg if day_weight_kg is not None else carry.weight_kg
    concentration = carry.concentration_mg_per_ml
    detail = record.detail
    return DayReport(
        day=record.day,
        window_start_wall_s=origin,
        start_h=start_h,
        end_h=end_h,
        closed=record.closed,
        prescribed_ml=record.prescribed_ml,
        delivered_ml=record.delivered_ml,
        shortfall_ml=_number(detail.get("shortfall_ml")) if record.closed else None,
        dose_mg_per_kg=_number(detail.get("dose_mg_per_kg")),
        delivered_mg_per_kg=(
            mg_per_kg(record.delivered_ml, concentration, weight_kg)
            if concentration is not None and weight_kg
            else None
        ),
        titer_mg_dl=titer_mg_dl,
        weight_kg=weight_kg,
        notes=tuple(str(n) for n in detail.get("notes", ())),
        commanded_ml_per_h=commanded.build(end_h),
        pump_rate_ml_per_h=pump_rate.build(end_h),
        ceiling_ml_per_h=ceiling.build(end_h),
        delivered_series_ml=Series(tuple(delivered_h), tuple(delivered_ml), step=False),
        prescribed_series_ml=prescribed.build(end_h),
        markers=tuple(markers),
        trumpet=trumpet,
        trumpet_period_start_h=(
            None
            if steady_start_wall_s is None
            else (steady_start_wall_s - origin) / SECONDS_PER_HOUR
        ),
        trumpet_note=trumpet_note,
    )


def _marker(event: JournalEvent, at_h: float) -> Marker | None:
    """The mark for an alarm, acknowledgement, operator stop, titer or weight change."""
    p = event.payload
    match event.kind:
        case MarkerKind.ALARM:
            label = str(p.get("code"))
        case MarkerKind.ACK:
            label = f"ack by {p.get('operator')}"
        case MarkerKind.STOP:
            label = f"stop by {p.get('operator')}"
        case MarkerKind.TITER:
            label = f"titer {float(p['igm_mg_dl']):g} mg/dL"
        case MarkerKind.WEIGHT:
            label = f"weight {float(p['weight_kg']):g} kg"
        case MarkerKind.VASOPRESSORS:
            label = "vasopressors withdrawn"
        case _:
            return None
    return Marker(at_h, MarkerKind(event.kind), label, event.id)


def _number(value: Any) -> float | None:
    return None if value is None else float(value)
