"""The simulator's control API: a test rig in any language reaches into the simulated pumps.

``infusion-gateway sim --control tcp://127.0.0.1:PORT`` serves this app (on its own thread,
:mod:`simulator.control_server`), behind the gateway's bearer-token guard, which the command
wraps around it (this package does not import the gateway).  Pump ``n`` (1..N) is
``/v1/pumps/{n}``:

========  ===================================  ===============================================
method    path                                 what
========  ===================================  ===============================================
GET       ``/v1/pumps``                        every pump: number, protocol, address, URL
GET       ``/v1/pumps/{n}``                    the pump's true state (:class:`PumpTruth`)
POST      ``/v1/pumps/{n}/faults``             inject or clear a fault, now or at ``at_s``
DELETE    ``/v1/pumps/{n}/faults/{fault}``     clear one fault now
DELETE    ``/v1/pumps/{n}/faults``             clear every fault, drop scheduled ones
POST      ``/v1/pumps/{n}/refill``             load a fresh reservoir (not while infusing)
POST      ``/v1/pumps/{n}/reset``              back to power-on state, lifetime total kept
GET       ``/v1/pumps/{n}/events``             server-sent events: the pump's event log
GET/PUT   ``/v1/clock``                        the shared clock; PUT changes its time scale
========  ===================================  ===============================================

Bodies are small JSON objects checked strictly (unknown keys, strings or booleans where a
number belongs, NaN and Infinity are refused); every refusal is a 4xx whose ``detail`` names
the field and what is allowed.  Fault kinds, actions and value ranges are those of fault scripts
(:mod:`simulator.faults`).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import FastAPI, Header, HTTPException, Path, Query, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from simulator.errors import (
    FaultScriptError,
    InvalidFaultError,
    NotApplicableError,
    OutOfRangeError,
)
from simulator.faults import FaultAction, FaultEntry, FaultKind, FaultScript
from simulator.model import ModelEvent, PumpModel
from simulator.ward import MAX_TIME_SCALE, SimulatedPump, Ward

__all__ = [
    "EVENT_POLL_INTERVAL_S",
    "KEEPALIVE_INTERVAL_S",
    "PumpTruth",
    "create_control_app",
    "event_json",
    "truth",
]

#: How often (real seconds) an event stream looks for new events.
EVENT_POLL_INTERVAL_S: float = 0.05
#: Real seconds of silence after which an event stream sends a comment (keeps proxies open).
KEEPALIVE_INTERVAL_S: float = 10.0

_RESPONSE = ConfigDict(extra="forbid", frozen=True)
_BODY = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
_ML_PER_UL = 1000.0


# ---------------------------------------------------------------------- response models


class PumpLink(BaseModel):
    """Where one pump is reached."""

    model_config = _RESPONSE
    pump: int = Field(description="the pump's number, 1..N")
    protocol: str = Field(description="newera or modbus")
    listening: str = Field(description="the pty path or tcp://HOST:PORT a client opens")
    pump_url: str = Field(description="the URL infusion-gateway pump / run take")
    control_path: str = Field(description="this pump's path on the control API")


class ClockView(BaseModel):
    model_config = _RESPONSE
    time_scale: float = Field(description="simulated seconds per real second (0: manual clock)")
    adjustable: bool = Field(description="whether PUT /v1/clock can change the time scale")


class PumpList(BaseModel):
    model_config = _RESPONSE
    pumps: list[PumpLink]
    clock: ClockView


class FaultInForce(BaseModel):
    model_config = _RESPONSE
    fault: FaultKind
    value: float | None = Field(description="its value, for the kinds that take one")


class ScheduledFault(BaseModel):
    model_config = _RESPONSE
    at_s: float = Field(description="simulated seconds since the pump started")
    fault: FaultKind
    action: FaultAction
    value: float | None


class WatchdogView(BaseModel):
    model_config = _RESPONSE
    timeout_s: float = Field(description="the timeout in force (0: off, or not held)")
    requested_s: float = Field(description="the timeout last requested by the host")


class ReportedView(BaseModel):
    """What the pump tells its host; differs from the truth only under a lying-pump fault."""

    model_config = _RESPONSE
    rate_setpoint_ml_per_h: float
    volume_infused_ml: float
    uptime_s: float


class PumpTruth(BaseModel):
    """The pump's true state now, whatever it reports on its wire."""

    model_config = _RESPONSE
    pump: int
    state: str = Field(description="stopped, infusing, paused or alarm")
    alarms: list[str] = Field(description="latched alarms, sorted")
    rate_setpoint_ml_per_h: float
    measured_rate_ml_per_h: float = Field(description="the setpoint while infusing, else 0")
    volume_infused_ml: float = Field(description="totalizer since the last clear")
    volume_infused_ul: int = Field(description="the same, in whole microlitres")
    lifetime_volume_infused_ml: float = Field(description="everything ever delivered")
    lifetime_volume_infused_ul: int = Field(description="the same, in whole microlitres")
    vtbi_ml: float = Field(description="volume to be infused; 0 = continuous")
    vtbi_remaining_ml: float
    reservoir_remaining_ml: float
    reservoir_capacity_ml: float
    max_rate_ml_per_h: float
    watchdog: WatchdogView
    faults: list[FaultInForce] = Field(description="faults in force now")
    scheduled: list[ScheduledFault] = Field(description="faults still to come, in order")
    reported: ReportedView
    simulated_s: float = Field(description="simulated seconds since the pump started")
    time_scale: float


