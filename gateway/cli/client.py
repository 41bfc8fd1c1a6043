"""Bedside commands that talk to a running daemon's API: status, titer, weight, ack, stop, ...

Standard library HTTP only.  A refused request (4xx) exits 2 with the API's reason; an
unreachable daemon exits 1.
"""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from gateway.config import parse_host_port
from gateway.errors import GatewayError, InputError
from gateway.tokens import read_token_file

DEFAULT_API = "127.0.0.1:8470"


class ApiUnreachableError(GatewayError):
    """The daemon did not answer (exit code 1: not the user's input)."""

    exit_code = 1


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--api", default=DEFAULT_API, help=f"daemon HOST:PORT (default {DEFAULT_API})"
    )
    parser.add_argument("--token-file", type=Path, help="file holding the API's bearer token")
    parser.add_argument("--json", action="store_true", help="print the API's JSON answer")


def call(
    args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None = None
) -> Any:
    host, port = parse_host_port(args.api, "--api")
    host_text = f"[{host}]" if ":" in host else host
    headers = {"Content-Type": "application/json"}
    if args.token_file is not None:
        headers["Authorization"] = f"Bearer {read_token_file(args.token_file)}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        f"http://{host_text}:{port}{path}", data=data, method=method, headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        detail = _detail(exc)
        if exc.code == 409:
            raise ApiUnreachableError(f"refused by the gateway: {detail}") from None
        if 400 <= exc.code < 500:
            raise InputError(path.rsplit("/", 1)[-1], "accepted by the gateway", detail) from None
        raise ApiUnreachableError(f"gateway at {args.api} answered {exc.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise ApiUnreachableError(f"no gateway answering at {args.api}: {exc}") from None


def _detail(exc: urllib.error.HTTPError) -> str:
    try:
        payload = json.loads(exc.read())
    except ValueError:
        return exc.reason
    detail = payload.get("detail", payload)
    if isinstance(detail, list):
        return "; ".join(
            f"{'.'.join(str(p) for p in d.get('loc', [])[1:])}: {d.get('msg')}" for d in detail
        )
    return str(detail)


def render_status(body: dict[str, Any]) -> str:
    lines = []
    for ch in body["channels"]:
        rate = ch["commanded_rate_ml_per_h"]
        lines.append(
            f"channel {ch['id']}: {ch['state']}  day {ch['day']}  "
            f"rate {rate if rate is not None else '-'} mL/h (ceiling {ch['ceiling_ml_per_h']:.2f})"
        )
        for day in ch["days"]:
            lines.append(
                f"  day {day['day']}: prescribed {day['prescribed_ml']:.2f} mL, "
                f"delivered {day['delivered_ml']:.2f} mL"
                + (f", short {day['shortfall_ml']:.2f} mL" if day["shortfall_ml"] else "")
            )
        for alarm in ch["alarms"]:
            lines.append(f"  ALARM {alarm['code']}: {alarm['detail']}")
    return "\n".join(lines)


# -- subcommands: each module-level pair (add_arguments_X, run_X) is registered in gateway.cli --


def add_status(parser: argparse.ArgumentParser) -> None:
    add_common(parser)


def run_status(args: argparse.Namespace) -> int:
    body = call(args, "GET", "/v1/channels")
    print(json.dumps(body) if args.json else render_status(body))
    return 0


def add_titer(parser: argparse.ArgumentParser) -> None:
    add_common(parser)
    parser.add_argument("--channel", default="bed1")
    parser.add_argument("--igm-mg-dl", type=float, required=True, help="0-1000 mg/dL")
    parser.add_argument("--hematocrit", type=float, required=True, help="fraction, 0.10-0.70")


def run_titer(args: argparse.Namespace) -> int:
    body = {"igm_mg_dl": args.igm_mg_dl, "hematocrit": args.hematocrit}
    return _post(args, "titers", body)


def add_weight(parser: argparse.ArgumentParser) -> None:
    add_common(parser)
    parser.add_argument("--channel", default="bed1")
    parser.add_argument("--weight-kg", type=float, required=True, help="30-250 kg")
    parser.add_argument("--reason", default="")


def run_weight(args: argparse.Namespace) -> int:
    return _post(args, "weight", {"weight_kg": args.weight_kg, "reason": args.reason})


def add_ack(parser: argparse.ArgumentParser) -> None:
    add_common(parser)
    parser.add_argument("--channel", default="bed1")
    parser.add_argument("--operator", required=True, help="who acknowledges (journalled)")
    parser.add_argument("--note", default="")


def run_ack(args: argparse.Namespace) -> int:
    return _post(args, "ack", {"operator": args.operator, "note": args.note})


def add_stop(parser: argparse.ArgumentParser) -> None:
    add_common(parser)
    parser.add_argument("--channel", default="bed1")
    parser.add_argument("--operator", required=True, help="who stops (journalled)")
    parser.add_argument("--reason", default="")


def run_stop(args: argparse.Namespace) -> int:
    return _post(args, "stop", {"operator": args.operator, "reason": args.reason})


def add_vasopressors(parser: argparse.ArgumentParser) -> None:
    add_common(parser)
    parser.add_argument("--channel", default="bed1")


def run_vasopressors(args: argparse.Namespace) -> int:
    return _post(args, "vasopressors-withdrawn", {})


def _post(args: argparse.Namespace, what: str, body: dict[str, Any]) -> int:
    answer = call(args, "POST", f"/v1/channels/{args.channel}/{what}", body)
    print(json.dumps(answer) if args.json else f"accepted: {what} for channel {args.channel}")
    return 0


def add_order(parser: argparse.ArgumentParser) -> None:
    add_common(parser)
    parser.add_argument("--channel", default="bed1")
    parser.add_argument("--arm", choices=["flat", "titer"], required=True)
    parser.add_argument("--weight-kg", type=float, required=True, help="30-250 kg")
    parser.add_argument("--igm-mg-dl", type=float, help="titer arm: baseline titer, 0-1000 mg/dL")
    parser.add_argument("--hematocrit", type=float, help="titer arm: fraction, 0.10-0.70")


def run_order(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"arm": args.arm, "weight_kg": args.weight_kg}
    if args.igm_mg_dl is not None:
        body["igm_mg_dl"] = args.igm_mg_dl
    if args.hematocrit is not None:
        body["hematocrit"] = args.hematocrit
    return _post(args, "order", body)
