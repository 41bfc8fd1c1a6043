"""What the bedside sees: a typed snapshot of a channel, for ``status``, the API and metrics.

Built from the course state alone (plus the last pump reading), so the snapshot can never say
something the controller does not know.  Numbers are exact here; :mod:`gateway.display` rounds
them down where a person reads them.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from drivers.status import PumpStatus
from gateway.course_state import CourseDay, CourseState, TiterRecord
from gateway.dosing import HOURS_PER_DAY, mg_per_kg
from gateway.planner import plan_rate, shortfall_ml
from gateway.timestamps import format_instant


@dataclass(frozen=True)
class TiterView:
    igm_mg_dl: float
    hematocrit: float
    measured_at: str
    baseline: bool


@dataclass(frozen=True)
class AlarmView:
    code: str
    detail: str
    raised_wall_s: float
    stops: bool


@dataclass(frozen=True)
class DayView:
    day: int
    window_start: str | None
    prescribed_ml: float
    dose_mg_per_kg: float | None
    #: The rate that gives the day's volume over its 24 h (mL/h and mg/kg/h).
    day_rate_ml_per_h: float | None
    day_rate_mg_per_kg_per_h: float | None
    delivered_ml: float
    delivered_max_ml: float
    #: After the day closed: what was not given.
    shortfall_ml: float | None
    #: While the day runs: what cannot be given by the window's end at the usable ceiling.
    projected_shortfall_ml: float | None
    titer: TiterView | None
    capped: bool
    notes: tuple[str, ...]
    closed: bool
    awaiting_titer: bool
    late_titer_policy: str | None


@dataclass(frozen=True)
class ChannelView:
    id: str
    state: str
    arm: str | None
    weight_kg: float | None
    pump: str
    concentration_mg_per_ml: float | None
    ceiling_ml_per_h: float | None
    ceiling_mg_per_kg_per_h: float | None
    day: int
    days: tuple[DayView, ...]
    alarms: tuple[AlarmView, ...]
    commanded_rate_ml_per_h: float | None
    commanded_rate_mg_per_kg_per_h: float | None
    max_commanded_rate_ml_per_h: float
    vasopressors_withdrawn: bool
    completed_reason: str | None
    last_good_poll_wall_s: float | None
    pump_status: dict[str, object] | None

    def to_json(self, days: PastDays | None = None) -> dict[str, Any]:
        """Plain JSON data: dicts, lists (not tuples), strings, numbers, None.

        ``days``: the cache :func:`channel_view` was given; the past days' JSON comes from it."""
        if days is None:
            data: dict[str, Any] = _plain(self)
            return data
        data = {name: _plain(getattr(self, name)) for name in _field_names(self) if name != "days"}
        data["days"] = [days.json(day) for day in self.days]
        return data


#: Each view class's field names, looked up once (``dataclasses.fields`` is slow per call).
_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(value: Any) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(type(value))
    if names is None:
        names = _FIELD_NAMES[type(value)] = tuple(f.name for f in fields(value))
    return names


def _plain(value: Any) -> Any:
    """``value`` as JSON data: views to dicts, tuples to lists, the rest as it is.

    Built for speed (a 64-channel gateway builds every channel's view every cycle): no deep
    copy and no JSON round trip, which ``asdict`` plus ``json`` cost ten times as much.
    """
    if isinstance(value, (str, int, float)) or value is None:
        return value
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return {name: _plain(getattr(value, name)) for name in _field_names(value)}


#: What a day's view is built from besides the day, when it is not running: its titer, the
#: product's concentration and the weight.
_DayInputs = tuple[CourseDay, TiterRecord | None, float | None, float | None]


class PastDays:
    """One channel's views of the days that are not running, with their JSON, kept from one
    cycle to the next: such a view changes only with its inputs (:data:`_DayInputs`), and
    rebuilding every past day every cycle made the status grow with the course.  The running
    day is always built afresh (its projection depends on the time).

    Any thread may use it (a lost race builds a view twice, the same view)."""

    def __init__(self) -> None:
        self._views: dict[int, tuple[_DayInputs, DayView, dict[str, Any]]] = {}

    def view(self, state: CourseState, day: CourseDay, now_s: float, running: bool) -> DayView:
        if running:
            return _day_view(state, day, now_s, running)
        prescription = day.prescription
        inputs: _DayInputs = (
            day,
            state.titer(prescription.titer_seq) if prescription else None,
            None if state.order is None else state.order.concentration_mg_per_ml,
            state.weight_kg,
        )
        kept = self._views.get(day.day)
        if kept is not None and kept[0] == inputs:
            return kept[1]
        view = _day_view(state, day, now_s, running)
        self._views[day.day] = (inputs, view, _plain(view))
        return view

    def json(self, view: DayView) -> dict[str, Any]:
        """``view`` as JSON: the kept JSON (a shallow copy) when it is a kept view."""
        kept = self._views.get(view.day)
        if kept is not None and kept[1] is view:
            return dict(kept[2])
        data: dict[str, Any] = _plain(view)
        return data


def _mg_per_kg_per_h(state: CourseState, rate_ml_per_h: float | None) -> float | None:
    if rate_ml_per_h is None or state.order is None or not state.weight_kg:
        return None
    return mg_per_kg(rate_ml_per_h, state.order.concentration_mg_per_ml, state.weight_kg)


