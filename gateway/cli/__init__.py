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

from gateway.errors import GatewayError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

#: subcommand -> (module under gateway.cli, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "plan": ("plan", "compute a patient's daily dose and infusion rate (no pump needed)"),
}


class UsageError(GatewayError):
    """A command line the program cannot act on (exit code 2)."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    """The full parser, every subcommand registered by its module's ``add_arguments``."""
    parser = _Parser(
        prog="infusion-gateway",
        description="Infusion-pump gateway: IgM-FAT doses to hard-limited pump rates.",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        module = importlib.import_module(f"gateway.cli.{module_name}")
        module.add_arguments(sub)
        sub.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        code: int = args._module.run(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except GatewayError as exc:
        # Every typed input refusal (InputError, ConfigError, ...) is a usage problem.
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
