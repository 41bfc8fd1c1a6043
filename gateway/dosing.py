"""IgM-FAT dosing rules: a patient's daily dose (mg/kg/day) and volume (mL) for one day.

Two arms (see docs/dosing.md for the clinical reading):

* **Flat**: 250 mg/kg per day for 3 days.
* **Titer**: from the morning serum IgM titer, aiming at 100 mg/dL in a single compartment,
  the plasma volume ``weight_kg x 70 mL/kg x (1 - hematocrit)``; at most 350 mg/kg per day;
  no infusion on a day whose titer is at or above target; at most 7 days.

Every input is range-checked; a refusal names the field and the allowed range.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from gateway.errors import InputError
from gateway.safety import round_down_to_resolution, validate_weight_kg
from gateway.validate import finite_in_range

HOURS_PER_DAY: Final[float] = 24.0

FLAT_DOSE_MG_PER_KG_PER_DAY: Final[float] = 250.0
FLAT_COURSE_DAYS: Final[int] = 3

TITER_TARGET_MG_PER_DL: Final[float] = 100.0
TITER_MAX_DOSE_MG_PER_KG_PER_DAY: Final[float] = 350.0
TITER_COURSE_DAYS_MAX: Final[int] = 7
#: The trial enrolled only patients whose baseline titer was below this.
ENROLMENT_TITER_LIMIT_MG_PER_DL: Final[float] = 60.0
PLASMA_ML_PER_KG: Final[float] = 70.0

TITER_MG_PER_DL_RANGE: Final[tuple[float, float]] = (0.0, 1000.0)
HEMATOCRIT_RANGE: Final[tuple[float, float]] = (0.10, 0.70)

DEFAULT_CONCENTRATION_MG_PER_ML: Final[float] = 50.0
DEFAULT_IGM_CONTENT_MG_PER_ML: Final[float] = 6.0
#: Sanity bounds on a configured product concentration (mg/mL): the trial product is 50 mg/mL
#: (6 mg/mL IgM); immunoglobulin solutions are 5-20 % (50-200 mg/mL).  1e-9 mg/mL is a typo.
PRODUCT_MG_PER_ML_MIN: Final[float] = 10.0
PRODUCT_MG_PER_ML_MAX: Final[float] = 200.0


class Arm(StrEnum):
    """The trial arm."""

    FLAT = "flat"
    TITER = "titer"


def course_days_max(arm: Arm) -> int:
    """The longest course, in days, for ``arm``."""
    return FLAT_COURSE_DAYS if arm is Arm.FLAT else TITER_COURSE_DAYS_MAX


@dataclass(frozen=True)
class Product:
    """The infused product: total protein and IgM content, both in mg/mL."""

    concentration_mg_per_ml: float = DEFAULT_CONCENTRATION_MG_PER_ML
    igm_content_mg_per_ml: float = DEFAULT_IGM_CONTENT_MG_PER_ML

    def __post_init__(self) -> None:
        concentration = finite_in_range(
            "concentration_mg_per_ml",
            self.concentration_mg_per_ml,
            PRODUCT_MG_PER_ML_MIN,
            PRODUCT_MG_PER_ML_MAX,
            "mg/mL",
        )
        finite_in_range(
            "igm_content_mg_per_ml",
            self.igm_content_mg_per_ml,
            0.0,
            concentration,
            "mg/mL (below concentration_mg_per_ml)",
            low_inclusive=False,
            high_inclusive=False,
        )


@dataclass(frozen=True)
class DailyDose:
    """One day's dose for one patient.  ``volume_ml`` is what the pump must deliver that day."""

    arm: Arm
    weight_kg: float
    dose_mg_per_kg: float
    volume_ml: float
    product: Product
    #: Titer arm only: the inputs and intermediate quantities, for the audit trail.
    igm_mg_per_dl: float | None = None
    hematocrit: float | None = None
    plasma_volume_dl: float | None = None
    igm_needed_mg: float | None = None
    #: True when the titer arm's 350 mg/kg/day cap reduced the dose.
    capped: bool = False
    #: Plain-language notes a person must read (cap applied, no infusion today, enrolment flag).
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def infuse(self) -> bool:
        """False on a day with nothing to infuse (titer at or above target)."""
        return self.volume_ml > 0.0

    @property
    def continuous_rate_ml_per_h(self) -> float:
        """The rate that delivers ``volume_ml`` evenly over 24 h (before the ceiling)."""
        return self.volume_ml / HOURS_PER_DAY


