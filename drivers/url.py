"""Pump URLs: how a pump is named on the command line, in config and in tests.

``newera:///dev/ttyUSB0?baud=19200&address=0&safe_timeout_s=10``
``newera+tcp://HOST:PORT?address=0``
``modbus+tcp://HOST:PORT?unit=1``
``modbus+rtu:///dev/ttyUSB0?baud=19200&unit=1``

Query parameters are validated by the backend's options model (pydantic, unknown keys refused):
every number must be finite and in its range, a whole-number option takes decimal digits only
(``retries=1.5``, ``retries=true`` and ``retries=`` are refused), and a refusal is one
:class:`DriverConfigError` naming the parameter and its allowed range.

**Precedence** (highest first): keyword ``overrides`` (``make_pump(url, retries=0)``: tests, and
a command-line flag the user typed), then the URL's query parameters, then the caller's
``defaults`` (``make_pump(url, defaults={...})``: the daemon's ``control.request_timeout_s`` and
``request_retries``, or a flag's default value), then the options model's own defaults.  So
``?timeout_s=5&retries=0`` in a pump URL is what the driver uses unless code overrides it.

**Device identity** (:func:`device_key`, :func:`duplicate_devices`): one pump spelled two ways
(``/dev/ttyUSB0`` and a ``/dev/serial/by-id/...`` link to it; ``localhost`` and ``127.0.0.1``)
is one device, while two pumps on one bus with different addresses (``unit`` on Modbus,
``address`` on an NE-1000 network) are two.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar, get_args, get_origin
from urllib.parse import parse_qsl, urlsplit

from pydantic import BaseModel, BeforeValidator, ValidationError
from pydantic_core import PydanticCustomError

from drivers.errors import DriverConfigError

OptionsT = TypeVar("OptionsT", bound=BaseModel)

_DIGITS = re.compile(r"[0-9]{1,30}")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,4})?")


def _whole_number(value: object) -> object:
    """A whole number: an ``int`` (not a bool) or a string of decimal digits."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        return int(value)
    raise PydanticCustomError("whole_number", "must be a whole number (decimal digits)")


def _finite_number(value: object) -> object:
    """A finite number: an ``int`` or ``float`` (not a bool) or a decimal string; no nan/inf."""
    number: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
    elif isinstance(value, str) and _DECIMAL.fullmatch(value):
        number = float(value)
    if number is None or not math.isfinite(number):
        raise PydanticCustomError("finite_number", "must be a finite number")
    return number


#: Field types of the options models: what a URL query string or a keyword may give.
WholeNumber = Annotated[int, BeforeValidator(_whole_number)]
FiniteNumber = Annotated[float, BeforeValidator(_finite_number)]

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


