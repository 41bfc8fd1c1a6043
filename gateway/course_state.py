"""A channel's course as typed, frozen, versioned state (docs/design.md, "The course state").

Everything the controller knows between two control cycles is in :class:`CourseState`: the
order, every titer received, each course day with its prescription and accounting, the alarms,
the link and the resume budget.  It is serialised to the journal after every decision and read
back exactly (:func:`dump_state` / :func:`load_state`); nothing else about a course is kept.

The channel states and the transitions allowed between them are here too: a transition outside
:data:`TRANSITIONS` is a bug, and the controller stops the pump when one is attempted.
"""

from __future__ import annotations

import functools
import json
import math
import operator
import types
import typing
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any, Final, TypeVar

from pydantic import TypeAdapter, ValidationError

from gateway.dosing import Arm, Product
from gateway.errors import GatewayError
from gateway.planner import DayWindow
from gateway.safety import ceiling_ml_per_h

#: Bump when the shape below changes; an older journal is refused with a clear message.
STATE_VERSION: Final[int] = 3
#: Older versions read by filling in what they lack (2 -> 3: the journalled-readback marks).
_UPGRADES: Final[dict[int, dict[str, dict[str, Any]]]] = {
    2: {
        "link": {
            "readback_journalled_s": None,
            "readback_journalled_key": None,
            "silent_polls": 0,
        }
    },
}


class ChannelState(StrEnum):
    """What the channel is doing, as reported by ``status``."""

    AWAITING_ORDER = "awaiting_order"
    STARTING = "starting"
    INFUSING = "infusing"
    DAY_COMPLETE = "day_complete"
    AWAITING_TITER = "awaiting_titer"
    ALARM = "alarm"
    LINK_LOST = "link_lost"
    STOPPED = "stopped"
    COMPLETED = "completed"


_S = ChannelState
_ANY_BUT_COMPLETED = frozenset(s for s in ChannelState if s is not ChannelState.COMPLETED)

#: The allowed transitions ``from -> {to}``.  docs/design.md shows the same table.
TRANSITIONS: Final[dict[ChannelState, frozenset[ChannelState]]] = {
    _S.AWAITING_ORDER: frozenset({_S.STARTING, _S.ALARM, _S.STOPPED, _S.LINK_LOST}),
    _S.STARTING: frozenset(
        {
            _S.INFUSING,
            _S.DAY_COMPLETE,
            _S.AWAITING_TITER,
            _S.ALARM,
            _S.STOPPED,
            _S.LINK_LOST,
            _S.COMPLETED,
        }
    ),
    _S.INFUSING: frozenset(
        {
            _S.STARTING,
            _S.DAY_COMPLETE,
            _S.AWAITING_TITER,
            _S.ALARM,
            _S.STOPPED,
            _S.LINK_LOST,
            _S.COMPLETED,
        }
    ),
    _S.DAY_COMPLETE: frozenset(
        {_S.STARTING, _S.AWAITING_TITER, _S.ALARM, _S.STOPPED, _S.LINK_LOST, _S.COMPLETED}
    ),
    _S.AWAITING_TITER: frozenset(
        {_S.STARTING, _S.DAY_COMPLETE, _S.ALARM, _S.STOPPED, _S.LINK_LOST, _S.COMPLETED}
    ),
    _S.ALARM: frozenset({_S.STARTING, _S.AWAITING_ORDER, _S.STOPPED, _S.LINK_LOST, _S.COMPLETED}),
    # After silence the channel returns to what it was doing (then decides again).
    _S.LINK_LOST: _ANY_BUT_COMPLETED | {_S.COMPLETED},
    _S.STOPPED: frozenset({_S.STARTING, _S.AWAITING_ORDER, _S.ALARM, _S.LINK_LOST, _S.COMPLETED}),
    _S.COMPLETED: frozenset(),
}


class TransitionError(GatewayError):
    """A state change outside :data:`TRANSITIONS`: a bug.  The pump is stopped."""


