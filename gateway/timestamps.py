"""Instants at the boundary: ISO-8601 with a zone in, Unix seconds inside, UTC ``Z`` out.

A time a person or a client sends (when a titer was measured, when a weight was taken) is parsed
once, by :func:`parse_instant`, which refuses a date-time without a zone: "07:30" means nothing
until one knows where.  Inside, instants are Unix seconds (float).  :func:`format_instant` writes
them back as UTC with whole seconds and ``Z``.  :func:`check_not_future` and
:func:`check_not_older` refuse an instant outside an allowed window, naming the field and the
window.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Final

from gateway.errors import InputError

#: How far after "now" an instant may be and still count as now: clocks disagree (s).
CLOCK_SKEW_S: Final[float] = 300.0

#: What :func:`parse_instant` accepts, in the words of its refusal.
INSTANT_ALLOWED: Final[str] = "an ISO-8601 date-time with a zone, e.g. 2026-11-29T07:30:00+01:00"


def parse_instant(field: str, text: str) -> float:
    """``text`` (ISO-8601 with a zone: ``...+01:00`` or ``...Z``) as Unix seconds.

    Raises :class:`InputError` naming ``field`` for anything else: not a string, unparseable, no
    zone (a local time that could be any instant), or an instant outside UTC years 1-9999.
    """
    if not isinstance(text, str):
        raise InputError(field, INSTANT_ALLOWED, text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InputError(field, INSTANT_ALLOWED, text) from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise InputError(field, INSTANT_ALLOWED, text)
    try:
        moment.astimezone(UTC)  # an instant beyond UTC years 1-9999 cannot be written back
        unix_s = moment.timestamp()
    except (OverflowError, ValueError):
        raise InputError(field, INSTANT_ALLOWED, text) from None
    if not math.isfinite(unix_s):
        raise InputError(field, INSTANT_ALLOWED, text)
    return unix_s


def format_instant(unix_s: float) -> str:
    """``unix_s`` as UTC ISO-8601 with whole seconds and ``Z``: ``2026-11-29T06:30:00Z``.

    Fractions of a second are dropped (rounded towards the past), so
    ``parse_instant(f, format_instant(t)) == math.floor(t)``.
    """
    if isinstance(unix_s, bool) or not isinstance(unix_s, int | float) or not math.isfinite(unix_s):
        raise InputError("unix_s", "a finite number of seconds", unix_s)
    try:
        moment = datetime.fromtimestamp(math.floor(unix_s), tz=UTC)
    except (OverflowError, OSError, ValueError):
        raise InputError("unix_s", "seconds within years 1-9999", unix_s) from None
    return moment.isoformat(timespec="seconds").removesuffix("+00:00") + "Z"


def check_not_future(field: str, at_s: float, now_s: float, *, skew_s: float) -> float:
    """Return ``at_s`` if it is at most ``skew_s`` seconds after ``now_s``, else InputError.

    The refusal reads e.g. ``measured_at: must be at most 300 s after now
    (2026-11-29T06:30:00Z) (got '2026-11-29T07:30:00Z')``.
    """
    _finite(field, at_s)
    _finite("now_s", now_s)
    _non_negative("skew_s", skew_s)
    if at_s > now_s + skew_s:
        raise InputError(
            field,
            f"at most {_duration(skew_s)} after now ({format_instant(now_s)})",
            _shown(at_s),
        )
    return at_s


def check_not_older(field: str, at_s: float, now_s: float, *, max_age_s: float) -> float:
    """Return ``at_s`` if it is at most ``max_age_s`` seconds before ``now_s``, else InputError.

    The refusal reads e.g. ``measured_at: must be within 36 h before now
    (2026-11-29T06:30:00Z) (got '2026-11-27T06:30:00Z')``.  Only the age is checked: pair it
    with :func:`check_not_future` to refuse the future too.
    """
    _finite(field, at_s)
    _finite("now_s", now_s)
    _non_negative("max_age_s", max_age_s)
    if at_s < now_s - max_age_s:
        raise InputError(
            field,
            f"within {_duration(max_age_s)} before now ({format_instant(now_s)})",
            _shown(at_s),
        )
    return at_s


def _shown(at_s: float) -> str:
    """``at_s`` as :func:`format_instant` writes it, or as a number beyond years 1-9999."""
    try:
        return format_instant(at_s)
    except InputError:
        return repr(at_s)


def _finite(field: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InputError(field, "a finite number of Unix seconds", value)


def _non_negative(field: str, value: float) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (math.isfinite(value) and value >= 0.0)
    ):
        raise InputError(field, "a finite number >= 0 s", value)


def _duration(seconds: float) -> str:
    """``seconds`` in words: whole tenths of an hour as hours (``36 h``, ``1.5 h``), else s."""
    tenths_of_hour = seconds / 360.0
    if seconds >= 3600.0 and tenths_of_hour.is_integer():
        return f"{seconds / 3600.0:g} h"
    return f"{seconds:g} s"
