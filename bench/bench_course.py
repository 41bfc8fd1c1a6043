"""A whole course through the demo (over the wire, or on the in-process line): time, cycles/s,
journal, memory.

python -m bench.bench_course [--protocol newera|modbus] [--link wire|in-process]
                             [--arm flat|titer] [--days N]
                             [--poll-interval-s S] [--no-tracemalloc]

(from the repository's root; ``python -m bench`` reports the course speed from
:func:`course_speed_figures`.)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

from bench import targets
from bench.figures import Figure, Target
from gateway.demo import DEMO_LINKS, DemoLink, DemoOptions, run_demo
from gateway.dosing import Arm, course_days_max
from gateway.journal import JOURNAL_FILENAME
from gateway.logs import configure_logging
from gateway.planner import DAY_S, SECONDS_PER_HOUR


@dataclass(frozen=True)
class CourseRun:
    options: DemoOptions
    days: int
    wall_s: float
    journal_bytes: int
    peak_traced_bytes: int | None
    summary: dict[str, Any]

    @property
    def simulated_h_per_s(self) -> float:
        return self.days * DAY_S / SECONDS_PER_HOUR / self.wall_s

    @property
    def cycles(self) -> float:
        return self.days * DAY_S / self.options.poll_interval_s


def run_course(options: DemoOptions, *, trace_memory: bool = False) -> CourseRun:
    """One demo course in a fresh state directory; ``trace_memory`` slows it down a lot."""
    days = options.days or course_days_max(options.arm)
    with tempfile.TemporaryDirectory() as tmp:
        options = replace(options, state_dir=Path(tmp))
        if trace_memory:
            tracemalloc.start()
        started = time.perf_counter()
        summary = run_demo(options)
        wall_s = time.perf_counter() - started
        peak = None
        if trace_memory:
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
        journal_bytes = sum(p.stat().st_size for p in Path(tmp).glob(JOURNAL_FILENAME + "*"))
    return CourseRun(options, days, wall_s, journal_bytes, peak, summary)


def course_speed_figures(*, runs: int, dry_run: bool = False) -> list[Figure]:
    """Simulated hours per wall second of the 7-day titer demo (median of ``runs`` each; runs
    alternate between the links): on the simulator's in-process line (the target's figure) and
    over the pty (for comparison, no target).  ``dry_run``: the first day only.

    Each course is the ``infusion-gateway demo`` command itself, in a process of its own, timed
    by the demo (its ``elapsed_real_s``: the course, not the interpreter's start): run in the
    bench's own process after the 64-channel section, the same course was 10-20 % slower (that
    interpreter's heap, not the demo's speed)."""
    options = DemoOptions(arm=Arm.TITER, days=1 if dry_run else None)
    walls_s: dict[DemoLink, list[float]] = {link: [] for link in DEMO_LINKS}
    for _ in range(runs):
        for link in DEMO_LINKS:
            walls_s[link].append(run_course_process(replace(options, link=link)))
    return [
        _speed_figure(
            replace(options, link="in-process"),
            walls_s["in-process"],
            target=Target(">=", targets.COURSE_H_PER_S),
        ),
        _speed_figure(replace(options, link="wire"), walls_s["wire"], target=None),
    ]


def course_command(options: DemoOptions) -> list[str]:
    """The ``infusion-gateway demo`` command line for ``options`` (its arm, link and days),
    printing its summary as JSON."""
    days = ["--days", str(options.days)] if options.days is not None else []
    return [
        sys.executable,
        "-m",
        "gateway",
        "demo",
        "--arm",
        options.arm.value,
        "--link",
        options.link,
        *days,
        "--json",
    ]


def run_course_process(options: DemoOptions) -> float:
    """One course as the ``infusion-gateway demo`` command runs it, in a process of its own;
    the real seconds the demo says the course took (``elapsed_real_s``)."""
    done = subprocess.run(
        course_command(options), capture_output=True, text=True, check=True, timeout=600
    )
    return float(json.loads(done.stdout)["elapsed_real_s"])


_LINK_DOES: Final[dict[DemoLink, str]] = {
    "in-process": (
        "the NE-1000's bytes answered on the daemon's thread by the simulator's in-process line "
        "(the same driver, codecs, controller and journal; no pty, no server thread)"
    ),
    "wire": "NE-1000 on a pty to the simulator's server thread, through pyserial",
}


def _speed_figure(options: DemoOptions, walls_s: list[float], *, target: Target | None) -> Figure:
    wall_s = statistics.median(walls_s)
    days = options.days or course_days_max(options.arm)
    runs = len(walls_s)
    suffix = "" if options.link == "in-process" else "_wire"
    return Figure(
        key=f"course_simulated_h_per_s{suffix}",
        name=f"{days}-day titer course speed, {options.link}",
        unit="h/s",
        ours=days * DAY_S / SECONDS_PER_HOUR / wall_s,
        ours_does=(
            f"infusion-gateway demo --arm titer --link {options.link}: {days} simulated "
            f"day{'s' if days > 1 else ''}, a {options.poll_interval_s:g}-s poll, "
            f"{_LINK_DOES[options.link]}, in {wall_s:.2f} s wall"
        ),
        target=target,
        method=(
            f"median of {runs} run{'s' if runs > 1 else ''}, each the command in a process of "
            "its own, timed by the demo (the course, not the interpreter's start)"
        ),
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--protocol", choices=["newera", "modbus"], default="newera")
    parser.add_argument("--link", choices=list(DEMO_LINKS), default="wire")
    parser.add_argument("--arm", choices=["flat", "titer"], default="flat")
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--poll-interval-s", type=float, default=DemoOptions.poll_interval_s)
    parser.add_argument(
        "--no-tracemalloc", action="store_true", help="no peak-memory figure (runs faster)"
    )
    args = parser.parse_args()
    configure_logging(json_lines=True, level="error")
    course = run_course(
        DemoOptions(
            arm=Arm(args.arm),
            protocol=args.protocol,
            link=args.link,
            days=args.days,
            poll_interval_s=args.poll_interval_s,
        ),
        trace_memory=not args.no_tracemalloc,
    )
    print(
        f"{args.days}-day {args.arm} course over {args.protocol} ({args.link}): "
        f"{course.wall_s:.1f} s real"
    )
    print(
        f"control cycles: {course.cycles:,.0f} ({course.cycles / course.wall_s:,.0f}/s), "
        f"poll interval {args.poll_interval_s:g} simulated s; "
        f"{course.simulated_h_per_s:.1f} simulated h per wall s"
    )
    mb = course.journal_bytes / 1e6
    print(f"journal: {mb:.1f} MB ({mb / args.days:.1f} MB/day)")
    if course.peak_traced_bytes is not None:
        print(f"peak traced Python memory: {course.peak_traced_bytes / 1e6:.1f} MB")
    for day in course.summary["days"]:
        print(
            f"  day {day['day']}: prescribed {day['prescribed_ml']:.2f} mL, "
            f"delivered {day['delivered_ml']:.2f} mL"
        )


if __name__ == "__main__":
    main()
