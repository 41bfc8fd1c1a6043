"""``infusion-gateway plan``: the CLI contract (numbers, JSON keys, exit code 2 on bad input)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from gateway.cli import main


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, object]:
    assert main(["plan", *argv, "--json"]) == 0
    out = capsys.readouterr().out
    return json.loads(out)


def test_plan_titer_worked_example(capsys: pytest.CaptureFixture[str]) -> None:
    plan = run_json(
        capsys, "--arm", "titer", "--weight-kg", "70", "--igm-mg-dl", "30", "--hematocrit", "0.35"
    )
    assert plan["arm"] == "titer"
    assert plan["weight_kg"] == 70.0
    assert plan["daily_volume_ml"] == 371.58
    assert plan["daily_dose_mg_per_kg"] == 265.4
    assert plan["rate_ml_per_h"] == 15.48
    assert plan["max_rate_ml_per_h"] == 28.0
    assert plan["course_days_max"] == 7


def test_plan_flat_json(capsys: pytest.CaptureFixture[str]) -> None:
    plan = run_json(capsys, "--arm", "flat", "--weight-kg", "82.5")
    assert plan["daily_dose_mg_per_kg"] == 250.0
    assert plan["daily_volume_ml"] == 412.5
    assert plan["rate_ml_per_h"] == 17.18  # 17.1875 rounded down
    assert plan["max_rate_ml_per_h"] == 33.0
    assert plan["course_days_max"] == 3


def test_plan_table_is_readable(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--arm", "flat", "--weight-kg", "82.5"]) == 0
    out = capsys.readouterr().out
    rows = dict(re.split(r"\s{2,}", line, maxsplit=1) for line in out.splitlines())
    assert rows["daily volume"] == "412.50 mL"
    assert rows["rate (24 h)"] == "17.18 mL/h"
    assert rows["ceiling"].startswith("33.00 mL/h")


def test_plan_reports_ceiling_bound_shortfall(capsys: pytest.CaptureFixture[str]) -> None:
    plan = run_json(
        capsys,
        "--arm",
        "flat",
        "--weight-kg",
        "70",
        "--concentration-mg-per-ml",
        "20",
        "--igm-content-mg-per-ml",
        "2",
    )
    # 875 mL/day needs 36.46 mL/h; the ceiling is 28 mL/h: 203 mL cannot be given today.
    assert plan["rate_ml_per_h"] == 28.0
    assert plan["projected_shortfall_ml"] == 203.0
    assert any("will not be given today" in note for note in plan["notes"])  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--arm", "flat", "--weight-kg", "20"], "weight_kg: must be a number from 30 to 250 kg"),
        (["--arm", "flat", "--weight-kg", "nan"], "weight_kg"),
        (["--arm", "titer", "--weight-kg", "70", "--igm-mg-dl", "30"], "hematocrit"),
        (["--arm", "titer", "--weight-kg", "70", "--hematocrit", "0.3"], "igm_mg_per_dl"),
        (
            ["--arm", "titer", "--weight-kg", "70", "--igm-mg-dl", "-5", "--hematocrit", "0.3"],
            "igm_mg_per_dl: must be a number from 0 to 1000 mg/dL",
        ),
        (
            ["--arm", "titer", "--weight-kg", "70", "--igm-mg-dl", "30", "--hematocrit", "0.8"],
            "hematocrit: must be a number from 0.1 to 0.7",
        ),
        (
            ["--arm", "flat", "--weight-kg", "70", "--ceiling-ml-per-kg-per-h", "0.5"],
            "ceiling_ml_per_kg_per_h",
        ),
        (["--arm", "bolus", "--weight-kg", "70"], "invalid choice"),
        (["--arm", "flat", "--weight-kg", "seventy"], "invalid float value"),
        (["--arm", "flat", "--weight-kg", "70", "--igm-mg-dl", "30"], "igm_mg_dl"),
    ],
)
def test_invariant_7_plan_bad_input_exit_2_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main(["plan", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert message in captured.err
    assert len(captured.err.strip().splitlines()) == 1


def test_console_script_bad_input_has_no_traceback() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "plan", "--arm", "flat", "--weight-kg", "inf"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "weight_kg" in proc.stderr
