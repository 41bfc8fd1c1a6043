"""``infusion-gateway plan``: a patient's daily dose, volume and rate, with the ceiling.

No pump is touched.  ``--json`` prints one JSON object; otherwise a small table.  Every displayed
dose, volume and rate is rounded down, never up.  The flags are validated by the same strict model
as an order in the config or over the API (:class:`gateway.config.OrderConfig`): a bad one exits 2
with one line naming the flag.  A titer or weight outside the soft limits
(:mod:`gateway.soft_limits`) is refused, with the likely unit mix-up, unless ``--confirm``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from gateway.cli.order_flags import validate_order_flags
from gateway.config import OrderConfig
from gateway.display import floor_display, floor_dose
from gateway.dosing import (
    Arm,
    DailyDose,
    Product,
    course_days_max,
    flat_daily_dose,
    mg_per_kg,
    titer_daily_dose,
)
from gateway.planner import DAY_S, plan_rate
from gateway.safety import CEILING_MG_PER_KG_PER_H, CEILING_ML_PER_KG_PER_H, ceiling_ml_per_h
from gateway.soft_limits import (
    CLI_CONFIRM_HOW,
    TITER_SOFT_MG_PER_DL,
    WEIGHT_SOFT_KG,
    SoftLimitError,
    check_titer,
    check_weight,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arm", required=True, choices=[a.value for a in Arm])
    parser.add_argument("--weight-kg", type=float, required=True, help="30-250 kg")
    parser.add_argument("--igm-mg-dl", type=float, help="titer arm: morning IgM, 0-1000 mg/dL")
    parser.add_argument("--hematocrit", type=float, help="titer arm: fraction, 0.10-0.70")
    parser.add_argument(
        "--baseline",
        action=argparse.BooleanOptionalAction,
        default=False,
        help=(
            "titer arm: the titer is the baseline (enrolment, day-1) titer, flagged when at or "
            "above 60 mg/dL (default: no; a day-2..7 titer is not an enrolment titer)"
        ),
    )
    soft_titer, soft_weight = TITER_SOFT_MG_PER_DL, WEIGHT_SOFT_KG
    parser.add_argument(
        "--confirm",
        action="store_true",
        help=(
            f"use a titer outside {soft_titer[0]:g}-{soft_titer[1]:g} mg/dL or a weight outside "
            f"{soft_weight[0]:g}-{soft_weight[1]:g} kg as it is, after checking its unit "
            "(the plan then says so in a note)"
        ),
    )
    parser.add_argument(
        "--concentration-mg-per-ml", type=float, default=Product().concentration_mg_per_ml
    )
    parser.add_argument(
        "--igm-content-mg-per-ml", type=float, default=Product().igm_content_mg_per_ml
    )
    parser.add_argument(
        "--ceiling-ml-per-kg-per-h",
        type=float,
        default=CEILING_ML_PER_KG_PER_H,
        help=f"a site may lower the ceiling, never raise it (default {CEILING_ML_PER_KG_PER_H})",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def order_from_flags(args: argparse.Namespace) -> OrderConfig:
    """The plan's flags as a strict order; ConfigError (exit 2) naming the bad flag."""
    fields: dict[str, Any] = {
        "arm": args.arm,
        "weight_kg": args.weight_kg,
        "ceiling_ml_per_kg_per_h": args.ceiling_ml_per_kg_per_h,
        "product": {
            "concentration_mg_per_ml": args.concentration_mg_per_ml,
            "igm_content_mg_per_ml": args.igm_content_mg_per_ml,
        },
        "confirm": bool(args.confirm),
    }
    for name in ("igm_mg_dl", "hematocrit"):
        if getattr(args, name) is not None:
            fields[name] = getattr(args, name)
    return validate_order_flags(fields)


def compute_plan(args: argparse.Namespace) -> dict[str, Any]:
    """The plan as a JSON-ready dict; raises ConfigError/InputError naming the bad flag."""
    order = order_from_flags(args)
    product = order.product.to_product()
    arm = order.arm
    dose: DailyDose
    if arm is Arm.FLAT:
        dose = flat_daily_dose(order.weight_kg, product)
    else:
        assert order.igm_mg_dl is not None  # OrderConfig requires it for the titer arm
        dose = titer_daily_dose(
            order.weight_kg, order.igm_mg_dl, order.hematocrit, product, baseline=args.baseline
        )
    confirmations = _check_soft_limits(dose, confirm=args.confirm)
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
            f"the 24-h volume needs {dose.continuous_rate_ml_per_h:.2f} mL/h, above the ceiling "
            f"{floor_display(ceiling):.2f} mL/h: "
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


def _check_soft_limits(dose: DailyDose, *, confirm: bool) -> list[str]:
    """The soft-limit checks of the (hard-valid) weight and titer: notes for confirmed values.

    Raises :class:`SoftLimitError`, saying to run again with ``--confirm``, when a value is
    outside a soft limit and not confirmed.
    """
    try:
        notes = [check_weight(dose.weight_kg, previous_weight_kg=None, confirm=confirm)]
        if dose.igm_mg_per_dl is not None:
            notes.append(check_titer(dose.igm_mg_per_dl, confirm=confirm))
    except SoftLimitError as exc:
        raise exc.reworded(CLI_CONFIRM_HOW) from None
    return [note for note in notes if note is not None]


def render_table(plan: dict[str, Any]) -> str:
    """The plan as a small table a person reads at the bedside."""
    rows: list[tuple[str, str]] = [
        ("arm", plan["arm"]),
        ("weight", f"{plan['weight_kg']:g} kg"),
    ]
    if plan["arm"] == Arm.TITER.value:
        rows += [
            ("IgM titer", f"{plan['igm_mg_dl']:g} mg/dL"),
            ("hematocrit", f"{plan['hematocrit']:g}"),
            ("plasma volume", f"{plan['plasma_volume_dl']:.2f} dL"),
            ("IgM needed", f"{plan['igm_needed_mg']:.2f} mg"),
        ]
    rows += [
        ("daily dose", f"{plan['daily_dose_mg_per_kg']:.1f} mg/kg"),
        ("daily volume", f"{plan['daily_volume_ml']:.2f} mL"),
        ("rate (24 h)", f"{plan['rate_ml_per_h']:.2f} mL/h"),
        ("dose rate", f"{plan['rate_mg_per_kg_per_h']:.2f} mg/kg/h"),
        (
            "ceiling",
            f"{plan['max_rate_ml_per_h']:.2f} mL/h = "
            f"{plan['max_rate_mg_per_kg_per_h']:.2f} mg/kg/h "
            f"(min of {plan['ceiling_ml_per_kg_per_h']:g} mL/kg/h and "
            f"{CEILING_MG_PER_KG_PER_H:g} mg/kg/h at {plan['concentration_mg_per_ml']:g} mg/mL)",
        ),
        ("course", f"at most {plan['course_days_max']} days"),
    ]
    width = max(len(label) for label, _ in rows)
    lines = [f"{label.ljust(width)}  {value}" for label, value in rows]
    lines += [f"NOTE: {note}" for note in plan["notes"]]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    plan = compute_plan(args)
    print(json.dumps(plan) if args.json else render_table(plan))
    return 0
