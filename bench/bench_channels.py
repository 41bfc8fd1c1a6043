"""Many channels in one gateway: control-cycle time per tick, CPU, transactions, journal growth.

python bench/bench_channels.py [--channels 16 64] [--modes after before off] [--ticks 60]
                               [--sim-cpus last|all|0,1]

For each channel count and mode it starts N software pumps (``simulator.server.serve``, Modbus
TCP) in a child process, then a real :class:`gateway.daemon.Gateway` with N flat-arm channels,
one per pump, on the real clock and a 1-s poll, and calls ``Gateway.tick`` every ``--poll-s``
real seconds.  After ``--warmup`` ticks (arming, programming, starting the pumps) it measures
``--ticks`` ticks: the control cycle (every channel's poll, decide, journal commit, effects: the
daemon's own ``last_cycle_real_s``) and the whole tick, the process's CPU per tick (and how much
of it is the kernel's), the pumps' process's CPU, the journal's write transactions per tick (each
one fsync of the WAL: ``synchronous=FULL``) and its growth per channel-day at a 1-s poll.

Modes: ``after`` is this gateway (group commit, a stepping thread per channel); ``before`` is
how it stepped before issue 11 (a transaction per commit, the loop's default executor of
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
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from gateway.config import build_config
from gateway.daemon import Gateway
from gateway.journal import Journal
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
    transactions_per_tick: float
    bytes_per_channel_day: float
    not_infusing: list[str]

    def pct(self, q: float, of: str = "cycle") -> float:
        ordered = sorted(self.cycle_ms if of == "cycle" else self.tick_ms)
        return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


# -- the pumps: a child process serving N Modbus-TCP pumps on the real clock --------------------


def serve_pumps(count: int, cpus: set[int] | None) -> None:
    """Child process: serve ``count`` pumps, print their URLs as one JSON line, wait for EOF.

    ``cpus``: the CPUs the pumps may run on (None: any)."""
    from protocol.clock import SystemClock
    from simulator.model import PumpModel
    from simulator.server import serve

    if cpus is not None:
        os.sched_setaffinity(0, cpus)
    clock = SystemClock()
    servers = [
        serve(
            PumpModel(clock, max_rate_ml_per_h=200.0, reservoir_ml=100_000.0),
            protocol="modbus",
            listen="tcp://127.0.0.1:0",
        )
        for _ in range(count)
    ]
    print(json.dumps([s.pump_url for s in servers]), flush=True)
    sys.stdin.read()
    for server in servers:
        server.close()


def _cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process (Linux /proc), or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _journal_bytes(journal: Journal) -> int:
    """Bytes the journal's pages in use hold (the WAL's content included)."""
    with journal._lock:  # a bench may peek: reads, under the journal's own lock
        db = journal._connection
        page_size = int(db.execute("PRAGMA page_size").fetchone()[0])
        pages = int(db.execute("PRAGMA page_count").fetchone()[0])
        free = int(db.execute("PRAGMA freelist_count").fetchone()[0])
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


async def _run(gateway: Gateway, *, warmup: int, ticks: int, poll_s: float) -> dict[str, Any]:
    cycles: list[float] = []
    durations: list[float] = []
    failed = 0
    due = time.monotonic()
    for n in range(warmup + ticks):
        if n == warmup:
            cpu0, wall0 = os.times(), time.monotonic()
            tx0 = gateway.journal.transactions
            bytes0 = _journal_bytes(gateway.journal)
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
    return {
        "cycle_ms": cycles,
        "tick_ms": durations,
        "failed": failed,
        "cpu_s": os.times().user - cpu0.user + os.times().system - cpu0.system,
        "sys_s": os.times().system - cpu0.system,
        "wall_s": wall,
        "transactions": gateway.journal.transactions - tx0,
        "bytes": _journal_bytes(gateway.journal) - bytes0,
        "not_infusing": [
            f"{snap['id']}: {snap['state']}"
            for snap in gateway.snapshots()
            if snap["state"] != "infusing"
        ],
    }


#: What is compared: "after", group commit and one stepping thread per channel (issue 11);
#: "before", one transaction per commit and the loop's default executor (min(32, CPUs + 4)
#: threads), as ``asyncio.to_thread`` stepped the channels before; "off", per-channel threads
#: without group commit.
MODES = ("after", "before", "off")


def measure(
    channels: int, *, mode: str, warmup: int, ticks: int, poll_s: float, sim_cpus: set[int] | None
) -> Figures:
    cpus = [] if sim_cpus is None else ["--sim-cpus", ",".join(map(str, sorted(sim_cpus)))]
    pumps = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(channels), *cpus],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert pumps.stdout is not None
        urls: list[str] = json.loads(pumps.stdout.readline())
        with tempfile.TemporaryDirectory() as tmp:
            config = build_config(_config(Path(tmp), urls))
            journal = Journal(Path(tmp), group_commit=mode == "after")
            gateway = Gateway(config, journal=journal)
            if mode == "before":  # the tick uses this pool instead of making its own
                gateway._step_threads = ThreadPoolExecutor(min(32, (os.cpu_count() or 1) + 4))
            # As the daemon's process does (gateway/service.py) before its control thread starts.
            sys.setswitchinterval(CONTROL_SWITCH_INTERVAL_S)
            gc.collect()
            gc.freeze()
            sim0 = _cpu_s(pumps.pid)
            try:
                result = asyncio.run(_run(gateway, warmup=warmup, ticks=ticks, poll_s=poll_s))
            finally:
                sim1 = _cpu_s(pumps.pid)
                asyncio.run(gateway.shutdown("bench over"))
            gc.unfreeze()
    finally:
        if pumps.stdin is not None:
            pumps.stdin.close()
        pumps.wait(30)
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
        transactions_per_tick=result["transactions"] / ticks,
        bytes_per_channel_day=result["bytes"] / channels / ticks * polls_per_day,
        not_infusing=result["not_infusing"],
    )


def _cpu_set(text: str) -> set[int] | None:
    """``--sim-cpus``: ``all`` (None), ``last`` (the last CPU of several), or ``0,1``."""
    if text == "all":
        return None
    if text == "last":
        cpus = sorted(os.sched_getaffinity(0))
        return {cpus[-1]} if len(cpus) > 1 else None
    return {int(c) for c in text.split(",")}


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
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sim_cpus = _cpu_set(args.sim_cpus)
    if args.serve is not None:
        serve_pumps(args.serve, sim_cpus)
        return
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
            print(
                f"{f.channels:>8} {f.mode:>6}"
                f" {statistics.median(f.cycle_ms):>9.1f} {f.pct(0.95):>6.1f}"
                f" {f.pct(0.99):>6.1f} {max(f.cycle_ms):>6.1f} {f.pct(0.99, 'tick'):>8.1f}"
                f" {f.cpu_percent:>5.1f} {f.cpu_ms_per_tick:>6.1f} {f.sys_ms_per_tick:>6.1f}"
                f" {sims:>6} {f.transactions_per_tick:>7.1f}"
                f" {f.bytes_per_channel_day / 1e6:>9.1f} {f.failed_ticks:>6}",
                flush=True,
            )
            if f.not_infusing:
                print(f"  (not infusing at the end: {f.not_infusing})", flush=True)


if __name__ == "__main__":
    main()
