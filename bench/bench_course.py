"""A whole course through the demo (simulator over the real wire): time, cycles/s, journal, memory.

python bench/bench_course.py [--protocol newera|modbus] [--arm flat|titer] [--days N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import tracemalloc
from pathlib import Path

from gateway.demo import DemoOptions, run_demo
from gateway.dosing import Arm
from gateway.journal import JOURNAL_FILENAME
from gateway.logs import configure_logging
from gateway.planner import DAY_S


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--protocol", choices=["newera", "modbus"], default="newera")
    parser.add_argument("--arm", choices=["flat", "titer"], default="flat")
    parser.add_argument("--days", type=int, default=3)
    args = parser.parse_args()
    configure_logging(json_lines=True, level="error")
    with tempfile.TemporaryDirectory() as tmp:
        options = DemoOptions(
            arm=Arm(args.arm), protocol=args.protocol, days=args.days, state_dir=Path(tmp)
        )
        tracemalloc.start()
        started = time.perf_counter()
        summary = run_demo(options)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        journal_bytes = sum(p.stat().st_size for p in Path(tmp).glob(JOURNAL_FILENAME + "*"))
    cycles = args.days * DAY_S / options.poll_interval_s
    print(f"{args.days}-day {args.arm} course over {args.protocol}: {elapsed:.1f} s real")
    print(
        f"control cycles: {cycles:,.0f} ({cycles / elapsed:,.0f}/s), "
        f"poll interval {options.poll_interval_s:g} simulated s"
    )
    print(f"journal: {journal_bytes / 1e6:.1f} MB ({journal_bytes / 1e6 / args.days:.1f} MB/day)")
    print(f"peak traced Python memory: {peak / 1e6:.1f} MB")
    for day in summary["days"]:
        print(
            f"  day {day['day']}: prescribed {day['prescribed_ml']:.2f} mL, "
            f"delivered {day['delivered_ml']:.2f} mL"
        )


if __name__ == "__main__":
    main()
