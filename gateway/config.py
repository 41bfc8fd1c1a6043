"""The gateway's configuration: a TOML file (or the equivalent ``run`` flags), validated.

Unknown keys are refused, and every refusal names the key and the allowed range, e.g.
``config channels[0].weight_kg: must be a number from 30 to 250 kg (got 20.0)``.
See docs/operations.md for an annotated example.

Types are strict at every edge: a number is a number (not ``true``, not ``"70"``), finite; a
string is a string, of bounded length.  A TOML document or a mapping of flags is turned into
JSON text and validated in pydantic's strict JSON mode
(:func:`validate_json_model`), which takes ISO-8601 strings for date-times and strings for enums
and nothing looser; the API validates its bodies the same way
(``OrderConfig.model_validate_json(raw, strict=True)``).  Constructing the models directly in
Python keeps enums and date-times lax (``arm="flat"``), but numbers, booleans and strings are
strict there too.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
import tomllib
from collections.abc import Mapping
from datetime import date, datetime, time
from pathlib import Path
from typing import Annotated, Any, Final, TypeVar, get_args

from annotated_types import Ge, Gt, Le, Lt
from pydantic import (
    AllowInfNan,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core.core_schema import ValidationInfo

from drivers.errors import DriverConfigError
from drivers.url import duplicate_devices
from gateway.display import floor_display
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

#: Every model: unknown keys refused, frozen, finite numbers only, no unbounded string.
_STRICT = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, str_max_length=4096)

#: A number: not a bool, not a string, finite (an int is taken as a float).
Number = Annotated[float, Strict(), AllowInfNan(False)]
#: A whole number: not a bool, not a string, not 3.0.
WholeNumber = Annotated[int, Strict()]
#: ``true`` or ``false``: not 1, not "true".
Flag = Annotated[bool, Strict()]
#: Free text: a string of at most 500 characters.
Text500 = Annotated[str, Strict(), StringConstraints(max_length=500)]
#: An identifier that travels in HL7 fields: printable, no HL7 delimiters (| ^ ~ \\ &).
HL7Id = Annotated[
    str, Strict(), StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9 ._:/-]+$")
]
#: Channels one gateway process serves, each stepped on a thread of its own every tick, their
#: journal commits grouped (one fsync for the channels committing together).  At 64 on two
#: cores a control cycle takes about 50-80 ms (bench/README.md, ``bench/bench_channels.py``).
MAX_CHANNELS = 64

#: NE-1000 safe mode takes 1-255 s; the Modbus profile takes more, but one rule is simpler.
PUMP_WATCHDOG_S_MAX = 255.0
#: The longest pump URL, ``HOST:PORT`` and path taken from a config.
PUMP_URL_MAX_CHARS: Final[int] = 512
LISTEN_MAX_CHARS: Final[int] = 300
PATH_MAX_CHARS: Final[int] = 4096
#: A config file larger than this is refused before it is read.
CONFIG_FILE_MAX_BYTES: Final[int] = 1 << 20
#: Tables and arrays nested deeper than this are refused (a config needs four levels).
_MAX_NESTING: Final[int] = 32
#: Integers beyond this many bits are refused before validation (no config value comes near).
_MAX_INT_BITS: Final[int] = 63


#: A channel id: what the API's paths and the metrics' labels carry.
CHANNEL_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,31}$"
_HOST = re.compile(r"[A-Za-z0-9.:%-]{1,253}")


class ProductConfig(BaseModel):
    model_config = _STRICT
    #: mg/mL of protein; 10-200 (the trial product: 50).
    concentration_mg_per_ml: Number = DEFAULT_CONCENTRATION_MG_PER_ML
    #: mg/mL of IgM; above 0 and below the concentration (the trial product: 6).
    igm_content_mg_per_ml: Number = DEFAULT_IGM_CONTENT_MG_PER_ML

    @model_validator(mode="after")
    def _check(self) -> ProductConfig:
        self.to_product()
        return self

    def to_product(self) -> Product:
        return Product(self.concentration_mg_per_ml, self.igm_content_mg_per_ml)


class AutoResumeConfig(BaseModel):
    """The bounded rule under which a channel resumes after a link drop without an operator."""

    model_config = _STRICT
    enabled: Flag = True
    #: Longest silence (simulated seconds) after which a resume still needs no operator.
    max_gap_s: Number = Field(default=120.0, ge=0.0, le=3600.0)
    #: At most this many automatic resumes per day window.
    max_per_day: WholeNumber = Field(default=3, ge=0, le=24)


class ControlConfig(BaseModel):
    model_config = _STRICT
    #: Seconds between polls of each pump (simulated seconds under a time scale).
    poll_interval_s: Number = Field(default=1.0, ge=0.05, le=60.0)
    #: Floor on the real time between polls: what a serial link can serve.
    min_real_poll_interval_s: Number = Field(default=0.05, ge=0.01, le=10.0)
    #: The pump's own communication watchdog: it stops itself after this much silence.
    pump_watchdog_s: Number = Field(default=10.0, ge=1.0, le=PUMP_WATCHDOG_S_MAX)
    #: Driver per-request timeout (real seconds) and retries of safe requests.
    request_timeout_s: Number = Field(default=1.0, gt=0.0, le=30.0)
    request_retries: WholeNumber = Field(default=1, ge=0, le=5)
    #: A morning titer older than this when a day starts is stale: the channel waits for one.
    titer_max_age_h: Number = Field(default=12.0, gt=0.0, le=36.0)
    #: Titer arm, no fresh titer when a day should open: ``shift`` the day's 24-h window to
    #: start when the titer arrives, or ``compress`` it into what is left of the clock day.
    late_titer: LateTiterPolicy = LateTiterPolicy.SHIFT
    #: Refuse an order without ``randomised_at`` (the 12-h start rule cannot be checked).
    require_randomisation_time: Flag = True
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
    weight_kg: Number
    #: Titer arm: the baseline (day-1) titer and its hematocrit.
    igm_mg_dl: Number | None = None
    hematocrit: Number | None = None
    ceiling_ml_per_kg_per_h: Number = CEILING_ML_PER_KG_PER_H
    product: ProductConfig = ProductConfig()
    #: When the patient was randomised (ISO-8601 with a zone); the first start must be within
    #: 12 h of it unless ``start_override_reason`` says why not.
    randomised_at: AwareDatetime | None = None
    start_override_reason: Text500 | None = None
    #: Titer arm (required): when the baseline titer's blood was drawn, at most
    #: ``titer_max_age_h`` before the order.
    titer_measured_at: AwareDatetime | None = None
    #: Confirms values outside the soft limits (weight 40-150 kg, titer 5-400 mg/dL).
    confirm: Flag = False

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
        elif self.igm_mg_dl is not None:
            raise InputError("igm_mg_dl", "omitted for the flat arm", self.igm_mg_dl)
        elif self.hematocrit is not None:
            raise InputError("hematocrit", "omitted for the flat arm", self.hematocrit)
        return self


_ORDER_FIELDS = tuple(OrderConfig.model_fields)


class ChannelConfig(BaseModel):
    """One pump and, usually, the order for the patient on it.

    Without ``arm`` and ``weight_kg`` the channel waits in ``awaiting_order`` until an order
    arrives over the API (``POST /v1/channels/{id}/order``).
    """

    model_config = _STRICT
    id: Annotated[str, Strict()] = Field(pattern=CHANNEL_ID_PATTERN, min_length=1, max_length=32)
    pump: Annotated[str, Strict()] = Field(
        min_length=1,
        max_length=PUMP_URL_MAX_CHARS,
        description="pump URL, e.g. newera:///dev/ttyUSB0",
    )
    arm: Arm | None = None
    weight_kg: Number | None = None
    igm_mg_dl: Number | None = None
    hematocrit: Number | None = None
    ceiling_ml_per_kg_per_h: Number = CEILING_ML_PER_KG_PER_H
    product: ProductConfig = ProductConfig()
    randomised_at: AwareDatetime | None = None
    start_override_reason: Text500 | None = None
    titer_measured_at: AwareDatetime | None = None
    confirm: Flag = False
    #: The patient this channel infuses (HL7 PID-3); if absent, bound by the first accepted HL7
    #: order.  A message for another patient on this channel is rejected, never applied.
    patient_id: HL7Id | None = None
    #: Where the pump stands (HL7 PV1-3 point of care), for orders addressed by bed.
    bed: HL7Id | None = None

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
    listen: Annotated[str, Strict()] = Field(default="127.0.0.1:8470", max_length=LISTEN_MAX_CHARS)
    #: File holding the bearer token every request to ``/v1`` must carry (reads and writes).
    token_file: Path | None = None
    #: Optional second file: a token that may only read (``GET /v1/...``), e.g. for a monitor.
    read_token_file: Path | None = None
    #: Listening on a non-loopback address (reachable from other machines) must be asked for.
    allow_remote: Flag = False

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        parse_host_port(value, "listen")
        return value

    @field_validator("token_file", "read_token_file", mode="before")
    @classmethod
    def _file(cls, value: object, info: ValidationInfo) -> object:
        return check_path_text(str(info.field_name), value, absolute=False)


class Hl7Config(BaseModel):
    """The hospital interface: HL7 v2 over MLLP (IHE PCD).  Off unless configured.

    ``listen``: lab results (ORU^R01) and orders (RGV^O15) come in here; ``send_to``: pump
    observations (PCD-01 ORU^R01) go out to the interface engine, stored and forwarded.
    """

    model_config = _STRICT
    #: HOST:PORT of the inbound MLLP listener (loopback unless ``allow_remote``); None: off.
    listen: Annotated[str, Strict()] | None = Field(default=None, max_length=LISTEN_MAX_CHARS)
    allow_remote: Flag = False
    #: HOST:PORT of the outbound MLLP receiver (the interface engine); None: nothing sent.
    send_to: Annotated[str, Strict()] | None = Field(default=None, max_length=LISTEN_MAX_CHARS)
    #: Seconds between a channel's periodic observations (also sent on every state change and
    #: alarm).
    observation_interval_s: Number = Field(default=60.0, ge=1.0, le=3600.0)
    #: MSH-3 and MSH-4 of what the gateway sends.
    sending_application: HL7Id = "IGM-GATEWAY"
    sending_facility: HL7Id = "ICU"
    #: The outbox's bound: above it the oldest unsent observations are dropped (and counted).
    outbox_max_messages: WholeNumber = Field(default=10_000, ge=100, le=1_000_000)
    #: Seconds between resends to a receiver that does not answer.
    resend_interval_s: Number = Field(default=10.0, ge=0.1, le=600.0)
    #: Arm code (the order's OBX ``IGMFAT-ARM``, OBX-5) -> trial arm.
    arm_codes: dict[HL7Id, Arm] = Field(
        default_factory=lambda: {"IGMFAT-FLAT": Arm.FLAT, "IGMFAT-TITER": Arm.TITER}
    )
    #: Product code (the order's RXG-4 give code) -> the product's concentrations.
    product_codes: dict[HL7Id, ProductConfig] = Field(
        default_factory=lambda: {"IGM-ENRICHED-IG-50": ProductConfig()}
    )

    @field_validator("listen", "send_to")
    @classmethod
    def _address(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None:
            parse_host_port(value, str(info.field_name))
        return value


class GatewayConfig(BaseModel):
    model_config = _STRICT
    #: Where the journal lives: an absolute path (the daemon's working directory is ``/``).
    state_dir: Path
    #: Simulated seconds per real second, for HIL rigs whose pump simulator runs faster; at most
    #: :func:`time_scale_max` (the pump watchdog must cover two polls).
    time_scale: Number = Field(default=1.0, gt=0.0, le=100_000.0)
    control: ControlConfig = ControlConfig()
    api: ApiConfig | None = None
    hl7: Hl7Config | None = None
    channels: Annotated[list[ChannelConfig], Field(min_length=1, max_length=MAX_CHANNELS)]

    @field_validator("state_dir", mode="before")
    @classmethod
    def _state_dir(cls, value: object) -> object:
        return check_path_text("state_dir", value, absolute=True)

    @model_validator(mode="after")
    def _unique_ids(self) -> GatewayConfig:
        ids = [c.id for c in self.channels]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise InputError("channels.id", "unique", duplicates)
        if len(self.channels) > 1:
            # The same pump spelled two ways (a /dev/serial/by-id link, localhost and 127.0.0.1)
            # is still one pump: two channels must never drive it.
            try:
                same = duplicate_devices([c.pump for c in self.channels])
            except DriverConfigError as exc:
                raise InputError(
                    "channels.pump", f"URLs of reachable pumps ({exc})", True
                ) from None
            if same:
                raise InputError(
                    "channels.pump", "one pump per channel (these reach the same device)", same
                )
        return self

    @model_validator(mode="after")
    def _time_scale_keeps_two_polls_in_watchdog(self) -> GatewayConfig:
        """The pump watchdog (at most 255 s) must cover two effective polls, or the pump stops
        itself between two polls of a healthy link."""
        min_real = self.control.min_real_poll_interval_s
        bound = time_scale_max(min_real)
        if (
            self.time_scale > bound
            or self.effective_pump_watchdog_s < 2.0 * self.effective_poll_interval_s
        ):
            raise InputError(
                "time_scale",
                f"at most {_floor_text(bound)} with control.min_real_poll_interval_s = "
                f"{min_real:g} (the pump watchdog, at most {PUMP_WATCHDOG_S_MAX:g} s, must cover "
                "two polls)",
                self.time_scale,
            )
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


def time_scale_max(min_real_poll_interval_s: float) -> float:
    """The largest ``time_scale`` whose effective poll interval (``min_real_poll_interval_s x
    time_scale`` simulated seconds) the longest pump watchdog, 255 s, still covers twice."""
    bound = PUMP_WATCHDOG_S_MAX / (2.0 * min_real_poll_interval_s)
    # The largest float for which the product itself stays within the watchdog: no rounding
    # may let 2 polls exceed 255 s at exactly the bound.
    while 2.0 * (min_real_poll_interval_s * bound) > PUMP_WATCHDOG_S_MAX:
        bound = math.nextafter(bound, 0.0)
    return bound


def _floor_text(value: float) -> str:
    """``value`` rounded down for display (gateway/display.py), shortest form: 2550.0 -> '2550'."""
    return f"{floor_display(value):.2f}".rstrip("0").rstrip(".")


def check_path_text(field: str, value: object, *, absolute: bool) -> object:
    """A path from a config: non-empty text without NUL, of bounded length, and (``absolute``)
    absolute.  Anything not str-or-path is passed on for the type check to refuse."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str):
        return value
    allowed = (
        "an absolute path, e.g. /var/lib/infusion-gateway (the daemon runs from /)"
        if absolute
        else "a path to a file"
    )
    bad = (
        value in ("", ".")
        or "\x00" in value
        or len(value) > PATH_MAX_CHARS
        or (absolute and not value.startswith("/"))
    )
    if bad:
        raise InputError(field, f"{allowed}, at most {PATH_MAX_CHARS} characters, no NUL", value)
    return value


