"""The status page (``GET /``): every channel as a card that reads like a pump's own screen.

Rendered on the server from the templates in ``gateway/templates`` (Jinja2, autoescaped), with
no script at all: the page reloads itself every few seconds (``<meta http-equiv="refresh">``).
Each card says its state in words, in colour *and* with a shape (colour is never the only
signal); cards that need a person (a stopping alarm, a refusal, a lost link) come first.

Numbers come from the same channel snapshot as ``GET /v1/channels`` and are rounded down by
:mod:`gateway.display`; the words beside each alarm come from :mod:`gateway.alarm_advice`.
Who may see the page is the guard's business (:mod:`gateway.api_guard`): the read or the write
token, as a bearer header (a reverse proxy) or as the session cookie the login form here sets
(:mod:`gateway.page_session`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from typing import Any, Final
from urllib.parse import parse_qsl

import structlog
from fastapi import FastAPI, Request, Response
from jinja2 import Environment, PackageLoader, StrictUndefined

from gateway.alarm_advice import advice
from gateway.api_guard import Access, Credentials
from gateway.config import ChannelConfig
from gateway.course_state import ChannelState
from gateway.daemon import Gateway
from gateway.display import DOSE_DISPLAY_STEP_MG_PER_KG, floor_display, shown
from gateway.dosing import Arm, course_days_max
from gateway.errors import InputError
from gateway.page_session import (
    LOGIN_PATH,
    LOGOUT_PATH,
    PAGE_PATH,
    SESSION_MAX_AGE_S,
    STYLE_PATH,
    PageSessions,
    came_over_https,
)
from gateway.timestamps import format_instant
from gateway.tokens import TOKEN_MAX_LENGTH, TOKEN_MIN_LENGTH

log = structlog.get_logger("gateway.status_page")

#: The page reloads itself every poll interval (real seconds), bounded to this range.
REFRESH_MIN_S: Final = 3
REFRESH_MAX_S: Final = 10
#: The form's one field.
TOKEN_FIELD: Final = "token"
#: Headers on every page: no caching of patient data, no framing, no script, nothing external.
PAGE_HEADERS: Final[Mapping[str, str]] = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
_FORM_TYPE: Final = "application/x-www-form-urlencoded"


class Tone(StrEnum):
    """A card's colour, always paired with words and an icon of its own shape."""

    ALARM = "alarm"
    ADVISORY = "advisory"
    RUNNING = "running"
    WAITING = "waiting"
    STOPPED = "stopped"
    DONE = "done"


@dataclass(frozen=True)
class StateLook:
    words: str
    tone: Tone
    #: The icon's shape (``templates/icons.html``): alarm triangle, play, pause, square, check...
    icon: str


_S = ChannelState
STATE_LOOKS: Final[Mapping[str, StateLook]] = {
    _S.AWAITING_ORDER.value: StateLook("Waiting for an order", Tone.WAITING, "hourglass"),
    _S.STARTING.value: StateLook("Starting", Tone.RUNNING, "play"),
    _S.INFUSING.value: StateLook("Infusing", Tone.RUNNING, "play"),
    _S.DAY_COMPLETE.value: StateLook("Day's dose given", Tone.DONE, "check"),
    _S.AWAITING_TITER.value: StateLook("Waiting for the day's titer", Tone.WAITING, "hourglass"),
    _S.ALARM.value: StateLook("Alarm: pump stopped", Tone.ALARM, "alarm"),
    _S.LINK_LOST.value: StateLook("Pump not answering", Tone.ALARM, "unlinked"),
    _S.STOPPED.value: StateLook("Stopped by an operator", Tone.STOPPED, "stop"),
    _S.COMPLETED.value: StateLook("Course complete", Tone.DONE, "check"),
}
#: A state this page has no words for (e.g. ``unknown`` after a journal failure) needs a person.
UNKNOWN_LOOK: Final = StateLook("State unknown", Tone.ALARM, "alarm")


