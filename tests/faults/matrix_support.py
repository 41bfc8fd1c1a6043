"""The harness of the fault matrix and the soak: one channel on the real wire, in virtual time.

A :class:`WireRig` is the product as a bedside runs it, minus the daemon's loop: the software pump
(:class:`~tests.faults.conftest.RecordingPumpModel`) served over its real wire (NE-1000 on a pty,
Modbus over TCP, or either on a serial line), the real driver opened by URL, the journal on disk,
and the :class:`~gateway.channel.Channel` executor, all on one :class:`~protocol.clock.ManualClock`.
:meth:`WireRig.cycle` is one control cycle, as the daemon's tick runs it; after every cycle the
rig's :class:`Invariants` compare what the gateway says with what the simulator really did.

Virtual time is cheap but not free: each cycle is a few wire round trips and one fsync (1-3 ms).
So the stretch before a fault, where nothing is under test, is polled every
:data:`PREFIX_STEP_S` (four minutes, inside the pump's 255-s watchdog), and everything from the
fault on every :data:`POLL_S`, the poll interval the assertions count in.
"""

from __future__ import annotations

import contextlib
import math
import random
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drivers import make_pump
from drivers.base import PumpDriver
from drivers.errors import DriverError
from gateway.channel import Channel
from gateway.config import GatewayConfig, build_config
from gateway.course_state import CourseState
from gateway.dosing import Arm
from gateway.journal import Journal, JournalError
from gateway.rules import OVER_DELIVERY_TOLERANCE
from gateway.timestamps import format_instant
from protocol.clock import ManualClock
from protocol.pump_state import PumpState
from simulator.faults import FaultKind
from simulator.model import PumpSnapshot
from simulator.server import SimulatorServer, serve
from tests.faults.conftest import POLL_S, FaultRun, RecordingPumpModel

__all__ = [
    "CHANNEL_ID",
    "POLL_S",
    "PREFIX_STEP_S",
    "PROTOCOLS",
    "SLACK_ML",
    "InvariantError",
    "Invariants",
    "WireRig",
]

H = 3600.0
CHANNEL_ID = "bed1"
PROTOCOLS = ("newera", "modbus")
#: While nothing is under test, the rig polls this often (simulated s): a quarter of the cycles
#: of :data:`POLL_S`, and still inside the pump's watchdog (255 s), so the pump never stops itself.
PREFIX_STEP_S = 240.0
#: Floating-point slack on "never over": far below any pump's display step (mL).
SLACK_ML = 0.01
#: Slack on "rate at most the ceiling": binary floating point only (mL/h).
RATE_SLACK_ML_PER_H = 1e-9
#: The driver's reply timeout and retries (real seconds: the link does not run on simulated
#: time).  Short, as a pty or loopback answers in well under a millisecond, and a dead line
#: costs this much real time per poll; long enough for a loaded two-core CI machine.
REQUEST_TIMEOUT_S = 0.25
REQUEST_RETRIES = 1
#: The simulated pump: the demo's (gateway/demo.py) maximum rate, a reservoir for a week.
PUMP_MAX_RATE_ML_PER_H = 100.0
RESERVOIR_ML = 5000.0
#: The virtual patient (the demo's): 70 kg, baseline IgM 30 mg/dL, hematocrit 0.35.
WEIGHT_KG = 70.0
IGM_MG_DL = 30.0
HEMATOCRIT = 0.35
#: Lying-pump faults under which the pump's totalizer is not the truth.
TOTALIZER_LIES = frozenset({FaultKind.FROZEN_TOTALIZER, FaultKind.TOTALIZER_JUMP})


class InvariantError(AssertionError):
    """An invariant failed after a control cycle; the message says which, when, and the story."""


