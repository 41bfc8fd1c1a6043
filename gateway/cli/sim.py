"""``infusion-gateway sim``: the software pump, served over a real wire, until SIGINT/SIGTERM.

stdout: the first line is one JSON object ``{"listening": ..., "pump_url": ...}`` (flushed at
once); the last line is one JSON object with ``lifetime_volume_infused_ml``, the ground truth of
everything the pump delivered since it started, which no command clears.

``--pumps N`` serves N pumps (:mod:`simulator.ward`), each on its own pty or TCP port; both lines
then also hold ``"pumps"``, one object per pump (the top-level fields stay pump 1's).
``--control tcp://HOST:PORT`` serves the control API (:mod:`simulator.control_api`) behind the
gateway's bearer-token guard (:class:`gateway.api_guard.RequestGuard`, the token files read by
:class:`gateway.tokens.TokenSource`); the first line then holds ``"control"``, its bound address.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from gateway.config import parse_host_port
from gateway.errors import ConfigError, InputError
from gateway.listen import reaches_beyond_loopback, resolve_listen

if TYPE_CHECKING:
    from gateway.api_guard import Credentials
    from simulator.control_server import ControlServer
    from simulator.ward import SimulatedPump, Ward

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
    parser.add_argument(
        "--pumps",
        type=int,
        default=1,
        metavar="N",
        help="serve N pumps, each on its own pty or TCP port (tcp://HOST:PORT: PORT, PORT+1, ...)",
    )
    parser.add_argument(
        "--control",
        metavar="tcp://HOST:PORT",
        help="serve the control API there (port 0: any free); needs --control-token-file",
    )
    parser.add_argument(
        "--control-token-file",
        type=Path,
        metavar="FILE",
        help="the control API's bearer token (reads and writes), as made by token new",
    )
    parser.add_argument(
        "--control-read-token-file",
        type=Path,
        metavar="FILE",
        help="an optional token that may only read the control API",
    )


def check_listen_address(listen: str, *, allow_remote: bool) -> None:
    """``tcp://HOST:PORT`` must resolve, and to loopback only unless ``allow_remote``."""
    host, port = parse_host_port(listen.removeprefix("tcp://"), "--listen")
    remote = reaches_beyond_loopback(resolve_listen("--listen", listen, host, port))
    if remote and not allow_remote:
        raise ConfigError(
            f"--listen {listen!r}: not a loopback address; a simulated pump on the network can"
            " be driven by anyone who reaches it: add --allow-remote if that is what you want"
        )


def _bind_control(args: argparse.Namespace) -> socket.socket:
    """The control API's listening socket, bound now: loopback only unless ``--allow-remote``
    (ConfigError naming ``--control`` otherwise, or if the address cannot be bound)."""
    from gateway.service import bind_listener

    return bind_listener(
        "--control",
        args.control.removeprefix("tcp://"),
        allow_remote=args.allow_remote,
        why_local="the control API drives the simulated pumps and injects their faults, so"
        " listening beyond this machine needs --allow-remote",
        flag="--control",
    ).sock


def _control_credentials(args: argparse.Namespace) -> Credentials:
    """The control API's tokens, read now (ConfigError naming the file if one is unusable)."""
    from gateway.api_guard import Credentials
    from gateway.tokens import TokenSource

    read = args.control_read_token_file
    return Credentials(
        TokenSource(args.control_token_file), TokenSource(read) if read is not None else None
    )


def _control_server(ward: Ward, credentials: Credentials, sock: socket.socket) -> ControlServer:
    """The control API for ``ward`` behind the gateway's guard, on ``sock``, not yet started."""
    from gateway.api_guard import RequestGuard
    from simulator.control_api import create_control_app
    from simulator.control_server import ControlServer

    stopping = threading.Event()
    app = RequestGuard(create_control_app(ward, stopping=stopping), credentials)
    return ControlServer(app, sock, stopping=stopping)