@dataclass(frozen=True)
class AlarmCard:
    code: str
    #: "Alarm" (stops the pump) or "Advisory".
    kind: str
    tone: Tone
    title: str
    detail: str
    raised: str
    meaning: str
    action: str


@dataclass(frozen=True)
class Card:
    id: str
    bed: str | None
    patient: str | None
    state: str
    look: StateLook
    #: 0: needs a person now; 1: an advisory to check; 2: nothing to do.
    attention: int
    order_text: str
    day_text: str
    dose_mg_per_kg: str
    dose_ml: str
    delivered_ml: str
    #: For ``<progress>``: delivered and prescribed (mL, rounded down), and the whole percent.
    delivered_value: float
    delivered_max: float
    delivered_percent: int | None
    rate_ml_per_h: str
    rate_mg_per_kg_per_h: str
    ceiling_ml_per_h: str
    ceiling_mg_per_kg_per_h: str
    #: Whether a rate is commanded (else the pump is stopped).
    rate_commanded: bool
    #: For ``<meter>``: the commanded rate against the ceiling (mL/h).
    rate_value: float
    rate_max: float
    titer: str
    shortfall: str
    notes: tuple[str, ...]
    alarms: tuple[AlarmCard, ...]
    last_reply: str

    @property
    def needs_person(self) -> bool:
        return self.attention == 0

    @property
    def label(self) -> str:
        """What the card is called: its bed where one is configured, else its channel."""
        return f"Bed {self.bed}" if self.bed else f"Channel {self.id}"


def ago(seconds: float) -> str:
    """How long ago, in words a person reads at a glance: ``"4 s ago"``, ``"3 min ago"``."""
    whole = max(math.floor(seconds), 0)
    if whole < 60:
        return f"{whole} s ago"
    if whole < 3600:
        return f"{whole // 60} min ago"
    return f"{whole // 3600} h {whole % 3600 // 60} min ago"


def _when(wall_s: float | None, now_s: float) -> str:
    return "never" if wall_s is None else f"{format_instant(wall_s)} ({ago(now_s - wall_s)})"


def _alarm_card(alarm: Mapping[str, Any], now_s: float) -> AlarmCard:
    text = advice(str(alarm["code"]))
    return AlarmCard(
        code=str(alarm["code"]),
        kind="Alarm" if alarm["stops"] else "Advisory",
        tone=Tone.ALARM if alarm["stops"] else Tone.ADVISORY,
        title=text.title,
        detail=str(alarm["detail"]),
        raised=_when(alarm["raised_wall_s"], now_s),
        meaning=text.meaning,
        action=text.action,
    )


def _look(snapshot: Mapping[str, Any]) -> tuple[StateLook, int]:
    """The state's look, and how urgently the channel needs a person (:attr:`Card.attention`)."""
    look = STATE_LOOKS.get(str(snapshot["state"]), UNKNOWN_LOOK)
    alarms = snapshot.get("alarms") or ()
    if look.tone is Tone.ALARM or any(a["stops"] for a in alarms):
        return look, 0
    return look, 1 if alarms else 2


def _day_text(snapshot: Mapping[str, Any]) -> str:
    day, arm = snapshot["day"], snapshot["arm"]
    if arm is None or not day:
        return "Not started"
    if arm == Arm.TITER.value and snapshot["vasopressors_withdrawn"]:
        return f"Day {day} of {day} (vasopressors withdrawn: the last day)"
    most = course_days_max(Arm(arm))
    return f"Day {day} of {'up to ' if arm == Arm.TITER.value else ''}{most}"


def _titer_text(snapshot: Mapping[str, Any], today: Mapping[str, Any] | None) -> str:
    if snapshot["arm"] != Arm.TITER.value:
        return "not used (flat arm)" if snapshot["arm"] else "-"
    if today is None:
        return "-"
    if today["awaiting_titer"]:
        return "waiting for the day's titer (pump stopped)"
    titer = today["titer"]
    if titer is None:
        return "-"
    baseline = ", baseline" if titer["baseline"] else ""
    return (
        f"IgM {titer['igm_mg_dl']:g} mg/dL, hematocrit {titer['hematocrit']:g}{baseline}; "
        f"drawn {titer['measured_at']}"
    )


