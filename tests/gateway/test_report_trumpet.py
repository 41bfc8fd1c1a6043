"""The IEC 60601-2-24 trumpet curve from totalizer samples (gateway/report/trumpet.py).

Worked examples with numbers done by hand, and properties: a pump that delivers exactly its rate
has no error at any window; one that delivers a fixed fraction of it has that error everywhere;
the windows come in order with max >= min, whatever the samples.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.report.trumpet import (
    ANALYSIS_PERIOD_S,
    ANALYSIS_START_AFTER_S,
    OBSERVATION_WINDOWS_MIN,
    TrumpetError,
    trumpet_curve,
)

RATE_ML_PER_H = 14.58


def regular(
    rate_ml_per_h: float, *, step_s: float = 60.0, hours: float = 2.0, factor: float = 1.0
) -> list[tuple[float, float]]:
    """Samples every ``step_s`` of a pump giving ``factor`` times ``rate_ml_per_h``."""
    count = round(hours * 3600.0 / step_s)
    return [(i * step_s, factor * rate_ml_per_h * i * step_s / 3600.0) for i in range(count + 1)]


def test_constant_flow_has_no_error_and_the_standard_windows() -> None:
    curve = trumpet_curve(regular(RATE_ML_PER_H), RATE_ML_PER_H)
    assert [p.window_min for p in curve.points] == list(OBSERVATION_WINDOWS_MIN)
    assert curve.analysis_start_s == ANALYSIS_START_AFTER_S
    assert curve.analysis_end_s == ANALYSIS_START_AFTER_S + ANALYSIS_PERIOD_S
    assert curve.mean_error_pct == pytest.approx(0.0, abs=1e-9)
    for point in curve.points:
        assert point.max_error_pct == pytest.approx(0.0, abs=1e-9)
        assert point.min_error_pct == pytest.approx(0.0, abs=1e-9)
    # Every window of P minutes in a 60-minute period, slid one 60-s sample at a time.
    assert [p.windows for p in curve.points] == [61 - p for p in OBSERVATION_WINDOWS_MIN]
    assert curve.samples == 61
    assert curve.max_sample_gap_s == 60.0
    assert curve.omitted_windows_min == ()


def test_a_pump_giving_two_percent_less_is_two_percent_low_everywhere() -> None:
    curve = trumpet_curve(regular(RATE_ML_PER_H, factor=0.98), RATE_ML_PER_H)
    assert curve.mean_error_pct == pytest.approx(-2.0)
    for point in curve.points:
        assert point.max_error_pct == pytest.approx(-2.0)
        assert point.min_error_pct == pytest.approx(-2.0)


def test_a_pause_shows_in_the_short_windows_and_fades_in_the_long_ones() -> None:
    """A 2-minute stop in the second hour: the 2-min window sees -100 %, the 31-min -6.45 %."""
    rate = 6.0  # 0.1 mL a minute
    samples = []
    volume = 0.0
    for minute in range(121):
        samples.append((minute * 60.0, volume))
        if not 90 <= minute < 92:  # no flow from minute 90 to 92
            volume += 0.1
    curve = trumpet_curve(samples, rate)
    by_window = {p.window_min: p for p in curve.points}
    assert by_window[2].min_error_pct == pytest.approx(-100.0)
    assert by_window[2].max_error_pct == pytest.approx(0.0, abs=1e-9)
    assert by_window[31].min_error_pct == pytest.approx(-200.0 / 31.0)
    assert curve.mean_error_pct == pytest.approx(-200.0 / 60.0)


def test_only_the_second_hour_counts() -> None:
    """A start-up deficit in the first hour does not enter the curve (the standard's rule)."""
    samples = regular(RATE_ML_PER_H)
    shifted = [(t, v - 1.0 if t >= 600.0 else v * 0.0) for t, v in samples]  # 1 mL lost early
    curve = trumpet_curve(shifted, RATE_ML_PER_H)
    assert curve.mean_error_pct == pytest.approx(0.0, abs=1e-9)


def test_resolution_band_uses_the_largest_step_in_the_analysis_period() -> None:
    samples = regular(RATE_ML_PER_H, hours=3.0)
    steps = [0.001 if t < 3600.0 else (0.01 if t <= 7200.0 else 0.1) for t, _ in samples]
    curve = trumpet_curve(samples, RATE_ML_PER_H, resolution_ml=steps)
    assert curve.resolution_ml == 0.01
    two_min = curve.points[0]
    assert two_min.resolution_pct == pytest.approx(100.0 * 0.01 / (RATE_ML_PER_H * 2.0 / 60.0))


def test_sparse_samples_leave_out_the_windows_they_cannot_resolve() -> None:
    """Readings 5 minutes apart (a thinned journal): the 2-min window would be interpolation."""
    curve = trumpet_curve(regular(RATE_ML_PER_H, step_s=300.0), RATE_ML_PER_H)
    assert curve.omitted_windows_min == (2,)
    assert [p.window_min for p in curve.points] == [5, 11, 19, 31]
    assert curve.max_sample_gap_s == 300.0


@pytest.mark.parametrize(
    ("samples", "rate", "match"),
    [
        (regular(RATE_ML_PER_H, hours=1.9), RATE_ML_PER_H, "2 h needed"),
        (regular(RATE_ML_PER_H), 0.0, "rate_ml_per_h"),
        (regular(RATE_ML_PER_H), math.nan, "rate_ml_per_h"),
        ([(0.0, 0.0)], RATE_ML_PER_H, "at least 2 samples"),
        ([(0.0, 0.0), (0.0, 1.0), (8000.0, 2.0)], RATE_ML_PER_H, "increase strictly"),
        ([(0.0, 0.0), (8000.0, math.inf)], RATE_ML_PER_H, "finite"),
    ],
)
def test_refuses_what_is_not_a_steady_period(
    samples: list[tuple[float, float]], rate: float, match: str
) -> None:
    with pytest.raises(TrumpetError, match=match):
        trumpet_curve(samples, rate)


# -- properties -----------------------------------------------------------------------------

_RATES = st.floats(min_value=0.1, max_value=1000.0)
#: Irregular sample spacing (a thinned journal: a checkpoint at most every 60 s).
_GAPS = st.lists(st.floats(min_value=5.0, max_value=60.0), min_size=1, max_size=40)


def _irregular(gaps: list[float], rate_ml_per_h: float, factor: float) -> list[tuple[float, float]]:
    t, samples = 0.0, [(0.0, 0.0)]
    while t < 2 * 3600.0:
        t += gaps[len(samples) % len(gaps)]
        samples.append((t, factor * rate_ml_per_h * t / 3600.0))
    return samples


@given(rate=_RATES, gaps=_GAPS)
def test_property_constant_flow_has_zero_error(rate: float, gaps: list[float]) -> None:
    curve = trumpet_curve(_irregular(gaps, rate, 1.0), rate)
    assert curve.mean_error_pct == pytest.approx(0.0, abs=1e-6)
    for point in curve.points:
        assert point.max_error_pct == pytest.approx(0.0, abs=1e-6)
        assert point.min_error_pct == pytest.approx(0.0, abs=1e-6)


@given(rate=_RATES, gaps=_GAPS, factor=st.floats(min_value=0.5, max_value=1.0))
def test_property_known_under_delivery_is_that_error(
    rate: float, gaps: list[float], factor: float
) -> None:
    curve = trumpet_curve(_irregular(gaps, rate, factor), rate)
    expected = 100.0 * (factor - 1.0)
    assert curve.mean_error_pct == pytest.approx(expected, abs=1e-6)
    for point in curve.points:
        assert point.max_error_pct == pytest.approx(expected, abs=1e-6)
        assert point.min_error_pct == pytest.approx(expected, abs=1e-6)


@given(
    rate=_RATES,
    gaps=_GAPS,
    increments=st.lists(st.floats(min_value=0.0, max_value=5.0), min_size=1, max_size=50),
)
def test_property_windows_are_ordered_and_max_is_at_least_min(
    rate: float, gaps: list[float], increments: list[float]
) -> None:
    """Any delivery pattern (a totalizer only counts up): ordered windows, max >= min."""
    samples = _irregular(gaps, rate, 1.0)
    volume, noisy = 0.0, []
    for i, (t, _) in enumerate(samples):
        noisy.append((t, volume))
        volume += increments[i % len(increments)]
    curve = trumpet_curve(noisy, rate)
    windows = [p.window_min for p in curve.points] + list(curve.omitted_windows_min)
    assert sorted(windows) == list(OBSERVATION_WINDOWS_MIN)
    assert [p.window_min for p in curve.points] == sorted(p.window_min for p in curve.points)
    for point in curve.points:
        assert point.max_error_pct >= point.min_error_pct
        assert point.min_error_pct >= -100.0 - 1e-9  # a totalizer never counts down
        assert point.windows >= 1
    counts = [p.windows for p in curve.points]
    assert counts == sorted(counts, reverse=True)  # longer windows fit fewer times
