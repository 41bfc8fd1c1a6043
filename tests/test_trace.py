"""The hazard traceability itself: the plugin refuses unknown ids and records outcomes, the trace
fails on an untested hazard, and docs/safety.md claims only controls the code has."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from gateway.course_state import AlarmCode
from tests import trace
from tests.hazard_plugin import HazardRegistryError, load_registry, parse_registry

pytest_plugins = ["pytester"]

TABLE = """\
# Hazards

| id | hazard | cause | effect | control in this project | invariants |
| --- | --- | --- | --- | --- | --- |
| H-XX-01 | too fast | a bug | harm | `check_rate` | 1, 2 |
| H-XX-02 | too late | a lab | less | `open_day` | - |
"""

INI = "[pytest]\nmarkers =\n    hazard(*ids): hazards this test proves\n"


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeini(INI)
    pytester.makefile(".md", safety=TABLE)
    return pytester


def run(project: pytest.Pytester, results: Path, *args: str) -> pytest.RunResult:
    return project.runpytest(
        "-p",
        "tests.hazard_plugin",
        "-p",
        "no:cacheprovider",
        f"--hazard-registry={project.path / 'safety.md'}",
        f"--hazard-results={results}",
        *args,
    )


# -- the plugin ------------------------------------------------------------------------------


def test_an_unknown_hazard_id_is_refused_at_collection_naming_the_test_and_the_id(
    project: pytest.Pytester,
) -> None:
    project.makepyfile(
        test_typo="""
        import pytest

        @pytest.mark.hazard("H-XX-01", "H-XX-09")
        def test_fast():
            assert True
        """
    )
    result = run(project, project.path / "results.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*test_typo.py::test_fast: hazard id 'H-XX-09' is not in*"])
    assert not (project.path / "results.json").exists()


def test_a_hazard_marker_without_ids_is_refused(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_empty="""
        import pytest

        @pytest.mark.hazard
        def test_nothing():
            assert True
        """
    )
    result = run(project, project.path / "results.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*test_empty.py::test_nothing: @pytest.mark.hazard needs*"])


def test_outcomes_are_recorded_and_merged_across_runs(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    results = project.path / "results.json"
    project.makepyfile(
        test_runs="""
        import os
        import pytest

        @pytest.mark.hazard("H-XX-01")
        @pytest.mark.parametrize("n", [1, 2])
        def test_fast(n):
            assert n > 0

        @pytest.mark.hazard("H-XX-02")
        def test_late():
            assert os.environ.get("LATE_FIXED") == "1"

        def test_unmarked():
            assert True
        """
    )
    assert run(project, results).ret == pytest.ExitCode.TESTS_FAILED
    first = json.loads(results.read_text())["tests"]
    assert {n: r["outcome"] for n, r in first.items()} == {
        "test_runs.py::test_fast[1]": "passed",
        "test_runs.py::test_fast[2]": "passed",
        "test_runs.py::test_late": "failed",
    }
    assert first["test_runs.py::test_late"]["hazards"] == ["H-XX-02"]
    monkeypatch.setenv("LATE_FIXED", "1")
    assert run(project, results, "-k", "late").ret == pytest.ExitCode.OK
    merged = json.loads(results.read_text())["tests"]
    assert merged["test_runs.py::test_late"]["outcome"] == "passed"
    assert merged["test_runs.py::test_fast[1]"] == first["test_runs.py::test_fast[1]"]


def test_a_table_with_a_repeated_id_is_refused_naming_the_line() -> None:
    doubled = TABLE + "| H-XX-01 | again | a | b | c | 3 |\n"
    with pytest.raises(HazardRegistryError, match=r"safety\.md:7: id H-XX-01 appears twice"):
        parse_registry(doubled, "safety.md")


# -- the trace -------------------------------------------------------------------------------

HAZARDS = parse_registry(TABLE)


def traced(
    collected: Mapping[str, Sequence[str]], results: Mapping[str, dict[str, str]]
) -> list[trace.HazardTrace]:
    return trace.build(HAZARDS, collected, results)


def result(outcome: str) -> dict[str, str]:
    return {"outcome": outcome, "when": "2026-01-01T00:00:00Z"}


def test_a_hazard_with_no_test_fails_the_trace() -> None:
    collected = {"tests/test_a.py::test_fast": ["H-XX-01"]}
    traces = traced(collected, {"tests/test_a.py::test_fast": result("passed")})
    assert [t.status for t in traces] == ["passed", "NO TEST"]
    assert trace.failures(traces, require_results=False, invariant_problems=[]) == [
        "H-XX-02: no test names this hazard"
    ]


@pytest.mark.parametrize(
    ("outcomes", "status"),
    [
        (["passed", "failed"], "FAILED"),
        (["skipped", None], "no passing result"),
        (["passed", "skipped"], "passed"),
    ],
)
def test_require_results_fails_a_hazard_with_a_failure_or_no_pass(
    outcomes: list[str | None], status: str
) -> None:
    collected = {f"t.py::test_{n}": ["H-XX-01", "H-XX-02"] for n in range(len(outcomes))}
    results = {f"t.py::test_{n}": result(o) for n, o in enumerate(outcomes) if o is not None}
    traces = traced(collected, results)
    assert {t.status for t in traces} == {status}
    problems = trace.failures(traces, require_results=True, invariant_problems=[])
    assert bool(problems) is (status != "passed")
    assert trace.failures(traces, require_results=False, invariant_problems=[]) == []


def test_a_parametrised_test_counts_once_and_fails_if_any_case_failed() -> None:
    collected = {"t.py::test_x[a]": ["H-XX-01"], "t.py::test_x[b]": ["H-XX-01"]}
    results = {"t.py::test_x[a]": result("passed"), "t.py::test_x[b]": result("failed")}
    (first, _) = traced(collected, results)
    assert [(t.test, t.outcome) for t in first.tests] == [("t.py::test_x", "failed")]


def test_an_invariant_test_must_carry_a_hazard_of_its_invariant() -> None:
    collected = {
        "t.py::test_invariant_1_ok": ["H-XX-01"],
        "t.py::test_invariant_3_wrong": ["H-XX-02"],
    }
    (problem,) = trace.invariant_mismatches(HAZARDS, collected)
    assert problem.startswith("t.py::test_invariant_3_wrong: names invariant 3")
    everything = [*collected, "t.py::test_invariant_2_unmarked[x]"]
    assert trace.unmarked_invariant_tests(everything, collected) == [
        "t.py::test_invariant_2_unmarked"
    ]


def test_the_command_prints_the_table_and_exits_1_on_an_untested_hazard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = tmp_path / "safety.md"
    registry.write_text(TABLE)
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"version": 1, "tests": {"t.py::test_fast": result("passed")}}))
    collected = {"t.py::test_fast": ["H-XX-01"]}
    monkeypatch.setattr(trace, "collect", lambda *_: (collected, list(collected)))
    code = trace.main(["--registry", str(registry), "--results", str(results)])
    out, err = capsys.readouterr()
    assert code == 1
    assert "H-XX-01  too fast  [passed]" in out
    assert "passed     t.py::test_fast  (2026-01-01T00:00:00Z)" in out
    assert "trace: H-XX-02: no test names this hazard" in err


# -- docs/safety.md --------------------------------------------------------------------------

_PY_NAME = re.compile(r"[A-Za-z_][\w.]*")


def test_every_control_cites_files_and_names_that_exist() -> None:
    """Each backticked ``path.py`` in a control exists, and each backticked name is in one of
    the row's files (or is an alarm code): the table claims no control the code lacks."""
    alarm_codes = {code.value for code in AlarmCode}
    problems = []
    for hazard in load_registry(trace.REGISTRY).values():
        cited = re.findall(r"`([^`]+)`", hazard.control)
        files = [trace.ROOT / c for c in cited if c.endswith(".py")]
        problems += [f"{hazard.id}: no file {f}" for f in files if not f.is_file()]
        text = "\n".join(f.read_text() for f in files if f.is_file())
        for name in cited:
            if name.endswith(".py") or not _PY_NAME.fullmatch(name) or name in alarm_codes:
                continue
            if not re.search(rf"\b{re.escape(name.rpartition('.')[2])}\b", text):
                problems.append(f"{hazard.id}: {name!r} is in none of its files")
    assert problems == []


def test_the_invariant_section_is_generated_from_the_table_and_current() -> None:
    names = trace.invariant_names(trace.DESIGN.read_text())
    assert sorted(names) == list(range(1, 8))
    hazards = load_registry(trace.REGISTRY)
    assert all(any(n in h.invariants for h in hazards.values()) for n in names)
    fresh = trace.invariant_section(hazards, names)
    assert trace.current_section(trace.REGISTRY.read_text()) == fresh, (
        "docs/safety.md is stale: python -m tests.trace --write-doc"
    )
