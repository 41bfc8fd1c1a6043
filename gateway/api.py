"""The daemon's local HTTP API (FastAPI), bound to loopback by default.

Reads: ``/livez``, ``/readyz``, ``/metrics``, ``GET /v1/channels[/{id}]``.
Writes (each needs ``Authorization: Bearer <token>``, the token read from a file):
``POST /v1/channels/{id}/order`` (a channel waiting for one), ``/titers``, ``/weight``,
``/vasopressors-withdrawn``, ``/ack``, ``/stop``.

Bodies are pydantic models with unknown keys refused; a bad value is a 422 whose ``detail``
names the field and the allowed range.  An accepted write is journalled before the response and
acted on in the channel's next control cycle (202 Accepted).
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request, Response, status
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from gateway.channel import Channel, ChannelBusyError
from gateway.config import OrderConfig
from gateway.daemon import Gateway
from gateway.errors import InputError
from gateway.metrics import CONTENT_TYPE
from gateway.soft_limits import API_CONFIRM_HOW, SoftLimitError

_BODY = ConfigDict(extra="forbid")


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
    reason: str = Field(default="", max_length=500)
    confirm: bool = Field(default=False, description="use a value outside the soft limits")


class AckBody(BaseModel):
    model_config = _BODY
    operator: str = Field(min_length=1, max_length=100)
    note: str = Field(default="", max_length=500)


class StopBody(BaseModel):
    model_config = _BODY
    operator: str = Field(min_length=1, max_length=100)
    reason: str = Field(default="", max_length=500)


class EmptyBody(BaseModel):
    model_config = _BODY


def _gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


def require_token(request: Request) -> None:
    """401 unless the request carries ``Authorization: Bearer <token>``; 403 if writes are off."""
    token: str | None = request.app.state.token
    if token is None:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, "writes are disabled: no token_file configured"
        )
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), token.encode()
    ):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "a valid bearer token is required",
            headers={"WWW-Authenticate": "Bearer"},
        )


def channel_or_404(channel_id: str, request: Request) -> Channel:
    try:
        return _gateway(request).channels[channel_id]
    except KeyError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no channel {channel_id!r}") from None


ChannelDep = Annotated[Channel, Depends(channel_or_404)]


def create_app(gateway: Gateway, token: str | None) -> FastAPI:
    """The API for ``gateway``.  With ``token=None`` every write is refused (403)."""
    app = FastAPI(title="infusion-gateway", version="1", docs_url=None, redoc_url=None)
    app.state.gateway = gateway
    app.state.token = token

    def accepted(channel: Channel, what: str, note: str) -> JSONResponse:
        return JSONResponse(
            {"accepted": what, "channel": channel.id, "note": note}, status_code=202
        )

    def apply(action: Any, *args: Any, **kwargs: Any) -> str:
        try:
            note: str = action(*args, **kwargs)
        except ChannelBusyError as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
        except SoftLimitError as exc:
            refusal = exc.reworded(API_CONFIRM_HOW)
            raise HTTPException(
                422,
                [{"loc": ["body", exc.field], "msg": str(refusal), "allowed": exc.allowed}],
            ) from None
        except InputError as exc:
            raise HTTPException(
                422,
                [{"loc": ["body", exc.field], "msg": str(exc), "allowed": exc.allowed}],
            ) from None
        return note

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

    @app.post("/v1/channels/{channel_id}/order", dependencies=[Depends(require_token)])
    def order(body: OrderConfig, ch: ChannelDep) -> JSONResponse:
        return accepted(ch, "order", apply(ch.submit_order, body))

    @app.post("/v1/channels/{channel_id}/titers", dependencies=[Depends(require_token)])
    def titer(body: TiterBody, ch: ChannelDep) -> JSONResponse:
        note = apply(
            ch.submit_titer,
            body.igm_mg_dl,
            body.hematocrit,
            body.measured_at.timestamp(),
            confirm=body.confirm,
            corrects_day=body.corrects_day,
        )
        return accepted(ch, "titer", note)

    @app.post("/v1/channels/{channel_id}/weight", dependencies=[Depends(require_token)])
    def weight(body: WeightBody, ch: ChannelDep) -> JSONResponse:
        note = apply(ch.submit_weight, body.weight_kg, body.reason, confirm=body.confirm)
        return accepted(ch, "weight", note)

    @app.post(
        "/v1/channels/{channel_id}/vasopressors-withdrawn", dependencies=[Depends(require_token)]
    )
    def vasopressors(body: EmptyBody, ch: ChannelDep) -> JSONResponse:
        return accepted(ch, "vasopressors_withdrawn", apply(ch.submit_vasopressors_withdrawn))

    @app.post("/v1/channels/{channel_id}/ack", dependencies=[Depends(require_token)])
    def ack(body: AckBody, ch: ChannelDep) -> JSONResponse:
        return accepted(ch, "ack", apply(ch.submit_ack, body.operator, body.note))

    @app.post("/v1/channels/{channel_id}/stop", dependencies=[Depends(require_token)])
    def stop(body: StopBody, ch: ChannelDep) -> JSONResponse:
        return accepted(ch, "stop", apply(ch.submit_stop, body.operator, body.reason))

    return app
