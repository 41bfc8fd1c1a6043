"""The flags of an order, shared by ``run`` (one channel from flags) and ``order``."""

from __future__ import annotations

import argparse
from typing import Any, Protocol

from gateway.config import ORDER_FLAG_NAMES, OrderConfig, validate_json_model
from gateway.dosing import Arm
from gateway.timestamps import parse_instant


class _Adds(Protocol):
    def add_argument(self, *names: str, **options: Any) -> Any: ...


def add_order_flags(parser: _Adds, *, required: bool) -> None:
    """``--arm``, ``--weight-kg``, the titer, the randomisation time, the override, confirm."""
    parser.add_argument("--arm", choices=[a.value for a in Arm], required=required)
    parser.add_argument("--weight-kg", type=float, required=required, help="30-250 kg")
    parser.add_argument("--igm-mg-dl", type=float, help="titer arm: baseline titer, 0-1000 mg/dL")
    parser.add_argument("--hematocrit", type=float, help="titer arm: fraction, 0.10-0.70")
    parser.add_argument(
        "--randomised-at",
        help="when the patient was randomised, ISO-8601 with a zone; the first start must be "
        "within 12 h of it (required unless the site allows orders without it)",
    )
    parser.add_argument("--start-override-reason", help="why a start later than 12 h is intended")
    parser.add_argument(
        "--titer-measured-at", help="titer arm: when the baseline titer was drawn (ISO-8601)"
    )
    parser.add_argument(
        "--confirm", action="store_true", help="use a weight or titer outside the soft limits"
    )


def order_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The order's fields from the flags, as the config and the API take them.

    The flags are validated here by the same strict model the config and the API use
    (:class:`OrderConfig`), so a bad one exits 2 with one line naming the flag (``--weight-kg:
    must be a number from 30 to 250 kg (got 20.0)``) before anything is sent or started.
    """
    fields: dict[str, Any] = {"arm": args.arm, "weight_kg": args.weight_kg}
    for name in ("igm_mg_dl", "hematocrit", "start_override_reason"):
        if getattr(args, name) is not None:
            fields[name] = getattr(args, name)
    for name in ("randomised_at", "titer_measured_at"):
        value = getattr(args, name)
        if value is not None:
            parse_instant(f"--{name.replace('_', '-')}", value)
            fields[name] = value
    if args.confirm:
        fields["confirm"] = True
    validate_order_flags(fields)
    return fields


def validate_order_flags(fields: dict[str, Any]) -> OrderConfig:
    """``fields`` (taken from flags) as a strict :class:`OrderConfig`; ConfigError naming the flag.

    Exit code 2 through the CLI.  A flag left out (``None``) is refused as required.
    """
    return validate_json_model(OrderConfig, fields, source="flags", names=ORDER_FLAG_NAMES)
