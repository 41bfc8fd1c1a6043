"""The only kind of rate a driver will send to a pump.

An :class:`ApprovedRate` is made by ``gateway.safety.check_rate`` and nowhere else (a test scans
the code base for other constructions).  Drivers refuse a bare number, and check the approval
once more themselves before a byte is sent, so a bug upstream cannot push a rate above the
ceiling it was approved against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ApprovedRate:
    """A rate in mL/h that passed the safety check against ``ceiling_ml_per_h``."""

    rate_ml_per_h: float
    ceiling_ml_per_h: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rate_ml_per_h) and math.isfinite(self.ceiling_ml_per_h)):
            raise ValueError("an approved rate and its ceiling must be finite numbers")
        if self.rate_ml_per_h < 0.0 or self.rate_ml_per_h > self.ceiling_ml_per_h:
            raise ValueError(
                f"rate_ml_per_h {self.rate_ml_per_h!r} is outside 0..{self.ceiling_ml_per_h!r}"
            )