def parse_host_port(value: str, field: str) -> tuple[str, int]:
    """``HOST:PORT`` (IPv6 in brackets) -> (host, port); InputError naming ``field`` otherwise.

    The host is a name or address in ASCII letters, digits, ``.``, ``-``, ``:`` and ``%``."""
    host, sep, port_text = value.rpartition(":")
    host = host.strip("[]")
    if (
        not sep
        or not host
        or not _HOST.fullmatch(host)
        or not (port_text.isascii() and port_text.isdigit())
        or len(port_text) > 5
        or not 0 <= int(port_text) <= 65535
    ):
        raise InputError(field, "HOST:PORT with a port from 0 to 65535", value)
    return host, int(port_text)


# -- refusals, one line each --------------------------------------------------------------------

#: pydantic error type -> what the value must be (the field's range is added where it has one).
_TYPE_WORDS: Final[dict[str, str]] = {
    "float_type": "a number{range} (not a string or true/false)",
    "float_parsing": "a number{range} (not a string or true/false)",
    "finite_number": "a finite number{range} (not nan or inf)",
    "int_type": "a whole number{range} (not a string or true/false)",
    "int_parsing": "a whole number{range} (not a string or true/false)",
    "int_from_float": "a whole number{range} (not a fraction)",
    "bool_type": "true or false (not a string or a number)",
    "bool_parsing": "true or false (not a string or a number)",
    "string_type": "a string (text in quotes)",
    "path_type": "a path (text in quotes)",
    "model_type": "a table of keys",
    "model_attributes_type": "a table of keys",
    "dict_type": "a table of keys",
    "list_type": "an array",
    "datetime_type": "a date-time with a zone offset, e.g. 2026-11-29T06:30:00+01:00",
    "datetime_parsing": "a date-time with a zone offset, e.g. 2026-11-29T06:30:00+01:00",
    "datetime_from_date_parsing": "a date-time with a zone offset, e.g. 2026-11-29T06:30:00+01:00",
    "datetime_object_invalid": "a date-time with a zone offset, e.g. 2026-11-29T06:30:00+01:00",
    "timezone_aware": "a date-time with a zone offset, e.g. 2026-11-29T06:30:00+01:00",
    "greater_than": "a number{range}",
    "greater_than_equal": "a number{range}",
    "less_than": "a number{range}",
    "less_than_equal": "a number{range}",
}

