"""A simple virtual patient for the demo: single-compartment serum IgM.

The titer ``C`` (mg/dL) in the plasma volume relaxes towards the patient's own baseline with a
first-order half-life, and rises with the IgM infused:

    dC/dt = infused IgM (mg/h) / plasma volume (dL) - k (C - C_baseline),   k = ln 2 / half-life

This is the same single-compartment assumption the titer arm's dosing rule makes, plus
elimination; it is a demonstration, not a pharmacokinetic model to treat anyone with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from gateway.dosing import DEFAULT_IGM_CONTENT_MG_PER_ML, plasma_volume_dl


@dataclass
class VirtualPatient:
    weight_kg: float
    hematocrit: float
    baseline_igm_mg_dl: float
    half_life_h: float = 72.0
    igm_content_mg_per_ml: float = DEFAULT_IGM_CONTENT_MG_PER_ML
    titer_mg_dl: float = field(init=False)

    def __post_init__(self) -> None:
        if not self.half_life_h > 0:
            raise ValueError(f"half_life_h must be > 0, got {self.half_life_h!r}")
        self.titer_mg_dl = self.baseline_igm_mg_dl

    @property
    def plasma_volume_dl(self) -> float:
        return plasma_volume_dl(self.weight_kg, self.hematocrit)

    def advance(self, hours: float, infused_ml: float) -> float:
        """Move ``hours`` forward, ``infused_ml`` given evenly over them; return the new titer."""
        if hours <= 0:
            return self.titer_mg_dl
        k = math.log(2) / self.half_life_h
        decay = math.exp(-k * hours)
        input_mg_dl_per_h = infused_ml * self.igm_content_mg_per_ml / self.plasma_volume_dl / hours
        base = self.baseline_igm_mg_dl
        self.titer_mg_dl = (
            base + (self.titer_mg_dl - base) * decay + input_mg_dl_per_h * (1 - decay) / k
        )
        return self.titer_mg_dl