class AlarmCode(StrEnum):
    """Gateway alarms.  Pump alarms are reported as ``pump_<name>``."""

    PUMP_SILENT = "pump_silent"
    RATE_ABOVE_CEILING = "rate_above_ceiling"
    RATE_MISMATCH = "rate_mismatch"
    STATE_MISMATCH = "state_mismatch"
    SAFETY_REFUSED = "safety_refused"
    PUMP_REFUSED = "pump_refused"
    TOTALIZER_WENT_BACK = "totalizer_went_back"
    OVER_DELIVERY = "over_delivery"
    UNSUPPORTED_PUMP = "unsupported_pump"
    LOW_BATTERY = "pump_low_battery"
    START_WINDOW_EXCEEDED = "start_window_exceeded"
    #: Advisory: no fresh titer when a titer-arm day should open; the pump waits stopped.
    TITER_LATE = "titer_late"
    #: Advisory: the day cannot be completed at the ceiling (or the pump's maximum).
    PROJECTED_SHORTFALL = "projected_shortfall"
    #: The link came back after an outage the auto-resume rule does not cover.
    OUTAGE_NEEDS_ACK = "outage_needs_ack"
    #: A state transition outside the table: a bug in the gateway.  The pump is stopped.
    INTERNAL_ERROR = "internal_error"
    #: The totalizer and the read-back rate integrated over time disagree (frozen, jumped).
    TOTALIZER_IMPLAUSIBLE = "totalizer_implausible"
    #: The pump does not hold a communication watchdog no longer than requested: no start.
    WATCHDOG_UNCONFIRMED = "watchdog_unconfirmed"
    #: A stop failed or the pump kept infusing after it: the gateway goes quiet so the pump's
    #: own watchdog stops it, and keeps trying.  Critical.
    STOP_FAILED = "stop_failed"
    #: A new course on a pump whose totalizer is not zero or that is infusing: a person checks.
    PUMP_HAS_HISTORY = "pump_has_history"
    #: Advisory: the wall clock stepped; day windows are on the wall clock.
    CLOCK_STEP = "clock_step"


class AckPhase(StrEnum):
    CLEARING = "clearing"
    CLEARED = "cleared"


@dataclass(frozen=True)
class Alarm:
    code: str
    detail: str
    raised_at_s: float
    #: False for an advisory alarm that does not stop the pump.
    stops: bool = True


@dataclass(frozen=True)
class Order:
    """A patient's order as the controller holds it (validated at intake)."""

    arm: Arm
    weight_kg: float
    ceiling_ml_per_kg_per_h: float
    concentration_mg_per_ml: float
    igm_content_mg_per_ml: float
    randomised_at_s: float | None
    start_override_reason: str | None
    received_at_s: float

    @property
    def product(self) -> Product:
        return Product(self.concentration_mg_per_ml, self.igm_content_mg_per_ml)


@dataclass(frozen=True)
class TiterRecord:
    """One IgM titer, with when the blood was drawn and which day (if any) used it."""

    seq: int
    igm_mg_dl: float
    hematocrit: float
    measured_at_s: float
    received_at_s: float
    #: The enrolment titer of the order (day 1's).
    baseline: bool = False
    #: Set when a soft limit was confirmed by the person who entered it.
    confirmed_note: str | None = None


@dataclass(frozen=True)
class Prescription:
    """One day's dose, with what it was computed from."""

    volume_ml: float
    dose_mg_per_kg: float
    weight_kg: float
    titer_seq: int | None
    capped: bool
    notes: tuple[str, ...] = ()
    #: Why it was (re)computed: "day 2", "weight corrected", "titer corrected".
    why: str = ""


@dataclass(frozen=True)
class CourseDay:
    """One course day: its window, prescription and accounting."""

    day: int
    #: When the window opens by the clock (the previous day's end; day 1: the course start).
    nominal_start_s: float
    #: The window actually used; None while a titer-arm day waits for its titer (``shift``).
    window_start_s: float | None
    prescription: Prescription | None = None
    #: Volume delivered, from the pump's totalizer readings (a lower bound, mL).
    delivered_ml: float = 0.0
    #: Volume that may have been delivered: ``delivered_ml`` plus the totalizer's step (mL).
    delivered_max_ml: float = 0.0
    #: Delivered according to the read-back rate integrated over time while the pump
    #: reported infusing (an independent estimate, mL).
    estimated_ml: float = 0.0
    #: The totalizer was found implausible: the day is bounded by the larger of the two.
    totalizer_distrusted: bool = False
    #: Delivered when the current prescription was set (a correction may set it lower).
    delivered_at_prescription_ml: float = 0.0
    closed: bool = False
    shortfall_ml: float | None = None
    auto_resumes: int = 0
    #: ``shift`` or ``compress`` when this day's titer came late.
    late_titer_policy: str | None = None
    notes: tuple[str, ...] = ()

    @property
    def window(self) -> DayWindow | None:
        """The day's 24-h window, or None while it waits for a late titer (``shift``)."""
        return None if self.window_start_s is None else DayWindow(self.window_start_s)

    @property
    def upper_bound_ml(self) -> float:
        """What may have been given today (invariant 4): the totalizer plus its step, or the
        read-back rate over time when larger and the totalizer was found implausible."""
        if self.totalizer_distrusted:
            return max(self.delivered_max_ml, self.estimated_ml)
        return self.delivered_max_ml

    @property
    def prescribed_ml(self) -> float | None:
        return None if self.prescription is None else self.prescription.volume_ml