def mg_per_kg(ml: float, concentration_mg_per_ml: float, weight_kg: float) -> float:
    """Product volume as a dose per kg: mL -> mg/kg, and so mL/h -> mg/kg/h."""
    return ml * concentration_mg_per_ml / weight_kg


def flat_daily_dose(weight_kg: float, product: Product | None = None) -> DailyDose:
    """Flat arm: 250 mg/kg for a patient of ``weight_kg`` (30-250 kg)."""
    weight = validate_weight_kg(weight_kg)
    prod = product or Product()
    volume_ml = FLAT_DOSE_MG_PER_KG_PER_DAY * weight / prod.concentration_mg_per_ml
    return DailyDose(
        arm=Arm.FLAT,
        weight_kg=weight,
        dose_mg_per_kg=FLAT_DOSE_MG_PER_KG_PER_DAY,
        volume_ml=volume_ml,
        product=prod,
    )


def validate_titer_mg_per_dl(igm_mg_per_dl: float) -> float:
    """A serum IgM titer in 0-1000 mg/dL, else InputError."""
    low, high = TITER_MG_PER_DL_RANGE
    return finite_in_range("igm_mg_per_dl", igm_mg_per_dl, low, high, "mg/dL")


def validate_hematocrit(hematocrit: float | None) -> float:
    """A hematocrit fraction in 0.10-0.70, required (never a silent default), else InputError."""
    low, high = HEMATOCRIT_RANGE
    if hematocrit is None:
        raise InputError(
            "hematocrit",
            f"given for the titer arm: a fraction from {low:g} to {high:g} (never defaulted)",
            None,
        )
    return finite_in_range("hematocrit", hematocrit, low, high, "(fraction)")


def plasma_volume_dl(weight_kg: float, hematocrit: float) -> float:
    """Plasma volume in dL: ``weight_kg x 70 mL/kg x (1 - hematocrit) / 100``."""
    return weight_kg * PLASMA_ML_PER_KG * (1.0 - hematocrit) / 100.0


def titer_daily_dose(
    weight_kg: float,
    igm_mg_per_dl: float,
    hematocrit: float | None,
    product: Product | None = None,
    *,
    baseline: bool = False,
) -> DailyDose:
    """Titer arm: the day's dose from the morning IgM titer.

    ``IgM needed (mg) = (100 - titer) x plasma volume (dL)``; volume = IgM needed / IgM content;
    capped at 350 mg/kg; zero when the titer is at or above 100 mg/dL.  ``baseline`` marks the
    first (enrolment) titer, which is flagged when at or above 60 mg/dL.
    """
    weight = validate_weight_kg(weight_kg)
    titer = validate_titer_mg_per_dl(igm_mg_per_dl)
    hct = validate_hematocrit(hematocrit)
    prod = product or Product()
    notes: list[str] = []
    if baseline and titer >= ENROLMENT_TITER_LIMIT_MG_PER_DL:
        notes.append(
            f"baseline IgM titer {titer:g} mg/dL is at or above "
            f"{ENROLMENT_TITER_LIMIT_MG_PER_DL:g} mg/dL: outside the trial's enrolment criterion"
        )
    plasma_dl = plasma_volume_dl(weight, hct)
    igm_needed_mg = max(TITER_TARGET_MG_PER_DL - titer, 0.0) * plasma_dl
    volume_ml = igm_needed_mg / prod.igm_content_mg_per_ml
    cap_volume_ml = TITER_MAX_DOSE_MG_PER_KG_PER_DAY * weight / prod.concentration_mg_per_ml
    capped = volume_ml > cap_volume_ml
    if capped:
        notes.append(
            f"dose capped at {TITER_MAX_DOSE_MG_PER_KG_PER_DAY:g} mg/kg/day "
            f"({round_down_to_resolution(volume_ml, 0.01):.2f} mL computed, "
            f"{round_down_to_resolution(cap_volume_ml, 0.01):.2f} mL given)"
        )
        volume_ml = cap_volume_ml
    if igm_needed_mg == 0.0:
        notes.append(
            f"IgM titer {titer:g} mg/dL is at or above the {TITER_TARGET_MG_PER_DL:g} mg/dL "
            "target: no infusion today"
        )
    return DailyDose(
        arm=Arm.TITER,
        weight_kg=weight,
        dose_mg_per_kg=mg_per_kg(volume_ml, prod.concentration_mg_per_ml, weight),
        volume_ml=volume_ml,
        product=prod,
        igm_mg_per_dl=titer,
        hematocrit=hct,
        plasma_volume_dl=plasma_dl,
        igm_needed_mg=igm_needed_mg,
        capped=capped,
        notes=tuple(notes),
    )
