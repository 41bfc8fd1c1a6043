"""Many channels in one gateway: control-cycle time per tick, CPU, transactions, journal growth.

python -m bench.bench_channels [--channels 16 64] [--modes after before off] [--ticks 60]
                               [--sim-cpus last|all|0,1]

(from the repository's root; ``python -m bench`` reports the control cycle from
:func:`control_cycle_figures`; the journal's figure there comes from :mod:`bench.journal_growth`,
as a window of a minute misses the journal's periodic checkpoints.)

For each channel count and mode it starts N software pumps (:mod:`bench.pumps`, Modbus TCP) in a
child process, then a real :class:`gateway.daemon.Gateway` with N flat-arm channels,
one per pump, on the real clock and a 1-s poll, and calls ``Gateway.tick`` every ``--poll-s``
real seconds.  After ``--warmup`` ticks (arming, programming, starting the pumps) it measures
``--ticks`` ticks: the control cycle (every channel's poll, decide, journal commit, effects: the
daemon's own ``last_cycle_real_s``) and the whole tick, the process's CPU per tick (and how much
of it is the kernel's), the pumps' process's CPU, the journal's write transactions per tick (each
one fsync of the WAL: ``synchronous=FULL``) and its growth per channel-day at a 1-s poll.

Modes: ``after`` is this gateway (group commit, a stepping thread per channel); ``before`` is
how it stepped before group commit (a transaction per commit, the loop's default executor of
min(32, CPUs + 4) threads); ``off`` is per-channel threads without group commit.

The pumps stand in for devices on the network, but they need CPU too (a Python Modbus server
per pump): by default their process may use only the last CPU, so on two cores the gateway has
one to itself and shares the other.  ``--sim-cpus all`` lets both compete for every CPU.

Prints its figures and exits 0: not a test, no pass/fail (the target is in bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench import targets
from bench.figures import Figure, Target
from bench.pumps import cpu_seconds, cpu_set, serving
from gateway.config import build_config
from gateway.daemon import Gateway
from gateway.journal import JOURNAL_FILENAME, Journal
from gateway.logs import configure_logging
from gateway.planner import DAY_S
from gateway.service import CONTROL_SWITCH_INTERVAL_S


@dataclass(frozen=True)
class Figures:
    channels: int
    mode: str
    ticks: int
    failed_ticks: int
    cycle_ms: list[float]
    tick_ms: list[float]
    cpu_percent: float
    cpu_ms_per_tick: float
    sys_ms_per_tick: float
    sim_cpu_percent: float | None
    transactions_per_tick: float | None
    bytes_per_channel_day: float
    not_infusing: list[str]
    #: Where the pumps ran: "another process" or "this process".
    pumps_where: str

    def pct(self, q: float, of: str = "cycle") -> float:
        ordered = sorted(self.cycle_ms if of == "cycle" else self.tick_ms)
        return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def journal_bytes(state_dir: Path) -> int:
    """Bytes the journal's pages in use hold, WAL included: read on a connection of our own."""
    uri = (state_dir / JOURNAL_FILENAME).as_uri() + "?mode=ro"
    db = sqlite3.connect(uri, uri=True)
    try:
        page_size = int(db.execute("PRAGMA page_size").fetchone()[0])
        pages = int(db.execute("PRAGMA page_count").fetchone()[0])
        free = int(db.execute("PRAGMA freelist_count").fetchone()[0])
    finally:
        db.close()
    return (pages - free) * page_size


# -- the gateway ---------------------------------------------------------------------------------


def _config(state_dir: Path, urls: list[str]) -> dict[str, Any]:
    randomised = (datetime.now(UTC) - timedelta(hours=1)).isoformat(timespec="seconds")
    return {
        "state_dir": str(state_dir),
        "control": {"poll_interval_s": 1.0},
        "channels": [
            {
                "id": f"bed{i:02d}",
                "pump": url,
                "arm": "flat",
                "weight_kg": 70.0,
                "randomised_at": randomised,
            }
            for i, url in enumerate(urls)
        ],
    }


def _transactions(gateway: Gateway) -> int | None:
    """The journal's write transactions so far (None if this journal does not count them)."""
    count = getattr(gateway.journal, "transactions", None)
    return count if isinstance(count, int) else None