@dataclass
class Invariants:
    """What must hold after every control cycle.  The matrix checks the first two; the soak all.

    * ``lifetime``: the simulator's lifetime total is at most the sum of the prescriptions so
      far (+ :data:`SLACK_ML`);
    * ``ceiling``: the commanded rate, the highest ever commanded, and the rate the pump really
      runs at are at most the ceiling;
    * ``per_day``: what the pump really gave in each day window (its lifetime total from the
      cycle the day opened) is at most the day's prescription + ``OVER_DELIVERY_TOLERANCE``;
    * ``alarm_when_stopped``: a pump the simulator holds stopped by an alarm is never shown
      without an active alarm;
    * ``journal_truth``: the totalizer the journal holds from this cycle's reading is the
      simulator's, to within the reading's resolution (unless a lying-totalizer fault is on).
    """

    per_day: bool = False
    alarm_when_stopped: bool = False
    journal_truth: bool = False
    #: Lifetime total at the cycle each day (by number) was first seen, and the last cycle's.
    day_opened_lifetime_ml: dict[int, float] = field(default_factory=dict)
    checked_cycles: int = 0

    def check(self, rig: WireRig) -> None:
        truth = rig.truth()
        course = rig.channel.course
        snap = rig.channel.snapshot()
        problems: list[str] = []
        prescribed = prescribed_total_ml(course)
        if truth.lifetime_volume_infused_ml > prescribed + SLACK_ML:
            problems.append(
                f"lifetime {truth.lifetime_volume_infused_ml:.4f} mL > the prescriptions so far "
                f"{prescribed:.4f} mL"
            )
        ceiling = snap["ceiling_ml_per_h"]
        if ceiling is not None:
            limit = ceiling + RATE_SLACK_ML_PER_H
            commanded = snap["commanded_rate_ml_per_h"]
            if commanded is not None and commanded > limit:
                problems.append(f"commanded {commanded} mL/h > ceiling {ceiling} mL/h")
            if snap["max_commanded_rate_ml_per_h"] > limit:
                problems.append(
                    f"highest commanded {snap['max_commanded_rate_ml_per_h']} mL/h > ceiling"
                )
            if truth.state is PumpState.INFUSING and truth.rate_setpoint_ml_per_h > limit:
                problems.append(
                    f"the pump runs at {truth.rate_setpoint_ml_per_h} mL/h > ceiling {ceiling}"
                )
        if self.per_day:
            problems += self._per_day(course, truth)
        if self.alarm_when_stopped and truth.state is PumpState.ALARM and not snap["alarms"]:
            problems.append(
                f"the pump is stopped by {sorted(a.value for a in truth.alarms)} and the channel "
                f"({snap['state']}) shows no alarm"
            )
        if self.journal_truth:
            problems += self._journal_truth(rig, course, truth)
        self.checked_cycles += 1
        if problems:
            raise InvariantError(
                f"at {rig.now_s / H:.4f} h (cycle {self.checked_cycles}): "
                + "; ".join(problems)
                + f"\n{rig.story()}"
            )

    def _per_day(self, course: CourseState, truth: PumpSnapshot) -> list[str]:
        problems = []
        lifetime = truth.lifetime_volume_infused_ml
        days = sorted(course.days, key=lambda d: d.day)
        for day in days:
            self.day_opened_lifetime_ml.setdefault(day.day, lifetime)
        for day, after in zip(days, [*days[1:], None], strict=True):
            end = lifetime if after is None else self.day_opened_lifetime_ml[after.day]
            given = end - self.day_opened_lifetime_ml[day.day]
            allowed = (day.prescribed_ml or 0.0) * (1.0 + OVER_DELIVERY_TOLERANCE) + SLACK_ML
            if given > allowed:
                problems.append(
                    f"day {day.day}: the pump gave {given:.4f} mL, prescribed "
                    f"{day.prescribed_ml} mL (+{OVER_DELIVERY_TOLERANCE:.1%})"
                )
        return problems

    @staticmethod
    def _journal_truth(rig: WireRig, course: CourseState, truth: PumpSnapshot) -> list[str]:
        link = course.link
        heard_now = link.last_good_poll_s == rig.clock.wall()
        lying = TOTALIZER_LIES & set(rig.model.active_faults())
        if not heard_now or lying or link.last_totalizer_ml is None:
            return []
        # A reading is truncated down to its display step, never above the truth.
        below = truth.volume_infused_ml - link.last_totalizer_ml
        if -SLACK_ML <= below <= link.last_volume_resolution_ml + SLACK_ML:
            return []
        return [
            f"the journal's totalizer {link.last_totalizer_ml} mL vs the pump's "
            f"{truth.volume_infused_ml:.4f} mL (step {link.last_volume_resolution_ml})"
        ]


