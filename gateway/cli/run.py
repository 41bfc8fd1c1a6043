"""``infusion-gateway run``: the daemon, from a TOML config or, for one channel, from flags."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from gateway.cli.order_flags import add_order_flags, order_fields
from gateway.config import GatewayConfig, build_config, load_config
from gateway.errors import InputError
from gateway.logs import configure_logging


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="TOML config file (see docs/operations.md)")
    one = parser.add_argument_group("one channel from flags (instead of --config)")
    one.add_argument("--pump", help="pump URL, e.g. newera:///dev/ttyUSB0")
    add_order_flags(one, required=False)
    one.add_argument("--state-dir", type=Path)
    one.add_argument("--channel-id", default="bed1")
    one.add_argument("--poll-interval-s", type=float)
    parser.add_argument("--api", help="HOST:PORT for the HTTP API (loopback by default)")
    parser.add_argument(
        "--token-file", type=Path, help="file holding the API's token (reads and writes)"
    )
    parser.add_argument(
        "--read-token-file", type=Path, help="file holding a second, read-only API token"
    )
    parser.add_argument(
        "--allow-remote-api",
        action="store_true",
        help="let --api listen on a non-loopback address (warned at every start)",
    )
    parser.add_argument("--time-scale", type=float, help="HIL rigs only: simulated s per real s")
    parser.add_argument(
        "--adopt-config-order",
        action="store_true",
        help="apply a weight changed in the config since the journal took the order, as a "
        "journalled correction (any other change is a new course: a new channel id)",
    )
    parser.add_argument(
        "--log-json",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="JSON log lines (default: JSON unless stderr is a terminal)",
    )


#: Flags that describe the one channel of a run without --config (refused with --config).
_ONE_CHANNEL_FLAGS = (
    "pump",
    "arm",
    "weight_kg",
    "igm_mg_dl",
    "hematocrit",
    "randomised_at",
    "start_override_reason",
    "titer_measured_at",
    "confirm",
    "state_dir",
    "poll_interval_s",
)


def config_from_args(args: argparse.Namespace) -> GatewayConfig:
    """A validated config from ``--config`` or from the one-channel flags."""
    if args.config is not None:
        clashing = [f for f in _ONE_CHANNEL_FLAGS if getattr(args, f) not in (None, False)]
        if clashing:
            raise InputError(
                "--config", f"used alone, without --{clashing[0].replace('_', '-')}", True
            )
        config = load_config(args.config)
        data: dict[str, Any] = config.model_dump(mode="json", exclude_unset=True)
    else:
        missing = [
            f"--{f.replace('_', '-')}"
            for f in ("pump", "arm", "weight_kg", "state_dir")
            if getattr(args, f) is None
        ]
        if missing:
            raise InputError(missing[0], "given (or use --config FILE)", None)
        channel: dict[str, Any] = {
            "id": args.channel_id,
            "pump": args.pump,
            **order_fields(args),
        }
        data = {"state_dir": str(args.state_dir), "channels": [channel]}
        if args.poll_interval_s is not None:
            data["control"] = {"poll_interval_s": args.poll_interval_s}
    if args.time_scale is not None:
        data["time_scale"] = args.time_scale
    api_flags = {
        "listen": args.api,
        "token_file": None if args.token_file is None else str(args.token_file),
        "read_token_file": None if args.read_token_file is None else str(args.read_token_file),
        "allow_remote": args.allow_remote_api or None,
    }
    if any(value is not None for value in api_flags.values()):
        api = dict(data.get("api") or {})
        api.update({key: value for key, value in api_flags.items() if value is not None})
        data["api"] = api
    return build_config(data, source="--config" if args.config else "flags")


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    configure_logging(json_lines=args.log_json)
    if config.time_scale != 1.0:
        print(
            f"WARNING: --time-scale {config.time_scale:g}: simulated time, for HIL rigs only",
            file=sys.stderr,
        )
    from gateway.service import serve

    def announce(info: dict[str, Any]) -> None:
        print(json.dumps(info), flush=True)

    return asyncio.run(
        serve(config, adopt_config_order=args.adopt_config_order, on_started=announce)
    )
