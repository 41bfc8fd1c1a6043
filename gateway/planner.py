"""From a day's volume to the rate for now (safety invariant 4, "never over-deliver").

Each day's dose runs as a continuous 24-h infusion in a window that starts at the infusion start
(day 1) and every 24 h after.  After an interruption the planner catches up with
``min(ceiling, remaining volume / remaining time in the window)``: it never plans more than
what remains, and what cannot be delivered by the end of the window is reported as a
shortfall, never carried into the next day.

Times here are seconds on the injected clock; volumes mL; rates mL/h.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from gateway.errors import InputError

SECONDS_PER_HOUR: Final[float] = 3600.0
DAY_S: Final[float] = 24.0 * SECONDS_PER_HOUR
#: The first infusion must start within this many hours of randomisation.
MAX_START_DELAY_H: Final[float] = 12.0


@dataclass(frozen=True)
class RatePlan:
    """The rate to run now and what the window can no longer deliver at the ceiling."""

    rate_ml_per_h: float
    remaining_volume_ml: float
    remaining_time_s: float
    #: Volume that will not be delivered by the window's end even at ``rate_ml_per_h``.
    projected_shortfall_ml: float
    #: True when the ceiling, not the even spread, set ``rate_ml_per_h``.
    ceiling_bound: bool


def _non_negative(field: str, value: float, unit: str) -> float:
    if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0.0):
        raise InputError(field, f"a finite number >= 0 {unit}", value)
    return float(value)


def plan_rate(
    *, remaining_volume_ml: float, remaining_time_s: float, ceiling_ml_per_h: float
) -> RatePlan:
    """The catch-up rate: ``min(ceiling, remaining volume / remaining time)``.

    By construction ``rate_ml_per_h x remaining_time_s / 3600 <= remaining_volume_ml``.
    """
    volume = _non_negative("remaining_volume_ml", remaining_volume_ml, "mL")
    time_s = _non_negative("remaining_time_s", remaining_time_s, "s")
    ceiling = _non_negative("ceiling_ml_per_h", ceiling_ml_per_h, "mL/h")
    if volume == 0.0 or time_s == 0.0:
        return RatePlan(0.0, volume, time_s, projected_shortfall_ml=volume, ceiling_bound=False)
    even_ml_per_h = volume * SECONDS_PER_HOUR / time_s  # inf for a vanishing time: fine
    ceiling_bound = even_ml_per_h > ceiling
    rate = ceiling if ceiling_bound else even_ml_per_h
    # Exactly 0 when the even spread fits: no float residue reported as a "shortfall".
    shortfall_ml = max(volume - rate * time_s / SECONDS_PER_HOUR, 0.0) if ceiling_bound else 0.0
    return RatePlan(
        rate_ml_per_h=rate,
        remaining_volume_ml=volume,
        remaining_time_s=time_s,
        projected_shortfall_ml=shortfall_ml,
        ceiling_bound=ceiling_bound,
    )


@dataclass(frozen=True)
class DayWindow:
    """A course day's 24-h window ``[start_s, end_s)`` on the wall clock (seconds).

    Day 1's window opens when the infusion starts; each later one when the previous one ends,
    or, for a titer-arm day whose titer came late under the ``shift`` policy, when it arrives.
    """

    start_s: float

    @property
    def end_s(self) -> float:
        return self.start_s + DAY_S

    def remaining_s(self, now_s: float) -> float:
        """Seconds left in this window at ``now_s``."""
        return max(self.end_s - now_s, 0.0)

    def over(self, now_s: float) -> bool:
        return now_s >= self.end_s


def shortfall_ml(prescribed_ml: float, delivered_ml: float) -> float:
    """Volume prescribed but not delivered in a day (never carried to the next day)."""
    return max(prescribed_ml - delivered_ml, 0.0)


@dataclass(frozen=True)
class StartCheck:
    """Whether the first infusion start respects the 12-h window from randomisation."""

    delay_h: float
    within_window: bool
    override_reason: str | None


def check_start_delay(
    randomised_at_s: float, start_at_s: float, *, override_reason: str | None = None
) -> StartCheck:
    """Refuse a first start later than 12 h after randomisation unless explicitly overridden.

    Times are wall-clock seconds.  An override needs a non-empty reason, which the caller
    journals.  Raises :class:`InputError` when refused.
    """
    delay_h = (start_at_s - randomised_at_s) / SECONDS_PER_HOUR
    if not math.isfinite(delay_h) or delay_h < 0.0:
        raise InputError("start_at", "at or after the randomisation time", start_at_s)
    within = delay_h <= MAX_START_DELAY_H
    reason = override_reason.strip() if override_reason else None
    if not within and not reason:
        raise InputError(
            "start_at",
            f"within {MAX_START_DELAY_H:g} h of randomisation (it is {delay_h:.1f} h); "
            "give an override reason to start later",
            start_at_s,
        )
    return StartCheck(delay_h=delay_h, within_window=within, override_reason=reason)
