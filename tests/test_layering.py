"""Dependency direction (docs/design.md): gateway -> drivers -> protocol; simulator -> protocol.

Checked on real imports in a fresh interpreter, not by reading source: ``protocol`` imports
nothing of ours; ``drivers`` never imports ``simulator`` or ``gateway``; the daemon's control path
never imports ``simulator`` (only the ``demo``/``sim`` commands and the pytest plugin do).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

OURS = ("protocol", "drivers", "simulator", "gateway")


def loaded_after_importing(*modules: str) -> set[str]:
    code = (
        "import importlib, json, sys\n"
        f"for m in {list(modules)!r}: importlib.import_module(m)\n"
        f"print(json.dumps(sorted({{n.split('.')[0] for n in sys.modules}} & set({OURS!r}))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    return set(json.loads(out))


@pytest.mark.parametrize(
    ("modules", "allowed"),
    [
        (["protocol.newera", "protocol.modbus", "protocol.clock"], {"protocol"}),
        (["drivers.newera", "drivers.modbus", "drivers.base"], {"drivers", "protocol"}),
        (["simulator.newera_server", "simulator.modbus_server"], {"simulator", "protocol"}),
        (
            [
                "gateway.daemon",
                "gateway.api",
                "gateway.channel",
                "gateway.cli.run",
                "gateway.cli.pump",
            ],
            {"gateway", "drivers", "protocol"},
        ),
    ],
)
def test_dependency_direction(modules: list[str], allowed: set[str]) -> None:
    assert loaded_after_importing(*modules) <= allowed
