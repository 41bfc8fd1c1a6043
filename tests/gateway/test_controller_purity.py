"""The course controller is pure: no I/O, no clock, no journal, and a state that reads back exactly.

docs/design.md ("Decide purely, act thinly") says :func:`gateway.controller.decide` reads no
clock, opens no port and touches no journal, and that the course state is written to the
journal after every decision and read back exactly.  ``test_controller_rules.py`` checks this on
one decision; here it is checked two more ways:

* by reading the source of the decision core (the controller and every module of ours it
  imports): none of them imports a clock, a journal, a driver or an I/O module;
* along a whole titer-arm course with a link drop, a late titer, a weight correction, a
  corrected titer and vasopressor withdrawal: every decision the executor asks for is made with
  every clock and ``open`` made to fail, made again from the same arguments and must come out
  equal, and every state it yields must read back from the journal's form exactly.
"""

from __future__ import annotations

import ast
import builtins
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import gateway.channel
from gateway.controller import Decision, decide
from gateway.course_state import ChannelState, dump_state, load_state
from gateway.planner import DAY_S, SECONDS_PER_HOUR
from tests.gateway.conftest import STEP_S, Rig

ROOT = Path(__file__).resolve().parents[2]
H = SECONDS_PER_HOUR

#: The decision core: the controller and the modules of ours it imports (docs/design.md).
CORE = (
    "gateway/controller.py",
    "gateway/course_state.py",
    "gateway/course_inputs.py",
    "gateway/effects.py",
    "gateway/rules.py",
    "gateway/planner.py",
    "gateway/dosing.py",
    "gateway/safety.py",
    "gateway/validate.py",
    "gateway/errors.py",
    "gateway/display.py",
)

#: What a pure function may not reach: clocks, I/O, threads, logging, the journal, the pump.
FORBIDDEN_MODULES = frozenset(
    {
        "asyncio",
        "datetime",
        "http",
        "io",
        "logging",
        "os",
        "pathlib",
        "queue",
        "random",
        "select",
        "serial",
        "socket",
        "sqlite3",
        "structlog",
        "subprocess",
        "threading",
        "time",
        "urllib",
        "uuid",
        "gateway.channel",
        "gateway.daemon",
        "gateway.journal",
        "gateway.metrics",
        "gateway.service",
        "protocol.clock",
        "drivers.base",
        "drivers.modbus",
        "drivers.newera",
        "simulator",
    }
)

#: Builtins that do I/O.
FORBIDDEN_CALLS = frozenset({"open", "print", "input", "breakpoint"})


def imported_modules(tree: ast.AST) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            yield node.module


def is_forbidden(module: str) -> bool:
    return any(module == bad or module.startswith(f"{bad}.") for bad in FORBIDDEN_MODULES)


@pytest.mark.parametrize("path", CORE)
def test_the_decision_core_imports_no_clock_journal_driver_or_io(path: str) -> None:
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"), filename=path)
    imports = set(imported_modules(tree))
    assert imports, f"{path}: found no imports at all: is this the right file?"
    assert sorted(m for m in imports if is_forbidden(m)) == []
    calls = {
        node.func.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    }
    assert sorted(calls & FORBIDDEN_CALLS) == []


def test_the_core_list_covers_every_module_of_ours_the_controller_reaches() -> None:
    """Closed under import: every gateway module a core module imports is in the core."""
    for path in CORE:
        tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
        ours = {m for m in imported_modules(tree) if m.startswith("gateway.")}
        assert {f"{m.replace('.', '/')}.py" for m in ours} <= set(CORE), path


def test_the_checks_would_catch_a_clock_or_a_journal() -> None:
    bad = ast.parse("import time\nfrom gateway.journal import Journal\nopen('x')\n")
    assert sorted(m for m in imported_modules(bad) if is_forbidden(m)) == [
        "gateway.journal",
        "time",
    ]
    assert not is_forbidden("gateway.timestamps")  # a prefix of a name is not the name


def _refuse(*_: object, **__: object) -> Any:
    raise AssertionError("decide reached a clock or a file")


@pytest.fixture
def checked_decide(monkeypatch: pytest.MonkeyPatch) -> list[Decision]:
    """Make the executor's every decision twice, with every clock and ``open`` made to fail,
    and read its state back from the journal's form."""
    made: list[Decision] = []

    def twice(*args: Any) -> Decision:
        with monkeypatch.context() as patched:
            for name in ("time", "time_ns", "monotonic", "monotonic_ns", "perf_counter"):
                patched.setattr(time, name, _refuse)
            patched.setattr(builtins, "open", _refuse)
            first = decide(*args)
            again = decide(*args)
        assert again == first, "decide gave two answers to one question"
        assert load_state(dump_state(first.state)) == first.state
        made.append(first)
        return first

    monkeypatch.setattr(gateway.channel, "decide", twice)
    return made


def test_every_decision_of_a_course_is_repeatable_and_its_state_reads_back_exactly(
    make_rig: Callable[..., Rig], checked_decide: list[Decision]
) -> None:
    rig = make_rig(arm="titer", weight_kg=70.0, igm_mg_dl=30.0, hematocrit=0.35)
    rig.run(6 * H)
    rig.channel.submit_weight(72.0, "re-weighed")
    rig.titer(35.0, corrects_day=1)  # the lab corrected this morning's result
    rig.run(2 * H)
    rig.driver.silent = True  # a short link drop
    rig.run(2 * STEP_S)
    rig.driver.silent = False
    rig.run(STEP_S)  # the pump's watchdog stopped it: a person acknowledges
    rig.channel.submit_ack("nurse", "line checked")
    rig.run(DAY_S - 9 * H - STEP_S)
    rig.titer(60.0)  # day 2's titer, an hour before day 2
    rig.run(DAY_S + H)  # day 3 opens with no titer: it waits
    assert rig.channel.state is ChannelState.AWAITING_TITER
    rig.run(3 * H)
    rig.titer(70.0)  # late: day 3 shifts
    rig.run(2 * H)
    rig.channel.submit_vasopressors_withdrawn()
    rig.run(DAY_S)
    assert rig.channel.state is ChannelState.COMPLETED
    assert [d.day for d in rig.journal.days("bed1")] == [1, 2, 3]
    # The course went through every kind of decision: effects, events, state changes.
    assert len(checked_decide) > 500
    assert {d.state.channel for d in checked_decide} >= {
        ChannelState.STARTING,
        ChannelState.INFUSING,
        ChannelState.LINK_LOST,
        ChannelState.AWAITING_TITER,
        ChannelState.COMPLETED,
    }
    # ... and the state the journal holds is that of the last decision it was given (one
    # with nothing to journal or do writes nothing: gateway/channel.py, ``_commit``).
    held = rig.journal.channel_state("bed1")
    assert held is not None
    last = next(d for d in reversed(checked_decide) if d.events or d.effects)
    assert load_state(held) == last.state
