"""IgM-FAT dosing rules: worked examples, properties, and refusals naming the field."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.dosing import (
    FLAT_COURSE_DAYS,
    TITER_COURSE_DAYS_MAX,
    Arm,
    Product,
    course_days_max,
    flat_daily_dose,
    titer_daily_dose,
)
from gateway.errors import InputError
from gateway.safety import CEILING_ML_PER_KG_PER_H

weights = st.floats(min_value=30.0, max_value=250.0)
titers = st.floats(min_value=0.0, max_value=1000.0)
hematocrits = st.floats(min_value=0.10, max_value=0.70)


def test_flat_arm_worked_example_82_5_kg() -> None:
    dose = flat_daily_dose(82.5)
    assert dose.dose_mg_per_kg == 250.0
    assert dose.volume_ml == pytest.approx(412.5)
    assert dose.continuous_rate_ml_per_h == pytest.approx(17.1875)
    assert course_days_max(Arm.FLAT) == FLAT_COURSE_DAYS == 3


def test_titer_arm_worked_example_70_kg_hct_035_titer_30() -> None:
    dose = titer_daily_dose(70.0, 30.0, 0.35)
    assert dose.plasma_volume_dl == pytest.approx(31.85)
    assert dose.igm_needed_mg == pytest.approx(2229.5)
    assert dose.volume_ml == pytest.approx(371.58, abs=0.005)
    assert dose.dose_mg_per_kg == pytest.approx(265.4, abs=0.05)
    assert dose.continuous_rate_ml_per_h == pytest.approx(15.48, abs=0.005)
    assert not dose.capped
    assert dose.notes == ()
    assert course_days_max(Arm.TITER) == TITER_COURSE_DAYS_MAX == 7


def test_titer_dose_capped_at_350_mg_per_kg_and_said_so() -> None:
    dose = titer_daily_dose(70.0, 0.0, 0.10)  # 70*70*0.9/100*100/6 mL = 735 mL = 525 mg/kg
    assert dose.capped
    assert dose.dose_mg_per_kg == pytest.approx(350.0)
    assert dose.volume_ml == pytest.approx(350.0 * 70.0 / 50.0)
    assert any("capped at 350 mg/kg" in note for note in dose.notes)


@pytest.mark.parametrize("titer", [100.0, 150.0, 1000.0])
def test_titer_at_or_above_target_means_no_infusion_said_plainly(titer: float) -> None:
    dose = titer_daily_dose(70.0, titer, 0.35)
    assert dose.volume_ml == 0.0
    assert not dose.infuse
    assert any("no infusion today" in note for note in dose.notes)


def test_baseline_titer_at_or_above_60_accepted_but_flagged() -> None:
    flagged = titer_daily_dose(70.0, 60.0, 0.35, baseline=True)
    assert flagged.volume_ml > 0.0
    assert any("enrolment criterion" in note for note in flagged.notes)
    later_day = titer_daily_dose(70.0, 60.0, 0.35, baseline=False)
    assert later_day.notes == ()
    assert titer_daily_dose(70.0, 59.9, 0.35, baseline=True).notes == ()


def test_hematocrit_required_never_defaulted() -> None:
    with pytest.raises(InputError, match="hematocrit: must be given for the titer arm"):
        titer_daily_dose(70.0, 30.0, None)


@given(weight_kg=weights, titer=titers, hct=hematocrits)
def test_titer_dose_never_exceeds_350_mg_per_kg(weight_kg: float, titer: float, hct: float) -> None:
    dose = titer_daily_dose(weight_kg, titer, hct)
    assert 0.0 <= dose.dose_mg_per_kg <= 350.0 * (1 + 1e-12)
    assert dose.volume_ml * 50.0 / weight_kg <= 350.0 * (1 + 1e-12)


@given(weight_kg=weights, titer=titers, hct=hematocrits)
def test_default_product_daily_rate_within_ceiling(
    weight_kg: float, titer: float, hct: float
) -> None:
    """At 50 mg/mL both arms' 24-h rates sit under 0.4 mL/kg/h (350 mg/kg/day = 0.29 mL/kg/h)."""
    for dose in (flat_daily_dose(weight_kg), titer_daily_dose(weight_kg, titer, hct)):
        assert dose.continuous_rate_ml_per_h <= CEILING_ML_PER_KG_PER_H * weight_kg


@pytest.mark.parametrize(
    ("kwargs", "field", "allowed"),
    [
        ({"weight_kg": 29.99}, "weight_kg", "from 30 to 250 kg"),
        ({"weight_kg": 251.0}, "weight_kg", "from 30 to 250 kg"),
        ({"weight_kg": float("inf")}, "weight_kg", "from 30 to 250 kg"),
        ({"igm_mg_per_dl": -1.0}, "igm_mg_per_dl", "from 0 to 1000 mg/dL"),
        ({"igm_mg_per_dl": 1000.5}, "igm_mg_per_dl", "from 0 to 1000 mg/dL"),
        ({"igm_mg_per_dl": float("nan")}, "igm_mg_per_dl", "from 0 to 1000 mg/dL"),
        ({"hematocrit": 0.09}, "hematocrit", "from 0.1 to 0.7"),
        ({"hematocrit": 0.71}, "hematocrit", "from 0.1 to 0.7"),
        ({"hematocrit": float("-inf")}, "hematocrit", "from 0.1 to 0.7"),
    ],
)
@pytest.mark.hazard("H-IN-01")
def test_invariant_7_bad_dosing_input_names_field_and_range(
    kwargs: dict[str, float], field: str, allowed: str
) -> None:
    args: dict[str, float] = {"weight_kg": 70.0, "igm_mg_per_dl": 30.0, "hematocrit": 0.35}
    args.update(kwargs)
    with pytest.raises(InputError, match=f"{field}: must be a number {allowed}"):
        titer_daily_dose(**args)


@pytest.mark.parametrize(
    ("concentration", "igm", "field"),
    [
        (0.0, 6.0, "concentration_mg_per_ml"),
        (-50.0, 6.0, "concentration_mg_per_ml"),
        (float("nan"), 6.0, "concentration_mg_per_ml"),
        (50.0, 0.0, "igm_content_mg_per_ml"),
        (50.0, 50.0, "igm_content_mg_per_ml"),
        (50.0, 60.0, "igm_content_mg_per_ml"),
        (50.0, float("inf"), "igm_content_mg_per_ml"),
    ],
)
@pytest.mark.hazard("H-IN-01")
def test_invariant_7_bad_product_refused(concentration: float, igm: float, field: str) -> None:
    with pytest.raises(InputError, match=f"^{field}: must be"):
        Product(concentration, igm)


def test_configurable_product_changes_volumes() -> None:
    dose = flat_daily_dose(80.0, Product(concentration_mg_per_ml=100.0, igm_content_mg_per_ml=12.0))
    assert dose.volume_ml == pytest.approx(200.0)
    titer = titer_daily_dose(70.0, 30.0, 0.35, Product(50.0, 12.0))
    assert titer.volume_ml == pytest.approx(2229.5 / 12.0)