class Accepted(BaseModel):
    model_config = _RESPONSE
    pump: int
    done: str
    at_s: float | None = Field(default=None, description="when a scheduled fault applies")


# ---------------------------------------------------------------------- request bodies


class FaultRequest(BaseModel):
    """Inject (or clear) one fault, now or at a simulated time."""

    model_config = _BODY
    fault: FaultKind
    action: FaultAction = FaultAction.INJECT
    value: float | None = Field(
        default=None,
        strict=True,
        description="garbage/corrupt 0..1, slow 0..3600 s, totalizer_jump -1e5..1e5 mL, "
        "rate_echo_wrong -1e4..1e4 mL/h; only on inject of those kinds",
    )
    at_s: float | None = Field(
        default=None,
        ge=0.0,
        strict=True,
        description="simulated seconds since the pump started (simulated_s); omit for now",
    )


class RefillRequest(BaseModel):
    model_config = _BODY
    volume_ml: float | None = Field(
        default=None, strict=True, description="0..the reservoir's capacity; omit for full"
    )


class ClockRequest(BaseModel):
    model_config = _BODY
    time_scale: float = Field(
        gt=0.0,
        le=MAX_TIME_SCALE,
        strict=True,
        description=f"simulated seconds per real second, above 0 and at most {MAX_TIME_SCALE:g}",
    )


class EmptyBody(BaseModel):
    model_config = _BODY


# ---------------------------------------------------------------------- helpers


#: Plain words for pydantic's refusals whose own words do not say what to send.
_TYPE_WORDS = {
    "model_attributes_type": "must be a JSON object, sent with Content-Type: application/json",
    "float_type": "must be a number (not a string, not true/false)",
    "int_type": "must be a whole number (not a string, not true/false)",
    "finite_number": "must be a finite number (not NaN or Infinity)",
}


def _problem(loc: list[str | int], msg: str, kind: str = "value_error") -> dict[str, Any]:
    return {"loc": loc, "msg": msg, "type": kind}


def _refuse(loc: list[str | int], msg: str) -> HTTPException:
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, [_problem(loc, msg)])


def _validation_problems(exc: ValidationError | RequestValidationError) -> list[dict[str, Any]]:
    """pydantic's errors as ``detail`` entries: where, and what is allowed; no input echoed."""
    problems = []
    for error in exc.errors():
        loc = [part if isinstance(part, int) else str(part) for part in error.get("loc", ())]
        if isinstance(exc, ValidationError):
            loc = ["body", *loc]
        kind = str(error.get("type", "value_error"))
        message = _TYPE_WORDS.get(kind) or str(error.get("msg", "invalid")).removeprefix(
            "Value error, "
        )
        problems.append(_problem(loc, message, kind))
    return problems


def _ul(volume_ml: float) -> int:
    return round(volume_ml * _ML_PER_UL)


def _faults_in_force(model: PumpModel) -> list[FaultInForce]:
    """Every fault in force: conditions, lying-pump faults and line faults, by kind."""
    in_force = [
        FaultInForce(fault=FaultKind(a.value), value=None) for a in model.active_conditions()
    ]
    in_force += [FaultInForce(fault=k, value=v) for k, v in model.active_faults().items()]
    line = model.line
    if line.hang:
        in_force.append(FaultInForce(fault=FaultKind.HANG, value=None))
    for kind, value in (
        (FaultKind.SLOW, line.reply_delay_s),
        (FaultKind.GARBAGE, line.garbage_probability),
        (FaultKind.CORRUPT, line.corrupt_probability),
    ):
        if value > 0:
            in_force.append(FaultInForce(fault=kind, value=value))
    return sorted(in_force, key=lambda f: f.fault.value)