#: The longest ``(got ...)`` shown: a refusal stays one readable line whatever was given.
_SHOWN_MAX_CHARS: Final[int] = 80
#: The longest single problem's message.
_MESSAGE_MAX_CHARS: Final[int] = 600


def _shown(value: object) -> str:
    """``repr(value)``, safely: never raises, one line, at most 80 characters."""
    try:
        if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
            return f"an integer of {value.bit_length()} bits"
        if isinstance(value, str | bytes) and len(value) > _SHOWN_MAX_CHARS - 20:
            value = value[: _SHOWN_MAX_CHARS - 20]
            text = repr(value) + "..."
        else:
            text = repr(value)
    except Exception:  # a value whose repr fails is still a refusal, not a crash
        return f"a {type(value).__name__}"
    return _one_line(text, _SHOWN_MAX_CHARS)


def _one_line(text: str, limit: int) -> str:
    """``text`` without line breaks or other control characters, cut at ``limit``."""
    if not text.isprintable():
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _path_text(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _model_of(annotation: object) -> type[BaseModel] | None:
    """The pydantic model inside ``annotation`` (``X``, ``X | None``, ``list[X]``), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):  # X | None, list[X], Annotated[X, ...]
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _field_info(title: str, loc: tuple[int | str, ...]) -> FieldInfo | None:
    """The field at ``loc`` of the model named ``title`` (one of this module's), if any."""
    model: type[BaseModel] | None = _MODELS.get(title)
    info: FieldInfo | None = None
    for part in loc:
        if isinstance(part, int):
            continue
        if model is None:
            return None
        info = model.model_fields.get(part)
        if info is None:
            return None
        model = _model_of(info.annotation)
    return info


def _range_words(info: FieldInfo | None) -> str:
    """`` from 0.05 to 60`` / `` above 0 and at most 30`` from the field's bounds, or ''."""
    if info is None:
        return ""
    low: Any = None
    high: Any = None
    low_inclusive = high_inclusive = True
    for meta in info.metadata:
        if isinstance(meta, Ge):
            low = meta.ge
        elif isinstance(meta, Gt):
            low, low_inclusive = meta.gt, False
        elif isinstance(meta, Le):
            high = meta.le
        elif isinstance(meta, Lt):
            high, high_inclusive = meta.lt, False
    if low is None and high is None:
        return ""
    if low is not None and high is not None and low_inclusive and high_inclusive:
        return f" from {low:g} to {high:g}"
    words = []
    if low is not None:
        words.append(f"at least {low:g}" if low_inclusive else f"above {low:g}")
    if high is not None:
        words.append(f"at most {high:g}" if high_inclusive else f"below {high:g}")
    return " " + " and ".join(words)


def _problem(error: Any, title: str) -> tuple[str, str]:
    """(dotted path, ``must be ...`` message) for one pydantic error."""
    loc = tuple(error.get("loc", ()))
    kind = error.get("type", "")
    ctx = error.get("ctx") or {}
    cause = ctx.get("error")
    if isinstance(cause, InputError):
        # A range check of our own: it names its field; a model-level check hangs it on the model.
        last = next((p for p in reversed(loc) if isinstance(p, str)), None)
        if cause.field != last:
            loc = (*loc, cause.field)
        return _path_text(loc), f"must be {cause.allowed} (got {_shown(cause.value)})"
    if kind == "extra_forbidden":
        return _path_text(loc), "unknown key (check the spelling; see docs/operations.md)"
    if kind == "missing":
        return _path_text(loc), "required"
    got = f" (got {_shown(error.get('input'))})"
    if kind in _TYPE_WORDS:
        words = _TYPE_WORDS[kind].format(range=_range_words(_field_info(title, loc)))
        return _path_text(loc), f"must be {words}{got}"
    if kind == "string_too_long":
        return _path_text(loc), f"must be at most {ctx.get('max_length')} characters{got}"
    if kind == "string_too_short":
        return _path_text(loc), f"must not be empty{got}"
    if kind in ("too_short", "too_long"):
        info = _field_info(title, loc)
        low = high = None
        for meta in info.metadata if info else ():
            low = getattr(meta, "min_length", low)
            high = getattr(meta, "max_length", high)
        bounds = f" with {low} to {high} entries" if low is not None and high is not None else ""
        return _path_text(loc), f"must be an array{bounds}{got}"
    if kind == "string_pattern_mismatch" and loc and loc[-1] == "id":
        return _path_text(loc), (
            "must be 1-32 characters: lowercase letters, digits, '_' and '-', starting with a "
            f"letter or a digit{got}"
        )
    if kind == "enum":
        return _path_text(loc), f"must be {ctx.get('expected', 'one of the allowed values')}{got}"
    if kind == "json_invalid":
        return _path_text(loc), f"must be valid JSON: {ctx.get('error', '')}"
    message = str(error.get("msg", "")).removeprefix("Value error, ")
    message = message.replace("Input should be ", "must be ", 1)
    if kind != "value_error":
        message += got
    return _path_text(loc), message


def format_validation_error(
    exc: ValidationError, prefix: str = "config", names: Mapping[str, str] | None = None
) -> str:
    """One line for all problems, one ``; ``-separated clause per problem naming the field and
    its allowed range: ``config channels[0].weight_kg: must be a number from 30 to 250 kg (got
    20.0)``.

    ``names`` renames paths (``{"weight_kg": "--weight-kg"}``): a renamed path is shown alone,
    without ``prefix``.  Never raises, whatever the refused input was.
    """
    lines = []
    try:
        errors = exc.errors()
        title = exc.title
    except Exception:  # pragma: no cover - pydantic's own rendering failed
        return _one_line(f"{prefix}: not valid", _MESSAGE_MAX_CHARS)
    for error in errors:
        try:
            path, message = _problem(error, title)
        except Exception:  # pragma: no cover - a refusal is never a crash
            path, message = _path_text(tuple(error.get("loc", ()))), "not valid"
        lines.append(_line(prefix, path, message, names))
    return "; ".join(lines)


def _line(prefix: str, path: str, message: str, names: Mapping[str, str] | None) -> str:
    named = (names or {}).get(path)
    if named is not None:
        line = f"{named}: {message}"
    elif path:
        line = f"{prefix} {path}: {message}" if prefix else f"{path}: {message}"
    else:
        line = f"{prefix}: {message}" if prefix else message
    return _one_line(line, _MESSAGE_MAX_CHARS)


# -- from TOML or flags to strict JSON ----------------------------------------------------------


class _RefusedError(Exception):
    """A value no config field can take (NaN, a 5000-digit integer, ...), found before pydantic."""

    def __init__(self, loc: tuple[int | str, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message


def _jsonable(value: object, loc: tuple[int | str, ...], depth: int = 0) -> object:
    """``value`` (from tomllib or from flags) as plain JSON data; date-times as ISO-8601 text."""
    if depth > _MAX_NESTING:
        raise _RefusedError(loc, f"nested at most {_MAX_NESTING} tables or arrays deep")
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise _RefusedError(
                loc, f"text without undecodable bytes (got {_shown(value)})"
            ) from None
        return str(value)
    if isinstance(value, int):
        if value.bit_length() > _MAX_INT_BITS:
            raise _RefusedError(loc, f"a number within its range (got {_shown(value)})")
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _RefusedError(loc, f"a finite number (not nan or inf) (got {_shown(value)})")
        return float(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, os.PathLike):
        return _jsonable(os.fspath(value), loc, depth)
    if isinstance(value, Mapping):
        out: dict[str, object] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise _RefusedError(loc, f"a table with text keys (got key {_shown(key)})")
            out[_jsonable(key, (*loc, "<key>"), depth + 1)] = _jsonable(  # type: ignore[index]
                item, (*loc, key), depth + 1
            )
        return out
    if isinstance(value, list | tuple):
        return [_jsonable(item, (*loc, i), depth + 1) for i, item in enumerate(value)]
    raise _RefusedError(
        loc,
        f"a number, a string, true/false, a date-time, a table or an array "
        f"(got a {type(value).__name__})",
    )


def _json_text(data: Mapping[str, Any]) -> str:
    """``data`` (a TOML document or flags) as JSON text for strict validation.

    TOML date-times become ISO-8601 strings; NaN, infinities, integers beyond 63 bits, text with
    undecodable bytes and other Python objects are refused (:class:`_RefusedError`, naming the key).
    """
    return json.dumps(_jsonable(data, ()), ensure_ascii=False, allow_nan=False)


M = TypeVar("M", bound=BaseModel)


def validate_json_model(
    model: type[M],
    data: Mapping[str, Any],
    *,
    source: str,
    names: Mapping[str, str] | None = None,
) -> M:
    """``data`` validated as ``model`` in pydantic's strict JSON mode.

    Raises :class:`ConfigError` with one line naming every bad key (or, through ``names``, the
    flag it came from) and its allowed range.
    """
    try:
        text = _json_text(data)
    except _RefusedError as refusal:
        raise ConfigError(
            _line(source, _path_text(refusal.loc), f"must be {refusal.message}", names)
        ) from None
    try:
        return model.model_validate_json(text, strict=True)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, prefix=source, names=names)) from None


def _display_path(file: Path) -> str:
    return _one_line(str(file), 300)


def read_config_text(file: Path) -> str:
    """The text of config ``file``: a regular file of at most 1 MiB, in UTF-8.

    A FIFO, a device or a directory is refused before anything is read (nothing hangs), and so
    is a larger file; bytes that are not UTF-8 are refused with their offset.
    """
    shown = repr(str(file))
    try:
        fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"config {shown}: cannot read: {reason}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
            raise ConfigError(f"config {shown}: cannot read: {kind}")
        if info.st_size > CONFIG_FILE_MAX_BYTES:
            raise ConfigError(
                f"config {shown}: must be at most {CONFIG_FILE_MAX_BYTES} bytes "
                f"(got {info.st_size})"
            )
        with os.fdopen(fd, "rb", closefd=False) as stream:
            raw = stream.read(CONFIG_FILE_MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"config {shown}: cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(raw) > CONFIG_FILE_MAX_BYTES:
        raise ConfigError(f"config {shown}: must be at most {CONFIG_FILE_MAX_BYTES} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config {shown}: must be UTF-8 text (byte 0x{raw[exc.start]:02x} at offset "
            f"{exc.start} is not)"
        ) from None


def load_config(path: Path | str) -> GatewayConfig:
    """Read and validate a TOML config file; ConfigError (one line) naming the key on any problem.

    Never anything else: an unreadable, oversized, non-UTF-8 or non-TOML file is a ConfigError
    too.
    """
    if not isinstance(path, str | os.PathLike):  # e.g. argparse's [] for ``--config=--``
        raise ConfigError(f"config: must be a path to a file (got {_shown(path)})")
    file = Path(path)
    text = read_config_text(file)
    try:
        data: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"config {str(file)!r}: not valid TOML: {_one_line(str(exc), 300)}"
        ) from None
    except (ValueError, RecursionError) as exc:  # a 5000-digit integer; arrays nested 1000 deep
        reason = "too deeply nested" if isinstance(exc, RecursionError) else "a number too large"
        raise ConfigError(f"config {str(file)!r}: not valid TOML: {reason}") from None
    return build_config(data, source=_display_path(file))


def build_config(data: Mapping[str, Any], source: str = "config") -> GatewayConfig:
    """Validate a config mapping (from TOML or from flags) in strict JSON mode.

    ``source`` starts each refusal (the file's name, ``flags``, ``demo``); with ``flags`` or
    ``demo`` the refusal names the command's flag (``--weight-kg``) instead of the key.
    """
    names = RUN_FLAG_NAMES if source in ("flags", "demo") else None
    return validate_json_model(GatewayConfig, data, source=source, names=names)


#: Order fields -> the flags that give them (``run``, ``order``, ``plan``).
ORDER_FLAG_NAMES: Final[dict[str, str]] = {
    "arm": "--arm",
    "weight_kg": "--weight-kg",
    "igm_mg_dl": "--igm-mg-dl",
    "igm_mg_per_dl": "--igm-mg-dl",
    "hematocrit": "--hematocrit",
    "randomised_at": "--randomised-at",
    "start_override_reason": "--start-override-reason",
    "titer_measured_at": "--titer-measured-at",
    "confirm": "--confirm",
    "ceiling_ml_per_kg_per_h": "--ceiling-ml-per-kg-per-h",
    "product.concentration_mg_per_ml": "--concentration-mg-per-ml",
    "product.igm_content_mg_per_ml": "--igm-content-mg-per-ml",
}

#: Config paths -> the flags of ``run`` without ``--config`` that give them.
RUN_FLAG_NAMES: Final[dict[str, str]] = {
    "state_dir": "--state-dir",
    "time_scale": "--time-scale",
    "control.poll_interval_s": "--poll-interval-s",
    "api.listen": "--api",
    "api.token_file": "--token-file",
    "channels[0].id": "--channel-id",
    "channels[0].pump": "--pump",
    **{f"channels[0].{key}": flag for key, flag in ORDER_FLAG_NAMES.items()},
}

_MODELS: Final[dict[str, type[BaseModel]]] = {
    m.__name__: m
    for m in (
        ProductConfig,
        AutoResumeConfig,
        ControlConfig,
        OrderConfig,
        ChannelConfig,
        ApiConfig,
        GatewayConfig,
    )
}
