"""The gateway's configuration: a TOML file (or the equivalent ``run`` flags), validated.

Unknown keys are refused, and every refusal names the key and the allowed range, e.g.
``config channels[0].weight_kg: must be a number from 30 to 250 kg (got 20.0)``.
See docs/operations.md for an annotated example.
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from gateway.dosing import (
    DEFAULT_CONCENTRATION_MG_PER_ML,
    DEFAULT_IGM_CONTENT_MG_PER_ML,
    Arm,
    Product,
    validate_hematocrit,
    validate_titer_mg_per_dl,
)
from gateway.errors import ConfigError, InputError
from gateway.rules import CourseRules, LateTiterPolicy
from gateway.safety import (
    CEILING_ML_PER_KG_PER_H,
    validate_ceiling_ml_per_kg_per_h,
    validate_weight_kg,
)

_STRICT = ConfigDict(extra="forbid", frozen=True)

#: NE-1000 safe mode takes 1-255 s; the Modbus profile takes more, but one rule is simpler.
PUMP_WATCHDOG_S_MAX = 255.0


class ProductConfig(BaseModel):
    model_config = _STRICT
    concentration_mg_per_ml: float = DEFAULT_CONCENTRATION_MG_PER_ML
    igm_content_mg_per_ml: float = DEFAULT_IGM_CONTENT_MG_PER_ML

    @model_validator(mode="after")
    def _check(self) -> ProductConfig:
        self.to_product()
        return self

    def to_product(self) -> Product:
        return Product(self.concentration_mg_per_ml, self.igm_content_mg_per_ml)


class AutoResumeConfig(BaseModel):
    """The bounded rule under which a channel resumes after a link drop without an operator."""

    model_config = _STRICT
    enabled: bool = True
    #: Longest silence (simulated seconds) after which a resume still needs no operator.
    max_gap_s: float = Field(default=120.0, ge=0.0, le=3600.0)
    #: At most this many automatic resumes per day window.
    max_per_day: int = Field(default=3, ge=0, le=24)


class ControlConfig(BaseModel):
    model_config = _STRICT
    #: Seconds between polls of each pump (simulated seconds under a time scale).
    poll_interval_s: float = Field(default=1.0, ge=0.05, le=60.0)
    #: Floor on the real time between polls: what a serial link can serve.
    min_real_poll_interval_s: float = Field(default=0.05, ge=0.01, le=10.0)
    #: The pump's own communication watchdog: it stops itself after this much silence.
    pump_watchdog_s: float = Field(default=10.0, ge=1.0, le=PUMP_WATCHDOG_S_MAX)
    #: Driver per-request timeout (real seconds) and retries of safe requests.
    request_timeout_s: float = Field(default=1.0, gt=0.0, le=30.0)
    request_retries: int = Field(default=1, ge=0, le=5)
    #: A morning titer older than this when a day starts is stale: the channel waits for one.
    titer_max_age_h: float = Field(default=12.0, gt=0.0, le=36.0)
    #: Titer arm, no fresh titer when a day should open: ``shift`` the day's 24-h window to
    #: start when the titer arrives, or ``compress`` it into what is left of the clock day.
    late_titer: LateTiterPolicy = LateTiterPolicy.SHIFT
    #: Refuse an order without ``randomised_at`` (the 12-h start rule cannot be checked).
    require_randomisation_time: bool = True
    auto_resume: AutoResumeConfig = AutoResumeConfig()


def course_rules(control: ControlConfig, pump_watchdog_s: float) -> CourseRules:
    """The controller's rules from the validated configuration."""
    return CourseRules(
        pump_watchdog_s=pump_watchdog_s,
        titer_max_age_s=control.titer_max_age_h * 3600.0,
        late_titer=control.late_titer,
        require_randomisation_time=control.require_randomisation_time,
        auto_resume_enabled=control.auto_resume.enabled,
        auto_resume_max_gap_s=control.auto_resume.max_gap_s,
        auto_resume_max_per_day=control.auto_resume.max_per_day,
    )


class OrderConfig(BaseModel):
    """A patient's order: the arm, the weight and, for the titer arm, the baseline titer."""

    model_config = _STRICT
    arm: Arm
    weight_kg: float
    #: Titer arm: the baseline (day-1) titer and its hematocrit.
    igm_mg_dl: float | None = None
    hematocrit: float | None = None
    ceiling_ml_per_kg_per_h: float = CEILING_ML_PER_KG_PER_H
    product: ProductConfig = ProductConfig()
    #: When the patient was randomised (ISO-8601 with a zone); the first start must be within
    #: 12 h of it unless ``start_override_reason`` says why not.
    randomised_at: AwareDatetime | None = None
    start_override_reason: str | None = Field(default=None, max_length=500)
    #: Titer arm (required): when the baseline titer's blood was drawn, at most
    #: ``titer_max_age_h`` before the order.
    titer_measured_at: AwareDatetime | None = None
    #: Confirms values outside the soft limits (weight 40-150 kg, titer 5-400 mg/dL).
    confirm: bool = False

    _weight = field_validator("weight_kg")(lambda v: validate_weight_kg(v))

    @property
    def randomised_at_s(self) -> float | None:
        return None if self.randomised_at is None else self.randomised_at.timestamp()

    @property
    def titer_measured_at_s(self) -> float | None:
        return None if self.titer_measured_at is None else self.titer_measured_at.timestamp()

    _ceiling = field_validator("ceiling_ml_per_kg_per_h")(
        lambda v: validate_ceiling_ml_per_kg_per_h(v)
    )

    @model_validator(mode="after")
    def _titer_inputs(self) -> OrderConfig:
        if self.arm is Arm.TITER:
            if self.igm_mg_dl is None:
                raise InputError("igm_mg_dl", "given for the titer arm (0-1000 mg/dL)", None)
            validate_titer_mg_per_dl(self.igm_mg_dl)
            validate_hematocrit(self.hematocrit)
        elif self.igm_mg_dl is not None or self.hematocrit is not None:
            raise InputError("igm_mg_dl", "omitted for the flat arm", self.igm_mg_dl)
        return self