@dataclass(frozen=True)
class Commanded:
    """The last rate command the pump confirmed."""

    rate_ml_per_h: float
    vtbi_ml: float
    #: The ceiling the rate was approved against (a later weight may lower the ceiling).
    ceiling_ml_per_h: float
    at_s: float


#: What a journalled reading showed that a later one must differ in to be journalled at once:
#: pump state, rate (mL/h) and alarm codes.
ReadbackKey = tuple[str, float, tuple[str, ...]]


@dataclass(frozen=True)
class LinkState:
    """The pump link as the controller last saw it."""

    #: The connection the watchdog was armed on; a new connection needs arming again.
    armed_connection: str | None = None
    watchdog_held_s: float | None = None
    pump_max_rate_ml_per_h: float | None = None
    rate_resolution_ml_per_h: float = 0.01
    last_totalizer_ml: float | None = None
    last_volume_resolution_ml: float = 0.0
    last_good_poll_s: float | None = None
    #: A clear of the totals was decided; a reading below the last one is that clear.
    totals_clear_pending: bool = False
    #: The last reading's pump state and rate, for integrating delivery independently.
    last_infusing: bool = False
    last_rate_ml_per_h: float = 0.0
    #: Volume the read-back rate says was given since the totalizer last moved (mL), and for
    #: how many readings it has not moved while the pump reported infusing.
    estimated_since_advance_ml: float = 0.0
    stalled_readings: int = 0
    #: The pump's own uptime at the last reading, where the protocol has it (s).
    last_uptime_s: float | None = None
    #: The executor's monotonic clock at the last good reading (s); meaningful only within one
    #: process: a smaller value later means another process.
    last_good_poll_monotonic_s: float | None = None
    #: After a failed stop: no traffic to the pump until then, so its own watchdog stops it.
    #: On the executor's monotonic clock (a wall-clock step neither ends nor stretches it);
    #: like ``last_good_poll_monotonic_s`` it means nothing to another process: cleared on load.
    quiet_until_s: float | None = None
    #: The last reading the journal holds (a ``readback`` event): when, and what it showed that
    #: a later reading must differ in to be journalled before the next checkpoint.
    readback_journalled_s: float | None = None
    readback_journalled_key: ReadbackKey | None = None
    #: Polls in a row that heard nothing from the pump.
    silent_polls: int = 0