def _usable_ceiling(state: CourseState) -> float:
    limit = state.ceiling_ml_per_h()
    pump_max = state.link.pump_max_rate_ml_per_h
    return limit if pump_max is None else min(limit, pump_max)


def _day_view(state: CourseState, day: CourseDay, now_s: float, running: bool) -> DayView:
    prescription = day.prescription
    titer = state.titer(prescription.titer_seq) if prescription else None
    projected = _projected_shortfall(state, day, now_s) if running else None
    day_rate = None if prescription is None else prescription.volume_ml / HOURS_PER_DAY
    return DayView(
        day=day.day,
        window_start=None if day.window_start_s is None else format_instant(day.window_start_s),
        prescribed_ml=0.0 if prescription is None else prescription.volume_ml,
        dose_mg_per_kg=None if prescription is None else prescription.dose_mg_per_kg,
        day_rate_ml_per_h=day_rate,
        day_rate_mg_per_kg_per_h=_mg_per_kg_per_h(state, day_rate),
        delivered_ml=day.delivered_ml,
        delivered_max_ml=day.delivered_max_ml,
        shortfall_ml=day.shortfall_ml if day.closed else None,
        projected_shortfall_ml=projected,
        titer=None
        if titer is None
        else TiterView(
            titer.igm_mg_dl, titer.hematocrit, format_instant(titer.measured_at_s), titer.baseline
        ),
        capped=bool(prescription and prescription.capped),
        notes=(*(prescription.notes if prescription else ()), *day.notes),
        closed=day.closed,
        awaiting_titer=prescription is None and not day.closed,
        late_titer_policy=day.late_titer_policy,
    )


def _projected_shortfall(state: CourseState, day: CourseDay, now_s: float) -> float | None:
    """What a running day cannot give by its window's end at the usable ceiling (mL)."""
    prescription = day.prescription
    window = day.window
    if prescription is None or window is None:
        return None
    return plan_rate(
        remaining_volume_ml=shortfall_ml(prescription.volume_ml, day.upper_bound_ml),
        remaining_time_s=window.remaining_s(now_s),
        ceiling_ml_per_h=_usable_ceiling(state),
    ).projected_shortfall_ml


def channel_view(
    *,
    channel_id: str,
    pump_url: str,
    state: CourseState,
    status: PumpStatus | None,
    now_s: float,
    past_days: PastDays | None = None,
) -> ChannelView:
    """The channel as the bedside, the API and the metrics see it (``past_days``: the
    channel's cache of the days not running; pass it to :meth:`ChannelView.to_json` too)."""
    order = state.order
    ceiling = _ceiling(state)
    build = _day_view if past_days is None else past_days.view
    days = tuple(build(state, d, now_s, d is state.today and not d.closed) for d in state.days)
    commanded = _commanded(state)
    return ChannelView(
        id=channel_id,
        state=state.channel.value,
        arm=None if order is None else order.arm.value,
        weight_kg=state.weight_kg,
        pump=pump_url,
        concentration_mg_per_ml=None if order is None else order.concentration_mg_per_ml,
        ceiling_ml_per_h=ceiling,
        ceiling_mg_per_kg_per_h=_mg_per_kg_per_h(state, ceiling),
        day=state.day_number,
        days=days,
        alarms=_alarm_views(state),
        commanded_rate_ml_per_h=commanded,
        commanded_rate_mg_per_kg_per_h=_mg_per_kg_per_h(state, commanded),
        max_commanded_rate_ml_per_h=state.max_commanded_rate_ml_per_h,
        vasopressors_withdrawn=state.vasopressors_withdrawn_at_s is not None,
        completed_reason=state.completed_reason,
        last_good_poll_wall_s=state.link.last_good_poll_s,
        pump_status=None if status is None else status.to_dict(),
    )


def _ceiling(state: CourseState) -> float | None:
    return state.ceiling_ml_per_h() if state.order is not None else None


def _commanded(state: CourseState) -> float | None:
    return state.commanded.rate_ml_per_h if state.commanded else None


def _alarm_views(state: CourseState) -> tuple[AlarmView, ...]:
    return tuple(AlarmView(a.code, a.detail, a.raised_at_s, a.stops) for a in state.alarms)


def channel_gauges(*, channel_id: str, state: CourseState, now_s: float) -> dict[str, Any]:
    """The part of the channel's view (:func:`channel_view`, as JSON) the metrics read after
    every cycle, with the same values: its keys, but ``days`` holds only today's, and of it
    only the prescribed, delivered and projected shortfall volumes.

    The whole view (every past day, the pump's status) was built every cycle just for them."""
    today = state.today
    days = []
    if today is not None:
        prescription = today.prescription
        days.append(
            {
                "prescribed_ml": 0.0 if prescription is None else prescription.volume_ml,
                "delivered_ml": today.delivered_ml,
                "projected_shortfall_ml": (
                    None if today.closed else _projected_shortfall(state, today, now_s)
                ),
            }
        )
    return {
        "id": channel_id,
        "state": state.channel.value,
        "ceiling_ml_per_h": _ceiling(state),
        "day": state.day_number,
        "days": days,
        "alarms": _plain(_alarm_views(state)),
        "commanded_rate_ml_per_h": _commanded(state),
        "last_good_poll_wall_s": state.link.last_good_poll_s,
    }
