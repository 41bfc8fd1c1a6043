"""Software pumps for the benches, on the real clock: in a child process, as devices on a network
are (``python -m bench.pumps``), or in this process (``in_process=True``, for a dry run).

The child prints one JSON line, the pumps' ``[{"url": ..., "listening": ...}, ...]``, then serves
until its stdin closes.  ``--infuse-ml-per-h R`` starts every pump infusing at R mL/h, so a poll
reads a totalizer that moves; ``--cpus 1`` keeps the pumps off the other CPUs (Linux).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

#: The repository: the child runs ``-m bench.pumps`` from here (bench is not an installed package).
REPO_ROOT = Path(__file__).resolve().parent.parent

#: Real seconds the child may take to start serving.
_START_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Pump:
    url: str
    #: ``tcp://HOST:PORT`` or the pty path a client opens.
    listening: str


@dataclass(frozen=True)
class Pumps:
    pumps: list[Pump]
    #: The child process serving them (None: served in this process).
    pid: int | None

    @property
    def urls(self) -> list[str]:
        return [pump.url for pump in self.pumps]

    @property
    def where(self) -> str:
        """Where the pumps run, for a figure's method."""
        return "this process" if self.pid is None else "another process"


def _serve(
    protocol: str, count: int, infuse_ml_per_h: float | None, stack: ExitStack
) -> list[Pump]:
    from protocol.clock import SystemClock
    from simulator.model import PumpModel
    from simulator.server import serve

    clock = SystemClock()
    listen = "pty" if protocol == "newera" else "tcp://127.0.0.1:0"
    pumps: list[Pump] = []
    for _ in range(count):
        model = PumpModel(clock, max_rate_ml_per_h=200.0, reservoir_ml=100_000.0)
        if infuse_ml_per_h is not None:
            model.clear_alarms()
            model.set_rate(infuse_ml_per_h)
            model.start()
        server = serve(model, protocol=protocol, listen=listen)
        stack.callback(server.close)
        pumps.append(Pump(url=server.pump_url, listening=server.listening))
    return pumps


@contextmanager
def serving(
    protocol: str,
    count: int,
    *,
    infuse_ml_per_h: float | None = None,
    cpus: set[int] | None = None,
    in_process: bool = False,
) -> Iterator[Pumps]:
    """``count`` software pumps speaking ``protocol`` ("newera": ptys; "modbus": TCP)."""
    if in_process:
        with ExitStack() as stack:
            yield Pumps(_serve(protocol, count, infuse_ml_per_h, stack), pid=None)
        return
    command = [sys.executable, "-m", "bench.pumps", protocol, str(count)]
    if infuse_ml_per_h is not None:
        command += ["--infuse-ml-per-h", str(infuse_ml_per_h)]
    if cpus is not None:
        command += ["--cpus", ",".join(str(cpu) for cpu in sorted(cpus))]
    child = subprocess.Popen(
        command, cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        if not line:
            raise RuntimeError(f"the pumps' process ended before serving: {' '.join(command)}")
        yield Pumps([Pump(**pump) for pump in json.loads(line)], pid=child.pid)
    finally:
        if child.stdin is not None:
            child.stdin.close()
        try:
            child.wait(_START_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def cpu_set(text: str) -> set[int] | None:
    """``all`` (None), ``last`` (the last CPU of several, else None), or ``0,1``."""
    if text == "all":
        return None
    if text == "last":
        cpus = sorted(os.sched_getaffinity(0))
        return {cpus[-1]} if len(cpus) > 1 else None
    return {int(cpu) for cpu in text.split(",")}


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process (Linux /proc), or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("protocol", choices=["newera", "modbus"])
    parser.add_argument("count", type=int)
    parser.add_argument("--infuse-ml-per-h", type=float)
    parser.add_argument("--cpus", help="CPUs the pumps may use, e.g. 1 or 0,1 (default: any)")
    args = parser.parse_args()
    if args.cpus:
        os.sched_setaffinity(0, {int(cpu) for cpu in args.cpus.split(",")})
    with ExitStack() as stack:
        pumps = _serve(args.protocol, args.count, args.infuse_ml_per_h, stack)
        print(json.dumps([pump.__dict__ for pump in pumps]), flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    main()
