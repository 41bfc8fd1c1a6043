"""The demo's course table, as a pharmacist checks it (docs/dosing.md, rule 8).

Per day: the titer used, the dose in mg/kg and mL, the 24-h rate in mL/h and mg/kg/h, what was
delivered and the shortfall, every number rounded down; the day's notes (cap, no infusion) below
the table; the ceiling in mL/h and mg/kg/h.  The table is checked once on a summary written here
(fast, with values that rounding to nearest would push up) and once on a real titer-arm run
(``slow``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import main
from gateway.cli.demo import render

HEADER = (
    "day   titer   mg/kg  prescribed mL    mL/h  mg/kg/h  delivered mL  short mL  titer drawn (UTC)"
)


def _summary(**changes: Any) -> dict[str, Any]:
    day1 = {
        "day": 1,
        "prescribed_ml": 371.5833,
        "dose_mg_per_kg": 265.47,
        "day_rate_ml_per_h": 15.4826,
        "day_rate_mg_per_kg_per_h": 11.0590,
        "titer_mg_dl": 30.0,
        "titer_drawn_at": "2026-11-29T05:00:59Z",
        "delivered_ml": 371.5,
        "shortfall_ml": 0.0833,
        "notes": [],
    }
    day2 = {
        "day": 2,
        "prescribed_ml": 0.0,
        "dose_mg_per_kg": 0.0,
        "day_rate_ml_per_h": 0.0,
        "day_rate_mg_per_kg_per_h": 0.0,
        "titer_mg_dl": 120.0,
        "titer_drawn_at": "2026-11-30T04:50:00Z",
        "delivered_ml": 0.0,
        "shortfall_ml": 0.0,
        "notes": ["no infusion today: titer 120 mg/dL is at or above 100 mg/dL"],
    }
    summary: dict[str, Any] = {
        "arm": "titer",
        "protocol": "newera",
        "weight_kg": 70.0,
        "faults": None,
        "days": [day1, day2],
        "max_commanded_rate_ml_per_h": 15.4899,
        "ceiling_ml_per_h": 28.0,
        "ceiling_mg_per_kg_per_h": 20.0,
        "alarms": [],
        "titers_posted": [{"for_day": 2, "igm_mg_dl": 120.0}],
        "final_state": "completed",
        "lifetime_volume_infused_ml": 371.5,
        "elapsed_real_s": 1.0,
    }
    summary.update(changes)
    return summary


def test_rule_8_demo_table_shows_doses_and_rates_in_both_units_rounded_down() -> None:
    lines = render(_summary()).splitlines()
    assert lines[0] == "demo: titer arm, newera pump, 70 kg"
    assert lines[1] == HEADER
    assert lines[2].split() == [
        "1",
        "30.0",
        "265.4",  # 265.47: rounded to nearest it would show 265.5 ...
        "371.58",
        "15.48",
        "11.05",  # ... 11.059 rounded to nearest would show 11.06
        "371.50",
        "0.08",
        "2026-11-29",  # when day 1's titer was drawn, to the minute
        "05:00",
    ]
    assert lines[3].split()[:3] == ["2", "120.0", "0.0"]
    assert "NOTE day 2: no infusion today: titer 120 mg/dL is at or above 100 mg/dL" in lines
    assert "highest rate commanded 15.48 mL/h; ceiling 28.00 mL/h = 20.00 mg/kg/h" in lines


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_rule_8_demo_table_of_a_real_titer_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A baseline of 4 mg/dL (confirmed: below the soft limit) is capped at 350 mg/kg.
    argv = ["demo", "--arm", "titer", "--protocol", "modbus", "--days", "2"]
    argv += ["--igm-mg-dl", "4", "--confirm", "--state-dir", str(tmp_path)]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == HEADER
    rows = [line.split() for line in lines[2:4]]
    assert [row[0] for row in rows] == ["1", "2"]
    assert rows[0][1:3] == ["4.0", "350.0"]
    # Each day names when its titer was drawn: day 2's is a later draw than day 1's baseline.
    assert (rows[0][8], rows[0][9]) < (rows[1][8], rows[1][9])
    for row in rows:
        mg_per_kg, ml, ml_per_h, mg_per_kg_per_h = (float(v) for v in row[2:6])
        # mL = mg/kg x 70 kg / 50 mg/mL; mL/h = mL / 24 h; mg/kg/h = mL/h x 50 / 70: each shown
        # rounded down, so each is at most its exact value and within one display step of it.
        assert ml == pytest.approx(mg_per_kg * 70 / 50, abs=0.1 * 70 / 50 + 0.01)
        assert ml_per_h <= ml / 24 + 1e-9
        assert ml_per_h == pytest.approx(ml / 24, abs=0.011)
        assert mg_per_kg_per_h == pytest.approx(ml_per_h * 50 / 70, abs=0.011)
        assert float(row[6]) <= ml  # delivered never above the prescription
    assert any(re.match(r"NOTE day 1: .*capped at 350 mg/kg/day", line) for line in lines)
    assert "ceiling 28.00 mL/h = 20.00 mg/kg/h" in "\n".join(lines)
