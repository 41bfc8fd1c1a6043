"""``infusion-gateway sim``: the software pump, served over a real wire, until SIGINT/SIGTERM.

stdout: the first line is one JSON object ``{"listening": ..., "pump_url": ...}`` (flushed at
once); the last line is one JSON object with ``lifetime_volume_infused_ml``, the ground truth of
everything the pump delivered since it started, which no command clears.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from gateway.config import parse_host_port
from gateway.errors import ConfigError, InputError
from gateway.listen import reaches_beyond_loopback, resolve_listen

#: Real seconds between the sim's own clock ticks (alarm packets, watchdog expiry).
HOUSEKEEPING_S = 0.05


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--protocol", choices=["newera", "modbus"], default="newera")
    parser.add_argument(
        "--listen", default="pty", help="pty, or tcp://HOST:PORT (port 0: any free)"
    )
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        help="let --listen use a non-loopback address (anyone on the network can drive the pump)",
    )
    parser.add_argument(
        "--time-scale", type=float, default=1.0, help="simulated seconds per real second (e.g. 600)"
    )
    parser.add_argument(
        "--max-rate-ml-per-h",
        type=float,
        default=500.0,
        help="the pump's own maximum rate; above it the pump refuses",
    )
    parser.add_argument("--reservoir-ml", type=float, default=1000.0)
    parser.add_argument(
        "--faults",
        type=Path,
        metavar="FILE",
        help="a timed fault script (TOML/JSON), or a built-in scenario name",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for line-fault randomness")


def check_listen_address(listen: str, *, allow_remote: bool) -> None:
    """``tcp://HOST:PORT`` must resolve, and to loopback only unless ``allow_remote``."""
    host, port = parse_host_port(listen.removeprefix("tcp://"), "--listen")
    remote = reaches_beyond_loopback(resolve_listen("--listen", listen, host, port))
    if remote and not allow_remote:
        raise ConfigError(
            f"--listen {listen!r}: not a loopback address; a simulated pump on the network can"
            " be driven by anyone who reaches it: add --allow-remote if that is what you want"
        )


def run(args: argparse.Namespace) -> int:
    from protocol.clock import ScaledClock
    from simulator.model import PumpModel
    from simulator.server import load_scenario, serve

    if not (args.listen == "pty" or args.listen.startswith("tcp://")):
        raise InputError("--listen", "pty or tcp://HOST:PORT", args.listen)
    if args.listen != "pty":
        check_listen_address(args.listen, allow_remote=args.allow_remote)
    if not 0 < args.time_scale <= 100_000:
        raise InputError("--time-scale", "a number above 0 and at most 100000", args.time_scale)
    script = load_scenario(str(args.faults)) if args.faults else None
    clock = ScaledClock(args.time_scale)
    model = PumpModel(
        clock,
        max_rate_ml_per_h=args.max_rate_ml_per_h,
        reservoir_ml=args.reservoir_ml,
        rng=random.Random(args.seed),
    )
    if script is not None:
        model.schedule(script)
    try:
        server = serve(model, protocol=args.protocol, listen=args.listen)
    except (OSError, RuntimeError) as exc:
        raise ConfigError(f"--listen {args.listen!r}: cannot listen there: {exc}") from None
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        print(
            json.dumps(
                {
                    "listening": server.listening,
                    "pump_url": server.pump_url,
                    "protocol": args.protocol,
                    "time_scale": args.time_scale,
                    "max_rate_ml_per_h": args.max_rate_ml_per_h,
                    "reservoir_ml": args.reservoir_ml,
                    "faults": str(args.faults) if args.faults else None,
                }
            ),
            flush=True,
        )
        while not stop.wait(HOUSEKEEPING_S):
            model.advance()
    finally:
        server.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    snap = model.snapshot()
    final: dict[str, Any] = {
        "lifetime_volume_infused_ml": snap.lifetime_volume_infused_ml,
        "volume_infused_ml": snap.volume_infused_ml,
        "state": snap.state.value,
        "alarms": sorted(a.value for a in snap.alarms),
        "simulated_s": snap.monotonic_s - model.started_monotonic_s,
    }
    print(json.dumps(final), flush=True)
    return 0
