"""docs/design.md stays true to the code.

* Its transitions table is ``gateway.course_state.TRANSITIONS``, exactly, both ways.
* Its alarm table lists every ``AlarmCode`` and nothing else, and says "advisory" for exactly the
  codes the controller raises without stopping the pump.
* Each of the seven invariants has its paragraph, and each paragraph names at least one test of
  its own (``test_invariant_N_...``) that exists; every ``path::test`` it cites exists there.
* The sections other files cite (``docs/design.md, "The course state"``) exist.

Only files are read: no imports beyond the course state, no subprocesses.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest

from gateway.course_state import TRANSITIONS, AlarmCode, ChannelState

ROOT = Path(__file__).resolve().parents[1]
DESIGN = ROOT / "docs" / "design.md"
CONTROLLER = ROOT / "gateway" / "controller.py"
THIS_FILE = Path(__file__).resolve()

#: Sections other files cite by name; they must keep these titles.
CITED_SECTIONS = ("The seven invariants", "The course state")
#: Where citations of design.md sections may be (``docs/design.md, "Title"``).
CITING_DIRS = ("protocol", "drivers", "simulator", "gateway", "tests", "docs", "bench")

_CODE_SPAN = re.compile(r"`([^`]+)`")
_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*$")
_CELL_SPLIT = re.compile(r"(?<!\\)\|")
_TEST_DEF = re.compile(r"^\s*(?:async\s+)?def\s+(test_\w+)\s*\(", re.MULTILINE)
_CITED_TEST = re.compile(r"\b((?:[\w.-]+/)*[\w.-]+\.py)::(test_\w+)")
_INVARIANT_TEST = re.compile(r"\btest_invariant_(\d+)_\w+")
_SECTION_CITATION = re.compile(r'docs/design\.md,\s*(?:section\s+)?"([^"]+)"')


@cache
def design_text() -> str:
    return DESIGN.read_text(encoding="utf-8")


def sections(text: str) -> dict[str, str]:
    """Heading title -> its body, up to the next heading of the same or a higher level."""
    lines = text.splitlines()
    headings = [
        (index, len(match.group(1)), match.group(2))
        for index, line in enumerate(lines)
        if (match := _HEADING.match(line))
    ]
    found: dict[str, str] = {}
    for position, (index, level, title) in enumerate(headings):
        end = len(lines)
        for later_index, later_level, _ in headings[position + 1 :]:
            if later_level <= level:
                end = later_index
                break
        found[title] = "\n".join(lines[index + 1 : end])
    return found


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in _CELL_SPLIT.split(line.strip().strip("|"))]


def table(text: str, *header_start: str) -> list[dict[str, str]]:
    """The rows of the one Markdown table whose header starts with ``header_start``."""
    lines = text.splitlines()
    starts = [
        index
        for index, line in enumerate(lines)
        if line.lstrip().startswith("|") and _cells(line)[: len(header_start)] == list(header_start)
    ]
    assert len(starts) == 1, f"expected one table headed {header_start} in docs/design.md"
    header = _cells(lines[starts[0]])
    rows: list[dict[str, str]] = []
    for line in lines[starts[0] + 2 :]:
        if not line.lstrip().startswith("|"):
            break
        cells = _cells(line)
        assert len(cells) == len(header), f"a row of the {header_start} table: {line!r}"
        rows.append(dict(zip(header, cells, strict=True)))
    assert rows, f"the {header_start} table has no rows"
    return rows


def one_code_span(cell: str) -> str:
    spans: list[str] = _CODE_SPAN.findall(cell)
    assert len(spans) == 1, f"expected one `name` in {cell!r}"
    return spans[0]


# -- the course state: transitions --------------------------------------------------------------


def documented_transitions() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for row in table(design_text(), "state", "what the channel is doing", "may go to"):
        state = one_code_span(row["state"])
        assert state not in found, f"state {state!r} has two rows in docs/design.md"
        found[state] = set(_CODE_SPAN.findall(row["may go to"]))
    return found


def test_transitions_cover_every_channel_state() -> None:
    assert set(TRANSITIONS) == set(ChannelState)


def test_the_transitions_table_is_transitions_exactly() -> None:
    documented = documented_transitions()
    code = {state.value: {to.value for to in allowed} for state, allowed in TRANSITIONS.items()}
    problems = [
        f"state {s!r} is in docs/design.md, not in TRANSITIONS"
        for s in documented.keys() - code.keys()
    ]
    problems += [
        f"state {s!r} is in TRANSITIONS, not in docs/design.md"
        for s in code.keys() - documented.keys()
    ]
    for state in sorted(documented.keys() & code.keys()):
        for extra in sorted(documented[state] - code[state]):
            problems.append(f"docs/design.md allows {state} -> {extra}; TRANSITIONS does not")
        for missing in sorted(code[state] - documented[state]):
            problems.append(f"TRANSITIONS allows {state} -> {missing}; docs/design.md does not")
    assert not problems, "\n".join(problems)


# -- alarm codes ------------------------------------------------------------------------------


def documented_alarms() -> dict[str, str]:
    """Alarm code -> its "stops the pump" cell."""
    found: dict[str, str] = {}
    for row in table(design_text(), "code", "stops the pump"):
        code = one_code_span(row["code"])
        assert code not in found, f"alarm {code!r} has two rows in docs/design.md"
        found[code] = row["stops the pump"]
    return found


def test_the_alarm_table_is_alarm_code_exactly() -> None:
    documented = set(documented_alarms())
    code = {alarm.value for alarm in AlarmCode}
    assert not documented - code, f"in docs/design.md, not in AlarmCode: {documented - code}"
    assert not code - documented, f"in AlarmCode, not in docs/design.md: {code - documented}"


def raised_by_controller() -> dict[str, set[bool]]:
    """Alarm code value -> the ``stop`` values the controller's ``raise_alarm`` calls pass."""
    tree = ast.parse(CONTROLLER.read_text(encoding="utf-8"))
    raised: dict[str, set[bool]] = {}
    for node in ast.walk(tree):
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "raise_alarm"
            and node.args
        ):
            continue
        first = node.args[0]
        # AlarmCode.NAME.value
        if not (
            isinstance(first, ast.Attribute)
            and first.attr == "value"
            and isinstance(first.value, ast.Attribute)
            and isinstance(first.value.value, ast.Name)
            and first.value.value.id == "AlarmCode"
        ):
            continue
        stop = True
        for keyword in node.keywords:
            if keyword.arg == "stop":
                assert isinstance(keyword.value, ast.Constant), (
                    "raise_alarm(stop=...) not a literal"
                )
                stop = bool(keyword.value.value)
        raised.setdefault(AlarmCode[first.value.attr].value, set()).add(stop)
    return raised


