"""Hazard traceability for pytest: ``@pytest.mark.hazard("H-OV-01", ...)`` (docs/safety.md).

* The hazard ids have one home, the hazard table of docs/safety.md; :func:`load_registry` reads
  it.  A test naming an id the table does not hold is refused at collection (a usage error
  naming the test and the id), so a typo can never make a hazard look tested.
* Each marked test's outcome (node id, hazard ids, outcome, when) is merged into a results file
  (``hazard-results.json`` at the root, or ``--hazard-results`` / ``HAZARD_RESULTS``) at the end
  of the session.  Under xdist only the controlling process writes it: the workers hand their
  reports, hazard ids included (``user_properties``), to it.  The plain run and the
  ``-m slow -n 0`` run both add to the same file; ``python -m tests.trace`` reads it.
* ``--hazard-map PATH`` writes {node id: hazard ids} of the collected tests (``tests.trace``
  collects with it).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest

from gateway.timestamps import format_instant

MARKER: Final = "hazard"
#: The hazard table: the one home of the ids.
REGISTRY_PATH: Final = Path("docs") / "safety.md"
RESULTS_FILENAME: Final = "hazard-results.json"
RESULTS_ENV: Final = "HAZARD_RESULTS"
RESULTS_VERSION: Final = 1
#: ``H-`` two letters for the group, two digits: H-OV-01.
ID_PATTERN: Final = re.compile(r"H-[A-Z]{2}-\d{2}")
#: The safety invariants are numbered 1-7 (docs/design.md, "The seven invariants").
INVARIANTS: Final = range(1, 8)
_HEADER: Final = ("id", "hazard", "cause", "effect", "control in this project", "invariants")
_CELL_SPLIT: Final = re.compile(r"(?<!\\)\|")
#: Outcomes that count as evidence that a control works.
PASSING: Final = frozenset({"passed"})


class HazardRegistryError(ValueError):
    """The hazard table cannot be read: the message names the file, the line and the problem."""


class HazardResultsError(ValueError):
    """The results file cannot be read: the message names it."""


@dataclass(frozen=True)
class Hazard:
    """One row of the hazard table."""

    id: str
    hazard: str
    cause: str
    effect: str
    control: str
    invariants: tuple[int, ...]


def _cells(line: str) -> list[str]:
    inner = line.strip()
    if not (inner.startswith("|") and inner.endswith("|")):
        return []
    return [c.strip().replace("\\|", "|") for c in _CELL_SPLIT.split(inner[1:-1])]


def parse_registry(text: str, source: str = REGISTRY_PATH.as_posix()) -> dict[str, Hazard]:
    """The hazards of the table whose header is ``| id | hazard | ... | invariants |``."""
    lines = text.splitlines()
    start = next((n for n, line in enumerate(lines) if tuple(_cells(line)) == _HEADER), None)
    if start is None:
        raise HazardRegistryError(f"{source}: no hazard table (header: | {' | '.join(_HEADER)} |)")
    hazards: dict[str, Hazard] = {}
    for number, line in enumerate(lines[start + 2 :], start=start + 3):
        cells = _cells(line)
        if not cells:
            break
        where = f"{source}:{number}"
        if len(cells) != len(_HEADER):
            raise HazardRegistryError(f"{where}: {len(cells)} cells, expected {len(_HEADER)}")
        hazard_id, name, cause, effect, control, invariants = cells
        if not ID_PATTERN.fullmatch(hazard_id):
            raise HazardRegistryError(f"{where}: id {hazard_id!r} is not like H-OV-01")
        if hazard_id in hazards:
            raise HazardRegistryError(f"{where}: id {hazard_id} appears twice")
        if not all((name, cause, effect, control)):
            raise HazardRegistryError(f"{where}: {hazard_id} has an empty cell")
        numbers: tuple[int, ...] = ()
        if invariants != "-":
            try:
                numbers = tuple(int(n) for n in invariants.split(","))
            except ValueError:
                numbers = (0,)
            if not numbers or any(n not in INVARIANTS for n in numbers):
                raise HazardRegistryError(
                    f"{where}: invariants {invariants!r}: numbers 1-7 separated by commas, or -"
                )
        hazards[hazard_id] = Hazard(hazard_id, name, cause, effect, control, numbers)
    if not hazards:
        raise HazardRegistryError(f"{source}: the hazard table has no rows")
    return hazards


def load_registry(path: Path) -> dict[str, Hazard]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise HazardRegistryError(f"{path}: cannot read the hazard table: {exc}") from None
    return parse_registry(text, str(path))


def marked_ids(item: pytest.Item) -> tuple[str, ...]:
    """The hazard ids of every ``hazard`` marker on ``item`` (function, class, module, param)."""
    ids: list[str] = []
    for marker in item.iter_markers(MARKER):
        if not marker.args or marker.kwargs:
            raise pytest.UsageError(
                f"{item.nodeid}: @pytest.mark.hazard needs one or more hazard ids as "
                "positional arguments, e.g. hazard('H-OV-01')"
            )
        for value in marker.args:
            if not isinstance(value, str):
                raise pytest.UsageError(f"{item.nodeid}: hazard id {value!r} is not a string")
            if value not in ids:
                ids.append(value)
    return tuple(ids)


# -- results ---------------------------------------------------------------------------------


def read_results(path: Path) -> dict[str, dict[str, Any]]:
    """{node id: {"hazards", "outcome", "when"}} from ``path``; {} if it does not exist."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise HazardResultsError(f"{path}: cannot read hazard results: {exc}") from None
    if not (
        isinstance(data, dict)
        and data.get("version") == RESULTS_VERSION
        and isinstance(data.get("tests"), dict)
    ):
        raise HazardResultsError(f"{path}: not a hazard results file of version {RESULTS_VERSION}")
    tests: dict[str, dict[str, Any]] = data["tests"]
    return tests


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialise merges of concurrent pytest runs into one results file."""
    lock_path = path.with_name(path.name + ".lock")
    with lock_path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def merge_results(path: Path, records: Mapping[str, dict[str, Any]]) -> None:
    """Add ``records`` to the file at ``path``, replacing entries with the same node id."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path):
        try:
            tests = read_results(path)
        except HazardResultsError:
            tests = {}  # replaced: the trace then shows what this run recorded, no more
        tests.update(records)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(
            json.dumps({"version": RESULTS_VERSION, "tests": tests}, indent=1, sort_keys=True)
            + "\n",
            encoding="utf-8",
        )
        os.replace(tmp, path)


