"""The trumpet curve of IEC 60601-2-24, from a pump's own totalizer readings.

What the standard does (its flow-accuracy test for continuous delivery): the pump runs at a set
rate ``r``; the delivered volume is weighed at a fixed sampling interval; the analysis period is
the second hour of the run (the first hour is the start-up, shown separately).  For each
observation window ``P`` of 2, 5, 11, 19 and 31 minutes, every window of length ``P`` that fits
in the analysis period, slid one sampling interval at a time, gives a flow error

    E = 100 * (volume delivered in the window / P - r) / r        (percent)

and the curve plots, against ``P``, the largest and the smallest ``E`` found.  Short windows see
the pump's short-term pulsation, so the two lines open like a trumpet towards small ``P``.  The
overall mean error ``A = 100 * (Q - r) / r`` uses the mean flow ``Q`` of the whole analysis
period.

How this module follows it: ``samples`` are (time, cumulative volume) pairs of one steady period
(one set rate, infusing, no totalizer reset); the period starts at the first sample; the
analysis period is the standard's second hour (``analysis_start_after_s`` and
``analysis_period_s`` say otherwise if asked).  Windows start at every sample time that leaves
room for the window inside the analysis period (and at the period's start), and each window's
volume is the difference of the cumulative volume at its two ends.

Where it cannot follow it:

* The volume is the pump's own totalizer as read over its interface, not a balance: the curve
  shows how evenly the pump *says* it delivered, in the totalizer's steps (``resolution_ml``:
  one step is ``TrumpetPoint.resolution_pct`` of a window's nominal volume, which at low rates
  and short windows can exceed the pump's real error).  A pump whose totalizer counts motor
  steps rather than fluid hides an occlusion or a siphon from it.
* The sampling interval is the gateway's poll interval (or its journal's checkpoints), not the
  standard's 30 s, and need not be even.  Between samples the cumulative volume is taken as a
  straight line, so a window end that falls between two samples is interpolated: variation
  faster than the spacing is smoothed away, which narrows the trumpet.  Windows shorter than the
  largest gap between samples in the analysis period would be interpolation only: they are left
  out (``TrumpetCurve.omitted_windows_min``) rather than drawn.
* ``r`` is the rate the pump confirmed holding (its read-back), not an independent setting.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from gateway.planner import SECONDS_PER_HOUR
from gateway.report.reader import ReportError

#: The standard's observation windows (minutes).
OBSERVATION_WINDOWS_MIN: Final[tuple[int, ...]] = (2, 5, 11, 19, 31)
#: The analysis period starts an hour into the steady period: the standard's second hour.
ANALYSIS_START_AFTER_S: Final[float] = 3600.0
#: ... and lasts an hour.
ANALYSIS_PERIOD_S: Final[float] = 3600.0
#: Slack for sample times that should coincide (float sums of poll intervals).
_TIME_SLACK_S: Final[float] = 1e-6


class TrumpetError(ReportError):
    """No trumpet curve from these samples (too short a steady period, bad input)."""


@dataclass(frozen=True)
class TrumpetPoint:
    """One observation window: the largest and smallest error over all its windows."""

    window_min: int
    max_error_pct: float
    min_error_pct: float
    #: How many windows of this length were evaluated.
    windows: int
    #: One totalizer step as a percentage of this window's nominal volume.
    resolution_pct: float


@dataclass(frozen=True)
class TrumpetCurve:
    rate_ml_per_h: float
    #: The steady period's first sample (same time base as the samples).
    period_start_s: float
    analysis_start_s: float
    analysis_end_s: float
    #: The mean error over the whole analysis period (the standard's ``A``), percent.
    mean_error_pct: float
    #: One per observation window that could be evaluated, in window order.
    points: tuple[TrumpetPoint, ...]
    #: Samples inside the analysis period, and the largest gap between consecutive ones.
    samples: int
    max_sample_gap_s: float
    #: The totalizer's largest step in the analysis period.
    resolution_ml: float
    #: Observation windows shorter than ``max_sample_gap_s``: not evaluated.
    omitted_windows_min: tuple[int, ...]


def trumpet_curve(
    samples: Sequence[tuple[float, float]],
    rate_ml_per_h: float,
    *,
    resolution_ml: float | Sequence[float] = 0.0,
    analysis_start_after_s: float = ANALYSIS_START_AFTER_S,
    analysis_period_s: float = ANALYSIS_PERIOD_S,
    windows_min: Sequence[int] = OBSERVATION_WINDOWS_MIN,
) -> TrumpetCurve:
    """The trumpet curve of one steady period (see the module's docstring).

    ``samples``: (seconds, cumulative mL) in strictly increasing time, the first being the start
    of the steady period at ``rate_ml_per_h``.  ``resolution_ml``: the totalizer's step, one for
    all samples or one per sample (a pump's display may lose a digit as the volume grows); the
    largest in the analysis period counts.  TrumpetError if the period does not cover the
    analysis period, or the input is not a steady period's.
    """
    if not (math.isfinite(rate_ml_per_h) and rate_ml_per_h > 0.0):
        raise TrumpetError(f"rate_ml_per_h: must be above 0 (got {rate_ml_per_h!r})")
    steps_ml = (
        [float(resolution_ml)] * len(samples)
        if isinstance(resolution_ml, int | float)
        else [float(r) for r in resolution_ml]
    )
    if len(steps_ml) != len(samples) or not all(math.isfinite(r) and r >= 0.0 for r in steps_ml):
        raise TrumpetError("resolution_ml: one number of 0 or more, or one per sample")
    if not (analysis_start_after_s >= 0.0 and analysis_period_s > 0.0):
        raise TrumpetError(
            "the analysis period must start at or after the steady period and last above 0 s"
        )
    if len(samples) < 2:
        raise TrumpetError(f"a steady period needs at least 2 samples (got {len(samples)})")
    times = [float(t) for t, _ in samples]
    volumes = [float(v) for _, v in samples]
    if not all(math.isfinite(x) for x in (*times, *volumes)):
        raise TrumpetError("samples: times and volumes must be finite numbers")
    if any(b <= a for a, b in itertools.pairwise(times)):
        raise TrumpetError("samples: times must increase strictly")
    start = times[0] + analysis_start_after_s
    end = start + analysis_period_s
    if times[-1] < end - _TIME_SLACK_S:
        covered_h = (times[-1] - times[0]) / SECONDS_PER_HOUR
        needed_h = (analysis_start_after_s + analysis_period_s) / SECONDS_PER_HOUR
        raise TrumpetError(f"steady for {covered_h:.2f} h of the {needed_h:g} h needed")
    end = min(end, times[-1])

    def volume_at(t: float) -> float:
        """Cumulative volume at ``t``: a sample, or the straight line between two."""
        i = bisect.bisect_left(times, t - _TIME_SLACK_S)
        if i < len(times) and abs(times[i] - t) <= _TIME_SLACK_S:
            return volumes[i]
        t0, t1, v0, v1 = times[i - 1], times[i], volumes[i - 1], volumes[i]
        return v0 + (v1 - v0) * (t - t0) / (t1 - t0)

    # The gaps that matter: from the last sample at or before the analysis period's start to
    # the first at or after its end (an interpolated edge counts its whole gap).
    lo = bisect.bisect_right(times, start + _TIME_SLACK_S) - 1
    hi = bisect.bisect_left(times, end - _TIME_SLACK_S)
    max_gap_s = max((times[i + 1] - times[i] for i in range(lo, hi)), default=0.0)
    step_ml = max(steps_ml[lo : hi + 1])
    first = bisect.bisect_left(times, start - _TIME_SLACK_S)
    last = bisect.bisect_right(times, end + _TIME_SLACK_S)
    inside = times[first:last]
    rate_ml_per_s = rate_ml_per_h / SECONDS_PER_HOUR

    def error_pct(a: float, b: float) -> float:
        nominal_ml = rate_ml_per_s * (b - a)
        return 100.0 * (volume_at(b) - volume_at(a) - nominal_ml) / nominal_ml

    points: list[TrumpetPoint] = []
    omitted: list[int] = []
    for window_min in sorted(windows_min):
        window_s = window_min * 60.0
        if window_s > end - start + _TIME_SLACK_S:
            raise TrumpetError(
                f"window of {window_min} min: longer than the analysis period "
                f"({(end - start) / 60.0:g} min)"
            )
        if window_s < max_gap_s - _TIME_SLACK_S:
            omitted.append(window_min)
            continue
        starts = sorted({start, *(t for t in inside if t + window_s <= end + _TIME_SLACK_S)})
        errors = [error_pct(a, min(a + window_s, end)) for a in starts]
        points.append(
            TrumpetPoint(
                window_min=window_min,
                max_error_pct=max(errors),
                min_error_pct=min(errors),
                windows=len(errors),
                resolution_pct=100.0 * step_ml / (rate_ml_per_s * window_s),
            )
        )
    return TrumpetCurve(
        rate_ml_per_h=rate_ml_per_h,
        period_start_s=times[0],
        analysis_start_s=start,
        analysis_end_s=end,
        mean_error_pct=error_pct(start, end),
        points=tuple(points),
        samples=len(inside),
        max_sample_gap_s=max_gap_s,
        resolution_ml=step_ml,
        omitted_windows_min=tuple(omitted),
    )
