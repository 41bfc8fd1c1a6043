"""Whole courses end to end: the daemon drives the simulator over the real wire (or its in-process
line), in virtual time.

Both arms, both protocols.  Each day's delivered volume is within 0.5 % of the prescription when
nothing goes wrong, and the pump's own lifetime total agrees with the journal.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.demo import DEMO_LINKS, DemoOptions, run_demo
from gateway.dosing import Arm

pytestmark = pytest.mark.timeout(300)


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["newera", "modbus"])
def test_flat_course_end_to_end(protocol: str, tmp_path: Path) -> None:
    summary = run_demo(DemoOptions(arm=Arm.FLAT, protocol=protocol, state_dir=tmp_path))
    assert [d["day"] for d in summary["days"]] == [1, 2, 3]
    for day in summary["days"]:
        assert day["prescribed_ml"] == pytest.approx(350.0)
        assert day["delivered_ml"] == pytest.approx(day["prescribed_ml"], rel=0.005)
        assert day["delivered_ml"] <= day["prescribed_ml"] * 1.0001
    assert summary["final_state"] == "completed"
    assert summary["alarms"] == []
    assert summary["max_commanded_rate_ml_per_h"] <= summary["ceiling_ml_per_h"] == 28.0
    # The pump's own ground truth agrees with the journal to the totalizer's resolution: an
    # NE-1000 shows four digits (0.1 mL above 100 mL), so it may hide up to 0.1 mL a day.
    total = sum(d["delivered_ml"] for d in summary["days"])
    resolution_ml = 0.1 if protocol == "newera" else 0.001
    assert summary["lifetime_volume_infused_ml"] >= total - 0.001
    assert summary["lifetime_volume_infused_ml"] <= total + 3 * resolution_ml + 0.001


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["newera", "modbus"])
def test_titer_course_end_to_end(protocol: str, tmp_path: Path) -> None:
    summary = run_demo(DemoOptions(arm=Arm.TITER, protocol=protocol, days=3, state_dir=tmp_path))
    days = summary["days"]
    assert [d["day"] for d in days] == [1, 2, 3]
    assert days[0]["prescribed_ml"] == pytest.approx(371.583, abs=0.01)
    assert len(summary["titers_posted"]) >= 2
    # Each later day's dose follows the virtual patient's rising titer: smaller each day.
    assert days[1]["prescribed_ml"] < days[0]["prescribed_ml"]
    for day in days:
        assert day["delivered_ml"] == pytest.approx(day["prescribed_ml"], rel=0.005, abs=0.05)
        assert day["delivered_ml"] <= day["prescribed_ml"] * 1.0001 + 0.01
    assert summary["alarms"] == []
    assert summary["max_commanded_rate_ml_per_h"] <= 28.0


def _outcome(summary: dict[str, Any]) -> tuple[object, ...]:
    """What a course did: each day's numbers, the alarms and when, the pump's own total."""
    return (
        summary["days"],
        summary["alarms"],
        summary["lifetime_volume_infused_ml"],
        summary["max_commanded_rate_ml_per_h"],
        summary["final_state"],
    )


@pytest.mark.parametrize(("days", "faults"), [(2, None)])
def test_the_in_process_line_runs_the_same_course_as_the_wire(
    days: int, faults: str | None, tmp_path: Path
) -> None:
    """The demo on the simulator's in-process line is the same course, number for number, as
    over the pty: the same bytes (tests/simulator/test_in_process_link.py), the same clock."""
    outcomes = [
        _outcome(
            run_demo(
                DemoOptions(
                    arm=Arm.TITER,
                    link=link,
                    days=days,
                    faults=faults,
                    state_dir=tmp_path / link,
                )
            )
        )
        for link in DEMO_LINKS
    ]
    assert outcomes[0][0]  # days were run
    assert outcomes[0] == outcomes[1]


@pytest.mark.slow
@pytest.mark.parametrize("faults", ["occlusion", "power_loss"])
def test_the_in_process_line_runs_the_same_faulty_course_as_the_wire(
    faults: str, tmp_path: Path
) -> None:
    # Not link_drop: its 0.5-s reply delay equals the request timeout, and whether a reply that
    # late is in time depends on how the driver waits (docs/simulator.md, "The in-process line").
    test_the_in_process_line_runs_the_same_course_as_the_wire(1, faults, tmp_path)