async def _run(
    gateway: Gateway, state_dir: Path, *, warmup: int, ticks: int, poll_s: float
) -> dict[str, Any]:
    cycles: list[float] = []
    durations: list[float] = []
    failed = 0
    due = time.monotonic()
    for n in range(warmup + ticks):
        if n == warmup:
            cpu0, wall0 = os.times(), time.monotonic()
            tx0 = _transactions(gateway)
            bytes0 = journal_bytes(state_dir)
        started = time.perf_counter()
        ok = await gateway.tick()
        elapsed = time.perf_counter() - started
        if n >= warmup:
            cycles.append(gateway.last_cycle_real_s * 1000.0)
            durations.append(elapsed * 1000.0)
            failed += not ok
        due += poll_s
        await asyncio.sleep(max(due - time.monotonic(), 0.0))
    wall = time.monotonic() - wall0
    tx1 = _transactions(gateway)
    return {
        "cycle_ms": cycles,
        "tick_ms": durations,
        "failed": failed,
        "cpu_s": os.times().user - cpu0.user + os.times().system - cpu0.system,
        "sys_s": os.times().system - cpu0.system,
        "wall_s": wall,
        "transactions": None if tx0 is None or tx1 is None else tx1 - tx0,
        "bytes": journal_bytes(state_dir) - bytes0,
        "not_infusing": [
            f"{snap['id']}: {snap['state']}"
            for snap in gateway.snapshots()
            if snap["state"] != "infusing"
        ],
    }


#: What is compared: "after", group commit and one stepping thread per channel;
#: "before", one transaction per commit and the loop's default executor (min(32, CPUs + 4)
#: threads), as ``asyncio.to_thread`` stepped the channels before; "off", per-channel threads
#: without group commit.
MODES = ("after", "before", "off")


def measure(
    channels: int,
    *,
    mode: str,
    warmup: int,
    ticks: int,
    poll_s: float,
    sim_cpus: set[int] | None,
    in_process: bool = False,
) -> Figures:
    """One gateway with ``channels`` channels on as many pumps; ``in_process``: the pumps in
    this process (a dry run's shortcut: they then compete for this interpreter)."""
    sim0 = sim1 = None
    switch_interval = sys.getswitchinterval()
    with (
        serving("modbus", channels, cpus=sim_cpus, in_process=in_process) as pumps,
        tempfile.TemporaryDirectory() as tmp,
    ):
        state_dir = Path(tmp)
        config = build_config(_config(state_dir, pumps.urls))
        journal = Journal(state_dir) if mode == "after" else Journal(state_dir, group_commit=False)
        gateway = Gateway(config, journal=journal)
        if mode == "before":  # the tick uses this pool instead of making its own
            gateway._step_threads = ThreadPoolExecutor(min(32, (os.cpu_count() or 1) + 4))
        # As the daemon's process does (gateway/service.py) before its control thread starts.
        sys.setswitchinterval(CONTROL_SWITCH_INTERVAL_S)
        gc.collect()
        gc.freeze()
        if pumps.pid is not None:
            sim0 = cpu_seconds(pumps.pid)
        try:
            result = asyncio.run(
                _run(gateway, state_dir, warmup=warmup, ticks=ticks, poll_s=poll_s)
            )
        finally:
            if pumps.pid is not None:
                sim1 = cpu_seconds(pumps.pid)
            asyncio.run(gateway.shutdown("bench over"))
            gc.unfreeze()
            sys.setswitchinterval(switch_interval)
    pumps_where = pumps.where
    sim_cpu = None
    if sim0 is not None and sim1 is not None:
        sim_cpu = 100.0 * (sim1 - sim0) / result["wall_s"]
    polls_per_day = DAY_S / 1.0  # at the config's 1-s poll interval
    return Figures(
        channels=channels,
        mode=mode,
        ticks=ticks,
        failed_ticks=result["failed"],
        cycle_ms=result["cycle_ms"],
        tick_ms=result["tick_ms"],
        cpu_percent=100.0 * result["cpu_s"] / result["wall_s"],
        cpu_ms_per_tick=1000.0 * result["cpu_s"] / ticks,
        sys_ms_per_tick=1000.0 * result["sys_s"] / ticks,
        sim_cpu_percent=sim_cpu,
        transactions_per_tick=(
            None if result["transactions"] is None else result["transactions"] / ticks
        ),
        bytes_per_channel_day=result["bytes"] / channels / ticks * polls_per_day,
        not_infusing=result["not_infusing"],
        pumps_where=pumps_where,
    )


