"""The hard limit (safety invariants 1 and 2) and rounding to a pump's resolution."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.approved_rate import ApprovedRate
from gateway.errors import InputError
from gateway.safety import (
    CEILING_ML_PER_KG_PER_H,
    RateRefusedError,
    ceiling_ml_per_h,
    check_rate,
    round_down_to_resolution,
)

REPO = Path(__file__).resolve().parents[2]
weights = st.floats(min_value=30.0, max_value=250.0)
site_ceilings = st.floats(min_value=0.01, max_value=CEILING_ML_PER_KG_PER_H)


@pytest.mark.hazard("H-OV-01")
def test_invariant_1_ceiling_constant_is_0_4_ml_per_kg_per_h() -> None:
    assert CEILING_ML_PER_KG_PER_H == 0.4
    assert ceiling_ml_per_h(70.0) == pytest.approx(28.0)


@given(weight_kg=weights, rate=st.floats(min_value=0.0, max_value=1000.0))
@pytest.mark.hazard("H-OV-01")
def test_invariant_1_no_approved_rate_exceeds_ceiling(weight_kg: float, rate: float) -> None:
    ceiling = CEILING_ML_PER_KG_PER_H * weight_kg
    if rate > ceiling:
        with pytest.raises(RateRefusedError):
            check_rate(rate, weight_kg=weight_kg)
    else:
        approved = check_rate(rate, weight_kg=weight_kg)
        assert approved.rate_ml_per_h == rate
        assert approved.rate_ml_per_h <= ceiling


@given(weight_kg=weights, per_kg=site_ceilings, rate=st.floats(min_value=0.0, max_value=200.0))
@pytest.mark.hazard("H-OV-01")
def test_invariant_1_site_may_lower_ceiling(weight_kg: float, per_kg: float, rate: float) -> None:
    if rate > per_kg * weight_kg:
        with pytest.raises(RateRefusedError):
            check_rate(rate, weight_kg=weight_kg, ceiling_ml_per_kg_per_h=per_kg)
    else:
        approved = check_rate(rate, weight_kg=weight_kg, ceiling_ml_per_kg_per_h=per_kg)
        assert approved.ceiling_ml_per_h <= per_kg * weight_kg


@pytest.mark.hazard("H-OV-01")
def test_rule_4_ceiling_is_20_mg_per_kg_per_h_whatever_the_concentration() -> None:
    # 0.4 mL/kg/h is 20 mg/kg/h only at 50 mg/mL: a 100 mg/mL product halves the volume ceiling.
    assert ceiling_ml_per_h(70.0, concentration_mg_per_ml=100.0) == pytest.approx(14.0)
    assert ceiling_ml_per_h(70.0, concentration_mg_per_ml=50.0) == pytest.approx(28.0)
    # A more dilute product never raises the volume ceiling above 0.4 mL/kg/h.
    assert ceiling_ml_per_h(70.0, concentration_mg_per_ml=25.0) == pytest.approx(28.0)
    with pytest.raises(RateRefusedError, match="20 mg/kg/h at 100 mg/mL"):
        check_rate(14.01, weight_kg=70.0, concentration_mg_per_ml=100.0)
    assert check_rate(14.0, weight_kg=70.0, concentration_mg_per_ml=100.0).ceiling_ml_per_h == 14.0


@given(
    weight_kg=weights,
    concentration=st.floats(min_value=1.0, max_value=1000.0),
    rate=st.floats(min_value=0.0, max_value=200.0),
)
@pytest.mark.hazard("H-OV-01")
def test_rule_4_no_approved_rate_exceeds_20_mg_per_kg_per_h(
    weight_kg: float, concentration: float, rate: float
) -> None:
    try:
        approved = check_rate(rate, weight_kg=weight_kg, concentration_mg_per_ml=concentration)
    except RateRefusedError:
        assert rate * concentration / weight_kg > 20.0 * (1 - 1e-12) or rate > 0.4 * weight_kg
        return
    assert approved.rate_ml_per_h * concentration / weight_kg <= 20.0 * (1 + 1e-12)
    assert approved.rate_ml_per_h <= CEILING_ML_PER_KG_PER_H * weight_kg


@pytest.mark.parametrize("per_kg", [0.41, 0.5, 1.0, float("inf"), float("nan"), 0.0, -0.1])
@pytest.mark.hazard("H-OV-01")
def test_invariant_1_configuration_never_raises_the_ceiling(per_kg: float) -> None:
    with pytest.raises(InputError, match="ceiling_ml_per_kg_per_h"):
        check_rate(1.0, weight_kg=70.0, ceiling_ml_per_kg_per_h=per_kg)


@given(
    rate=st.floats(min_value=0.0, max_value=10_000.0),
    resolution=st.sampled_from([0.001, 0.01, 0.1, 1.0, 0.05, 0.0001]),
)
@pytest.mark.hazard("H-OV-05")
def test_invariant_1_rounding_to_resolution_never_goes_up(rate: float, resolution: float) -> None:
    rounded = round_down_to_resolution(rate, resolution)
    assert rounded <= rate
    assert rate - rounded < resolution * (1 + 1e-9)
    steps = rounded / resolution
    assert math.isclose(steps, round(steps), abs_tol=1e-6)


@pytest.mark.hazard("H-OV-05")
def test_invariant_1_rounding_known_values() -> None:
    assert round_down_to_resolution(15.4826, 0.01) == 15.48
    assert round_down_to_resolution(28.0, 0.01) == 28.0
    assert round_down_to_resolution(0.29, 0.01) == 0.29  # 0.29 is 0.28999.. in binary
    assert round_down_to_resolution(17.1875, 0.1) == 17.1


@pytest.mark.parametrize(
    ("rate", "reason"),
    [
        (28.01, "above the ceiling"),
        (-0.01, "negative"),
        (float("nan"), "finite"),
        (float("inf"), "finite"),
    ],
)
@pytest.mark.hazard("H-OV-01")
def test_invariant_2_check_refuses_never_clamps(rate: float, reason: str) -> None:
    with pytest.raises(RateRefusedError, match=reason) as refused:
        check_rate(rate, weight_kg=70.0)
    assert refused.value.ceiling_ml_per_h == pytest.approx(28.0)
    assert "allowed 0 to 28 mL/h" in str(refused.value)


@pytest.mark.hazard("H-OV-01")
def test_invariant_2_refuses_above_pump_maximum() -> None:
    with pytest.raises(RateRefusedError, match="pump's own maximum"):
        check_rate(20.0, weight_kg=70.0, pump_max_rate_ml_per_h=10.0)
    assert check_rate(10.0, weight_kg=70.0, pump_max_rate_ml_per_h=10.0).ceiling_ml_per_h == 10.0


@pytest.mark.hazard("H-OV-01")
def test_invariant_2_approved_rate_cannot_be_built_above_its_ceiling() -> None:
    with pytest.raises(ValueError, match="outside"):
        ApprovedRate(rate_ml_per_h=30.0, ceiling_ml_per_h=28.0)


def _constructions_of(name: str) -> list[str]:
    found = []
    for package in ("gateway", "drivers", "simulator", "protocol"):
        for path in sorted((REPO / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Call):
                    func = node.func
                    called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
                    if called == name:
                        found.append(str(path.relative_to(REPO)))
    return found


@pytest.mark.hazard("H-OV-01")
def test_invariant_2_only_safety_check_makes_approved_rates() -> None:
    """No code path but gateway/safety.py can produce a rate a driver will send."""
    assert set(_constructions_of("ApprovedRate")) == {"gateway/safety.py"}


@pytest.mark.parametrize("weight", [29.9, 250.1, float("nan"), True, "70"])
@pytest.mark.hazard("H-OV-08")
def test_invariant_7_bad_weight_refused_with_field_and_range(weight: object) -> None:
    with pytest.raises(InputError, match=r"weight_kg: must be a number from 30 to 250 kg"):
        check_rate(1.0, weight_kg=weight)  # type: ignore[arg-type]


@pytest.mark.hazard("H-OV-01")
def test_invariant_2_rate_hooks_are_reached_only_through_set_rate() -> None:
    """Backends write a rate in ``_write_rate``; only ``PumpDriver.set_rate`` calls it."""
    assert set(_constructions_of("_write_rate")) == {"drivers/base.py"}
