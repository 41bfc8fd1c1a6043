"""Every CLI command, fed arbitrary arguments, exits 0, 1 or 2 and never raises.

For each command in :data:`gateway.cli.SUBCOMMANDS`, hypothesis draws argv from that command's
own flags (read from its parser), each paired with a plausible or an arbitrary value, mixed with
junk tokens, and calls :func:`gateway.cli.main` in-process.  Exit codes 1 and 2 come with one
line on stderr, never a traceback.

Nothing long runs and nothing is opened: every argv ends with a *guard* that makes the command
refuse or fail fast whatever came before it (the last of a repeated flag wins): ``run`` and
``sim`` get ``--time-scale 0``, ``demo`` ``--days 0``, ``pump`` a serial device that does not
exist, the client commands a daemon address nobody listens on, ``token`` a file in a directory
that does not exist.  The test runs in an empty temporary working directory.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.cli import SUBCOMMANDS, build_parser, main

#: The last arguments of each command: whatever came before, it refuses or fails fast.
GUARDS: dict[str, list[str]] = {
    "plan": [],  # pure: computes and prints
    "demo": ["--days", "0"],  # checked before the simulator starts
    "sim": ["--time-scale", "0"],  # checked before anything listens
    "run": ["--time-scale", "0"],  # refused by the config before the journal or a pump
    "pump": ["--url", "newera:///dev/nonexistent-xyz"],  # cannot open: exit 1
    "token": ["/nonexistent-xyz-dir/token"],  # FILE in a directory that does not exist
    "report": ["--state-dir", "/nonexistent-xyz-dir"],  # no such state directory: exit 2
    "replay": ["/nonexistent-xyz-dir/recording.jsonl"],  # FILE that does not exist: exit 2
    **{
        name: ["--api", "127.0.0.1:1"]  # nobody listens: exit 1
        for name, (module, _) in SUBCOMMANDS.items()
        if module.startswith("client:")
    },
}

#: Values that mean something to some flag, so that draws get past the first check.
_PLAUSIBLE = (
    "",
    ".",
    "-1",
    "0",
    "70",
    "0.35",
    "30",
    "nan",
    "inf",
    "1e400",
    "true",
    "flat",
    "titer",
    "newera",
    "modbus",
    "bed1",
    "pty",
    "tcp://127.0.0.1:0",
    "127.0.0.1:1",
    "[::1]:1",
    "newera:///dev/nonexistent-xyz",
    "modbus+tcp://127.0.0.1:1",
    "2026-11-29T06:30:00+01:00",
    "2026-11-29T06:30:00",
    "relative/dir",
    "/nonexistent-xyz/file",
    "/dev/null",
    "occlusion",
)

# Real argv holds no NUL; undecodable bytes arrive as lone surrogates (surrogateescape).
_CHARS = st.characters(blacklist_characters="\x00", codec="utf-8") | st.sampled_from(
    ["\udc80", "\udcff", "\n", "-", "=", ":", "/", "%", "\u00b2", "\u0663"]
)
_JUNK = st.text(_CHARS, max_size=12) | st.sampled_from(["--", "-", "-h", "--help", "--json"])
_NUMBER = (
    st.floats(allow_nan=True, allow_infinity=True).map(repr)
    | st.integers(min_value=-(10**30), max_value=10**30).map(str)
    | st.sampled_from(["nan", "inf", "-inf", "1e400", "70", "0.35", "1_000", "0x10", " 7 "])
)
_TEXT = st.sampled_from(_PLAUSIBLE) | _JUNK


def _subparser(command: str) -> argparse.ArgumentParser:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    found: argparse.ArgumentParser = sub.choices[command]
    return found


def _value(action: argparse.Action) -> st.SearchStrategy[str]:
    if action.choices is not None and not isinstance(action, argparse._SubParsersAction):
        return st.sampled_from([str(c) for c in action.choices]) | _TEXT
    if action.type in (float, int):
        return _NUMBER | _TEXT
    return _TEXT


def _flag_pair(action: argparse.Action) -> st.SearchStrategy[list[str]]:
    flags = st.sampled_from(action.option_strings)
    if action.nargs == 0:
        return flags.map(lambda flag: [flag])
    return st.tuples(flags, _value(action)).map(list) | st.tuples(flags, _value(action)).map(
        lambda pair: [f"{pair[0]}={pair[1]}"]
    )


def argv_for(command: str) -> st.SearchStrategy[list[str]]:
    """``[command, *positionals, *flag/value pairs and junk, *guard]``."""
    parser = _subparser(command)
    head: list[st.SearchStrategy[list[str]]] = []
    options: list[st.SearchStrategy[list[str]]] = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if isinstance(action, argparse._SubParsersAction):  # token new ...
            head.append(
                st.sampled_from(sorted(action.choices)).map(lambda c: [c])
                | _JUNK.map(lambda j: [j])
            )
            for choice in action.choices.values():
                options += [
                    _flag_pair(a)
                    for a in choice._actions
                    if a.option_strings and not isinstance(a, argparse._HelpAction)
                ]
        elif not action.option_strings:  # a positional, e.g. pump's action and rate
            head.append(st.lists(_value(action), max_size=1))
        else:
            options.append(_flag_pair(action))
    middle = st.lists(st.one_of(*options, _JUNK.map(lambda j: [j])), max_size=6)
    return st.tuples(st.tuples(*head) if head else st.just(()), middle).map(
        lambda parts: [
            command,
            *(token for group in parts[0] for token in group),
            *(token for group in parts[1] for token in group),
            *GUARDS[command],
        ]
    )


@pytest.fixture
def empty_cwd(tmp_path: Path) -> Iterator[Path]:
    """An empty working directory: a relative path drawn by hypothesis names nothing real."""
    previous = Path.cwd()
    os.chdir(tmp_path)
    try:
        yield tmp_path
    finally:
        os.chdir(previous)


def run_cli(argv: list[str]) -> tuple[int, str]:
    """``main(argv)`` in-process: (exit code, stderr).  ``--help`` exits 0 through SystemExit."""
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's --help
            code = exc.code if isinstance(exc.code, int) else 2
    return code, err.getvalue()


_CLIENT_COMMANDS = {
    name for name, (module, _) in SUBCOMMANDS.items() if module.startswith("client:")
}


#: Argument lists hypothesis once found making a command raise; each is now refused on one line.
FOUND_BY_HYPOTHESIS = [
    pytest.param(["status", "--token-file=--", "--api", "127.0.0.1:1"], 2, id="token-file=--"),
    pytest.param(["sim", "--listen=--", "--time-scale", "0"], 2, id="sim-listen=--"),
    pytest.param(
        ["vasopressors-withdrawn", "--channel", " ", "--api", "127.0.0.1:1"], 2, id="channel-space"
    ),
    pytest.param(
        ["vasopressors-withdrawn", "--channel", "\x80", "--api", "127.0.0.1:1"],
        2,
        id="channel-non-ascii",
    ),
    pytest.param(["status", "--api", "a b:1"], 2, id="api-host-space"),
    pytest.param(["status", "--api", "\x80:1"], 2, id="api-host-non-ascii"),
    pytest.param(["status", "x\ny", "--api", "127.0.0.1:1"], 2, id="line-break-in-argument"),
    pytest.param(["weight", "--help"], 0, id="weight-help"),
]


@pytest.mark.parametrize(("argv", "expected"), FOUND_BY_HYPOTHESIS)
def test_argv_hypothesis_found_is_answered_on_one_line(argv: list[str], expected: int) -> None:
    code, err = run_cli(argv)
    assert code == expected, err
    if expected:
        assert err.startswith("error: ")
        assert err.count("\n") == 1, err


def test_every_command_has_a_guard() -> None:
    assert set(SUBCOMMANDS) <= set(GUARDS), "give a new command a guard in GUARDS"


@pytest.mark.timeout(60)
@pytest.mark.usefixtures("empty_cwd")
@pytest.mark.parametrize("command", list(SUBCOMMANDS))
@settings(
    max_examples=int(os.environ.get("CLI_PROPERTY_EXAMPLES", "30")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_cli_exits_0_1_or_2_and_never_raises(command: str, data: st.DataObject) -> None:
    argv = data.draw(argv_for(command), label="argv")
    code, err = run_cli(argv)
    assert code in {0, 1, 2}, (argv, code, err)
    assert "Traceback" not in err
    if code != 0:
        assert err.startswith("error: "), (argv, err)
        assert err.count("\n") == 1, (argv, err)
