"""An order's plan: the first day's dose, volume, rate and ceiling, as ``plan`` shows it and
as the gateway answers an order from the hospital (HL7 RGV^O15).

Pure: the same numbers the controller will compute for day 1, rounded down for display.
"""

from __future__ import annotations

from typing import Any

from gateway.config import OrderConfig
from gateway.display import floor_display, floor_dose
from gateway.dosing import (
    Arm,
    DailyDose,
    course_days_max,
    flat_daily_dose,
    mg_per_kg,
    titer_daily_dose,
)
from gateway.planner import DAY_S, plan_rate
from gateway.safety import ceiling_ml_per_h
from gateway.soft_limits import SoftLimitError, check_titer, check_weight


def plan_order(order: OrderConfig, *, baseline: bool, confirm_how: str) -> dict[str, Any]:
    """The plan of ``order`` as a JSON-ready dict.

    Raises :class:`SoftLimitError` (reworded with ``confirm_how``) for an unconfirmed value
    outside a soft limit.
    """
    product = order.product.to_product()
    arm = order.arm
    dose: DailyDose
    if arm is Arm.FLAT:
        dose = flat_daily_dose(order.weight_kg, product)
    else:
        assert order.igm_mg_dl is not None  # OrderConfig requires it for the titer arm
        dose = titer_daily_dose(
            order.weight_kg, order.igm_mg_dl, order.hematocrit, product, baseline=baseline
        )
    confirmations = _check_soft_limits(dose, confirm=order.confirm, confirm_how=confirm_how)
    ceiling = ceiling_ml_per_h(
        dose.weight_kg,
        order.ceiling_ml_per_kg_per_h,
        concentration_mg_per_ml=product.concentration_mg_per_ml,
    )
    day = plan_rate(
        remaining_volume_ml=dose.volume_ml, remaining_time_s=DAY_S, ceiling_ml_per_h=ceiling
    )
    notes = [*confirmations, *dose.notes]
    if day.ceiling_bound:
        notes.append(
            f"the 24-h volume needs {floor_display(dose.continuous_rate_ml_per_h):.2f} mL/h, above "
            f"the ceiling {floor_display(ceiling):.2f} mL/h: "
            f"{floor_display(day.projected_shortfall_ml):.2f} mL will not be given today"
        )
    rate_mg_per_kg_per_h = mg_per_kg(
        day.rate_ml_per_h, product.concentration_mg_per_ml, dose.weight_kg
    )
    return {
        "arm": arm.value,
        "weight_kg": dose.weight_kg,
        "igm_mg_dl": dose.igm_mg_per_dl,
        "hematocrit": dose.hematocrit,
        "concentration_mg_per_ml": product.concentration_mg_per_ml,
        "igm_content_mg_per_ml": product.igm_content_mg_per_ml,
        "plasma_volume_dl": floor_display(dose.plasma_volume_dl),
        "igm_needed_mg": floor_display(dose.igm_needed_mg),
        "daily_dose_mg_per_kg": floor_dose(dose.dose_mg_per_kg),
        "daily_volume_ml": floor_display(dose.volume_ml),
        "rate_ml_per_h": floor_display(day.rate_ml_per_h),
        "rate_mg_per_kg_per_h": floor_display(rate_mg_per_kg_per_h),
        "max_rate_ml_per_h": floor_display(ceiling),
        "max_rate_mg_per_kg_per_h": floor_display(
            mg_per_kg(ceiling, product.concentration_mg_per_ml, dose.weight_kg)
        ),
        "ceiling_ml_per_kg_per_h": order.ceiling_ml_per_kg_per_h,
        "projected_shortfall_ml": floor_display(day.projected_shortfall_ml),
        "capped": dose.capped,
        "infuse": dose.infuse,
        "course_days_max": course_days_max(arm),
        "notes": notes,
    }


def _check_soft_limits(dose: DailyDose, *, confirm: bool, confirm_how: str) -> list[str]:
    """The soft-limit checks of the (hard-valid) weight and titer: notes for confirmed values.

    Raises :class:`SoftLimitError`, saying how to confirm, when a value is outside a soft limit
    and not confirmed.
    """
    try:
        notes = [check_weight(dose.weight_kg, previous_weight_kg=None, confirm=confirm)]
        if dose.igm_mg_per_dl is not None:
            notes.append(check_titer(dose.igm_mg_per_dl, confirm=confirm))
    except SoftLimitError as exc:
        raise exc.reworded(confirm_how) from None
    return [note for note in notes if note is not None]