@dataclass(frozen=True)
class CourseState:
    """Everything the controller knows about one channel's course."""

    channel: ChannelState = ChannelState.AWAITING_ORDER
    version: int = STATE_VERSION
    order: Order | None = None
    #: The current weight (an order's weight, or a later correction), kg.
    weight_kg: float | None = None
    #: The weight the configuration last said (the order's, or one adopted at a restart): a
    #: config that says another at restart has changed (kg).
    config_weight_kg: float | None = None
    titers: tuple[TiterRecord, ...] = ()
    days: tuple[CourseDay, ...] = ()
    course_start_s: float | None = None
    alarms: tuple[Alarm, ...] = ()
    vasopressors_withdrawn_at_s: float | None = None
    commanded: Commanded | None = None
    #: Re-plan at the next drive although the pump holds a confirmed command (a new weight:
    #: the pump's rate may now be above the lower ceiling, and is lowered first).
    replan: bool = False
    max_commanded_rate_ml_per_h: float = 0.0
    link: LinkState = field(default_factory=LinkState)
    lost_since_s: float | None = None
    #: The pump's uptime and the monotonic clock at the last good reading before the link was
    #: lost (s).
    lost_since_uptime_s: float | None = None
    lost_since_monotonic_s: float | None = None
    state_before_loss: ChannelState | None = None
    #: The first good reading after silence or a restart reconciles before anything else.
    recovering: bool = False
    restarted: bool = False
    resume_requested: bool = False
    #: A person accepted that the pump had history before this course (pump_has_history).
    pump_history_accepted: bool = False
    #: Where an acknowledgement is: the pump's alarms being cleared, then cleared (the next
    #: reading in a stopped state decides the resume).
    ack_phase: AckPhase | None = None
    #: Course complete: why.
    completed_reason: str | None = None

    @property
    def today(self) -> CourseDay | None:
        return self.days[-1] if self.days else None

    @property
    def day_number(self) -> int:
        return self.days[-1].day if self.days else 0

    def ceiling_ml_per_h(self) -> float:
        """The rate ceiling in mL/h; 0 while there is no order (nothing may run)."""
        if self.order is None or self.weight_kg is None:
            return 0.0
        return _ceiling_ml_per_h(
            self.weight_kg,
            self.order.ceiling_ml_per_kg_per_h,
            self.order.concentration_mg_per_ml,
        )

    def alarms_that_stop(self) -> tuple[Alarm, ...]:
        """Active alarms that hold the pump (PUMP_SILENT is raised as one that does not)."""
        return tuple(a for a in self.alarms if a.stops)

    def titer(self, seq: int | None) -> TiterRecord | None:
        return next((t for t in self.titers if t.seq == seq), None)

    def titer_used_by(self, seq: int) -> int | None:
        """The day whose prescription uses titer ``seq``, or None."""
        for day in self.days:
            if day.prescription is not None and day.prescription.titer_seq == seq:
                return day.day
        return None


@functools.lru_cache(maxsize=16, typed=True)
def _ceiling_ml_per_h(
    weight_kg: float, ceiling_ml_per_kg_per_h: float, concentration_mg_per_ml: float
) -> float:
    """:func:`gateway.safety.ceiling_ml_per_h`, kept for the few inputs a gateway sees: a cycle
    asks for the ceiling several times (deciding, the metrics, the projected shortfall), and
    each time it would validate its three inputs again.  A pure function of its arguments; an
    input it refuses raises every time (a refusal is not kept)."""
    return ceiling_ml_per_h(
        weight_kg, ceiling_ml_per_kg_per_h, concentration_mg_per_ml=concentration_mg_per_ml
    )


_Frozen = TypeVar("_Frozen", CourseState, LinkState, CourseDay)
#: Each class's field names, looked up once.
_FIELD_NAMES: dict[type, frozenset[str]] = {}


def evolve(value: _Frozen, **changes: Any) -> _Frozen:
    """``dataclasses.replace`` for the state's own classes, at a fraction of its cost.

    The controller replaces the link several times a cycle; ``replace`` rebuilds the keyword
    arguments of every field and runs ``__init__`` (a frozen class sets each field through
    ``object.__setattr__``).  These classes have no ``__post_init__`` and no ``init=False``
    field, so copying the fields and setting the changed ones makes the same object; a name
    that is not a field is a TypeError, as with ``replace``.
    """
    cls = type(value)
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = frozenset(f.name for f in fields(cls))
    if not names.issuperset(changes):
        unknown = ", ".join(sorted(set(changes) - names))
        raise TypeError(f"{cls.__name__} has no field {unknown}")
    new = object.__new__(cls)
    new.__dict__.update(value.__dict__)
    new.__dict__.update(changes)
    return new


class StateError(GatewayError):
    """Stored state that cannot be read: the channel will not act on a guess."""


_ADAPTER: Final = TypeAdapter(CourseState)


def dump_state(state: CourseState) -> dict[str, Any]:
    """The state as JSON-ready data (floats kept exact)."""
    data: dict[str, Any] = _ADAPTER.dump_python(state, mode="json")
    return data


_DAY_ADAPTER: Final = TypeAdapter(CourseDay)
_TITERS_ADAPTER: Final = TypeAdapter(tuple[TiterRecord, ...])
_LINK_ADAPTER: Final = TypeAdapter(LinkState)
#: The fields :class:`StateText` encodes on their own (each spliced in where the rest says null).
_SPLICED: Final = frozenset({"days", "titers", "link"})
#: A day's running totals, spliced into the rest of its text (as ``repr``, which is how JSON
#: writes a finite float).  No object inside a day has keys of these names, and its own keys
#: that sort before ``prescription`` come first.
_DAY_SPLICED: Final = ("delivered_ml", "delivered_max_ml", "estimated_ml")
#: The fields of the rest of the state, and of the rest of a day, read as one tuple (in C:
#: compared every cycle with the tuple the kept text was made from).
_REST_FIELDS: Final = operator.attrgetter(
    *(f.name for f in fields(CourseState) if f.name not in _SPLICED)
)
_DAY_SHAPE_FIELDS: Final = operator.attrgetter(
    *(f.name for f in fields(CourseDay) if f.name not in _DAY_SPLICED)
)
#: The link's field names in the order its JSON object sorts them, their JSON keys, and a
#: getter of their values in that order.
_LINK_NAMES: Final = tuple(sorted(f.name for f in fields(LinkState)))
_LINK_KEYS: Final = tuple(json.dumps(name) for name in _LINK_NAMES)
_LINK_FIELDS: Final = operator.attrgetter(*_LINK_NAMES)