def _check_arguments(args: argparse.Namespace) -> None:
    """Every refusal of bad input, before anything starts (exit 2, naming the option)."""
    from simulator.ward import MAX_PUMPS, MAX_TIME_SCALE, listen_addresses

    if not (args.listen == "pty" or args.listen.startswith("tcp://")):
        raise InputError("--listen", "pty or tcp://HOST:PORT", args.listen)
    if args.listen != "pty":
        check_listen_address(args.listen, allow_remote=args.allow_remote)
    if not 0 < args.time_scale <= MAX_TIME_SCALE:
        raise InputError(
            "--time-scale", f"a number above 0 and at most {MAX_TIME_SCALE:g}", args.time_scale
        )
    if not 1 <= args.pumps <= MAX_PUMPS:
        raise InputError("--pumps", f"a whole number from 1 to {MAX_PUMPS}", args.pumps)
    listen_addresses(args.listen, args.pumps)  # consecutive ports must exist
    if args.control is None:
        if args.control_token_file is not None or args.control_read_token_file is not None:
            raise InputError("--control-token-file", "given only with --control", "a file")
        return
    if not args.control.startswith("tcp://"):
        raise InputError("--control", "tcp://HOST:PORT (port 0: any free)", args.control)
    if args.control_token_file is None:
        raise ConfigError(
            "--control needs --control-token-file FILE: the control API answers only requests"
            " that carry its token (make one with: infusion-gateway token new FILE)"
        )


def _pump_line(pump: SimulatedPump) -> dict[str, Any]:
    return {
        "pump": pump.number,
        "listening": pump.server.listening,
        "pump_url": pump.server.pump_url,
        "control_path": pump.control_path,
    }


def _final(pump: SimulatedPump) -> dict[str, Any]:
    snap = pump.model.snapshot()
    return {
        "lifetime_volume_infused_ml": snap.lifetime_volume_infused_ml,
        "volume_infused_ml": snap.volume_infused_ml,
        "state": snap.state.value,
        "alarms": sorted(a.value for a in snap.alarms),
        "simulated_s": snap.monotonic_s - pump.model.started_monotonic_s,
    }


def run(args: argparse.Namespace) -> int:
    from protocol.clock import ScaledClock
    from simulator.server import load_scenario
    from simulator.ward import Ward

    _check_arguments(args)
    script = load_scenario(str(args.faults)) if args.faults else None
    credentials, control_sock = None, None
    if args.control is not None:
        credentials = _control_credentials(args)
        control_sock = _bind_control(args)
    clock = ScaledClock(args.time_scale)
    try:
        ward = Ward.open(
            clock,
            count=args.pumps,
            protocol=args.protocol,
            listen=args.listen,
            max_rate_ml_per_h=args.max_rate_ml_per_h,
            reservoir_ml=args.reservoir_ml,
            seed=args.seed,
            script=script,
        )
    except (OSError, RuntimeError) as exc:
        if control_sock is not None:
            control_sock.close()
        raise ConfigError(f"--listen {args.listen!r}: cannot listen there: {exc}") from None
    control: ControlServer | None = None
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        if credentials is not None and control_sock is not None:
            control = _control_server(ward, credentials, control_sock)
            try:
                control.start()
            except RuntimeError as exc:
                raise ConfigError(f"--control {args.control!r}: {exc}") from None
        print(json.dumps(_started_line(args, ward, control)), flush=True)
        while not stop.wait(HOUSEKEEPING_S):
            ward.advance()
    finally:
        if control is not None:
            control.close()
        elif control_sock is not None:
            control_sock.close()
        ward.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    final = _final(ward.pump(1))
    if len(ward) > 1:
        final["pumps"] = [{"pump": pump.number, **_final(pump)} for pump in ward]
    print(json.dumps(final), flush=True)
    return 0


def _started_line(
    args: argparse.Namespace, ward: Ward, control: ControlServer | None
) -> dict[str, Any]:
    """The first stdout line: pump 1's address and URL, the settings, and (when asked for) the
    control API's address and every pump's address."""
    first = ward.pump(1)
    started: dict[str, Any] = {
        "listening": first.server.listening,
        "pump_url": first.server.pump_url,
        "protocol": args.protocol,
        "time_scale": args.time_scale,
        "max_rate_ml_per_h": args.max_rate_ml_per_h,
        "reservoir_ml": args.reservoir_ml,
        "faults": str(args.faults) if args.faults else None,
    }
    if control is not None:
        started["control"] = control.address
    if len(ward) > 1:
        started["pumps"] = [_pump_line(pump) for pump in ward]
    return started
