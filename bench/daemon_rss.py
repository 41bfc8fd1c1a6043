"""Peak resident memory of the daemon: a real ``infusion-gateway run`` with N channels.

The pumps run in another process (:mod:`bench.pumps`, Modbus TCP); the daemon gets a TOML config
with N flat-arm channels, a 1-s poll and its HTTP API on a loopback port (as deployed, with a
token file).  Once ``/readyz`` answers 200 (every channel up) it runs ``settle_s`` more seconds;
then its peak resident set (``VmHWM`` in ``/proc/PID/status``) is read and it is stopped with
SIGTERM, as systemd stops it.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.figures import Figure
from bench.pumps import REPO_ROOT, cpu_set, serving

#: Real seconds the daemon may take to start, and to become ready.
START_TIMEOUT_S = 60.0
READY_TIMEOUT_S = 60.0


def _config_toml(state_dir: Path, token_file: Path, urls: list[str]) -> str:
    randomised = (datetime.now(UTC) - timedelta(hours=1)).isoformat(timespec="seconds")
    lines = [
        f"state_dir = {json.dumps(str(state_dir))}",
        "[control]",
        "poll_interval_s = 1.0",
        "[api]",
        'listen = "127.0.0.1:0"',
        f"token_file = {json.dumps(str(token_file))}",
    ]
    for i, url in enumerate(urls):
        lines += [
            "[[channels]]",
            f'id = "bed{i:02d}"',
            f"pump = {json.dumps(url)}",
            'arm = "flat"',
            "weight_kg = 70.0",
            f"randomised_at = {randomised}",
        ]
    return "\n".join(lines) + "\n"


def _status_kib(pid: int, field: str) -> int:
    """``field`` (e.g. VmHWM) of ``/proc/PID/status``, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/status has no {field}")


def _first_line(process: subprocess.Popen[str], timeout_s: float) -> str:
    """The first line the daemon prints (its start-up facts), within ``timeout_s``."""
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout_s):
            raise RuntimeError(f"the daemon did not start within {timeout_s:g} s")
    return process.stdout.readline()


def _wait_ready(api: str, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://{api}/readyz", timeout=5.0) as reply:
                if reply.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    return False


def measure(channels: int, *, settle_s: float, sim_cpus: str = "last") -> Figure:
    """Peak RSS (MB) of a daemon with ``channels`` channels."""
    with (
        serving("modbus", channels, cpus=cpu_set(sim_cpus)) as pumps,
        tempfile.TemporaryDirectory() as tmp,
    ):
        state_dir = Path(tmp) / "state"
        state_dir.mkdir()
        token_file = Path(tmp) / "token"
        gateway_cli = [sys.executable, "-m", "gateway"]
        subprocess.run(
            [*gateway_cli, "token", "new", str(token_file)],
            check=True,
            capture_output=True,
            timeout=60,
        )
        config = Path(tmp) / "gateway.toml"
        config.write_text(_config_toml(state_dir, token_file, pumps.urls))
        with (Path(tmp) / "daemon.log").open("w") as log:
            daemon = subprocess.Popen(
                [*gateway_cli, "run", "--config", str(config)],
                cwd=REPO_ROOT,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
            try:
                facts = json.loads(_first_line(daemon, START_TIMEOUT_S))
                ready = _wait_ready(facts["api"], READY_TIMEOUT_S)
                time.sleep(settle_s)
                if daemon.poll() is not None:
                    raise RuntimeError(f"the daemon ended early (exit {daemon.returncode})")
                peak_kib = _status_kib(daemon.pid, "VmHWM")
            finally:
                if daemon.poll() is None:
                    os.kill(daemon.pid, signal.SIGTERM)
                try:
                    daemon.wait(30)
                except subprocess.TimeoutExpired:
                    daemon.kill()
                    daemon.wait()
                if daemon.stdout is not None:
                    daemon.stdout.close()
    return Figure(
        key=f"daemon_peak_rss_{channels}",
        name=f"daemon peak RSS, {channels} channels",
        unit="MB",
        ours=peak_kib * 1024 / 1e6,
        ours_does=(
            f"infusion-gateway run --config with {channels} flat-arm channel"
            f"{'s' if channels > 1 else ''} at a 1-s poll, its "
            "API on loopback; VmHWM of /proc/PID/status"
        ),
        method=(
            f"read {settle_s:g} s after /readyz first answered 200"
            if ready
            else f"/readyz never answered 200 within {READY_TIMEOUT_S:g} s; read {settle_s:g} s "
            "after giving up"
        ),
    )