_ORDER_FIELDS = tuple(OrderConfig.model_fields)


class ChannelConfig(BaseModel):
    """One pump and, usually, the order for the patient on it.

    Without ``arm`` and ``weight_kg`` the channel waits in ``awaiting_order`` until an order
    arrives over the API (``POST /v1/channels/{id}/order``).
    """

    model_config = _STRICT
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")
    pump: str = Field(min_length=1, description="pump URL, e.g. newera:///dev/ttyUSB0")
    arm: Arm | None = None
    weight_kg: float | None = None
    igm_mg_dl: float | None = None
    hematocrit: float | None = None
    ceiling_ml_per_kg_per_h: float = CEILING_ML_PER_KG_PER_H
    product: ProductConfig = ProductConfig()
    randomised_at: AwareDatetime | None = None
    start_override_reason: str | None = Field(default=None, max_length=500)
    titer_measured_at: AwareDatetime | None = None
    confirm: bool = False

    # Checked field by field too, so that every bad field is named in one go.
    _weight = field_validator("weight_kg")(lambda v: None if v is None else validate_weight_kg(v))
    _ceiling = field_validator("ceiling_ml_per_kg_per_h")(
        lambda v: validate_ceiling_ml_per_kg_per_h(v)
    )

    @model_validator(mode="after")
    def _order_inputs(self) -> ChannelConfig:
        if self.arm is None and self.weight_kg is None:
            given = [f for f in _ORDER_FIELDS if f in self.model_fields_set]
            if given:
                raise InputError(given[0], "given only with arm and weight_kg (an order)", True)
            return self
        if self.arm is None:
            raise InputError("arm", "flat or titer when weight_kg is given", None)
        if self.weight_kg is None:
            raise InputError("weight_kg", "a number from 30 to 250 kg when arm is given", None)
        self.order()
        return self

    def order(self) -> OrderConfig | None:
        """The order this channel starts with, or None to wait for one."""
        if self.arm is None:
            return None
        return OrderConfig.model_validate(
            {f: getattr(self, f) for f in _ORDER_FIELDS if f in self.model_fields_set}
        )


class ApiConfig(BaseModel):
    model_config = _STRICT
    #: HOST:PORT to listen on; loopback by default.  Port 0 picks a free port.
    listen: str = "127.0.0.1:8470"
    #: File holding the bearer token every write request must carry.
    token_file: Path | None = None

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        parse_host_port(value, "listen")
        return value


class GatewayConfig(BaseModel):
    model_config = _STRICT
    state_dir: Path
    #: Simulated seconds per real second, for HIL rigs whose pump simulator runs faster.
    time_scale: float = Field(default=1.0, gt=0.0, le=100_000.0)
    control: ControlConfig = ControlConfig()
    api: ApiConfig | None = None
    channels: Annotated[list[ChannelConfig], Field(min_length=1, max_length=16)]

    @model_validator(mode="after")
    def _unique_ids(self) -> GatewayConfig:
        ids = [c.id for c in self.channels]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise InputError("channels.id", "unique", duplicates)
        pumps = [c.pump for c in self.channels]
        if len(set(pumps)) != len(pumps):
            raise InputError("channels.pump", "one pump per channel", pumps)
        return self

    @property
    def effective_poll_interval_s(self) -> float:
        """The poll interval in simulated seconds, never faster than the link can serve."""
        c = self.control
        return max(c.poll_interval_s, c.min_real_poll_interval_s * self.time_scale)

    @property
    def effective_pump_watchdog_s(self) -> float:
        """The pump watchdog (simulated s): at least five polls, at most what a pump accepts."""
        wanted = max(self.control.pump_watchdog_s, 5.0 * self.effective_poll_interval_s)
        return min(math.ceil(wanted), PUMP_WATCHDOG_S_MAX)


def parse_host_port(value: str, field: str) -> tuple[str, int]:
    """``HOST:PORT`` (IPv6 in brackets) -> (host, port); InputError naming ``field`` otherwise."""
    host, sep, port_text = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise InputError(field, "HOST:PORT with a port from 0 to 65535", value)
    return host, int(port_text)


def format_validation_error(exc: ValidationError, prefix: str = "config") -> str:
    """One line per problem: ``config channels[0].weight_kg: must be ...``."""
    lines = []
    for error in exc.errors():
        path = ""
        for part in error["loc"]:
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key (check the spelling; see docs/operations.md)"
        elif error["type"] == "missing":
            message = "required"
        if path and message.startswith(path.rsplit(".", 1)[-1] + ":"):
            message = message.split(":", 1)[1].strip()
        lines.append(f"{prefix} {path}: {message}" if path else f"{prefix}: {message}")
    return "; ".join(lines)


def load_config(path: Path | str) -> GatewayConfig:
    """Read and validate a TOML config file; ConfigError naming the key on any problem."""
    file = Path(path)
    try:
        data: dict[str, Any] = tomllib.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"config {str(file)!r}: cannot read: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config {str(file)!r}: not valid TOML: {exc}") from exc
    return build_config(data, source=str(file))


def build_config(data: dict[str, Any], source: str = "config") -> GatewayConfig:
    """Validate a config mapping (from TOML or from flags)."""
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, prefix=source)) from None
