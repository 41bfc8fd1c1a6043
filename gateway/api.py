"""The daemon's local HTTP API (FastAPI), bound to loopback by default.

Open: ``/livez``, ``/readyz``, ``/metrics`` (no patient data in any).  The status page,
``GET /`` (:mod:`gateway.status_page`), takes a token or its login form's session cookie.
Everything else carries ``Authorization: Bearer <token>``, checked before the body is read
(:mod:`gateway.api_guard`):
reads (``GET /v1/channels[/{id}]``, ``/openapi.json``) the read or the write token; writes the
write token: ``POST /v1/channels/{id}/order`` (a channel waiting for one), ``/titers``,
``/weight``, ``/vasopressors-withdrawn``, ``/ack``, ``/stop``.

Bodies are at most a few KiB of JSON, parsed strictly: duplicate keys, NaN and Infinity,
``true`` or ``"70"`` where a number belongs, and unknown keys are refused.  Every refusal is a
4xx whose ``detail`` names the field and the allowed range, and never echoes the input back; an
accepted write is journalled before the response and acted on in the channel's next control
cycle (202 Accepted).  The control loop runs on its own thread (:mod:`gateway.service`), so no
request can delay it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import structlog
from fastapi import Depends, FastAPI, HTTPException, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from gateway.api_guard import Credentials, FixedToken, RequestGuard, TokenCheck
from gateway.channel import Channel, ChannelBusyError
from gateway.config import OrderConfig
from gateway.daemon import Gateway
from gateway.errors import InputError
from gateway.metrics import CONTENT_TYPE
from gateway.page_session import PageSessions
from gateway.soft_limits import API_CONFIRM_HOW, SoftLimitError
from gateway.status_page import add_status_page

log = structlog.get_logger("gateway.api")

_BODY = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)
_TEXT_MAX = 500
_NAME_MAX = 100


class TiterBody(BaseModel):
    model_config = _BODY
    igm_mg_dl: float = Field(description="morning serum IgM, 0-1000 mg/dL (soft limits 5-400)")
    hematocrit: float = Field(description="fraction, 0.10-0.70")
    measured_at: AwareDatetime = Field(
        description="when the blood was drawn: ISO-8601 with a zone, not in the future"
    )
    confirm: bool = Field(default=False, description="use a value outside the soft limits")
    corrects_day: int | None = Field(
        default=None, ge=1, le=7, description="replace the titer the running day used"
    )


class WeightBody(BaseModel):
    model_config = _BODY
    weight_kg: float = Field(description="30-250 kg (soft limits 40-150, change <= 10 %)")
    reason: str = Field(default="", max_length=_TEXT_MAX)
    confirm: bool = Field(default=False, description="use a value outside the soft limits")


class AckBody(BaseModel):
    model_config = _BODY
    operator: str = Field(min_length=1, max_length=_NAME_MAX)
    note: str = Field(default="", max_length=_TEXT_MAX)


class StopBody(BaseModel):
    model_config = _BODY
    operator: str = Field(min_length=1, max_length=_NAME_MAX)
    reason: str = Field(default="", max_length=_TEXT_MAX)


class EmptyBody(BaseModel):
    model_config = _BODY


BODY_MODELS: tuple[type[BaseModel], ...] = (
    OrderConfig,
    TiterBody,
    WeightBody,
    AckBody,
    StopBody,
    EmptyBody,
)
ModelT = TypeVar("ModelT", bound=BaseModel)

#: Plain words for pydantic's strict-type refusals (its own say "Input should be ...").
_TYPE_WORDS = {
    "float_type": "must be a number (not a string, not true/false)",
    "int_type": "must be a whole number (not a string, not true/false)",
    "int_from_float": "must be a whole number",
    "bool_type": "must be true or false",
    "string_type": "must be a string",
    "finite_number": "must be a finite number (not NaN or Infinity)",
    "missing": "Field required",
}


def problem(loc: list[str | int], msg: str, kind: str = "value_error") -> dict[str, Any]:
    """One entry of a 422's ``detail``: where, what is allowed; never the input itself."""
    return {"loc": loc, "msg": msg, "type": kind}


