"""The planner: continuous 24-h rate, catch-up bounded by ceiling and what remains (invariant 4)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import InputError
from gateway.planner import DAY_S, DayWindow, check_start_delay, plan_rate, shortfall_ml

volumes = st.floats(min_value=0.0, max_value=2000.0)
times = st.floats(min_value=0.0, max_value=DAY_S)
ceilings = st.floats(min_value=12.0, max_value=100.0)


def test_even_rate_over_a_full_day() -> None:
    plan = plan_rate(remaining_volume_ml=371.5833, remaining_time_s=DAY_S, ceiling_ml_per_h=28.0)
    assert plan.rate_ml_per_h == pytest.approx(15.4826, abs=1e-4)
    assert plan.projected_shortfall_ml == pytest.approx(0.0)
    assert not plan.ceiling_bound


@pytest.mark.hazard("H-UN-01")
def test_catch_up_after_interruption_is_bounded_by_ceiling_and_reports_shortfall() -> None:
    # 8 h lost: 371.58 mL over 16 h would need 23.2 mL/h (< 28): caught up in full.
    plan = plan_rate(remaining_volume_ml=371.58, remaining_time_s=16 * 3600, ceiling_ml_per_h=28.0)
    assert plan.rate_ml_per_h == pytest.approx(371.58 / 16)
    assert plan.projected_shortfall_ml == pytest.approx(0.0)
    # 12 h lost: would need 30.97 mL/h: capped at 28, 35.58 mL short, reported.
    plan = plan_rate(remaining_volume_ml=371.58, remaining_time_s=12 * 3600, ceiling_ml_per_h=28.0)
    assert plan.rate_ml_per_h == 28.0
    assert plan.ceiling_bound
    assert plan.projected_shortfall_ml == pytest.approx(371.58 - 28.0 * 12)


@given(volume=volumes, time_s=times, ceiling=ceilings)
@pytest.mark.hazard("H-OV-03")
def test_invariant_4_catch_up_never_plans_more_than_remains(
    volume: float, time_s: float, ceiling: float
) -> None:
    plan = plan_rate(remaining_volume_ml=volume, remaining_time_s=time_s, ceiling_ml_per_h=ceiling)
    assert 0.0 <= plan.rate_ml_per_h <= ceiling
    assert plan.rate_ml_per_h * time_s / 3600.0 <= volume * (1 + 1e-9) + 1e-12
    delivered = min(volume, plan.rate_ml_per_h * time_s / 3600.0)
    assert plan.projected_shortfall_ml == pytest.approx(volume - delivered, abs=1e-9)


def test_window_over_means_zero_rate_and_all_remaining_is_shortfall() -> None:
    plan = plan_rate(remaining_volume_ml=10.0, remaining_time_s=0.0, ceiling_ml_per_h=28.0)
    assert plan.rate_ml_per_h == 0.0
    assert plan.projected_shortfall_ml == 10.0


def test_day_windows_are_24_h_from_their_start() -> None:
    window = DayWindow(start_s=1000.0)
    assert window.end_s == 1000.0 + DAY_S
    assert window.remaining_s(1000.0 + 3600.0) == DAY_S - 3600.0
    assert not window.over(1000.0 + DAY_S - 0.001)
    assert window.over(1000.0 + DAY_S)
    assert window.remaining_s(1000.0 + 2 * DAY_S) == 0.0


@pytest.mark.hazard("H-UN-01")
def test_shortfall_belongs_to_its_day() -> None:
    assert shortfall_ml(100.0, 90.0) == 10.0
    assert shortfall_ml(100.0, 100.2) == 0.0


def test_first_start_within_12_h_of_randomisation() -> None:
    ok = check_start_delay(0.0, 11.5 * 3600)
    assert ok.within_window
    assert ok.override_reason is None
    with pytest.raises(InputError, match=r"start_at: must be within 12 h of randomisation"):
        check_start_delay(0.0, 12.5 * 3600)
    late = check_start_delay(0.0, 13 * 3600, override_reason=" pump unavailable ")
    assert not late.within_window
    assert late.override_reason == "pump unavailable"
    with pytest.raises(InputError, match="start_at"):
        check_start_delay(100.0, 0.0)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"remaining_volume_ml": -1.0}, "remaining_volume_ml"),
        ({"remaining_time_s": float("nan")}, "remaining_time_s"),
        ({"ceiling_ml_per_h": float("inf")}, "ceiling_ml_per_h"),
    ],
)
@pytest.mark.hazard("H-IN-01")
def test_invariant_7_planner_refuses_bad_numbers(kwargs: dict[str, float], field: str) -> None:
    args = {"remaining_volume_ml": 10.0, "remaining_time_s": 3600.0, "ceiling_ml_per_h": 28.0}
    args.update(kwargs)
    with pytest.raises(InputError, match=field):
        plan_rate(**args)
