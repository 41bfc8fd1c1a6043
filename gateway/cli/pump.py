"""``infusion-gateway pump``: bedside diagnostics for one pump, before a gateway drives it.

    infusion-gateway pump info     --url URL [--json]
    infusion-gateway pump status   --url URL [--json]
    infusion-gateway pump start    --url URL
    infusion-gateway pump stop     --url URL
    infusion-gateway pump set-rate RATE_ML_PER_H --weight-kg W --url URL [--json]

Any action takes ``--record FILE``: every byte sent and received goes to FILE, a new file
(``infusion-gateway replay FILE`` serves it back; docs/record-replay.md).

Options in the URL (``?timeout_s=5&retries=0``) are used as given; a ``--timeout-s`` typed on the
command line wins over the URL's ``timeout_s``.

``set-rate`` passes the one safety check first: a rate above 0.4 mL/kg/h x W is refused
(exit 2) before a byte is sent.  A pump that does not answer exits 1 with the reason.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

ACTIONS = ("info", "status", "start", "stop", "set-rate")
#: Per-request timeout (s) when neither ``--timeout-s`` nor the URL's ``timeout_s`` gives one.
DEFAULT_TIMEOUT_S = 1.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=ACTIONS)
    parser.add_argument("rate_ml_per_h", nargs="?", type=float, help="set-rate: mL/h")
    parser.add_argument(
        "--url",
        required=True,
        help="pump URL, e.g. newera:///dev/ttyUSB0?baud=19200 or modbus+tcp://HOST:PORT",
    )
    parser.add_argument(
        "--weight-kg", type=float, help="set-rate: the patient's weight (30-250 kg)"
    )
    parser.add_argument(
        "--timeout-s",
        type=float,
        default=None,
        help="per-request timeout (s); if given, wins over the URL's timeout_s "
        f"(default: the URL's timeout_s, else {DEFAULT_TIMEOUT_S:g} s)",
    )
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--record",
        type=Path,
        metavar="FILE",
        help="write every byte sent and received to FILE (must not exist yet)",
    )


def run(args: argparse.Namespace) -> int:
    from drivers import make_pump
    from gateway.errors import InputError
    from gateway.safety import check_rate

    approved = None
    if args.action == "set-rate":
        if args.rate_ml_per_h is None:
            raise InputError("RATE_ML_PER_H", "given after set-rate", None)
        if args.weight_kg is None:
            raise InputError("--weight-kg", "given with set-rate (30-250 kg)", None)
        approved = check_rate(args.rate_ml_per_h, weight_kg=args.weight_kg)  # before any I/O
    elif args.rate_ml_per_h is not None:
        raise InputError(
            "RATE_ML_PER_H", f"given only with set-rate, not {args.action}", args.rate_ml_per_h
        )
    # A typed --timeout-s wins over the URL's timeout_s; the URL's wins over the default.
    typed: dict[str, object] = {} if args.timeout_s is None else {"timeout_s": args.timeout_s}
    if args.record is not None:
        typed["record"] = _new_recording(args.record)
    pump = make_pump(args.url, defaults={"timeout_s": DEFAULT_TIMEOUT_S}, **typed)
    try:
        identity = pump.open()
        result: dict[str, Any]
        if args.action == "info":
            result = {
                "vendor": identity.vendor,
                "model": identity.model,
                "firmware": identity.firmware,
                "max_rate_ml_per_h": identity.max_rate_ml_per_h,
                "rate_resolution_ml_per_h": identity.rate_resolution_ml_per_h,
                "url": args.url,
            }
        elif args.action == "status":
            result = pump.read_status().to_dict()
        elif args.action == "start":
            pump.start()
            result = {"started": True, **pump.read_status().to_dict()}
        elif args.action == "stop":
            pump.stop()
            result = {"stopped": True, **pump.read_status().to_dict()}
        else:
            assert approved is not None
            readback = pump.set_rate(approved)
            result = {
                "approved_ml_per_h": readback.approved_ml_per_h,
                "sent_ml_per_h": readback.sent_ml_per_h,
                "readback_ml_per_h": readback.readback_ml_per_h,
                "resolution_ml_per_h": readback.resolution_ml_per_h,
                "exact": readback.exact,
                "ceiling_ml_per_h": approved.ceiling_ml_per_h,
            }
    finally:
        pump.close()
    print(json.dumps(result) if args.json else _render(result))
    if args.action == "set-rate" and not result["exact"]:
        return 1
    return 0


def _new_recording(path: Path) -> str:
    """``--record FILE``: a file that does not exist yet, in a directory that does; its
    ``recording_*`` log events go to stderr (stdout is the command's answer)."""
    from gateway.errors import InputError
    from gateway.logs import configure_logging

    if path.exists() or not path.parent.is_dir():
        raise InputError("--record", "a new file in an existing directory", str(path))
    configure_logging()
    return str(path)


def _render(result: dict[str, Any]) -> str:
    width = max(len(k) for k in result)
    return "\n".join(f"{key.ljust(width)}  {value}" for key, value in result.items())