def control_cycle_figures(measured: list[Figures]) -> list[Figure]:
    """Control-cycle p50 and p99 of each run (mode ``after``: the gateway as it is)."""
    figures: list[Figure] = []
    for f in measured:
        method = (
            f"{f.ticks} ticks after warm-up, {f.channels} pumps on Modbus TCP in {f.pumps_where}"
            + (" (p99 of fewer than 100 cycles is close to their maximum)" if f.ticks < 100 else "")
            + (f"; {f.failed_ticks} ticks failed" if f.failed_ticks else "")
            + (f"; not infusing at the end: {', '.join(f.not_infusing)}" if f.not_infusing else "")
        )
        does = (
            f"Gateway.tick with {f.channels} flat-arm channels at a 1-s poll: every channel "
            "polled, decided, journalled and acted on (Gateway.last_cycle_real_s)"
        )
        for q, label in ((0.5, "p50"), (0.99, "p99")):
            target = None
            if label == "p99" and f.channels == targets.CYCLE_TARGET_CHANNELS:
                target = Target("<=", targets.CYCLE_P99_MS)
            figures.append(
                Figure(
                    key=f"control_cycle_{label}_{f.channels}",
                    name=f"control cycle {label}, {f.channels} channels",
                    unit="ms",
                    ours=f.pct(q) if label == "p99" else statistics.median(f.cycle_ms),
                    ours_does=does,
                    target=target,
                    method=method,
                )
            )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--channels", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--modes", nargs="+", choices=MODES, default=["after", "before"])
    parser.add_argument("--warmup", type=int, default=5, help="ticks before measuring")
    parser.add_argument("--ticks", type=int, default=60, help="ticks measured")
    parser.add_argument("--poll-s", type=float, default=1.0, help="real s between ticks (0: none)")
    parser.add_argument(
        "--sim-cpus",
        default="last",
        help="CPUs the pumps' process may use: last (default: the last of several), all, or 0,1",
    )
    args = parser.parse_args()
    sim_cpus = cpu_set(args.sim_cpus)
    configure_logging(json_lines=True, level="warning")
    where = "any CPU" if sim_cpus is None else f"CPU {','.join(map(str, sorted(sim_cpus)))}"
    print(
        f"{os.cpu_count()} CPU(s), Python {sys.version.split()[0]}; {args.ticks} ticks measured"
        f" after {args.warmup}, one every {args.poll_s:g} s; pumps: Modbus TCP in another"
        f" process, on {where}"
    )
    print(
        "cycle: every channel stepped (Gateway.last_cycle_real_s, the cycle_seconds metric);"
        " tick: all of Gateway.tick"
    )
    print(
        f"{'channels':>8} {'mode':>6} {'cycle p50':>9} {'p95':>6} {'p99':>6} {'max':>6}"
        f" {'tick p99':>8} {'CPU %':>5} {'CPU ms':>6} {'sys ms':>6} {'sims %':>6} {'tx/tick':>7}"
        f" {'MB/ch-day':>9} {'failed':>6}"
    )
    for channels in args.channels:
        for mode in args.modes:
            f = measure(
                channels,
                mode=mode,
                warmup=args.warmup,
                ticks=args.ticks,
                poll_s=args.poll_s,
                sim_cpus=sim_cpus,
            )
            sims = "n/a" if f.sim_cpu_percent is None else f"{f.sim_cpu_percent:.0f}"
            tx = "n/a" if f.transactions_per_tick is None else f"{f.transactions_per_tick:.1f}"
            print(
                f"{f.channels:>8} {f.mode:>6}"
                f" {statistics.median(f.cycle_ms):>9.1f} {f.pct(0.95):>6.1f}"
                f" {f.pct(0.99):>6.1f} {max(f.cycle_ms):>6.1f} {f.pct(0.99, 'tick'):>8.1f}"
                f" {f.cpu_percent:>5.1f} {f.cpu_ms_per_tick:>6.1f} {f.sys_ms_per_tick:>6.1f}"
                f" {sims:>6} {tx:>7}"
                f" {f.bytes_per_channel_day / 1e6:>9.1f} {f.failed_ticks:>6}",
                flush=True,
            )
            if f.not_infusing:
                print(f"  (not infusing at the end: {f.not_infusing})", flush=True)


if __name__ == "__main__":
    main()
