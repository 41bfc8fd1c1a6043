"""``infusion-gateway demo``: the daemon against the built-in simulator, in virtual time."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from gateway.display import floor_display, floor_dose
from gateway.dosing import Arm
from gateway.errors import InputError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arm", choices=[a.value for a in Arm], default=Arm.FLAT.value)
    parser.add_argument("--protocol", choices=["newera", "modbus"], default="newera")
    parser.add_argument(
        "--link",
        choices=["wire", "in-process"],  # gateway.demo.DEMO_LINKS (not imported to parse)
        default="wire",
        help="wire: the pump over a pty (NE-1000) or TCP (Modbus), as a real one; in-process: "
        "the NE-1000's bytes answered on the daemon's own thread (about twice as fast)",
    )
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
    parser.add_argument(
        "--confirm", action="store_true", help="use a weight or titer outside the soft limits"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON summary object")
    parser.add_argument(
        "--report",
        type=Path,
        metavar="FILE",
        help="write the course report of the run (.png, .svg or .html)",
    )


def _drawn(measured_at: str | None) -> str:
    """When the day's titer was drawn, to the minute: ``2026-11-29T05:00:00Z`` ->
    ``2026-11-29 05:00``; ``-`` for a day without one (the flat arm)."""
    return "-" if measured_at is None else f"{measured_at[:10]} {measured_at[11:16]}"


def render(summary: dict[str, Any]) -> str:
    """The course as a table a pharmacist checks: mg/kg and mL, mL/h and mg/kg/h, rounded down."""
    lines = [
        f"demo: {summary['arm']} arm, {summary['protocol']} pump, {summary['weight_kg']:g} kg"
        + (f", faults: {summary['faults']}" if summary["faults"] else ""),
        f"{'day':>3}  {'titer':>6}  {'mg/kg':>6}  {'prescribed mL':>13}  {'mL/h':>6}  "
        f"{'mg/kg/h':>7}  {'delivered mL':>12}  {'short mL':>8}  titer drawn (UTC)",
    ]
    notes: list[str] = []
    for day in summary["days"]:
        short = floor_display(day["shortfall_ml"])
        titer = day["titer_mg_dl"]
        lines.append(
            f"{day['day']:>3}  {titer if titer is not None else '-':>6}  "
            f"{_shown(floor_dose(day['dose_mg_per_kg']), 1):>6}  "
            f"{_shown(floor_display(day['prescribed_ml'])):>13}  "
            f"{_shown(floor_display(day['day_rate_ml_per_h'])):>6}  "
            f"{_shown(floor_display(day['day_rate_mg_per_kg_per_h'])):>7}  "
            f"{_shown(floor_display(day['delivered_ml'])):>12}  "
            f"{_shown(short):>8}  {_drawn(day['titer_drawn_at'])}"
        )
        notes.extend(f"day {day['day']}: {note}" for note in day["notes"])
    lines.extend(f"NOTE {note}" for note in notes)
    lines.append(
        f"highest rate commanded {_shown(floor_display(summary['max_commanded_rate_ml_per_h']))} "
        f"mL/h; ceiling {_shown(floor_display(summary['ceiling_ml_per_h']))} mL/h = "
        f"{_shown(floor_display(summary['ceiling_mg_per_kg_per_h']))} mg/kg/h"
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


def _shown(value: float | None, decimals: int = 2) -> str:
    return "-" if value is None else f"{value:.{decimals}f}"


def run(args: argparse.Namespace) -> int:
    from gateway.demo import DemoOptions, run_demo
    from gateway.logs import configure_logging

    if args.days is not None and not 1 <= args.days <= 7:
        raise InputError("--days", "a whole number from 1 to 7", args.days)
    if args.link == "in-process" and args.protocol != "newera":
        raise InputError("--link", "wire for a modbus pump (in-process: newera only)", args.link)
    if args.report is not None:  # refused before the run, not after it
        from gateway.report.output import check_output, format_for

        format_for(args.report)
        check_output(args.report, "--report")
    configure_logging(json_lines=True, level="warning")
    options = DemoOptions(
        arm=Arm(args.arm),
        protocol=args.protocol,
        link=args.link,
        days=args.days,
        faults=args.faults,
        weight_kg=args.weight_kg,
        igm_mg_dl=args.igm_mg_dl,
        hematocrit=args.hematocrit,
        half_life_h=args.half_life_h,
        state_dir=args.state_dir,
        confirm=args.confirm,
        report=args.report,
    )

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    summary = run_demo(options, progress)
    print(json.dumps(summary) if args.json else render(summary))
    return 0
