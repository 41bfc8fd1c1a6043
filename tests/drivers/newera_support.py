"""Constants and helpers shared by the NE-1000 driver tests (their fixtures: conftest.py)."""

from __future__ import annotations

from drivers.approved_rate import ApprovedRate
from gateway.safety import check_rate

TIMEOUT_S = 0.3
WEIGHT_KG = 70.0  # ceiling 0.4 mL/kg/h x 70 kg = 28 mL/h


def approved(rate_ml_per_h: float) -> ApprovedRate:
    return check_rate(rate_ml_per_h, weight_kg=WEIGHT_KG)