def _plain_kinds(hint: object) -> frozenset[type]:
    """The exact types a link field's value may have to be written by :func:`_plain_json`
    (pydantic writes a value of another type by the field's type: ``False`` in an int field
    as ``0``); a kind of field it does not know is an error at import."""
    kinds: set[type] = set()
    for arg in typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,):
        if arg is type(None) or arg in (bool, int, float, str):
            kinds.add(arg)
        elif arg == ReadbackKey:
            kinds.add(tuple)
        else:
            raise TypeError(f"LinkState: no plain JSON for a field of type {arg!r}")
    return frozenset(kinds)


_LINK_PLAIN_KINDS: Final = tuple(
    _plain_kinds(typing.get_type_hints(LinkState)[name]) for name in _LINK_NAMES
)


def _plain_json(value: object) -> str | None:
    """``json.dumps(value)`` for a link field's value of its own type (None, bool, int, finite
    float, str, a :data:`ReadbackKey`), as ``dump_python(mode="json")`` then ``json.dumps``
    write it; else None (the caller encodes the long way)."""
    if value is None:
        return "null"
    if value is True or value is False:
        return "true" if value else "false"
    if type(value) is int:
        return int.__repr__(value)
    if type(value) is float:
        return float.__repr__(value) if math.isfinite(value) else None
    if type(value) is str:
        return json.dumps(value)
    if type(value) is tuple and len(value) == 3:  # a ReadbackKey: (state, rate, alarms)
        state, rate, alarms = value
        if type(state) is str and type(alarms) is tuple and all(type(a) is str for a in alarms):
            rate_text = _plain_json(rate) if type(rate) is float else None
            if rate_text is not None:
                alarms_text = ", ".join(json.dumps(a) for a in alarms)
                return f"[{json.dumps(state)}, {rate_text}, [{alarms_text}]]"
    return None


