"""``infusion-gateway report``: the course report of a state directory, as PNG, SVG or HTML.

Reads the journal alone, read-only: it works beside a running daemon and after it stopped.  Bad
flags exit 2 with one line naming the flag; a journal that is missing, damaged or of another
schema exits 1 with one line naming the file.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gateway.dosing import Arm, course_days_max
from gateway.errors import InputError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-dir", type=Path, required=True, help="the gateway's state directory"
    )
    parser.add_argument("--channel", help="one channel (default: every channel)")
    parser.add_argument("--day", type=int, help="one day of the course (default: every day)")
    parser.add_argument("--png", type=Path, metavar="FILE", help="write the picture as PNG")
    parser.add_argument("--svg", type=Path, metavar="FILE", help="write the picture as SVG")
    parser.add_argument(
        "--html", type=Path, metavar="FILE", help="write a page: the picture and the day table"
    )


def run(args: argparse.Namespace) -> int:
    from gateway.report.output import ReportFormat, write_report

    days_max = max(course_days_max(arm) for arm in Arm)
    if args.day is not None and not 1 <= args.day <= days_max:
        raise InputError("--day", f"a whole number from 1 to {days_max}", args.day)
    outputs = [
        (fmt, path) for fmt in ReportFormat if (path := getattr(args, fmt.value)) is not None
    ]
    if not outputs:
        raise InputError("--png/--svg/--html", "at least one output file", None)
    report = write_report(args.state_dir, outputs, channel=args.channel, day=args.day)
    days = sum(len(c.days) for c in report.channels)
    for _, path in outputs:
        print(f"wrote {path} ({len(report.channels)} channel(s), {days} day(s))")
    return 0