def results_path(config: pytest.Config) -> Path:
    given = config.getoption("hazard_results") or os.environ.get(RESULTS_ENV)
    return Path(given) if given else config.rootpath / RESULTS_FILENAME


# -- the plugin ------------------------------------------------------------------------------


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("hazard", "hazard traceability (docs/safety.md)")
    group.addoption(
        "--hazard-results",
        metavar="PATH",
        help=f"merge marked tests' outcomes into PATH (default: ${RESULTS_ENV} or "
        f"<rootdir>/{RESULTS_FILENAME})",
    )
    group.addoption(
        "--hazard-registry",
        metavar="PATH",
        help=f"the hazard table the ids come from (default: <rootdir>/{REGISTRY_PATH})",
    )
    group.addoption(
        "--hazard-map",
        metavar="PATH",
        help="write {node id: hazard ids} of the collected tests to PATH (python -m tests.trace)",
    )


def pytest_configure(config: pytest.Config) -> None:
    if not _is_worker(config):  # xdist workers hand their reports to the controller
        config.pluginmanager.register(_Recorder(config), "hazard-recorder")


def _check(
    item: pytest.Item, registry: Path, known: dict[str, Hazard] | None
) -> tuple[tuple[str, ...], dict[str, Hazard] | None]:
    """The item's hazard ids, each checked against the table (loaded on first need)."""
    ids = marked_ids(item)
    if ids and known is None:
        try:
            known = load_registry(registry)
        except HazardRegistryError as exc:
            raise pytest.UsageError(str(exc)) from None
    for hazard_id in ids:
        if known is not None and hazard_id not in known:
            raise pytest.UsageError(
                f"{item.nodeid}: hazard id {hazard_id!r} is not in the hazard table of "
                f"{registry} (ids there: {', '.join(sorted(known))})"
            )
    return ids, known


@pytest.hookimpl(tryfirst=True)  # before -m/-k deselect: a slow test's ids are checked too
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    given = config.getoption("hazard_registry")
    registry = Path(given) if given else config.rootpath / REGISTRY_PATH
    known: dict[str, Hazard] | None = None
    refused: list[pytest.Item] = []
    for item in items:
        try:
            ids, known = _check(item, registry, known)
        except pytest.UsageError as exc:
            if not _is_worker(config):
                raise
            # An xdist worker that raises here dies without a word: hand the refusal to the
            # controller as a collection error instead, which stops the run and shows it.
            report = pytest.CollectReport(item.nodeid, "failed", f"UsageError: {exc}", [])
            config.hook.pytest_collectreport(report=report)
            refused.append(item)
            continue
        if ids:
            item.user_properties.append((MARKER, list(ids)))
    for item in refused:
        items.remove(item)


def pytest_collection_finish(session: pytest.Session) -> None:
    target = session.config.getoption("hazard_map")
    if not target or _is_worker(session.config):
        return
    collected = {
        item.nodeid: dict(item.user_properties)[MARKER]
        for item in session.items
        if MARKER in dict(item.user_properties)
    }
    Path(target).write_text(json.dumps(collected, indent=1, sort_keys=True) + "\n")


def _outcome(report: pytest.TestReport, previous: str | None) -> str | None:
    """The test's outcome so far, from this phase's report (a failure is never undone)."""
    if previous == "failed":
        return previous
    if report.failed:
        return "failed"
    xfail = hasattr(report, "wasxfail")
    if report.when == "setup" and report.skipped:
        return "xfailed" if xfail else "skipped"
    if report.when == "call":
        if report.passed:
            return "xpassed" if xfail else "passed"
        return "xfailed" if xfail else "skipped"
    return previous


class _Recorder:
    """Records marked tests' outcomes in the controlling process and merges them at the end."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.records: dict[str, dict[str, Any]] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        hazards = dict(report.user_properties).get(MARKER)
        if not isinstance(hazards, list) or not hazards:
            return
        previous = self.records.get(report.nodeid)
        outcome = _outcome(report, previous["outcome"] if previous else None)
        if outcome is None:
            return
        self.records[report.nodeid] = {
            "hazards": list(hazards),
            "outcome": outcome,
            "when": format_instant(time.time()),
        }

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self) -> None:
        if self.records and not self.config.option.collectonly:
            merge_results(results_path(self.config), self.records)
