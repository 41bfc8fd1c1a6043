"""Range checks that name the field and the allowed range: the one way inputs are refused."""

from __future__ import annotations

import math

from gateway.errors import InputError


def finite_in_range(
    field: str,
    value: object,
    low: float,
    high: float,
    unit: str = "",
    *,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> float:
    """Return ``value`` as a float if it is a finite number within [low, high], else raise.

    The error names ``field`` and the allowed range, e.g. ``weight_kg: must be a number from 30
    to 250 kg (got 20.0)``.  Booleans are refused: ``True`` is not a weight.
    """
    unit_text = f" {unit}" if unit else ""
    if low_inclusive and high_inclusive:
        allowed = f"a number from {low:g} to {high:g}{unit_text}"
    else:
        lo_words = f"at least {low:g}" if low_inclusive else f"above {low:g}"
        hi_words = f"at most {high:g}" if high_inclusive else f"below {high:g}"
        allowed = f"a number {lo_words} and {hi_words}{unit_text}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(field, allowed, value)
    number = float(value)
    if not math.isfinite(number):
        raise InputError(field, allowed, value)
    too_low = number < low if low_inclusive else number <= low
    too_high = number > high if high_inclusive else number >= high
    if too_low or too_high:
        raise InputError(field, allowed, value)
    return number
