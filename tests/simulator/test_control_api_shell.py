"""tests/simulator/control_api.sh: the control API driven from POSIX sh and curl, as a CI job or
a rig in another language would, against a real ``infusion-gateway sim`` process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("control_api.sh")

pytestmark = pytest.mark.timeout(90)


def test_control_api_from_a_shell_script_with_curl() -> None:
    assert shutil.which("curl"), "curl is needed (Debian: apt-get install curl)"
    env = {**os.environ, "SIM": f"{sys.executable} -m gateway"}
    done = subprocess.run(
        ["sh", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1] == "all checks passed"
    assert done.stdout.count("ok: ") >= 20
