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
from gateway.dosing import (
    Arm,
    Product,
)
from gateway.order_plan import plan_order
from gateway.safety import CEILING_MG_PER_KG_PER_H, CEILING_ML_PER_KG_PER_H
from gateway.soft_limits import (
    CLI_CONFIRM_HOW,
    TITER_SOFT_MG_PER_DL,
    WEIGHT_SOFT_KG,
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
    return plan_order(order_from_flags(args), baseline=args.baseline, confirm_how=CLI_CONFIRM_HOW)


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
