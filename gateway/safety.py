"""The hard rate limit: the one function every rate command must pass (safety invariants 1-2).

* The ceiling is the lower of :data:`CEILING_ML_PER_KG_PER_H` (0.4 mL/kg/h) and
  :data:`CEILING_MG_PER_KG_PER_H` (20 mg/kg/h) divided by the product's concentration: the two
  agree at 50 mg/mL; a more concentrated product lowers the volume ceiling.  A site may configure
  a lower ceiling, never a higher one.
* :func:`check_rate` **refuses** a rate above the ceiling with :class:`RateRefusedError`; it
  never clamps silently.  The caller raises the alarm and journals the refusal.
* :func:`round_down_to_resolution` rounds a rate to a pump's resolution, always downwards.

Nothing else in the code base constructs :class:`drivers.approved_rate.ApprovedRate`.
"""

from __future__ import annotations

import math
from decimal import ROUND_FLOOR, Decimal
from typing import Final

from drivers.approved_rate import ApprovedRate
from gateway.errors import GatewayError, InputError
from gateway.validate import finite_in_range

#: The label's and the protocol's maximum rate.  Configuration can lower it, never raise it.
CEILING_ML_PER_KG_PER_H: Final[float] = 0.4

#: The same maximum as a dose rate: 0.4 mL/kg/h of the labelled 50 mg/mL product.
CEILING_MG_PER_KG_PER_H: Final[float] = 20.0
#: The concentration at which the two ceilings agree (mg/mL).
LABEL_CONCENTRATION_MG_PER_ML: Final[float] = CEILING_MG_PER_KG_PER_H / CEILING_ML_PER_KG_PER_H
#: Sanity bound on a product concentration (mg/mL).
CONCENTRATION_MG_PER_ML_MAX: Final[float] = 1000.0

#: Weights the safety check accepts (the trial's input range).
WEIGHT_KG_MIN: Final[float] = 30.0
WEIGHT_KG_MAX: Final[float] = 250.0


class SafetyError(GatewayError):
    """Root of the safety check's refusals."""


class RateRefusedError(SafetyError):
    """A rate command refused by the safety check.  Nothing was sent."""

    def __init__(self, rate_ml_per_h: float, ceiling_ml_per_h: float, reason: str) -> None:
        self.rate_ml_per_h = rate_ml_per_h
        self.ceiling_ml_per_h = ceiling_ml_per_h
        self.reason = reason
        super().__init__(
            f"rate_ml_per_h {rate_ml_per_h!r} refused: {reason} "
            f"(allowed 0 to {ceiling_ml_per_h:g} mL/h)"
        )


def validate_ceiling_ml_per_kg_per_h(value: float) -> float:
    """Return a site-configured ceiling if it is in (0, 0.4] mL/kg/h, else raise InputError.

    A site may lower the ceiling, never raise it.
    """
    return finite_in_range(
        "ceiling_ml_per_kg_per_h",
        value,
        0.0,
        CEILING_ML_PER_KG_PER_H,
        "mL/kg/h",
        low_inclusive=False,
    )


def validate_weight_kg(weight_kg: float) -> float:
    """Return ``weight_kg`` if it is a finite number in 30-250 kg, else raise InputError."""
    return finite_in_range("weight_kg", weight_kg, WEIGHT_KG_MIN, WEIGHT_KG_MAX, "kg")


def validate_concentration_mg_per_ml(value: float) -> float:
    """A product concentration above 0 and at most 1000 mg/mL, else InputError."""
    return finite_in_range(
        "concentration_mg_per_ml",
        value,
        0.0,
        CONCENTRATION_MG_PER_ML_MAX,
        "mg/mL",
        low_inclusive=False,
    )


def effective_ceiling_ml_per_kg_per_h(
    ceiling_ml_per_kg_per_h: float = CEILING_ML_PER_KG_PER_H,
    *,
    concentration_mg_per_ml: float = LABEL_CONCENTRATION_MG_PER_ML,
) -> float:
    """The effective ceiling per kg: ``min(site ceiling, 20 mg/kg/h / concentration)`` mL/kg/h."""
    per_kg = validate_ceiling_ml_per_kg_per_h(ceiling_ml_per_kg_per_h)
    concentration = validate_concentration_mg_per_ml(concentration_mg_per_ml)
    return min(per_kg, CEILING_MG_PER_KG_PER_H / concentration)