def test_the_alarm_table_says_advisory_for_exactly_the_alarms_that_do_not_stop() -> None:
    raised = raised_by_controller()
    assert raised, "found no raise_alarm(AlarmCode.X.value, ...) calls in gateway/controller.py"
    documented = documented_alarms()
    wrong = []
    for code, stops in sorted(raised.items()):
        cell = documented.get(code, "")
        says_advisory = cell.startswith("advisory")
        says_stopping = cell.startswith("stopping")
        if stops == {False} and not says_advisory:
            wrong.append(f"{code}: raised with stop=False, the table says {cell!r}")
        if stops == {True} and not says_stopping:
            wrong.append(f"{code}: raised as a stopping alarm, the table says {cell!r}")
    assert not wrong, "\n".join(wrong)


# -- the seven invariants ---------------------------------------------------------------------


@cache
def defined_tests() -> dict[str, frozenset[str]]:
    """Test function name -> the files under tests/ (relative to the root) that define it."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for name in _TEST_DEF.findall(path.read_text(encoding="utf-8")):
            found.setdefault(name, set()).add(path.relative_to(ROOT).as_posix())
    return {name: frozenset(files) for name, files in found.items()}


def invariant_paragraphs() -> dict[int, str]:
    section = sections(design_text())["The seven invariants"]
    found: dict[int, str] = {}
    for paragraph in re.split(r"\n\s*\n", section):
        match = re.match(r"\*\*(\d+)\.\s", paragraph.strip())
        if match:
            number = int(match.group(1))
            assert number not in found, f"invariant {number} has two paragraphs"
            found[number] = paragraph
    return found


def test_each_of_the_seven_invariants_has_a_paragraph() -> None:
    assert sorted(invariant_paragraphs()) == list(range(1, 8))


@pytest.mark.parametrize("number", range(1, 8))
def test_each_invariant_names_an_existing_test_of_its_own(number: int) -> None:
    paragraph = invariant_paragraphs()[number]
    names = [match.group(0) for match in _INVARIANT_TEST.finditer(paragraph)]
    assert names, f"invariant {number}'s paragraph names no test_invariant_{number}_... test"
    others = [name for name in names if not name.startswith(f"test_invariant_{number}_")]
    assert not others, f"invariant {number}'s paragraph names another invariant's tests: {others}"
    missing = [name for name in names if name not in defined_tests()]
    assert not missing, f"invariant {number}'s paragraph names tests that do not exist: {missing}"


def test_every_test_cited_with_its_file_is_defined_there() -> None:
    cited = _CITED_TEST.findall(design_text())
    assert cited, "docs/design.md cites no path.py::test_name"
    wrong = [
        f"{path}::{name}"
        for path, name in cited
        if path not in defined_tests().get(name, frozenset())
    ]
    assert not wrong, "docs/design.md cites tests that are not where it says:\n" + "\n".join(wrong)


# -- sections other files cite ------------------------------------------------------------------


def test_the_sections_other_files_cite_exist() -> None:
    titles = set(sections(design_text()))
    cited: dict[str, set[str]] = {title: {"(required)"} for title in CITED_SECTIONS}
    for directory in CITING_DIRS:
        for path in sorted((ROOT / directory).rglob("*")):
            if path.suffix not in {".py", ".md"} or not path.is_file() or path == THIS_FILE:
                continue
            for title in _SECTION_CITATION.findall(path.read_text(encoding="utf-8")):
                cited.setdefault(title, set()).add(path.relative_to(ROOT).as_posix())
    missing = {title: sorted(files) for title, files in cited.items() if title not in titles}
    assert not missing, f"sections of docs/design.md cited but not there: {missing}"
