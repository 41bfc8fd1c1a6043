"""Pump drivers: one :class:`PumpDriver` interface, backends opened by URL and loaded lazily.

>>> with open_pump("newera:///dev/ttyUSB0?baud=19200") as pump:   # doctest: +SKIP
...     print(pump.read_status())

A backend's module is imported only when its scheme is used, so a missing optional dependency
of one backend never breaks ``import drivers``.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING

from drivers.errors import DriverConfigError
from drivers.url import merge_options, parse_pump_url

if TYPE_CHECKING:
    from drivers.base import PumpDriver

#: URL scheme -> "module:Class" of its backend.
BACKENDS: dict[str, str] = {
    "newera": "drivers.newera:NeweraDriver",
    "newera+tcp": "drivers.newera:NeweraDriver",
    "modbus+tcp": "drivers.modbus:ModbusDriver",
    "modbus+rtu": "drivers.modbus:ModbusDriver",
}


def driver_class(scheme: str) -> type[PumpDriver]:
    """The backend class for ``scheme``, imported on first use."""
    try:
        target = BACKENDS[scheme]
    except KeyError:
        allowed = ", ".join(sorted(BACKENDS))
        raise DriverConfigError(f"pump URL scheme {scheme!r}: must be one of {allowed}") from None
    module_name, class_name = target.split(":")
    cls: type[PumpDriver] = getattr(importlib.import_module(module_name), class_name)
    return cls


def make_pump(
    url: str, *, defaults: Mapping[str, object] | None = None, **options: object
) -> PumpDriver:
    """A driver for ``url``, not yet connected (``open()`` or ``with`` connects; no I/O here).

    ``options`` override the URL's query parameters; ``defaults`` apply only to options the
    URL does not give: ``make_pump(url, defaults={"timeout_s": 1.0, "retries": 1})``.  Both are
    validated like the query (an unknown or out-of-range value: :class:`DriverConfigError`).
    """
    parsed = parse_pump_url(url)
    return driver_class(parsed.scheme)(parsed, **merge_options(parsed, options, defaults))


def open_pump(
    url: str, *, defaults: Mapping[str, object] | None = None, **options: object
) -> PumpDriver:
    """A connected, identified driver for ``url``.  Close it (or use ``with``)."""
    driver = make_pump(url, defaults=defaults, **options)
    try:
        driver.open()
    except BaseException:
        driver.close()
        raise
    return driver


__all__ = ["BACKENDS", "driver_class", "make_pump", "open_pump"]
