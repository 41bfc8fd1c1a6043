"""Rounding for display: the one place that says how numbers are shown to a person.

Every displayed dose, volume and rate is rounded *down*, so a screen never shows more than the
exact value (a pharmacist checks against it).  Machine-readable output (the API's JSON, the
journal) keeps the exact floats.
"""

from __future__ import annotations

import math
from typing import Final

from gateway.safety import round_down_to_resolution

#: Volumes (mL) and rates (mL/h, mg/kg/h) are shown to 0.01.
DISPLAY_STEP: Final[float] = 0.01
#: Doses (mg/kg) are shown to 0.1.
DOSE_DISPLAY_STEP_MG_PER_KG: Final[float] = 0.1


def floor_display(value: float | None, step: float = DISPLAY_STEP) -> float | None:
    """``value`` rounded towards zero to ``step`` (None and non-finite values pass through)."""
    if value is None or not math.isfinite(value):
        return value
    if value < 0.0:
        return -round_down_to_resolution(-value, step)
    return round_down_to_resolution(value, step)


def floor_dose(mg_per_kg: float | None) -> float | None:
    """A dose in mg/kg rounded down to 0.1."""
    return floor_display(mg_per_kg, DOSE_DISPLAY_STEP_MG_PER_KG)


def shown(value: float | None, unit: str, step: float = DISPLAY_STEP) -> str:
    """``value`` rounded down to ``step`` and written with its unit for a person (0.1 steps with
    one decimal, 0.01 steps with two): ``"13.99 mL/h"``; ``"-"`` when there is no value."""
    floored = floor_display(value, step)
    return "-" if floored is None else f"{floored:.{1 if step >= 0.1 else 2}f} {unit}"