class StateText:
    """One channel's states as the journal stores them: ``json.dumps(dump_state(state),
    sort_keys=True)``, the same text, with the text of each day and of the titers kept until
    they change.

    The state holds every day and every titer of the course, so encoding all of it every cycle
    grew with the course; past days and titers do not change, so their text is reused.  It is
    spliced in where the state encoded without them says ``"days": null`` (``"titers": null``):
    only a top-level key can read so (JSON escapes the quotes of any string that holds it, and
    no object inside the state has a key of those names).  The link changes every cycle and
    the rest (the order, the alarms, the flags) seldom: the rest's text is kept while its
    fields are the same objects or equal, and the link's is spliced in the same way; so is
    today's: its running totals go into the text of the rest of the day.  (A part equal to the
    kept one keeps its text: ``-0.0`` where ``0.0`` was kept reads as ``0.0``, an equal state.)
    Used from one thread (the channel's cycle)."""

    def __init__(self) -> None:
        self._days: dict[int, tuple[CourseDay, str]] = {}
        self._titers: tuple[tuple[TiterRecord, ...], str] | None = None
        self._rest: tuple[tuple[object, ...], str] | None = None
        self._day_shapes: dict[int, tuple[tuple[object, ...], str]] = {}
        #: The link's field values last encoded and each one's text.
        self._link: tuple[tuple[object, ...], list[str]] | None = None

    def encode(self, state: CourseState) -> str:
        days = "[" + ", ".join(self._day_text(day) for day in state.days) + "]"
        link = self._link_text(state.link)
        return (
            self._rest_text(state)
            .replace('"titers": null', '"titers": ' + self._titers_text(state.titers), 1)
            .replace('"link": null', '"link": ' + link, 1)
            .replace('"days": null', '"days": ' + days, 1)
        )

    def _rest_text(self, state: CourseState) -> str:
        """The state's text with ``null`` for each of :data:`_SPLICED`."""
        fields_now = _REST_FIELDS(state)
        kept = self._rest
        if kept is not None and kept[0] == fields_now:
            return kept[1]
        data = _ADAPTER.dump_python(state, mode="json", exclude=set(_SPLICED))
        data.update(dict.fromkeys(_SPLICED))
        text = json.dumps(data, sort_keys=True)
        self._rest = (fields_now, text)
        return text

    def _link_text(self, link: LinkState) -> str:
        """The link's JSON text: a field holding the same object as last time keeps its text
        (most of them, each cycle); one that is not plain makes the whole link encoded the
        long way."""
        values = _LINK_FIELDS(link)
        kept = self._link
        texts: list[str] = []
        for index, value in enumerate(values):
            if kept is not None and kept[0][index] is value:
                texts.append(kept[1][index])
                continue
            text = _plain_json(value) if type(value) in _LINK_PLAIN_KINDS[index] else None
            if text is None:
                self._link = None
                return json.dumps(_LINK_ADAPTER.dump_python(link, mode="json"), sort_keys=True)
            texts.append(text)
        self._link = (values, texts)
        return "{" + ", ".join(map("{}: {}".format, _LINK_KEYS, texts)) + "}"

    def _day_text(self, day: CourseDay) -> str:
        kept = self._days.get(day.day)
        if kept is not None and (kept[0] is day or kept[0] == day):
            return kept[1]
        text = self._day_shape(day)
        for name in _DAY_SPLICED:
            value = day.__dict__[name]
            if type(value) is not float or not math.isfinite(value):
                # Not a plain finite float: the whole day encoded as it always is.
                text = json.dumps(_DAY_ADAPTER.dump_python(day, mode="json"), sort_keys=True)
                break
            text = text.replace(f'"{name}": null', f'"{name}": {value!r}', 1)
        self._days[day.day] = (day, text)
        return text

    def _day_shape(self, day: CourseDay) -> str:
        """``day``'s text with ``null`` for each of :data:`_DAY_SPLICED` (the running totals,
        which change every cycle): kept while the day's other fields are unchanged."""
        fields_now = _DAY_SHAPE_FIELDS(day)
        kept = self._day_shapes.get(day.day)
        if kept is not None and kept[0] == fields_now:
            return kept[1]
        data = _DAY_ADAPTER.dump_python(day, mode="json", exclude=set(_DAY_SPLICED))
        data.update(dict.fromkeys(_DAY_SPLICED))
        text = json.dumps(data, sort_keys=True)
        self._day_shapes[day.day] = (fields_now, text)
        return text

    def _titers_text(self, titers: tuple[TiterRecord, ...]) -> str:
        kept = self._titers
        if kept is not None and (kept[0] is titers or kept[0] == titers):
            return kept[1]
        text = json.dumps(_TITERS_ADAPTER.dump_python(titers, mode="json"), sort_keys=True)
        self._titers = (titers, text)
        return text


def _upgraded(data: dict[str, Any], fill: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``data`` at the current version: each named object gets the keys it lacks."""
    data = {**data, "version": STATE_VERSION}
    for key, defaults in fill.items():
        part = data.get(key)
        if isinstance(part, dict):
            data[key] = {**defaults, **part}
    return data


def load_state(data: Any) -> CourseState:
    """Read stored state back exactly; :class:`StateError` on any other version or shape."""
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except ValueError as exc:
            raise StateError(f"stored channel state is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise StateError("stored channel state is not an object")
    version = data.get("version")
    if isinstance(version, int) and version in _UPGRADES:
        data = _upgraded(data, _UPGRADES[version])
        version = STATE_VERSION
    if version != STATE_VERSION:
        raise StateError(
            f"stored channel state has version {version!r}; this gateway reads version "
            f"{STATE_VERSION} (finish or archive the course with the gateway that wrote it)"
        )
    try:
        state = _ADAPTER.validate_python(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise StateError(f"stored channel state is malformed at {where}: {first['msg']}") from None
    if dump_state(state) != data:
        # A key this version does not know, or a value it would store differently: the
        # state would not be read back exactly, so it is not read at all.
        unknown = sorted(set(data) - set(dump_state(state)))
        raise StateError(
            "stored channel state does not read back exactly"
            + (f" (unknown keys: {', '.join(unknown)})" if unknown else "")
        )
    return state
