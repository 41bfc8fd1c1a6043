"""Pump URLs: how a pump is named on the command line, in config and in tests.

``newera:///dev/ttyUSB0?baud=19200&address=0&safe_timeout_s=10``
``newera+tcp://HOST:PORT?address=0``
``modbus+tcp://HOST:PORT?unit=1``
``modbus+rtu:///dev/ttyUSB0?baud=19200&unit=1``

Query parameters are validated by the backend's options model (pydantic, unknown keys refused).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

from pydantic import BaseModel, ValidationError

from drivers.errors import DriverConfigError

OptionsT = TypeVar("OptionsT", bound=BaseModel)

SERIAL_SCHEMES = frozenset({"newera", "modbus+rtu"})
NETWORK_SCHEMES = frozenset({"newera+tcp", "modbus+tcp"})
SCHEMES = SERIAL_SCHEMES | NETWORK_SCHEMES


@dataclass(frozen=True)
class PumpUrl:
    """A parsed pump URL: a serial ``path`` or a network ``host``/``port``, plus query params."""

    raw: str
    scheme: str
    path: str | None
    host: str | None
    port: int | None
    params: Mapping[str, str]

    @property
    def is_serial(self) -> bool:
        return self.scheme in SERIAL_SCHEMES

    def redacted(self) -> str:
        """The URL as it may be logged (it carries no secrets today; kept as one place)."""
        return self.raw


def parse_pump_url(url: str) -> PumpUrl:
    """Parse and check the shape of a pump URL; raise DriverConfigError naming what is wrong."""
    if not isinstance(url, str) or not url.strip():
        raise DriverConfigError("pump URL: must be a non-empty string like newera:///dev/ttyUSB0")
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise DriverConfigError(
            f"pump URL scheme {parts.scheme!r}: must be one of {', '.join(sorted(SCHEMES))}"
        )
    params: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False):
        if key in params:
            raise DriverConfigError(f"pump URL parameter {key!r}: given twice")
        params[key] = value
    if scheme in SERIAL_SCHEMES:
        if parts.netloc:
            raise DriverConfigError(
                f"pump URL {url!r}: a serial URL has three slashes and a device path, "
                f"e.g. {scheme}:///dev/ttyUSB0"
            )
        if not parts.path or parts.path == "/":
            raise DriverConfigError(f"pump URL {url!r}: the serial device path is missing")
        return PumpUrl(url, scheme, parts.path, None, None, params)
    try:
        port = parts.port
    except ValueError as exc:
        raise DriverConfigError(f"pump URL {url!r}: port must be 1-65535") from exc
    if not parts.hostname or port is None or port == 0:
        raise DriverConfigError(
            f"pump URL {url!r}: must name HOST:PORT, e.g. {scheme}://127.0.0.1:4001"
        )
    if parts.path not in ("", "/"):
        raise DriverConfigError(f"pump URL {url!r}: a network URL takes no path")
    return PumpUrl(url, scheme, None, parts.hostname, port, params)


def parse_options(model: type[OptionsT], url: PumpUrl, overrides: Mapping[str, Any]) -> OptionsT:
    """Validate the URL's query parameters (then ``overrides``) with ``model``.

    Errors name the parameter and what it allows, e.g. ``pump URL parameter 'address':
    Input should be less than or equal to 99``.
    """
    values: dict[str, Any] = dict(url.params)
    values.update(overrides)
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = ".".join(str(part) for part in error["loc"]) or "?"
            if error["type"] == "extra_forbidden":
                allowed = ", ".join(sorted(model.model_fields))
                problems.append(f"pump URL parameter {name!r}: unknown (allowed: {allowed})")
            else:
                problems.append(f"pump URL parameter {name!r}: {error['msg']}")
        raise DriverConfigError("; ".join(problems)) from None
