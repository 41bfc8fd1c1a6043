"""The fault matrix's process-level rows: the gateway process itself SIGKILLed or SIGSTOPped.

Each row is a real ``infusion-gateway run`` (a flat-arm course, 70 kg, 350 mL a day, its API on
port 0) driving a real ``infusion-gateway sim`` (its control API on port 0) at a high time scale,
crossed over the signal (SIGKILL: the process is gone; SIGSTOP: it hangs, then SIGCONT), the
protocol (NE-1000 on a pty, Modbus over TCP) and the phase of the day (:class:`Phase`).  The
signal comes mid-infusion; the rig reads the pump's truth through the simulator's control API,
which answers while the gateway cannot, and asserts, as the in-process matrix
(:mod:`tests.faults.test_fault_matrix`) does:

(a) the safe state, on the simulator's own clock (its event log): the pump, left alone, stops by
    its own watchdog within the configured ``effective_pump_watchdog_s`` plus one poll of the
    signal, latching ``comm_timeout``; it does not infuse again until a person acknowledges.
    SIGSTOP then SIGCONT: the gateway finds the pump stopped by its watchdog on the connection it
    still holds and raises ``pump_comm_timeout`` (stopping); the hang was longer than the
    auto-resume rule's ``max_gap_s``, so nothing may resume it without an acknowledgement
    (docs/design.md, invariant 5).  SIGKILL then a restart: the journal's ``reconciled`` event
    (``restarted``) counts the day from what was delivered before the kill, never from zero, and
    an outage that long waits for an acknowledgement (``outage_needs_ack``, invariant 6);
(b) the alarm a person sees, on the gateway's API;
(c) the simulator's lifetime total at most the sum of the prescriptions so far (+ 0.01 mL),
    during the fault, after the acknowledgement and at the end (its last stdout line).

Real processes on real (scaled) time: the rig polls with deadlines, never sleeps for an effect.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

from gateway.config import GatewayConfig, load_config
from gateway.course_state import AlarmCode
from gateway.journal import JOURNAL_FILENAME
from protocol.pump_state import PumpAlarm
from tests.faults.matrix_support import (
    CHANNEL_ID,
    PROTOCOLS,
    PUMP_MAX_RATE_ML_PER_H,
    RESERVOIR_ML,
    SLACK_ML,
)
from tests.faults.test_fault_matrix import pump_code
from tests.gateway.test_e2e_processes import (
    _an_hour_ago,
    _days,
    _first_json_line,
    _spawn,
    _stop,
    _wait_for,
)
from tests.gateway.token_files import TEST_TOKEN, write_token_file
from tests.simulator.test_control_api_course import OPERATOR, _client

pytestmark = [pytest.mark.slow, pytest.mark.timeout(330)]

H = 3600.0
SIGNALS = (signal.SIGKILL, signal.SIGSTOP)
#: How long (real s) a process has to answer, start, or show an effect before the row fails.
DEADLINE_S = 20.0
#: After the pump stopped, the rig watches it this many polls (simulated) for a restart that
#: nobody acknowledged.
WATCH_POLLS = 6
#: The coarsest step of a totalizer reading within a day (an NE-1000 showing 100-999 mL: 0.1 mL,
#: drivers/newera.py): a reading is at most this far below the truth.
READING_STEP_ML = 0.1


class Phase(Enum):
    """When the signal comes: simulated seconds after the pump first started, at a time scale
    that brings the row there in a few real seconds."""

    # An hour into day 1, at 600x (6 real s): five 30-s polls make the pump's 150-s watchdog.
    EARLY = (1 * H, 600.0)
    # Half an hour before the day boundary, at 600x (135 real s to get there): the watchdog
    # (at most 255 s) and the outage after it run into day 2.  Not faster: at 1200x the 255-s
    # watchdog is 212 ms of real time, and a gateway held up that long on a loaded 2-core CI
    # machine (a slow fsync, the scheduler) tripped it before the signal came.
    LATE = (24 * H - 30 * 60.0, 600.0)

    def __init__(self, at_s: float, time_scale: float) -> None:
        self.at_s = at_s
        self.time_scale = time_scale

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Row:
    signal: signal.Signals
    protocol: str
    phase: Phase

    @property
    def id(self) -> str:
        return f"gateway_{self.signal.name.lower()}-{self.protocol}-{self.phase.label}"


def rows() -> Iterator[object]:
    for sig in SIGNALS:
        for phase in Phase:
            for protocol in PROTOCOLS:
                row = Row(sig, protocol, phase)
                # A restart that reconciles and never counts the day from zero: H-JN-01 too.
                marks = [pytest.mark.hazard("H-JN-01")] if sig is signal.SIGKILL else []
                yield pytest.param(row, id=row.id, marks=marks)


def _sse_events(text: str) -> list[dict[str, Any]]:
    """The ``data`` objects of a server-sent event stream, in order."""
    return [
        json.loads(line.removeprefix("data: "))
        for line in text.splitlines()
        if line.startswith("data: ")
    ]


def _journal_events(state_dir: Path, kind: str) -> list[dict[str, Any]]:
    """Payloads of the channel's journal events of ``kind``, in order (read-only)."""
    db = state_dir / JOURNAL_FILENAME
    if not db.exists():
        return []
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as conn:
        try:
            found = conn.execute(
                "SELECT payload FROM events WHERE channel = ? AND kind = ? ORDER BY id",
                (CHANNEL_ID, kind),
            )
            return [dict(json.loads(payload)) for (payload,) in found]
        except sqlite3.OperationalError:
            return []


