"""tests/simulator/control_api_course.sh: a gateway course driven from POSIX sh and curl, as a CI
job or a rig in another language would: ``infusion-gateway run`` against ``infusion-gateway sim``
while the script injects an occlusion and a link drop over the control API, acknowledges over the
gateway's API, reads the truth, resets the pump and starts again.

Real processes on real (scaled) time, about 10 s on an idle machine: ``slow``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("control_api_course.sh")

#: The script's own deadlines add up to far less; this bounds a hung process.
SCRIPT_TIMEOUT_S = 150

pytestmark = [pytest.mark.timeout(SCRIPT_TIMEOUT_S + 30), pytest.mark.slow]

#: One line per step of the scenario the script must report, in this order.
EXPECTED_STEPS = (
    "ok: 5 mL infused",
    "ok: inject an occlusion",
    "ok: the gateway's alarm",
    "ok: the occlusion alarm on the gateway's API",
    "ok: infusing again after the acknowledgement",
    "ok: inject a link drop",
    "ok: the pump's watchdog stopping it",
    "ok: the gateway reporting the link lost",
    "ok: nothing infused while the link was down",
    "ok: infusing again after the outage",
    "ok: the gateway and the pump stopped",
    "ok: never above the prescription",
    "ok: the gateway accounts what the pump delivered",
    "ok: the gateway exited 0",
    "ok: reset",
    "ok: power-on: totalizer 0",
    "ok: the lifetime total kept",
    "ok: a new course infusing on the reset pump",
    "ok: the pump stopped with the gateway",
    "ok: the simulator's last line agrees with the truth",
)


def _gateway_command() -> str:
    """The installed console script beside this interpreter, else ``python -m gateway``."""
    installed = shutil.which("infusion-gateway", path=str(Path(sys.executable).parent))
    return installed or f"{sys.executable} -m gateway"


def _run(script: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in its own process group, so a timeout stops the script and both daemons."""
    proc = subprocess.Popen(
        ["sh", str(script)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=SCRIPT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)  # the script's trap stops both daemons
        try:
            out, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate(timeout=10)
        pytest.fail(f"{script.name} timed out after {SCRIPT_TIMEOUT_S} s:\n{out}{err}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_a_course_driven_from_a_shell_script_with_curl() -> None:
    assert shutil.which("curl"), "curl is needed (Debian: apt-get install curl)"
    env = {**os.environ, "GATEWAY": _gateway_command()}
    done = _run(SCRIPT, env)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == "all checks passed", done.stdout
    steps = [line for line in lines if line.startswith("ok: ")]
    assert not [line for line in lines[:-1] if not line.startswith("ok: ")], done.stdout
    # Every expected step, in order (a step's line may add figures after its name).
    at = 0
    for step in EXPECTED_STEPS:
        found = [i for i, line in enumerate(steps[at:], at) if line.startswith(step)]
        assert found, f"missing or out of order: {step!r} in:\n{done.stdout}"
        at = found[0] + 1
