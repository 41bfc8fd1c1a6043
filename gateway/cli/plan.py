"""``infusion-gateway plan``: a patient's daily dose, volume and rate, with the ceiling.

No pump is touched.  ``--json`` prints one JSON object; otherwise a small table.
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

from gateway.dosing import (
    Arm,
    DailyDose,
    Product,
    course_days_max,
    flat_daily_dose,
    titer_daily_dose,
)
from gateway.errors import InputError
from gateway.planner import DAY_S, plan_rate
from gateway.safety import CEILING_ML_PER_KG_PER_H, ceiling_ml_per_h, round_down_to_resolution

#: Display resolution of rates and volumes: 0.01 (mL/h, mL), always rounded down.
DISPLAY_RESOLUTION = 0.01


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arm", required=True, choices=[a.value for a in Arm])
    parser.add_argument("--weight-kg", type=float, required=True, help="30-250 kg")
    parser.add_argument("--igm-mg-dl", type=float, help="titer arm: morning IgM, 0-1000 mg/dL")
    parser.add_argument("--hematocrit", type=float, help="titer arm: fraction, 0.10-0.70")
    parser.add_argument(
        "--baseline",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="titer arm: the titer is the enrolment (day-1) titer (default: yes)",
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


def compute_plan(args: argparse.Namespace) -> dict[str, Any]:
    """The plan as a JSON-ready dict; raises InputError naming the bad field."""
    product = Product(args.concentration_mg_per_ml, args.igm_content_mg_per_ml)
    arm = Arm(args.arm)
    dose: DailyDose
    if arm is Arm.FLAT:
        for flag in ("igm_mg_dl", "hematocrit"):
            if getattr(args, flag) is not None:
                raise InputError(flag, "omitted for the flat arm", getattr(args, flag))
        dose = flat_daily_dose(args.weight_kg, product)
    else:
        if args.igm_mg_dl is None:
            raise InputError("igm_mg_per_dl", "given for the titer arm (0-1000 mg/dL)", None)
        dose = titer_daily_dose(
            args.weight_kg, args.igm_mg_dl, args.hematocrit, product, baseline=args.baseline
        )
    ceiling = ceiling_ml_per_h(dose.weight_kg, args.ceiling_ml_per_kg_per_h)
    day = plan_rate(
        remaining_volume_ml=dose.volume_ml, remaining_time_s=DAY_S, ceiling_ml_per_h=ceiling
    )
    notes = list(dose.notes)
    if day.ceiling_bound:
        notes.append(
            f"the 24-h volume needs {dose.continuous_rate_ml_per_h:.2f} mL/h, above the ceiling "
            f"{ceiling:.2f} mL/h: {day.projected_shortfall_ml:.2f} mL will not be given today"
        )
    return {
        "arm": arm.value,
        "weight_kg": dose.weight_kg,
        "igm_mg_dl": dose.igm_mg_per_dl,
        "hematocrit": dose.hematocrit,
        "concentration_mg_per_ml": product.concentration_mg_per_ml,
        "igm_content_mg_per_ml": product.igm_content_mg_per_ml,
        "plasma_volume_dl": _floor(dose.plasma_volume_dl),
        "igm_needed_mg": _floor(dose.igm_needed_mg),
        "daily_dose_mg_per_kg": round(dose.dose_mg_per_kg, 1),
        "daily_volume_ml": _floor(dose.volume_ml),
        "rate_ml_per_h": _floor(day.rate_ml_per_h),
        "max_rate_ml_per_h": _floor(ceiling),
        "ceiling_ml_per_kg_per_h": args.ceiling_ml_per_kg_per_h,
        "projected_shortfall_ml": _floor(day.projected_shortfall_ml),
        "capped": dose.capped,
        "infuse": dose.infuse,
        "course_days_max": course_days_max(arm),
        "notes": notes,
    }


def _floor(value: float | None) -> float | None:
    if value is None:
        return None
    return round_down_to_resolution(value, DISPLAY_RESOLUTION) if math.isfinite(value) else value


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
        (
            "ceiling",
            f"{plan['max_rate_ml_per_h']:.2f} mL/h ({plan['ceiling_ml_per_kg_per_h']:g} mL/kg/h)",
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