def validation_problems(
    exc: ValidationError | RequestValidationError, where: str = "body"
) -> list[dict[str, Any]]:
    """pydantic's errors as safe ``detail`` entries (no input echoed, nothing that can fail)."""
    problems = []
    for error in exc.errors():
        loc = [part if isinstance(part, int) else str(part) for part in error.get("loc", ())]
        if isinstance(exc, ValidationError):
            loc = [where, *loc]
        kind = str(error.get("type", "value_error"))
        message = _TYPE_WORDS.get(kind) or str(error.get("msg", "invalid")).removeprefix(
            "Value error, "
        )
        problems.append(problem(loc, message, kind))
    return problems


def _refuse(problems: list[dict[str, Any]]) -> HTTPException:
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, problems)


class _DuplicateKeyError(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKeyError(key)
        result[key] = value
    return result


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def parse_body(raw: bytes, model: type[ModelT]) -> ModelT:
    """``raw`` as ``model``, strictly: UTF-8 JSON, one object, each key once, finite numbers,
    no coercion (``true`` and ``"70"`` are not numbers); else a 422 naming the field."""
    try:
        text = raw.decode("utf-8")
        data = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except UnicodeDecodeError:
        raise _refuse([problem(["body"], "must be UTF-8 JSON")]) from None
    except _DuplicateKeyError as exc:
        raise _refuse(
            [problem(["body", exc.key[:100]], "given twice: each key at most once")]
        ) from None
    except RecursionError:
        raise _refuse([problem(["body"], "must be a JSON object, not nested this deep")]) from None
    except ValueError as exc:
        raise _refuse([problem(["body"], f"must be a JSON object: {exc}")]) from None
    if not isinstance(data, dict):
        raise _refuse([problem(["body"], "must be a JSON object")])
    try:
        return model.model_validate_json(text, strict=True)
    except ValidationError as exc:
        raise _refuse(validation_problems(exc)) from None
    except InputError as exc:  # a model validator's own refusal
        raise _refuse([problem(["body", exc.field], str(exc))]) from None


async def read_body(request: Request, model: type[ModelT]) -> ModelT:
    """The request's body (already bounded by the guard) parsed as ``model``."""
    return parse_body(await request.body(), model)


def _gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


def channel_or_404(channel_id: str, request: Request) -> Channel:
    try:
        return _gateway(request).channels[channel_id]
    except KeyError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no channel {channel_id[:40]!r}") from None


ChannelDep = Annotated[Channel, Depends(channel_or_404)]


def _body_doc(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI request body of a route that parses ``model`` itself."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
            },
        }
    }


def _as_check(token: TokenCheck | str | None) -> TokenCheck | None:
    return FixedToken(token) if isinstance(token, str) else token