def _shortfall_text(today: Mapping[str, Any] | None) -> str:
    if today is None:
        return "-"
    short = today["shortfall_ml"] if today["closed"] else today["projected_shortfall_ml"]
    if short is None:
        return "-"
    return shown(short, "mL") if floor_display(short) else "none"


def card(snapshot: Mapping[str, Any], config: ChannelConfig | None, now_s: float) -> Card:
    """One channel's card from its snapshot (``GET /v1/channels``) and its configuration."""
    look, attention = _look(snapshot)
    today = next((d for d in snapshot["days"] if d["day"] == snapshot["day"]), None)
    prescribed = floor_display(today["prescribed_ml"]) if today else None
    delivered = floor_display(today["delivered_ml"]) if today else None
    rate = snapshot["commanded_rate_ml_per_h"]
    ceiling = snapshot["ceiling_ml_per_h"]
    weight = snapshot["weight_kg"]
    arm = snapshot["arm"]
    return Card(
        id=str(snapshot["id"]),
        bed=config.bed if config else None,
        patient=config.patient_id if config else None,
        state=str(snapshot["state"]),
        look=look,
        attention=attention,
        order_text="No order yet" if arm is None else f"{arm} arm, {weight:g} kg",
        day_text=_day_text(snapshot),
        dose_mg_per_kg=shown(
            today["dose_mg_per_kg"] if today else None, "mg/kg", DOSE_DISPLAY_STEP_MG_PER_KG
        ),
        dose_ml=shown(prescribed, "mL"),
        delivered_ml=shown(delivered, "mL"),
        delivered_value=delivered or 0.0,
        delivered_max=prescribed or 0.0,
        delivered_percent=(
            math.floor(100.0 * delivered / prescribed)
            if prescribed and delivered is not None
            else None
        ),
        rate_ml_per_h=shown(rate, "mL/h"),
        rate_mg_per_kg_per_h=shown(snapshot["commanded_rate_mg_per_kg_per_h"], "mg/kg/h"),
        ceiling_ml_per_h=shown(ceiling, "mL/h"),
        ceiling_mg_per_kg_per_h=shown(snapshot["ceiling_mg_per_kg_per_h"], "mg/kg/h"),
        rate_commanded=rate is not None,
        rate_value=floor_display(rate) or 0.0,
        rate_max=floor_display(ceiling) or 0.0,
        titer=_titer_text(snapshot, today),
        shortfall=_shortfall_text(today),
        notes=tuple(today["notes"]) if today else (),
        alarms=tuple(_alarm_card(a, now_s) for a in snapshot.get("alarms") or ()),
        last_reply=_when(snapshot["last_good_poll_wall_s"], now_s),
    )


def cards(gateway: Gateway) -> list[Card]:
    """Every channel's card, those needing a person first (then in configuration order)."""
    configs = {c.id: c for c in gateway.config.channels}
    now_s = gateway.clock.wall()
    built = [card(s, configs.get(s["id"]), now_s) for s in gateway.snapshots()]
    return sorted(built, key=lambda c: c.attention)


def refresh_s(gateway: Gateway) -> int:
    """Seconds between the page's reloads: the real poll interval, within the bounds."""
    return min(max(math.ceil(gateway.poll_interval_real_s), REFRESH_MIN_S), REFRESH_MAX_S)


