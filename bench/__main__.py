"""``python -m bench``: every figure beside its peer, as ratios, against its target.

python -m bench [--quick] [--dry-run] [--json | --markdown] [--only NAME ...]

Run it from the repository's root, on a quiet machine: the figures are only as good as the
machine is idle (the load average is printed with them).  ``--quick`` (for CI) takes under two
minutes on two cores; the full run takes several (a whole simulated channel-day for the
journal, longer samples).  ``--dry-run`` runs every bench at toy sizes, to check the benches
themselves work: its figures mean nothing.

Exits 0 with the table (figures are not a test; a target missed is a "NO" in the table), and 1
only when a bench itself broke (its error is printed, the other figures still are).
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from bench import (
    bench_channels,
    bench_course,
    daemon_rss,
    journal_growth,
    poll_modbus,
    poll_newera,
)
from bench.figures import Figure, json_text, markdown_table, text_table
from bench.pumps import REPO_ROOT, cpu_set, serving
from gateway.logs import configure_logging

#: Channel counts of the control-cycle figures (the target is at 64).
CHANNEL_COUNTS = (16, 64)
#: The daemon's peak RSS is measured with this many channels.
RSS_CHANNELS = 16
#: Each pump infuses at this rate during the poll benches, so the totalizer moves.
POLL_INFUSING_ML_PER_H = 10.0


@dataclass(frozen=True)
class Sizes:
    """How much each bench measures."""

    poll_rounds: int
    poll_per_round: int
    channel_counts: tuple[int, ...]
    cycle_warmup: int
    cycle_ticks: int
    cycle_poll_s: float
    course_runs: int
    #: Simulated hours of the journal's run at a 1-s poll.
    journal_h: float
    rss_channels: int
    rss_settle_s: float
    #: Pumps served in this process (dry run only: no child processes to start).
    in_process: bool


FULL = Sizes(15, 500, CHANNEL_COUNTS, 10, 120, 1.0, 3, 24.0, RSS_CHANNELS, 30.0, False)
QUICK = Sizes(7, 300, CHANNEL_COUNTS, 5, 25, 1.0, 1, 1.0, RSS_CHANNELS, 5.0, False)
DRY = Sizes(2, 5, (2,), 1, 2, 0.0, 1, 0.02, 1, 0.0, True)

SECTIONS = ("modbus", "newera", "channels", "course", "journal", "rss")


def _modbus(sizes: Sizes) -> list[Figure]:
    with serving(
        "modbus", 1, infuse_ml_per_h=POLL_INFUSING_ML_PER_H, in_process=sizes.in_process
    ) as pumps:
        return poll_modbus.measure(pumps, per_round=sizes.poll_per_round, rounds=sizes.poll_rounds)


def _newera(sizes: Sizes) -> list[Figure]:
    with serving(
        "newera", 1, infuse_ml_per_h=POLL_INFUSING_ML_PER_H, in_process=sizes.in_process
    ) as pumps:
        return poll_newera.measure(pumps, per_round=sizes.poll_per_round, rounds=sizes.poll_rounds)


def _channels(sizes: Sizes) -> list[Figure]:
    runs = [
        bench_channels.measure(
            channels,
            mode="after",
            warmup=sizes.cycle_warmup,
            ticks=sizes.cycle_ticks,
            poll_s=sizes.cycle_poll_s,
            sim_cpus=cpu_set("last"),
            in_process=sizes.in_process,
        )
        for channels in sizes.channel_counts
    ]
    return bench_channels.control_cycle_figures(runs)


def _course(sizes: Sizes) -> list[Figure]:
    return bench_course.course_speed_figures(runs=sizes.course_runs, dry_run=sizes.in_process)


def _journal(sizes: Sizes) -> list[Figure]:
    return [journal_growth.measure(sizes.journal_h)]


def _rss(sizes: Sizes) -> list[Figure]:
    return [daemon_rss.measure(sizes.rss_channels, settle_s=sizes.rss_settle_s)]


BENCHES: dict[str, Callable[[Sizes], list[Figure]]] = {
    "modbus": _modbus,
    "newera": _newera,
    "channels": _channels,
    "course": _course,
    "journal": _journal,
    "rss": _rss,
}

#: Figures in the table's order, whatever order the benches ran in.
ORDER = ("modbus_poll", "newera_poll", "control_cycle", "course", "journal", "daemon")


def _context(quick: bool, dry_run: bool) -> dict[str, object]:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": "dry run (meaningless figures)" if dry_run else "quick" if quick else "full",
        "commit": commit,
        "cpus": os.cpu_count(),
        "load_average_at_start": [round(load, 2) for load in os.getloadavg()],
        "python": platform.python_version(),
        "machine": platform.platform(terse=True),
    }


def _sort_key(figure: Figure) -> int:
    return next((i for i, prefix in enumerate(ORDER) if figure.key.startswith(prefix)), len(ORDER))


def run(sections: list[str], sizes: Sizes) -> tuple[list[Figure], list[str]]:
    """The figures of ``sections``, and the sections that broke."""
    figures: list[Figure] = []
    broken: list[str] = []
    for section in sections:
        print(f"bench: {section} ...", file=sys.stderr, flush=True)
        # What the sections before wrote (64 channels' journals, a day of polls) is flushed
        # now, not by the kernel in the middle of this section's timings; and their garbage
        # is collected now, not in this section's.
        os.sync()
        gc.collect()
        started = time.monotonic()
        try:
            figures += BENCHES[section](sizes)
        except Exception:
            broken.append(section)
            print(f"bench: {section} broke:", file=sys.stderr)
            traceback.print_exc()
        print(f"bench: {section} took {time.monotonic() - started:.1f} s", file=sys.stderr)
    return sorted(figures, key=_sort_key), broken


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Every figure beside its peer, as a ratio, against its target.",
    )
    parser.add_argument("--quick", action="store_true", help="CI's sizes: under two minutes")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="toy sizes: check the benches run; figures mean nothing",
    )
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="the figures as JSON")
    output.add_argument("--markdown", action="store_true", help="the table for docs/performance.md")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    args = parser.parse_args(argv)
    configure_logging(json_lines=True, level="error")
    sizes = DRY if args.dry_run else QUICK if args.quick else FULL
    context = _context(args.quick, args.dry_run)
    figures, broken = run(args.only, sizes)
    if args.json:
        print(json_text(figures, context))
    else:
        heading = ", ".join(f"{key} {value}" for key, value in context.items())
        print(f"{'<!-- ' if args.markdown else ''}{heading}{' -->' if args.markdown else ''}\n")
        print(markdown_table(figures) if args.markdown else text_table(figures))
    if broken:
        print(f"bench: broken: {', '.join(broken)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