class ProcessRig:
    """The two processes of a row, their API clients, and what the rig reads of them."""

    def __init__(self, row: Row, tmp_path: Path, stack: contextlib.ExitStack) -> None:
        self.row = row
        self.state_dir = tmp_path / "state"
        self.log: IO[str] = stack.enter_context((tmp_path / "gateway.log").open("w"))
        token = write_token_file(tmp_path / "token")
        self.sim = self._own(
            stack,
            _spawn(
                "sim",
                "--protocol",
                row.protocol,
                "--listen",
                "pty" if row.protocol == "newera" else "tcp://127.0.0.1:0",
                "--time-scale",
                str(row.phase.time_scale),
                "--max-rate-ml-per-h",
                str(PUMP_MAX_RATE_ML_PER_H),
                "--reservoir-ml",
                str(RESERVOIR_ML),
                "--control",
                "tcp://127.0.0.1:0",
                "--control-token-file",
                str(token),
            ),
        )
        info = _first_json_line(self.sim)
        self.control = stack.enter_context(_client(info["control"], TEST_TOKEN))
        self.config_path = tmp_path / "gateway.toml"
        self.config_path.write_text(
            f'state_dir = "{self.state_dir}"\n'
            f"time_scale = {row.phase.time_scale}\n"
            f'[api]\nlisten = "127.0.0.1:0"\ntoken_file = "{token}"\n'
            "[[channels]]\n"
            f'id = "{CHANNEL_ID}"\npump = "{info["pump_url"]}"\narm = "flat"\nweight_kg = 70\n'
            f"randomised_at = {_an_hour_ago()}\n"
        )
        self.config: GatewayConfig = load_config(self.config_path)
        self._stack = stack
        self.gateway: subprocess.Popen[str] | None = None
        self.api: httpx.Client | None = None

    @staticmethod
    def _own(stack: contextlib.ExitStack, proc: subprocess.Popen[str]) -> subprocess.Popen[str]:
        """Kill ``proc`` when the row ends, whatever happened (SIGKILL ends a stopped one too)."""

        def kill() -> None:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=10)
            elif proc.stdout is not None:
                proc.stdout.close()

        stack.callback(kill)
        return proc

    # -- the gateway -------------------------------------------------------------------------

    def start_gateway(self) -> None:
        self.gateway = self._own(
            self._stack, _spawn("run", "--config", str(self.config_path), stderr=self.log)
        )
        address = _first_json_line(self.gateway)["api"]
        self.api = self._stack.enter_context(_client(address, TEST_TOKEN))

    def channel(self) -> dict[str, Any]:
        assert self.api is not None
        response = self.api.get(f"/v1/channels/{CHANNEL_ID}")
        response.raise_for_status()
        return dict(response.json())

    def alarm_codes(self) -> set[str]:
        return {alarm["code"] for alarm in self.channel()["alarms"]}

    def acknowledge(self) -> None:
        assert self.api is not None
        response = self.api.post(f"/v1/channels/{CHANNEL_ID}/ack", json=OPERATOR)
        assert response.is_success, response.text

    def stop_gateway(self) -> None:
        """SIGTERM (the gateway stops the pump on its way out); a stopped one is woken first."""
        assert self.gateway is not None
        if self.gateway.poll() is None:
            self.gateway.send_signal(signal.SIGCONT)
        _stop(self.gateway)

    # -- the pump's truth --------------------------------------------------------------------

    def truth(self) -> dict[str, Any]:
        response = self.control.get("/v1/pumps/1")
        response.raise_for_status()
        return dict(response.json())

    def pump_events(self) -> list[dict[str, Any]]:
        response = self.control.get("/v1/pumps/1/events", params={"since": 0, "follow": "false"})
        response.raise_for_status()
        return _sse_events(response.text)

    def state_changes(self) -> list[tuple[float, str]]:
        """(simulated s, new state) of every state change the pump made, in order."""
        return [(e["simulated_s"], e["state"]) for e in self.pump_events() if e["kind"] == "state"]

    def first_infusing_s(self) -> float | None:
        return next((t for t, state in self.state_changes() if state == "infusing"), None)

    def wait_for_truth(self, simulated_s: float) -> None:
        """Until the pump's own clock reaches ``simulated_s``."""
        real_s = max(simulated_s - self.truth()["simulated_s"], 0.0) / self.row.phase.time_scale
        _wait_for(
            lambda: self.truth()["simulated_s"] >= simulated_s,
            real_s + DEADLINE_S,
            f"the pump's clock at {simulated_s:.0f} s",
        )

    def prescribed_ml(self) -> float:
        return sum(day[1] for day in _days(self.state_dir))

    def assert_never_over(self, lifetime_ml: float, when: str) -> None:
        prescribed = self.prescribed_ml()
        assert lifetime_ml <= prescribed + SLACK_ML, (
            f"{when}: the pump gave {lifetime_ml:.4f} mL in its lifetime, the prescriptions so "
            f"far are {prescribed:.4f} mL\n{self.story()}"
        )

    def story(self) -> str:
        """The pump's event log and the gateway's non-readback journal, for a failure."""
        pump: list[str] = []
        with contextlib.suppress(httpx.HTTPError):
            pump = [
                f"  pump {e['simulated_s']:9.1f} s  {e['kind']}: {e['detail']}"
                for e in self.pump_events()
            ]
        journal: list[str] = []
        db = self.state_dir / JOURNAL_FILENAME
        if db.exists():
            with contextlib.closing(
                sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
            ) as conn:
                journal = [
                    f"  gateway {mono:9.1f} s  {kind}: {payload}"
                    for mono, kind, payload in conn.execute(
                        "SELECT monotonic_s, kind, payload FROM events WHERE kind NOT IN "
                        "('readback', 'command_readback') ORDER BY id"
                    )
                ]
        return "\n".join([*pump, *journal[-60:]])