def truth(pump: SimulatedPump, time_scale: float) -> PumpTruth:
    """The true state of ``pump`` now."""
    model = pump.model
    snap = model.snapshot()
    started = model.started_monotonic_s
    return PumpTruth(
        pump=pump.number,
        state=snap.state.value,
        alarms=sorted(a.value for a in snap.alarms),
        rate_setpoint_ml_per_h=snap.rate_setpoint_ml_per_h,
        measured_rate_ml_per_h=snap.measured_rate_ml_per_h,
        volume_infused_ml=snap.volume_infused_ml,
        volume_infused_ul=_ul(snap.volume_infused_ml),
        lifetime_volume_infused_ml=snap.lifetime_volume_infused_ml,
        lifetime_volume_infused_ul=_ul(snap.lifetime_volume_infused_ml),
        vtbi_ml=snap.vtbi_ml,
        vtbi_remaining_ml=snap.vtbi_remaining_ml,
        reservoir_remaining_ml=snap.reservoir_remaining_ml,
        reservoir_capacity_ml=model.reservoir_capacity_ml,
        max_rate_ml_per_h=snap.max_rate_ml_per_h,
        watchdog=WatchdogView(
            timeout_s=snap.watchdog_timeout_s, requested_s=snap.watchdog_requested_s
        ),
        faults=_faults_in_force(model),
        scheduled=[
            ScheduledFault(
                at_s=due - started, fault=entry.fault, action=entry.action, value=entry.value
            )
            for due, entry in model.scheduled_faults()
        ],
        reported=ReportedView(
            rate_setpoint_ml_per_h=snap.reported_rate_setpoint_ml_per_h,
            volume_infused_ml=snap.reported_volume_infused_ml,
            uptime_s=snap.reported_uptime_s,
        ),
        simulated_s=snap.monotonic_s - started,
        time_scale=time_scale,
    )


def _entry(body: FaultRequest, *, where: str = "body") -> FaultEntry:
    """The request as a fault-script entry, checked by the script rules (422 naming the field;
    ``where`` is "path" when the fault came in the path)."""
    data: dict[str, Any] = {"at_s": body.at_s or 0.0, "fault": body.fault, "action": body.action}
    if body.value is not None:
        data["value"] = body.value
    try:
        return FaultEntry.model_validate(data)
    except ValidationError as exc:
        problems = _validation_problems(exc)
        for problem in problems:
            if where == "path":  # the only field a path gives: the fault
                problem["loc"] = ["path", "fault"]
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, problems) from None


def event_json(pump: SimulatedPump, event: ModelEvent) -> dict[str, Any]:
    """One logged event as the stream sends it."""
    return {
        "seq": event.seq,
        "pump": pump.number,
        "simulated_s": event.monotonic_s - pump.model.started_monotonic_s,
        "kind": event.kind.value,
        "detail": event.detail,
        "alarm": None if event.alarm is None else event.alarm.value,
        "state": None if event.state is None else event.state.value,
    }


def _sse(pump: SimulatedPump, event: ModelEvent) -> bytes:
    data = json.dumps(event_json(pump, event), separators=(",", ":"))
    return f"id: {event.seq}\nevent: {event.kind.value}\ndata: {data}\n\n".encode()


# ---------------------------------------------------------------------- the app


PumpNumber = Annotated[int, Path(ge=1, description="the pump's number, 1..N")]