def ceiling_ml_per_h(
    weight_kg: float,
    ceiling_ml_per_kg_per_h: float = CEILING_ML_PER_KG_PER_H,
    *,
    concentration_mg_per_ml: float = LABEL_CONCENTRATION_MG_PER_ML,
) -> float:
    """The highest rate in mL/h any command may carry for a patient of ``weight_kg``.

    ``min(0.4 mL/kg/h or the site's lower ceiling, 20 mg/kg/h / concentration) x weight``.
    """
    weight = validate_weight_kg(weight_kg)
    per_kg = effective_ceiling_ml_per_kg_per_h(
        ceiling_ml_per_kg_per_h, concentration_mg_per_ml=concentration_mg_per_ml
    )
    return per_kg * weight


def round_down_to_resolution(rate_ml_per_h: float, resolution_ml_per_h: float) -> float:
    """Round ``rate_ml_per_h`` down to a multiple of ``resolution_ml_per_h``; never up.

    Works in decimal so that binary floating point noise cannot round a rate up.  The result
    is the largest float that is a multiple of the resolution and not above the input.
    """
    if not (math.isfinite(rate_ml_per_h) and rate_ml_per_h >= 0.0):
        raise InputError("rate_ml_per_h", "a finite number >= 0 mL/h", rate_ml_per_h)
    if not (math.isfinite(resolution_ml_per_h) and resolution_ml_per_h > 0.0):
        raise InputError("resolution_ml_per_h", "a finite number > 0 mL/h", resolution_ml_per_h)
    step = Decimal(repr(resolution_ml_per_h))
    steps = (Decimal(repr(rate_ml_per_h)) / step).to_integral_value(rounding=ROUND_FLOOR)
    result = float(steps * step)
    while result > rate_ml_per_h:  # the decimal -> float conversion rounded up: step back
        steps -= 1
        result = float(steps * step)
    return max(result, 0.0)


def check_rate(
    rate_ml_per_h: float,
    *,
    weight_kg: float,
    ceiling_ml_per_kg_per_h: float = CEILING_ML_PER_KG_PER_H,
    concentration_mg_per_ml: float = LABEL_CONCENTRATION_MG_PER_ML,
    pump_max_rate_ml_per_h: float | None = None,
) -> ApprovedRate:
    """Approve ``rate_ml_per_h`` for a patient of ``weight_kg``, or refuse it.

    Refuses (raises :class:`RateRefusedError`, never clamps) a rate that is not a finite
    number, is negative, is above ``ceiling_ml_per_kg_per_h x weight_kg`` or is above the pump's
    own maximum.  The ceiling is ``min(ceiling_ml_per_kg_per_h, 20 mg/kg/h / concentration) x
    weight``.  A bad weight, concentration, or a ceiling above 0.4 mL/kg/h raises
    :class:`InputError`.
    """
    ceiling = ceiling_ml_per_h(
        weight_kg, ceiling_ml_per_kg_per_h, concentration_mg_per_ml=concentration_mg_per_ml
    )
    if isinstance(rate_ml_per_h, bool) or not isinstance(rate_ml_per_h, int | float):
        raise RateRefusedError(float("nan"), ceiling, f"not a number: {rate_ml_per_h!r}")
    rate = float(rate_ml_per_h)
    if not math.isfinite(rate):
        raise RateRefusedError(rate, ceiling, "not a finite number")
    if rate < 0.0:
        raise RateRefusedError(rate, ceiling, "negative")
    if rate > ceiling:
        raise RateRefusedError(
            rate,
            ceiling,
            f"above the ceiling min({ceiling_ml_per_kg_per_h:g} mL/kg/h, "
            f"{CEILING_MG_PER_KG_PER_H:g} mg/kg/h at {concentration_mg_per_ml:g} mg/mL) "
            f"x {weight_kg:g} kg",
        )
    limit = ceiling
    if pump_max_rate_ml_per_h is not None:
        if rate > pump_max_rate_ml_per_h:
            raise RateRefusedError(
                rate, pump_max_rate_ml_per_h, "above the pump's own maximum rate"
            )
        limit = min(ceiling, pump_max_rate_ml_per_h)
    return ApprovedRate(rate_ml_per_h=rate, ceiling_ml_per_h=limit)