def create_app(
    gateway: Gateway,
    token: TokenCheck | str | None,
    *,
    read_token: TokenCheck | str | None = None,
) -> FastAPI:
    """The API for ``gateway``, behind :class:`~gateway.api_guard.RequestGuard`.

    ``token`` (the write token) reads and writes; ``read_token`` only reads.  With neither,
    every ``/v1`` request is refused (403); health and metrics stay open.
    """
    app = FastAPI(title="infusion-gateway", version="1", docs_url=None, redoc_url=None)
    app.state.gateway = gateway
    credentials = Credentials(_as_check(token), _as_check(read_token))
    sessions = PageSessions(credentials)
    app.add_middleware(RequestGuard, credentials=credentials, sessions=sessions)
    add_status_page(app, gateway, credentials, sessions)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": validation_problems(exc)}, status_code=422)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.error("api_internal_error", path=request.url.path, error=repr(exc))
        return JSONResponse({"detail": "internal error; see the gateway's log"}, status_code=500)

    def accepted(channel: Channel, what: str, note: str) -> JSONResponse:
        return JSONResponse(
            {"accepted": what, "channel": channel.id, "note": note}, status_code=202
        )

    async def apply(action: Callable[..., str], *args: Any, **kwargs: Any) -> str:
        try:
            return await run_in_threadpool(action, *args, **kwargs)
        except ChannelBusyError as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
        except SoftLimitError as exc:
            refusal = exc.reworded(API_CONFIRM_HOW)
            raise _refuse(
                [{**problem(["body", exc.field], str(refusal)), "allowed": exc.allowed}]
            ) from None
        except InputError as exc:
            raise _refuse(
                [{**problem(["body", exc.field], str(exc)), "allowed": exc.allowed}]
            ) from None

    @app.get("/livez")
    def livez() -> dict[str, Any]:
        return {"status": "ok", "cycles": gateway.cycles}

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        ready, problems = gateway.ready()
        return JSONResponse(
            {"ready": ready, "problems": problems}, status_code=200 if ready else 503
        )

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(gateway.metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/v1/channels")
    def channels() -> dict[str, Any]:
        return {"channels": gateway.snapshots(), "time_scale": gateway.config.time_scale}

    @app.get("/v1/channels/{channel_id}")
    def channel(ch: ChannelDep) -> dict[str, Any]:
        return ch.snapshot()

    @app.post("/v1/channels/{channel_id}/order", openapi_extra=_body_doc(OrderConfig))
    async def order(request: Request, ch: ChannelDep) -> JSONResponse:
        body = await read_body(request, OrderConfig)
        return accepted(ch, "order", await apply(ch.submit_order, body))

    @app.post("/v1/channels/{channel_id}/titers", openapi_extra=_body_doc(TiterBody))
    async def titer(request: Request, ch: ChannelDep) -> JSONResponse:
        body = await read_body(request, TiterBody)
        note = await apply(
            ch.submit_titer,
            body.igm_mg_dl,
            body.hematocrit,
            body.measured_at.timestamp(),
            confirm=body.confirm,
            corrects_day=body.corrects_day,
        )
        return accepted(ch, "titer", note)

    @app.post("/v1/channels/{channel_id}/weight", openapi_extra=_body_doc(WeightBody))
    async def weight(request: Request, ch: ChannelDep) -> JSONResponse:
        body = await read_body(request, WeightBody)
        note = await apply(ch.submit_weight, body.weight_kg, body.reason, confirm=body.confirm)
        return accepted(ch, "weight", note)

    @app.post(
        "/v1/channels/{channel_id}/vasopressors-withdrawn", openapi_extra=_body_doc(EmptyBody)
    )
    async def vasopressors(request: Request, ch: ChannelDep) -> JSONResponse:
        await read_body(request, EmptyBody)
        note = await apply(ch.submit_vasopressors_withdrawn)
        return accepted(ch, "vasopressors_withdrawn", note)

    @app.post("/v1/channels/{channel_id}/ack", openapi_extra=_body_doc(AckBody))
    async def ack(request: Request, ch: ChannelDep) -> JSONResponse:
        body = await read_body(request, AckBody)
        return accepted(ch, "ack", await apply(ch.submit_ack, body.operator, body.note))

    @app.post("/v1/channels/{channel_id}/stop", openapi_extra=_body_doc(StopBody))
    async def stop(request: Request, ch: ChannelDep) -> JSONResponse:
        body = await read_body(request, StopBody)
        return accepted(ch, "stop", await apply(ch.submit_stop, body.operator, body.reason))

    def openapi() -> dict[str, Any]:
        """FastAPI's schema plus the bodies the routes parse themselves."""
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in BODY_MODELS:
                model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(model_schema.pop("$defs", {}))
                components[model.__name__] = model_schema
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