def create_control_app(ward: Ward, *, stopping: threading.Event | None = None) -> FastAPI:
    """The control API of ``ward``'s pumps.  Wrap it in an authenticating guard before serving it
    (``infusion-gateway sim`` uses :class:`gateway.api_guard.RequestGuard`).

    ``stopping``, once set, ends every event stream (so the server can shut down promptly).
    """
    app = FastAPI(
        title="infusion-gateway simulator control",
        version="1",
        docs_url=None,
        redoc_url=None,
        description=__doc__,
    )
    ended = stopping if stopping is not None else threading.Event()

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _validation_problems(exc)}, status_code=422)

    def pump_or_404(n: int) -> SimulatedPump:
        try:
            return ward.pump(n)
        except KeyError:
            raise HTTPException(
                status.HTTP_404_NOT_FOUND, f"no pump {n}: pumps are 1..{len(ward)}"
            ) from None

    def clock_view() -> ClockView:
        return ClockView(
            time_scale=ward.clock.time_scale,
            adjustable=callable(getattr(ward.clock, "set_time_scale", None)),
        )

    @app.get("/v1/pumps", response_model=PumpList)
    def list_pumps() -> PumpList:
        return PumpList(
            pumps=[
                PumpLink(
                    pump=p.number,
                    protocol=p.protocol,
                    listening=p.server.listening,
                    pump_url=p.server.pump_url,
                    control_path=p.control_path,
                )
                for p in ward
            ],
            clock=clock_view(),
        )

    @app.get("/v1/pumps/{n}", response_model=PumpTruth)
    def read_pump(n: PumpNumber) -> PumpTruth:
        return truth(pump_or_404(n), ward.clock.time_scale)

    @app.post("/v1/pumps/{n}/faults", response_model=Accepted, status_code=200)
    def inject_fault(n: PumpNumber, body: FaultRequest) -> Accepted:
        pump = pump_or_404(n)
        entry = _entry(body)
        done = f"{entry.fault.value} {entry.action.value}"
        if body.at_s is None:
            try:
                if entry.action is FaultAction.INJECT:
                    pump.model.inject_fault(entry.fault, entry.value)
                else:
                    pump.model.clear_fault(entry.fault)
            except InvalidFaultError as exc:
                raise _refuse(["body", "fault"], str(exc)) from None
            return Accepted(pump=n, done=done)
        try:
            pump.model.schedule(FaultScript(faults=[entry]))
        except FaultScriptError as exc:
            raise _refuse(["body", "at_s"], str(exc).removeprefix("faults[0].at_s: ")) from None
        return Accepted(pump=n, done=f"{done} scheduled", at_s=entry.at_s)

    @app.delete("/v1/pumps/{n}/faults/{fault}", response_model=Accepted)
    def clear_fault(n: PumpNumber, fault: FaultKind) -> Accepted:
        pump = pump_or_404(n)
        entry = _entry(FaultRequest(fault=fault, action=FaultAction.CLEAR), where="path")
        pump.model.clear_fault(entry.fault)
        return Accepted(pump=n, done=f"{fault.value} clear")

    @app.delete("/v1/pumps/{n}/faults", response_model=Accepted)
    def clear_all_faults(n: PumpNumber) -> Accepted:
        pump_or_404(n).model.clear_all_faults()
        return Accepted(pump=n, done="all faults cleared")

    @app.post("/v1/pumps/{n}/refill", response_model=Accepted)
    def refill(n: PumpNumber, body: RefillRequest | None = None) -> Accepted:
        model = pump_or_404(n).model
        volume_ml = model.reservoir_capacity_ml
        if body is not None and body.volume_ml is not None:
            volume_ml = body.volume_ml
        try:
            model.refill(volume_ml)
        except OutOfRangeError as exc:
            raise _refuse(["body", "volume_ml"], str(exc)) from None
        except NotApplicableError as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
        return Accepted(pump=n, done=f"refilled to {volume_ml:g} mL")

    @app.post("/v1/pumps/{n}/reset", response_model=Accepted)
    def reset(n: PumpNumber, body: EmptyBody | None = None) -> Accepted:
        pump_or_404(n).model.reset_to_power_on()
        return Accepted(pump=n, done="reset to power-on state")

    @app.get(
        "/v1/pumps/{n}/events",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    def events(
        n: PumpNumber,
        since: Annotated[
            int, Query(ge=0, description="send events with a sequence number above this")
        ] = 0,
        follow: Annotated[
            bool, Query(description="keep the stream open for new events (false: end it)")
        ] = True,
        last_event_id: Annotated[
            int | None, Header(ge=0, description="a reconnecting client's last id")
        ] = None,
    ) -> StreamingResponse:
        """The pump's event log as server-sent events: ``id`` the sequence number, ``event``
        the kind (state, alarm, alarm_cleared, fault, script, reset), ``data`` one JSON object."""
        pump = pump_or_404(n)
        start = max(since, last_event_id or 0)

        async def stream() -> AsyncIterator[bytes]:
            seen = start
            quiet_since = time.monotonic()
            while True:
                new = pump.model.events(seen)
                for event in new:
                    yield _sse(pump, event)
                    seen = event.seq
                if not follow or ended.is_set():
                    return
                if new:
                    quiet_since = time.monotonic()
                elif time.monotonic() - quiet_since >= KEEPALIVE_INTERVAL_S:
                    yield b": keep-alive\n\n"
                    quiet_since = time.monotonic()
                await asyncio.sleep(EVENT_POLL_INTERVAL_S)

        return StreamingResponse(
            stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"}
        )

    @app.get("/v1/clock", response_model=ClockView)
    def read_clock() -> ClockView:
        return clock_view()

    @app.put("/v1/clock", response_model=ClockView)
    def set_clock(body: ClockRequest) -> ClockView:
        set_scale = getattr(ward.clock, "set_time_scale", None)
        if not callable(set_scale):
            raise HTTPException(
                status.HTTP_409_CONFLICT, "this simulator's clock is manual: its scale is fixed"
            )
        set_scale(body.time_scale)
        return clock_view()

    return app
