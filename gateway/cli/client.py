"""Bedside commands that talk to a running daemon's API: status, titer, weight, ack, stop, ...

Standard library HTTP only.  A refused request (4xx) exits 2 with the API's reason; an
unreachable daemon exits 1.
"""

from __future__ import annotations

import argparse
import json
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from gateway.cli.order_flags import add_order_flags, order_fields
from gateway.config import CHANNEL_ID_PATTERN, parse_host_port
from gateway.display import DISPLAY_STEP, DOSE_DISPLAY_STEP_MG_PER_KG, floor_display
from gateway.errors import GatewayError, InputError
from gateway.soft_limits import API_CONFIRM_HOW, CLI_CONFIRM_HOW
from gateway.timestamps import parse_instant
from gateway.tokens import read_token_file

DEFAULT_API = "127.0.0.1:8470"


class ApiRefusedError(GatewayError):
    """The daemon refused the request as bad input (exit code 2); the message is its reason."""

    exit_code = 2


class ApiUnreachableError(GatewayError):
    """The daemon did not answer (exit code 1: not the user's input)."""

    exit_code = 1


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--api", default=DEFAULT_API, help=f"daemon HOST:PORT (default {DEFAULT_API})"
    )
    parser.add_argument("--token-file", type=Path, help="file holding the API's bearer token")
    parser.add_argument("--json", action="store_true", help="print the API's JSON answer")


def channel_id(args: argparse.Namespace) -> str:
    """``--channel``, checked before it goes into a URL."""
    value = str(args.channel)
    if not re.fullmatch(CHANNEL_ID_PATTERN, value):
        raise InputError(
            "--channel", "a channel id: a-z and 0-9, then up to 31 of a-z, 0-9, _ and -", value
        )
    return value


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
            raise ApiRefusedError(
                f"refused by the gateway: {detail.replace(API_CONFIRM_HOW, CLI_CONFIRM_HOW)}"
            ) from None
        raise ApiUnreachableError(f"gateway at {args.api} answered {exc.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise ApiUnreachableError(f"no gateway answering at {args.api}: {exc}") from None


def _one_problem(problem: dict[str, Any]) -> str:
    """``field: message``, without saying the field twice when the message names it."""
    field = ".".join(str(p) for p in problem.get("loc", [])[1:])
    message = str(problem.get("msg"))
    return message if not field or message.startswith(f"{field}:") else f"{field}: {message}"


def _detail(exc: urllib.error.HTTPError) -> str:
    try:
        payload = json.loads(exc.read())
    except ValueError:
        return exc.reason
    detail = payload.get("detail", payload)
    if isinstance(detail, list):
        return "; ".join(_one_problem(d) for d in detail)
    return str(detail)


def _n(value: float | None, unit: str, step: float = DISPLAY_STEP) -> str:
    shown = floor_display(value, step)
    return "-" if shown is None else f"{shown:.{1 if step >= 0.1 else 2}f} {unit}"


def render_status(body: dict[str, Any]) -> str:
    """The channels as a person at the bedside reads them: mg/kg and mL, mL/h and mg/kg/h."""
    lines = []
    for ch in body["channels"]:
        lines.append(
            f"channel {ch['id']}: {ch['state']}  {ch['arm'] or 'no order'}"
            + (f" {ch['weight_kg']:g} kg" if ch["weight_kg"] else "")
            + f"  day {ch['day']}"
        )
        if ch["ceiling_ml_per_h"] is not None:
            lines.append(
                f"  rate {_n(ch['commanded_rate_ml_per_h'], 'mL/h')} "
                f"({_n(ch['commanded_rate_mg_per_kg_per_h'], 'mg/kg/h')}); "
                f"ceiling {_n(ch['ceiling_ml_per_h'], 'mL/h')} "
                f"({_n(ch['ceiling_mg_per_kg_per_h'], 'mg/kg/h')})"
            )
        for day in ch["days"]:
            if day["awaiting_titer"]:
                lines.append(f"  day {day['day']}: waiting for its titer (pump stopped)")
                continue
            titer = day["titer"]
            parts = [
                f"  day {day['day']}: "
                f"{_n(day['dose_mg_per_kg'], 'mg/kg', DOSE_DISPLAY_STEP_MG_PER_KG)}"
                f" = {_n(day['prescribed_ml'], 'mL')} over 24 h at "
                f"{_n(day['day_rate_ml_per_h'], 'mL/h')} "
                f"({_n(day['day_rate_mg_per_kg_per_h'], 'mg/kg/h')})",
            ]
            if titer is not None:
                parts.append(f"titer {titer['igm_mg_dl']:g} mg/dL drawn {titer['measured_at']}")
            parts.append(f"delivered {_n(day['delivered_ml'], 'mL')}")
            if day["closed"] and day["shortfall_ml"]:
                parts.append(f"short {_n(day['shortfall_ml'], 'mL')}")
            elif not day["closed"] and day["projected_shortfall_ml"]:
                parts.append(f"projected short {_n(day['projected_shortfall_ml'], 'mL')}")
            lines.append("; ".join(parts))
            lines.extend(f"    NOTE: {note}" for note in day["notes"])
        for alarm in ch["alarms"]:
            kind = "ALARM" if alarm["stops"] else "ADVISORY"
            lines.append(f"  {kind} {alarm['code']}: {alarm['detail']}")
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
    parser.add_argument(
        "--measured-at",
        required=True,
        help="when the blood was drawn: ISO-8601 with a zone, e.g. 2026-11-29T06:30:00+01:00",
    )
    parser.add_argument(
        "--corrects-day", type=int, help="replace the titer the running day N used (journalled)"
    )
    parser.add_argument("--confirm", action="store_true", help="use a value outside 5-400 mg/dL")


def run_titer(args: argparse.Namespace) -> int:
    parse_instant("--measured-at", args.measured_at)
    body: dict[str, Any] = {
        "igm_mg_dl": args.igm_mg_dl,
        "hematocrit": args.hematocrit,
        "measured_at": args.measured_at,
        "confirm": args.confirm,
    }
    if args.corrects_day is not None:
        body["corrects_day"] = args.corrects_day
    return _post(args, "titers", body)


def add_weight(parser: argparse.ArgumentParser) -> None:
    add_common(parser)
    parser.add_argument("--channel", default="bed1")
    parser.add_argument("--weight-kg", type=float, required=True, help="30-250 kg")
    parser.add_argument("--reason", default="")
    parser.add_argument(
        "--confirm", action="store_true", help="use a weight outside 40-150 kg or a >10 %% change"
    )


def run_weight(args: argparse.Namespace) -> int:
    body = {"weight_kg": args.weight_kg, "reason": args.reason, "confirm": args.confirm}
    return _post(args, "weight", body)


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
    answer = call(args, "POST", f"/v1/channels/{channel_id(args)}/{what}", body)
    note = answer.get("note") if isinstance(answer, dict) else None
    print(
        json.dumps(answer)
        if args.json
        else f"accepted: {what} for channel {args.channel}" + (f" ({note})" if note else "")
    )
    return 0


def add_order(parser: argparse.ArgumentParser) -> None:
    add_common(parser)
    parser.add_argument("--channel", default="bed1")
    add_order_flags(parser, required=True)


def run_order(args: argparse.Namespace) -> int:
    return _post(args, "order", order_fields(args))