def prescribed_total_ml(course: CourseState) -> float:
    """The sum of the prescriptions of every day so far (a day waiting for its titer: 0)."""
    return sum(d.prescribed_ml or 0.0 for d in course.days)


class WireRig:
    """One channel, its journal, the real driver and the simulator on its real wire.

    ``serial``: Modbus on RTU over a pty instead of TCP (a serial line's faults, garbage and
    corruption, reach a host only there; NE-1000 is always on a pty).  Close it (or use it as a
    context manager): it owns a server thread, a port and the journal's lock.
    """

    def __init__(
        self,
        protocol: str,
        state_dir: Path,
        *,
        arm: Arm = Arm.FLAT,
        serial: bool = False,
        timeout_s: float | None = None,
        retries: int | None = None,
        seed: int = 0,
        invariants: Invariants | None = None,
    ) -> None:
        self.protocol = protocol
        self.state_dir = state_dir
        timeout_s = REQUEST_TIMEOUT_S if timeout_s is None else timeout_s
        retries = REQUEST_RETRIES if retries is None else retries
        self.clock = ManualClock()
        self.model = RecordingPumpModel(
            self.clock,
            max_rate_ml_per_h=PUMP_MAX_RATE_ML_PER_H,
            reservoir_ml=RESERVOIR_ML,
            rng=random.Random(seed),
        )
        self.invariants = invariants or Invariants()
        #: Cycles that raised, with when (the daemon logs each as cycle_failed and stops the
        #: pump): a journal that cannot write (JournalError), or a bug (anything else).
        self.failed_cycles: list[tuple[float, Exception]] = []
        #: (when, code) each time an alarm appears on the channel's status: what a person sees.
        self.shown: list[tuple[float, str]] = []
        self._showing: set[str] = set()
        self.driver: PumpDriver | None = None
        self._journal: Journal | None = None
        listen = "pty" if protocol == "newera" or serial else "tcp://127.0.0.1:0"
        self.server: SimulatorServer = serve(self.model, protocol=protocol, listen=listen)
        try:
            self.config = self._config(arm, timeout_s, retries)
            self.gateway_starts()
        except BaseException:
            self.close()
            raise

    def _config(self, arm: Arm, timeout_s: float, retries: int) -> GatewayConfig:
        randomised_at = format_instant(self.clock.wall() - H)
        channel: dict[str, Any] = {
            "id": CHANNEL_ID,
            "pump": self.server.pump_url,
            "arm": arm.value,
            "weight_kg": WEIGHT_KG,
            "randomised_at": randomised_at,
        }
        if arm is Arm.TITER:
            channel.update(
                igm_mg_dl=IGM_MG_DL, hematocrit=HEMATOCRIT, titer_measured_at=randomised_at
            )
        return build_config(
            {
                "state_dir": str(self.state_dir),
                "control": {
                    "poll_interval_s": POLL_S,
                    "request_timeout_s": timeout_s,
                    "request_retries": retries,
                },
                "channels": [channel],
            },
            source="fault rig",
        )

    def __enter__(self) -> WireRig:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the port, the journal and the server (safe to call twice)."""
        self.gateway_dies()
        self.server.close()

    def gateway_starts(self) -> Channel:
        """A gateway process starts on the rig's state directory and pump, as the daemon does:
        the journal, a driver with the configured timeout and retries, the channel.  After
        :meth:`gateway_dies`, this is the restart."""
        control = self.config.control
        self._journal = Journal(self.state_dir)
        self.driver = make_pump(
            self.server.pump_url,
            defaults={"timeout_s": control.request_timeout_s, "retries": control.request_retries},
        )
        self.channel = Channel(
            self.config.channels[0],
            self.driver,
            self._journal,
            self.clock,
            control,
            pump_watchdog_s=self.pump_watchdog_s,
            poll_interval_s=self.config.effective_poll_interval_s,
        )
        return self.channel

    def gateway_dies(self) -> None:
        """The gateway's process is gone (the pump is not): its port and journal are released
        as the kernel would release them, and nothing is sent or written on the way out."""
        if self.driver is not None:
            self.driver.close()
        if self._journal is not None:
            self._journal.close()
            self._journal = None

    # -- facts ----------------------------------------------------------------------------

    @property
    def journal(self) -> Journal:
        assert self._journal is not None, "the rig's journal is closed"
        return self._journal

    @property
    def now_s(self) -> float:
        """Simulated seconds since the rig started (the model's, the journal's monotonic)."""
        return self.clock.monotonic()

    @property
    def pump_watchdog_s(self) -> float:
        """The watchdog the channel asks of its pump: five polls, at most what a pump takes."""
        return self.config.effective_pump_watchdog_s

    def truth(self) -> PumpSnapshot:
        return self.model.snapshot()

    def active_alarm_codes(self) -> set[str]:
        return {a["code"] for a in self.channel.snapshot()["alarms"]}

    def fault_run(self) -> FaultRun:
        """The journal and the simulator's event log, for the assertions of ``conftest``."""
        events = list(self.journal.events(CHANNEL_ID)) if self._journal is not None else []
        return FaultRun({}, self.model, events, self.model.events())

    def story(self) -> str:
        """What the gateway did, without the per-poll readbacks: for a failure message."""
        if self._journal is None:
            return "(journal closed)"
        return self.fault_run().describe(limit=80)

    # -- time -----------------------------------------------------------------------------

    def cycle(self) -> None:
        """One control cycle now, as the daemon's tick runs it, then the invariants."""
        try:
            self.channel.step()
        except Exception as exc:  # the daemon: cycle_failed, then driver.stop() (fail safe)
            self.failed_cycles.append((self.now_s, exc))
            assert self.driver is not None
            with contextlib.suppress(DriverError):
                self.driver.stop()
        showing = self.active_alarm_codes()
        self.shown += [(self.now_s, code) for code in sorted(showing - self._showing)]
        self._showing = showing
        self.invariants.check(self)

    def crashes(self) -> list[str]:
        """Cycles that raised anything but a journal error: each is a gateway bug."""
        return [
            f"{t / H:.4f} h: {''.join(traceback.format_exception(exc)[-3:])}"
            for t, exc in self.failed_cycles
            if not isinstance(exc, JournalError)
        ]

    def run(self, seconds: float, step_s: float = POLL_S) -> None:
        """Cycle every ``step_s`` for ``seconds`` of virtual time (a cycle at the start, none at
        the end: the clock ends ``seconds`` later)."""
        self.run_until(self.now_s + seconds, step_s)

    def run_until(self, t_s: float, step_s: float = POLL_S) -> None:
        while self.now_s < t_s - 1e-9:
            self.cycle()
            self.clock.advance(min(step_s, t_s - self.now_s))

    def ack(self, note: str) -> None:
        self.channel.submit_ack("matrix nurse", note)

    def polls(self, n: float) -> float:
        """``n`` poll intervals, simulated s."""
        return n * POLL_S

    def watchdog_bound_s(self) -> float:
        """How long a pump left alone may run: its watchdog, rounded up, plus one poll in which
        the last packet may have come."""
        return math.ceil(self.pump_watchdog_s) + POLL_S
