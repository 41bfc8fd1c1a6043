"""``infusion-gateway demo``: the daemon against the built-in simulator, in virtual time."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from gateway.dosing import Arm
from gateway.errors import InputError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arm", choices=[a.value for a in Arm], default=Arm.FLAT.value)
    parser.add_argument("--protocol", choices=["newera", "modbus"], default="newera")
    parser.add_argument("--days", type=int, help="stop after N days (default: the arm's course)")
    parser.add_argument(
        "--faults",
        metavar="SCENARIO",
        help="a built-in fault scenario (occlusion, power_loss, link_drop) or a file",
    )
    parser.add_argument("--weight-kg", type=float, default=70.0)
    parser.add_argument("--igm-mg-dl", type=float, default=30.0, help="titer arm: baseline titer")
    parser.add_argument("--hematocrit", type=float, default=0.35, help="titer arm")
    parser.add_argument(
        "--half-life-h",
        type=float,
        default=72.0,
        help="titer arm: the virtual patient's IgM half-life",
    )
    parser.add_argument("--state-dir", type=Path, help="keep the journal here (default: temporary)")
    parser.add_argument("--json", action="store_true", help="print one JSON summary object")


def render(summary: dict[str, Any]) -> str:
    lines = [
        f"demo: {summary['arm']} arm, {summary['protocol']} pump, {summary['weight_kg']:g} kg"
        + (f", faults: {summary['faults']}" if summary["faults"] else ""),
        f"{'day':>4}  {'prescribed mL':>13}  {'delivered mL':>12}  {'short mL':>8}",
    ]
    for day in summary["days"]:
        short = day["shortfall_ml"]
        lines.append(
            f"{day['day']:>4}  {day['prescribed_ml']:>13.2f}  {day['delivered_ml']:>12.2f}  "
            f"{short if short is not None else '-':>8}"
        )
    lines.append(
        f"highest rate commanded {summary['max_commanded_rate_ml_per_h']:.2f} mL/h; "
        f"ceiling {summary['ceiling_ml_per_h']:.2f} mL/h"
    )
    lines.append(f"pump's own lifetime total {summary['lifetime_volume_infused_ml']:.2f} mL")
    lines.append(
        f"alarms: {len(summary['alarms'])}"
        + "".join(f"\n  {a['at_h']:7.2f} h  {a['code']}: {a['detail']}" for a in summary["alarms"])
    )
    lines.append(
        f"final state {summary['final_state']}; {summary['elapsed_real_s']:.1f} s real time"
    )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from gateway.demo import DemoOptions, run_demo
    from gateway.logs import configure_logging

    if args.days is not None and not 1 <= args.days <= 7:
        raise InputError("--days", "a whole number from 1 to 7", args.days)
    configure_logging(json_lines=True, level="warning")
    options = DemoOptions(
        arm=Arm(args.arm),
        protocol=args.protocol,
        days=args.days,
        faults=args.faults,
        weight_kg=args.weight_kg,
        igm_mg_dl=args.igm_mg_dl,
        hematocrit=args.hematocrit,
        half_life_h=args.half_life_h,
        state_dir=args.state_dir,
    )

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    summary = run_demo(options, progress)
    print(json.dumps(summary) if args.json else render(summary))
    return 0
