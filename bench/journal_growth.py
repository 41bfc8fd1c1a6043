"""Journal bytes per channel-day at a 1-s poll, from a real run of the control loop.

One flat-arm channel on one simulated Modbus-TCP pump, on a manual clock that the gateway
advances one poll interval per tick (as the demo does), so a simulated day takes a minute or
two rather than a day.  The journal's pages in use (SQLite, WAL included, read on a connection
of our own) are taken after the first minute (arming, programming and starting are behind) and
at the end; their growth per poll, times 86,400 polls, is the figure.  The journal keeps what
changed, every decision and a periodic checkpoint: a span of an hour holds many checkpoints, so
only the once-a-day rows (the day boundary) are missing from a span shorter than a day (the
figure says it was scaled); ``simulated_h=24`` measures a whole day.  Growth is counted in
SQLite pages (1 KiB in a new journal), so a very short span rounds to a page.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from bench import targets
from bench.bench_channels import journal_bytes
from bench.figures import Figure, Target
from gateway.config import build_config
from gateway.daemon import Gateway
from gateway.planner import DAY_S, SECONDS_PER_HOUR
from gateway.timestamps import format_instant
from protocol.clock import ManualClock
from simulator.model import PumpModel
from simulator.server import serve

POLL_INTERVAL_S = 1.0
#: Ticks before the first measurement: the channel is infusing by then.
SETTLE_TICKS = 60


def measure(simulated_h: float) -> Figure:
    """Journal MB per channel-day, from ``simulated_h`` simulated hours at a 1-s poll."""
    ticks = SETTLE_TICKS + round(simulated_h * SECONDS_PER_HOUR / POLL_INTERVAL_S)
    clock = ManualClock()
    model = PumpModel(clock, max_rate_ml_per_h=100.0, reservoir_ml=5000.0)
    server = serve(model, protocol="modbus", listen="tcp://127.0.0.1:0")
    pages: dict[str, int] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            state_dir = Path(tmp)
            config = build_config(
                {
                    "state_dir": str(state_dir),
                    "control": {
                        "poll_interval_s": POLL_INTERVAL_S,
                        "request_timeout_s": 0.5,
                        "request_retries": 1,
                    },
                    "channels": [
                        {
                            "id": "bed01",
                            "pump": server.pump_url,
                            "arm": "flat",
                            "weight_kg": 70.0,
                            "randomised_at": format_instant(clock.wall() - SECONDS_PER_HOUR),
                        }
                    ],
                },
                source="bench",
            )
            gateway = Gateway(config, clock=clock)

            def after_tick() -> None:
                if gateway.cycles in (SETTLE_TICKS, ticks):
                    pages["start" if gateway.cycles == SETTLE_TICKS else "end"] = journal_bytes(
                        state_dir
                    )

            started = time.perf_counter()
            asyncio.run(gateway.run(asyncio.Event(), max_ticks=ticks, after_tick=after_tick))
            wall_s = time.perf_counter() - started
            state = gateway.snapshots()[0]["state"]
    finally:
        server.close()
    polls = ticks - SETTLE_TICKS
    per_day = (pages["end"] - pages["start"]) / polls * (DAY_S / POLL_INTERVAL_S)
    span = f"{simulated_h:g} simulated hour{'s' if simulated_h != 1 else ''}"
    return Figure(
        key="journal_mb_per_channel_day",
        name="journal per channel-day, 1-s poll",
        unit="MB",
        ours=per_day / 1e6,
        ours_does=(
            "growth of the journal's pages in use (SQLite, WAL included) with one infusing "
            "flat-arm channel on a simulated Modbus-TCP pump at a 1-s poll"
        ),
        target=Target("<=", targets.JOURNAL_MB_PER_CHANNEL_DAY),
        method=(
            f"{span} ({polls:,} polls after {SETTLE_TICKS} of start-up, {wall_s:.0f} s wall, "
            f"the channel {state} at the end)"
            + (
                f", scaled to {DAY_S / POLL_INTERVAL_S:,.0f} polls: the day boundary's rows are "
                "not in it"
                if polls * POLL_INTERVAL_S < DAY_S
                else ": a whole day, not extrapolated"
            )
        ),
    )
