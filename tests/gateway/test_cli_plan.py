"""``infusion-gateway plan``: the CLI contract (numbers, JSON keys, exit code 2 on bad input)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.cli import build_parser, main
from gateway.cli.plan import compute_plan
from gateway.dosing import titer_daily_dose
from gateway.planner import DAY_S, plan_rate
from gateway.safety import ceiling_ml_per_h

TITER_70KG = ("--arm", "titer", "--weight-kg", "70", "--hematocrit", "0.35")


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, object]:
    assert main(["plan", *argv, "--json"]) == 0
    out = capsys.readouterr().out
    plan: dict[str, object] = json.loads(out)
    return plan


def test_plan_titer_worked_example(capsys: pytest.CaptureFixture[str]) -> None:
    plan = run_json(
        capsys, "--arm", "titer", "--weight-kg", "70", "--igm-mg-dl", "30", "--hematocrit", "0.35"
    )
    assert plan["arm"] == "titer"
    assert plan["weight_kg"] == 70.0
    assert plan["daily_volume_ml"] == 371.58
    assert plan["daily_dose_mg_per_kg"] == 265.4
    assert plan["rate_ml_per_h"] == 15.48
    assert plan["rate_mg_per_kg_per_h"] == 11.05  # 15.4826 x 50 / 70 = 11.059, rounded down
    assert plan["max_rate_ml_per_h"] == 28.0
    assert plan["course_days_max"] == 7
    assert plan["notes"] == []


def test_plan_flat_json(capsys: pytest.CaptureFixture[str]) -> None:
    plan = run_json(capsys, "--arm", "flat", "--weight-kg", "82.5")
    assert plan["daily_dose_mg_per_kg"] == 250.0
    assert plan["daily_volume_ml"] == 412.5
    assert plan["rate_ml_per_h"] == 17.18  # 17.1875 rounded down
    assert plan["rate_mg_per_kg_per_h"] == 10.41  # 17.1875 x 50 / 82.5 = 10.4167, rounded down
    assert plan["max_rate_ml_per_h"] == 33.0
    assert plan["course_days_max"] == 3


def test_plan_table_is_readable(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--arm", "flat", "--weight-kg", "82.5"]) == 0
    out = capsys.readouterr().out
    rows = dict(re.split(r"\s{2,}", line, maxsplit=1) for line in out.splitlines())
    assert rows["daily volume"] == "412.50 mL"
    assert rows["rate (24 h)"] == "17.18 mL/h"
    assert rows["dose rate"] == "10.41 mg/kg/h"
    assert rows["daily dose"] == "250.0 mg/kg"
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
    assert plan["rate_mg_per_kg_per_h"] == 8.0  # 28 mL/h x 20 mg/mL / 70 kg
    assert plan["projected_shortfall_ml"] == 203.0
    assert any("will not be given today" in note for note in plan["notes"])  # type: ignore[attr-defined]


def test_rule_9_daily_dose_rounded_down_not_to_nearest(capsys: pytest.CaptureFixture[str]) -> None:
    """Titer 50: 265.4167 mL x 50 / 70 kg = 189.583 mg/kg: shown 189.5, never 189.6."""
    plan = run_json(capsys, *TITER_70KG, "--igm-mg-dl", "50")
    assert plan["daily_dose_mg_per_kg"] == 189.5
    assert plan["rate_ml_per_h"] == 11.05
    assert plan["rate_mg_per_kg_per_h"] == 7.89  # 7.8993 rounded down
    assert main(["plan", *TITER_70KG, "--igm-mg-dl", "50"]) == 0
    rows = dict(
        re.split(r"\s{2,}", line, maxsplit=1) for line in capsys.readouterr().out.splitlines()
    )
    assert rows["daily dose"] == "189.5 mg/kg"
    assert rows["dose rate"] == "7.89 mg/kg/h"


@given(
    weight_kg=st.floats(min_value=30.0, max_value=250.0),
    titer=st.floats(min_value=0.0, max_value=1000.0),
    hematocrit=st.floats(min_value=0.10, max_value=0.70),
)
def test_rule_9_shown_doses_never_above_exact_and_within_resolution(
    weight_kg: float, titer: float, hematocrit: float
) -> None:
    argv = [
        "plan",
        "--arm",
        "titer",
        "--weight-kg",
        repr(weight_kg),
        "--igm-mg-dl",
        repr(titer),
        "--hematocrit",
        repr(hematocrit),
        "--confirm",  # the soft limits are not what this property is about
    ]
    plan = compute_plan(build_parser().parse_args(argv))
    dose = titer_daily_dose(weight_kg, titer, hematocrit)
    shown = plan["daily_dose_mg_per_kg"]
    assert shown <= dose.dose_mg_per_kg
    assert dose.dose_mg_per_kg - shown < 0.1 + 1e-9
    day = plan_rate(
        remaining_volume_ml=dose.volume_ml,
        remaining_time_s=DAY_S,
        ceiling_ml_per_h=ceiling_ml_per_h(weight_kg),
    )
    exact_mg_per_kg_per_h = day.rate_ml_per_h * 50.0 / weight_kg
    assert plan["rate_mg_per_kg_per_h"] <= exact_mg_per_kg_per_h
    assert exact_mg_per_kg_per_h - plan["rate_mg_per_kg_per_h"] < 0.01 + 1e-9
    assert plan["rate_ml_per_h"] <= day.rate_ml_per_h


def test_rule_9_enrolment_note_only_with_baseline(capsys: pytest.CaptureFixture[str]) -> None:
    """A day-2..7 titer of 60 mg/dL is not an enrolment titer: no note unless --baseline."""
    later_day = run_json(capsys, *TITER_70KG, "--igm-mg-dl", "60")
    assert later_day["notes"] == []
    baseline = run_json(capsys, *TITER_70KG, "--igm-mg-dl", "60", "--baseline")
    assert any("enrolment criterion" in note for note in baseline["notes"])  # type: ignore[attr-defined]
    explicit_no = run_json(capsys, *TITER_70KG, "--igm-mg-dl", "60", "--no-baseline")
    assert explicit_no["notes"] == []
    below = run_json(capsys, *TITER_70KG, "--igm-mg-dl", "59.9", "--baseline")
    assert below["notes"] == []


def test_baseline_help_says_default_no(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["plan", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "default: no" in help_text
    assert "--confirm" in help_text


TITER_SOFT_LINE = (
    "error: igm_mg_dl: 0.3 mg/dL is below the soft limit of 5 mg/dL: did you mean g/L? "
    "0.3 g/L = 30 mg/dL. Check the unit; to use 0.3 mg/dL as it is, run it again with --confirm"
)


def test_rule_7_titer_outside_soft_limit_exit_2_with_did_you_mean(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["plan", *TITER_70KG, "--igm-mg-dl", "0.3"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == TITER_SOFT_LINE + "\n"
    assert "Traceback" not in captured.err


def test_titer_outside_soft_limit_planned_with_confirm(
    capsys: pytest.CaptureFixture[str],
) -> None:
    plan = run_json(capsys, *TITER_70KG, "--igm-mg-dl", "0.3", "--confirm")
    assert plan["igm_mg_dl"] == 0.3
    assert plan["notes"][0] == (  # type: ignore[index]
        "confirmed outside soft limit: igm_mg_dl 0.3 mg/dL is below the soft limit of 5 mg/dL"
    )
    assert main(["plan", *TITER_70KG, "--igm-mg-dl", "0.3", "--confirm"]) == 0
    out = capsys.readouterr().out
    assert "NOTE: confirmed outside soft limit: igm_mg_dl 0.3 mg/dL" in out


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (
            ["--arm", "flat", "--weight-kg", "154"],
            "error: weight_kg: 154 kg is above the soft limit of 150 kg: did you mean pounds? "
            "154 lb = 69.9 kg. Check the unit; to use 154 kg as it is, run it again with --confirm",
        ),
        (
            ["--arm", "flat", "--weight-kg", "35"],
            "error: weight_kg: 35 kg is below the soft limit of 40 kg: check the weight; "
            "to use 35 kg as it is, run it again with --confirm",
        ),
        (
            [*TITER_70KG, "--igm-mg-dl", "600"],
            "error: igm_mg_dl: 600 mg/dL is above the soft limit of 400 mg/dL: did you mean mg/L? "
            "600 mg/L = 60 mg/dL. Check the unit; to use 600 mg/dL as it is, "
            "run it again with --confirm",
        ),
    ],
)
def test_soft_limits_exit_2_one_line_unless_confirmed(
    capsys: pytest.CaptureFixture[str], argv: list[str], line: str
) -> None:
    assert main(["plan", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == line + "\n"
    plan = run_json(capsys, *argv, "--confirm")
    assert plan["notes"][0].startswith("confirmed outside soft limit: ")  # type: ignore[index]


def test_confirm_does_not_pass_a_hard_limit(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--arm", "flat", "--weight-kg", "260", "--confirm"]) == 2
    assert "--weight-kg: must be a number from 30 to 250 kg" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--arm", "flat", "--weight-kg", "20"], "--weight-kg: must be a number from 30 to 250 kg"),
        (["--arm", "flat", "--weight-kg", "nan"], "--weight-kg"),
        (["--arm", "titer", "--weight-kg", "70", "--igm-mg-dl", "30"], "hematocrit"),
        (["--arm", "titer", "--weight-kg", "70", "--hematocrit", "0.3"], "--igm-mg-dl"),
        (
            ["--arm", "titer", "--weight-kg", "70", "--igm-mg-dl", "-5", "--hematocrit", "0.3"],
            "--igm-mg-dl: must be a number from 0 to 1000 mg/dL",
        ),
        (
            ["--arm", "titer", "--weight-kg", "70", "--igm-mg-dl", "30", "--hematocrit", "0.8"],
            "hematocrit: must be a number from 0.1 to 0.7",
        ),
        (
            ["--arm", "flat", "--weight-kg", "70", "--ceiling-ml-per-kg-per-h", "0.5"],
            "--ceiling-ml-per-kg-per-h",
        ),
        (["--arm", "bolus", "--weight-kg", "70"], "invalid choice"),
        (["--arm", "flat", "--weight-kg", "seventy"], "invalid float value"),
        (["--arm", "flat", "--weight-kg", "70", "--igm-mg-dl", "30"], "--igm-mg-dl"),
    ],
)
@pytest.mark.hazard("H-IN-01")
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
    assert "--weight-kg" in proc.stderr