@functools.cache
def templates() -> Environment:
    """The page's templates (package data), every value HTML-escaped."""
    return Environment(
        loader=PackageLoader("gateway", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _render(template: str, **values: object) -> str:
    return templates().get_template(template).render(**values)


def render_status(gateway: Gateway) -> str:
    channel_cards = cards(gateway)
    return _render(
        "status.html",
        cards=channel_cards,
        needing=[c for c in channel_cards if c.needs_person],
        now=format_instant(gateway.clock.wall()),
        refresh_s=refresh_s(gateway),
        time_scale=gateway.config.time_scale,
    )


def render_login(message: str | None = None) -> str:
    return _render(
        "login.html",
        message=message,
        field=TOKEN_FIELD,
        min_length=TOKEN_MIN_LENGTH,
        max_length=TOKEN_MAX_LENGTH,
        session_hours=SESSION_MAX_AGE_S // 3600,
    )


def login_token(content_type: str | None, raw: bytes) -> str:
    """The token a login form sent: one urlencoded field, ``token``; else :class:`InputError`
    (which never holds the body: it may hold a token)."""
    if (content_type or "").split(";")[0].strip().lower() != _FORM_TYPE:
        raise InputError("Content-Type", _FORM_TYPE, None)
    allowed = f"one field, {TOKEN_FIELD}, urlencoded"
    try:
        fields = parse_qsl(
            raw.decode("ascii"), keep_blank_values=True, strict_parsing=True, max_num_fields=1
        )
    except (UnicodeDecodeError, ValueError):
        raise InputError("body", allowed, None) from None
    token = fields[0][1].strip() if len(fields) == 1 and fields[0][0] == TOKEN_FIELD else ""
    if not token:  # (a token pasted with the file's newline is still the token)
        raise InputError("body", allowed, None)
    return token


def _html(body: str, status_code: int = 200, **headers: str) -> Response:
    return Response(
        body,
        status_code=status_code,
        media_type="text/html; charset=utf-8",
        headers={**PAGE_HEADERS, **headers},
    )


def _see_other(location: str, cookie: str) -> Response:
    return Response(
        status_code=303, headers={**PAGE_HEADERS, "Location": location, "Set-Cookie": cookie}
    )


def _secure(request: Request) -> bool:
    return came_over_https(request.url.scheme, dict(request.headers))


def add_status_page(
    app: FastAPI, gateway: Gateway, credentials: Credentials, sessions: PageSessions
) -> None:
    """The page, its login form, logout and style sheet, on ``app`` (out of the API schema)."""
    style = (resources.files("gateway") / "templates" / "status.css").read_bytes()
    app.state.page_sessions = sessions

    @app.get(PAGE_PATH, include_in_schema=False)
    def page() -> Response:
        return _html(render_status(gateway))

    @app.get(STYLE_PATH, include_in_schema=False)
    def stylesheet() -> Response:
        return Response(style, media_type="text/css", headers={"Cache-Control": "max-age=300"})

    @app.get(LOGIN_PATH, include_in_schema=False)
    def login_form() -> Response:
        return _html(render_login())

    @app.post(LOGIN_PATH, include_in_schema=False)
    async def login(request: Request) -> Response:
        try:
            token = login_token(request.headers.get("content-type"), await request.body())
        except InputError as exc:
            message = f"The form was not understood: {exc.field} must be {exc.allowed}."
            return _html(render_login(message), 400)
        refused = credentials.refusal(f"Bearer {token}", Access.READ)
        if refused is not None:
            status_code, reason = refused
            log.warning("page_login_refused", status=status_code)
            message = (
                "That is not a current token of this gateway (tokens change when rotated)."
                if status_code == 401
                else f"Login is not possible: {reason}."
            )
            return _html(render_login(message), status_code)
        writes = credentials.refusal(f"Bearer {token}", Access.WRITE) is None
        log.info("page_login", access=(Access.WRITE if writes else Access.READ).value)
        cookie = sessions.set_cookie(sessions.issue(token), secure=_secure(request))
        return _see_other("./", cookie)

    @app.post(LOGOUT_PATH, include_in_schema=False)
    def logout(request: Request) -> Response:
        return _see_other(LOGIN_PATH.lstrip("/"), sessions.clear_cookie(secure=_secure(request)))