def merge_options(
    url: PumpUrl, overrides: Mapping[str, Any], defaults: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The option values for ``url``: ``defaults``, then its query params, then ``overrides``.

    Each later source wins over an earlier one (see the module docstring).
    """
    values: dict[str, Any] = dict(defaults or {})
    values.update(url.params)
    values.update(overrides)
    return values


def parse_options(
    model: type[OptionsT],
    url: PumpUrl,
    overrides: Mapping[str, Any],
    defaults: Mapping[str, Any] | None = None,
) -> OptionsT:
    """Validate ``defaults``, the URL's query parameters and ``overrides`` with ``model``.

    ``overrides`` win over the URL, which wins over ``defaults``.  Errors name the parameter,
    its allowed values and what was given, e.g. ``pump URL parameter 'retries': must be a whole
    number from 0 to 5 (got '1.5')``.
    """
    values = merge_options(url, overrides, defaults)
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = ".".join(str(part) for part in error["loc"]) or "?"
            if error["type"] == "extra_forbidden":
                known = ", ".join(sorted(model.model_fields))
                problems.append(f"pump URL parameter {name!r}: unknown (allowed: {known})")
                continue
            allowed = allowed_values(model, name)
            message = error["msg"].removeprefix("Value error, ")
            if allowed:
                message = f"must be {allowed}"
            given = values.get(name, error.get("input"))
            problems.append(f"pump URL parameter {name!r}: {message} (got {_short(given)})")
        raise DriverConfigError("; ".join(problems)) from None


def allowed_values(model: type[BaseModel], name: str) -> str | None:
    """What option ``name`` of ``model`` allows, from its type and bounds (``a whole number
    from 0 to 5``, ``a finite number > 0 and <= 30``, ``one of N, E, O``); None if unknown."""
    field = model.model_fields.get(name)
    if field is None:
        return None
    if get_origin(field.annotation) is Literal:
        return "one of " + ", ".join(str(arg) for arg in get_args(field.annotation))
    bounds: dict[str, str] = {}
    for meta in field.metadata:
        for op in ("gt", "ge", "lt", "le"):
            if (bound := getattr(meta, op, None)) is not None:
                bounds[op] = f"{bound:g}" if isinstance(bound, float) else str(bound)
    if not bounds:
        return None
    kind = "a whole number" if field.annotation is int else "a finite number"
    if set(bounds) == {"ge", "le"}:
        return f"{kind} from {bounds['ge']} to {bounds['le']}"
    symbols = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
    return f"{kind} " + " and ".join(
        f"{sym} {bounds[op]}" for op, sym in symbols.items() if op in bounds
    )


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# -- device identity -----------------------------------------------------------------------


def device_key(url: str) -> tuple[str, ...]:
    """The identity of the device ``url`` reaches, for refusing one pump on two channels.

    * serial (``newera``, ``modbus+rtu``): ``("serial", realpath, unit)``: the device path with
      every symlink resolved (``/dev/serial/by-id/...`` and ``/dev/ttyUSB0`` are one port);
    * network (``newera+tcp``, ``modbus+tcp``): ``("tcp", port, unit, *addresses)``: every
      address ``socket.getaddrinfo`` gives for the host (TCP), IPv4-mapped IPv6 written as IPv4,
      IPv4 first then IPv6, each sorted.  ``localhost`` may resolve to both ``127.0.0.1`` and
      ``::1``: two network keys name one device when port and unit are equal and their address
      sets *share* an address (:func:`same_device`), so ``localhost``, ``127.0.0.1`` and ``[::1]``
      all collide with it;
    * ``unit`` is the pump's address on its line, after validation with the backend's options
      (so ``unit=01``, ``unit=1`` and no ``unit`` agree): ``modbus.unit=N`` (Modbus unit id) or
      ``newera.address=N`` (NE-1000 ``ADR``).  Two pumps on one RS-485 bus or behind one TCP
      gateway with different addresses are two devices.

    Raises :class:`DriverConfigError` (one line) for a URL that does not parse or validate, or a
    host that does not resolve.  Resolving may consult DNS (names under the reserved
    ``.invalid`` TLD are refused without asking, RFC 6761).
    """
    from drivers import driver_class  # lazy: drivers imports this module

    parsed = parse_pump_url(url)
    options = parse_options(driver_class(parsed.scheme).options_model, parsed, {})
    values = options.model_dump()
    if parsed.scheme.startswith("modbus"):
        unit = f"modbus.unit={values['unit']}"
    else:
        unit = f"newera.address={values['address']}"
    if parsed.is_serial:
        assert parsed.path is not None
        return ("serial", os.path.realpath(parsed.path), unit)
    assert parsed.host is not None
    assert parsed.port is not None
    return ("tcp", str(parsed.port), unit, *_resolve(parsed.host, parsed.port))


def same_device(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """Whether two :func:`device_key` results name one device (network: a shared address)."""
    if a[0] == "tcp" and b[0] == "tcp":
        return a[1:3] == b[1:3] and not set(a[3:]).isdisjoint(b[3:])
    return a == b


def duplicate_devices(urls: Sequence[str]) -> list[tuple[str, str]]:
    """Every pair ``(urls[i], urls[j])``, ``i < j``, that reaches one device, in input order.

    Raises :class:`DriverConfigError` for a URL that is invalid or whose host does not resolve.
    """
    keys = [device_key(url) for url in urls]
    return [
        (urls[i], urls[j])
        for i in range(len(urls))
        for j in range(i + 1, len(urls))
        if same_device(keys[i], keys[j])
    ]


def _resolve(host: str, port: int) -> tuple[str, ...]:
    """Every address of ``host`` (IPv4 first, then IPv6, each sorted); one-line error if none."""
    name = host.lower().rstrip(".")
    if name == "invalid" or name.endswith(".invalid"):
        raise DriverConfigError(f"pump URL host {host!r}: does not resolve (reserved .invalid)")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise DriverConfigError(f"pump URL host {host!r}: does not resolve ({reason})") from None
    addresses: set[tuple[int, int, str]] = set()  # (version, value, text with any %scope)
    for _family, _type, _proto, _canon, sockaddr in infos:
        text, percent, scope = str(sockaddr[0]).partition("%")
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            continue
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        addresses.add((address.version, int(address), f"{address}{percent}{scope}"))
    if not addresses:
        raise DriverConfigError(f"pump URL host {host!r}: does not resolve to an IP address")
    return tuple(text for _version, _value, text in sorted(addresses))