@pytest.fixture
def rig(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ProcessRig]:
    with contextlib.ExitStack() as stack:
        yield ProcessRig(request.param, tmp_path, stack)


@pytest.mark.hazard("H-CL-01")
@pytest.mark.parametrize("rig", list(rows()), indirect=True)
def test_fault_matrix_gateway_process(rig: ProcessRig) -> None:
    row = rig.row
    watchdog_s = rig.config.effective_pump_watchdog_s
    poll_s = rig.config.effective_poll_interval_s
    rig.start_gateway()
    assert rig.gateway is not None
    _wait_for(lambda: rig.first_infusing_s() is not None, DEADLINE_S, "the pump infusing")
    started_s = rig.first_infusing_s()
    assert started_s is not None
    rig.wait_for_truth(started_s + row.phase.at_s)

    # The signal, mid-infusion; the pump's clock read just before it bounds when it came.
    before = rig.truth()
    assert before["state"] == "infusing", rig.story()
    assert rig.channel()["state"] == "infusing"
    assert rig.alarm_codes() == set()
    assert before["watchdog"]["timeout_s"] <= watchdog_s  # the pump holds what was asked
    delivered_before_ml = _days(rig.state_dir)[-1][2]
    days_before = len(_days(rig.state_dir))
    signal_s = before["simulated_s"]
    os.kill(rig.gateway.pid, row.signal)

    # (a) the pump stops itself by its watchdog, on its own clock.
    _wait_for(lambda: rig.truth()["state"] != "infusing", DEADLINE_S, "the pump's watchdog stop")
    stopped_s = next((t for t, s in rig.state_changes() if t > signal_s and s != "infusing"), None)
    assert stopped_s is not None, rig.story()
    assert stopped_s - signal_s <= watchdog_s + poll_s, (
        f"stopped {stopped_s - signal_s:.1f} s after the signal; allowed {watchdog_s:.0f} s "
        f"(watchdog) + {poll_s:.0f} s (one poll)\n{rig.story()}"
    )
    stopped = rig.truth()
    assert stopped["state"] == "alarm"
    assert PumpAlarm.COMM_TIMEOUT.value in stopped["alarms"]
    rig.assert_never_over(stopped["lifetime_volume_infused_ml"], "stopped by its watchdog")
    # Longer than the auto-resume rule allows without a person, before the gateway is back.
    rig.wait_for_truth(signal_s + rig.config.control.auto_resume.max_gap_s + poll_s)

    if row.signal is signal.SIGSTOP:
        rig.gateway.send_signal(signal.SIGCONT)
        expected = pump_code(PumpAlarm.COMM_TIMEOUT)
    else:
        rig.gateway.wait(timeout=10)
        rig.start_gateway()
        expected = AlarmCode.OUTAGE_NEEDS_ACK.value
        _wait_for(
            lambda: any(e["restarted"] for e in _journal_events(rig.state_dir, "reconciled")),
            DEADLINE_S,
            "the restarted gateway's reconciliation",
        )
        (reconciled,) = [e for e in _journal_events(rig.state_dir, "reconciled") if e["restarted"]]
        # Never from zero: the day counts what was given before the kill and after it.
        assert reconciled["delivered_ml"] >= delivered_before_ml, rig.story()
        assert reconciled["delivered_ml"] >= (
            stopped["volume_infused_ml"] - READING_STEP_ML - SLACK_ML
        ), rig.story()

    # (b) the alarm a person sees: the channel holds the pump stopped until an acknowledgement.
    _wait_for(
        lambda: expected in rig.alarm_codes() and rig.channel()["state"] == "alarm",
        DEADLINE_S,
        f"{expected} on the gateway's API",
    )
    back_s = rig.truth()["simulated_s"]
    watch_until_s = back_s + WATCH_POLLS * poll_s
    if row.phase is Phase.LATE:  # watch across the day boundary: day 2 opens, still stopped
        _wait_for(
            lambda: len(_days(rig.state_dir)) > days_before,
            DEADLINE_S,
            "the next day opened",
        )
        watch_until_s = max(watch_until_s, rig.truth()["simulated_s"] + 2 * poll_s)
    rig.wait_for_truth(watch_until_s)
    again = [t for t, s in rig.state_changes() if t > stopped_s and s == "infusing"]
    assert not again, f"infusing again at {again} without an acknowledgement\n{rig.story()}"
    assert rig.channel()["state"] == "alarm"
    day = _days(rig.state_dir)[days_before - 1]
    assert day[2] >= delivered_before_ml  # the day of the signal never counts from zero
    rig.assert_never_over(rig.truth()["lifetime_volume_infused_ml"], "before the acknowledgement")

    # A person acknowledges: the course goes on where it was.
    rig.acknowledge()
    _wait_for(
        lambda: rig.truth()["state"] == "infusing" and rig.channel()["state"] == "infusing",
        DEADLINE_S,
        "infusing after the acknowledgement",
    )
    assert rig.alarm_codes() == set()
    rig.stop_gateway()
    # (c) the simulator's ground truth against the journal's prescriptions.
    final = json.loads(_stop(rig.sim).strip().splitlines()[-1])
    rig.assert_never_over(final["lifetime_volume_infused_ml"], "at the end")
    days = _days(rig.state_dir)
    assert days[days_before - 1][2] >= delivered_before_ml
    assert final["lifetime_volume_infused_ml"] == pytest.approx(sum(d[2] for d in days), abs=1.0)
