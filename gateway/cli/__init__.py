"""``infusion-gateway``: the command line.

Each subcommand lives in its own module and is imported only when used, so a bedside
``infusion-gateway plan`` never pays for the web server or the Modbus stack.

Bad input exits with code 2 and one clear line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

from drivers.errors import DriverConfigError, DriverError
from gateway.errors import GatewayError
from protocol.errors import ProtocolError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

#: subcommand -> (module under gateway.cli[:suffix of its add_/run_ functions], one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "plan": ("plan", "compute a patient's daily dose and infusion rate (no pump needed)"),
    "demo": ("demo", "run a whole course on the built-in simulator, in virtual time"),
    "sim": ("sim", "serve the software pump over NE-1000 or Modbus until stopped"),
    "pump": ("pump", "bedside diagnostics: info, status, start, stop, set-rate on one pump"),
    "replay": ("replay", "serve a wire recording (pump --record) as the recorded pump"),
    "run": ("run", "run the gateway daemon (config file, or one channel from flags)"),
    "token": ("token", "make or rotate the API's token file: token new FILE [--force]"),
    "report": ("report", "draw a course from the journal: --png, --svg or --html FILE"),
    "status": ("client:status", "show a running gateway's channels, days and alarms"),
    "order": ("client:order", "give a waiting channel its patient's order"),
    "titer": ("client:titer", "post a morning IgM titer to a running gateway"),
    "weight": ("client:weight", "correct a patient's weight on a running gateway"),
    "ack": ("client:ack", "acknowledge a channel's alarms and let it resume"),
    "stop": ("client:stop", "stop a channel's pump"),
    "vasopressors-withdrawn": (
        "client:vasopressors",
        "record that vasopressors were withdrawn (no new day starts)",
    ),
}


class UsageError(GatewayError):
    """A command line the program cannot act on (exit code 2)."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def one_line(text: str) -> str:
    """``text`` with every control character escaped, so an error stays one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _refuse_missing_values(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """argparse gives ``--flag=--`` the value ``[]`` without calling ``type=`` or checking
    ``choices``: refuse it as a missing value."""
    for action in parser._actions:
        if (
            action.nargs is None
            and action.option_strings
            and getattr(args, action.dest, None) == []
        ):
            raise UsageError(
                f"{parser.prog}: argument {action.option_strings[-1]}: expected one argument"
            )


def build_parser() -> argparse.ArgumentParser:
    """The full parser, every subcommand registered by its module's ``add_arguments``."""
    parser = _Parser(
        prog="infusion-gateway",
        description="Infusion-pump gateway: IgM-FAT doses to hard-limited pump rates.",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        module_path, _, suffix = module_name.partition(":")
        module = importlib.import_module(f"gateway.cli.{module_path}")
        add = getattr(module, f"add_{suffix}" if suffix else "add_arguments")
        add(sub)
        sub.set_defaults(_run=getattr(module, f"run_{suffix}" if suffix else "run"), _parser=sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        _refuse_missing_values(args._parser, args)
        code: int = args._run(args)
    except UsageError as exc:
        print(f"error: {one_line(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except GatewayError as exc:
        # A typed input refusal (InputError, ConfigError, ...) is a usage problem (2); an error
        # class may say otherwise (an unreachable daemon or pump is 1).
        print(f"error: {one_line(str(exc))}", file=sys.stderr)
        return int(getattr(exc, "exit_code", EXIT_USAGE))
    except DriverConfigError as exc:  # a bad pump URL or option: input
        print(f"error: {one_line(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except (DriverError, ProtocolError) as exc:
        print(f"error: {type(exc).__name__}: {one_line(str(exc))}", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as exc:
        sim_code = _simulator_exit_code(exc)
        if sim_code is None:
            raise
        print(
            f"error: {one_line(str(exc))}"
            if sim_code == EXIT_USAGE
            else f"error: {type(exc).__name__}: {one_line(str(exc))}",
            file=sys.stderr,
        )
        return sim_code
    except KeyboardInterrupt:
        return 130
    return code


def _simulator_exit_code(exc: Exception) -> int | None:
    """Exit code for a simulator error, without importing the simulator on the daemon's path.

    A bad fault script or simulator setting is input (2); any other simulator error is 1.
    """
    errors = sys.modules.get("simulator.errors")
    if errors is None or not isinstance(exc, errors.SimulatorError):
        return None
    if isinstance(exc, errors.FaultScriptError | errors.OutOfRangeError):
        return EXIT_USAGE
    return EXIT_FAILURE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
