"""The shipped Prometheus files work: alert rules, their promtool unit tests, the scrape config.

These run ``promtool`` (from the ``prometheus`` package; ``.ci/run`` installs it).  Without it they
are skipped, unless ``REQUIRE_PROMTOOL=1`` (set by ``.ci/run``): then they fail, so CI cannot pass
without having run them.  The checks that need no promtool (every alert has ``for``, a severity,
annotations and tests both ways; every metric a rule reads exists) always run.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.gateway.conftest import model_gateway

PROMETHEUS = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
ALERTS = PROMETHEUS / "alerts.yml"
ALERTS_TEST = PROMETHEUS / "alerts_test.yml"
SCRAPE_CONFIG = PROMETHEUS / "prometheus.example.yml"
JOB = "infusion-gateway"
PROMTOOL_TIMEOUT_S = 120
#: What ``promtool check metrics`` may say of the exposition: the rate metrics keep the clinical
#: unit mL/h in their names (docs/operations.md says why).  Anything else is a finding.
ACCEPTED_METRIC_LINT = {
    "infusion_gateway_ceiling_ml_per_h metric names should not contain abbreviated units",
    "infusion_gateway_commanded_rate_ml_per_h metric names should not contain abbreviated units",
}


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("REQUIRE_PROMTOOL") == "1":
            pytest.fail(
                "REQUIRE_PROMTOOL=1 but promtool is not on PATH (apt-get install prometheus)"
            )
        pytest.skip(
            "promtool not installed (apt-get install prometheus); CI sets REQUIRE_PROMTOOL=1"
        )
    return path


def run_promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=PROMTOOL_TIMEOUT_S,
        check=False,
    )


def alert_blocks() -> dict[str, str]:
    """Each alert's name and its text in alerts.yml (from its ``- alert:`` to the next)."""
    parts = re.split(r"^\s*- alert: *", ALERTS.read_text(encoding="utf-8"), flags=re.M)[1:]
    return {part.split("\n", 1)[0].strip(): part for part in parts}


def alert_cases() -> list[tuple[str, bool]]:
    """(alert name, expects it firing) for each case in alerts_test.yml."""
    text = ALERTS_TEST.read_text(encoding="utf-8")
    parts = re.split(r"^\s*- alertname: *", text, flags=re.M)[1:]
    cases = []
    for part in parts:
        name = part.split("\n", 1)[0].strip()
        body = re.split(r"^\s*- (?:name|interval):", part, flags=re.M)[0]  # up to the next group
        cases.append((name, "exp_alerts:" in body))
    return cases


# -- without promtool ------------------------------------------------------------------------


def test_every_alert_has_for_severity_and_what_to_do() -> None:
    blocks = alert_blocks()
    assert len(blocks) >= 10
    for name, block in blocks.items():
        assert re.search(r"^\s+for: *\d+[smh]\s*$", block, re.M), f"{name}: no for:"
        assert re.search(r"^\s+severity: *(critical|warning)\s*$", block, re.M), name
        assert re.search(r"^\s+summary: ", block, re.M), f"{name}: no summary"
        assert re.search(r"^\s+description: ", block, re.M), f"{name}: no description"
        assert f'job="{JOB}"' in block, f"{name}: does not select job={JOB}"


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    cases = alert_cases()
    for name in alert_blocks():
        assert (name, True) in cases, f"{name}: no test where it fires"
        assert (name, False) in cases, f"{name}: no test where it does not fire"
    assert {name for name, _ in cases} <= set(alert_blocks()), "a test names an unknown alert"


def test_rules_read_only_metrics_the_gateway_exports(tmp_path: Path) -> None:
    gateway = model_gateway(tmp_path)
    try:
        asyncio.run(gateway.tick())
        exposition = gateway.metrics.render().decode()
    finally:
        asyncio.run(gateway.shutdown("test over"))
    # Families by their TYPE lines (a labelled series appears only once set, e.g. an alarm).
    exported = set(re.findall(r"^# TYPE (infusion_gateway_\w+) ", exposition, re.M))
    read = {
        re.sub(r"_(bucket|sum|count)$", "", name)
        for name in re.findall(r"\binfusion_gateway_\w+", ALERTS.read_text(encoding="utf-8"))
    }
    assert read, "the rules read no gateway metric"
    assert read <= exported, f"rules read metrics the gateway does not export: {read - exported}"


def test_operations_guide_lists_every_alert() -> None:
    guide = (PROMETHEUS.parents[1] / "docs" / "operations.md").read_text(encoding="utf-8")
    section = guide.split("## Watching a fleet: Prometheus and alert rules", 1)[1].split("\n## ")[0]
    for name in alert_blocks():
        assert f"| `{name}` |" in section, f"{name} is not in docs/operations.md's alert table"


# -- with promtool ---------------------------------------------------------------------------


def test_promtool_checks_the_rules() -> None:
    result = run_promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    result = run_promtool("test", "rules", str(ALERTS_TEST))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_checks_the_example_scrape_config() -> None:
    result = run_promtool("check", "config", str(SCRAPE_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr


def test_example_scrape_config_labels_every_gateway_with_job_site_and_ward() -> None:
    # Static targets are there at once; promtool waits out the whole timeout regardless.
    result = run_promtool("check", "service-discovery", "--timeout=3s", str(SCRAPE_CONFIG), JOB)
    assert result.returncode == 0, result.stdout + result.stderr
    targets = [target["labels"] for target in json.loads(result.stdout)]
    assert len(targets) >= 2
    for labels in targets:
        assert labels["job"] == JOB
        assert labels["__metrics_path__"] == "/metrics"
        assert labels["site"], labels
        assert labels["ward"], labels
    by_address = {labels["__address__"]: labels for labels in targets}
    relabelled = by_address["picu-gw1.north.example.org:8470"]  # no labels of its own
    assert (relabelled["site"], relabelled["ward"]) == ("north", "picu")


def test_promtool_lints_the_exposition(tmp_path: Path) -> None:
    gateway = model_gateway(tmp_path)
    try:
        asyncio.run(gateway.tick())
        gateway.metrics.outbox_rejected("bed1")
        exposition = gateway.metrics.render().decode()
    finally:
        asyncio.run(gateway.shutdown("test over"))
    result = run_promtool("check", "metrics", stdin=exposition)
    findings = {line.strip() for line in (result.stdout + result.stderr).splitlines()} - {""}
    assert findings <= ACCEPTED_METRIC_LINT, findings - ACCEPTED_METRIC_LINT
