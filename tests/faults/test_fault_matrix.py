"""The fault matrix: each fault x protocol (NE-1000, Modbus) x phase of the day, on the real wire.

One table, :data:`FAULTS`, crossed with :data:`~tests.faults.matrix_support.PROTOCOLS` and the
phases each fault applies in (:class:`Phase`), is every row (``pytest -k matrix`` lists them as
``<fault>-<protocol>-<phase>``).  A row runs a flat-arm course (70 kg, 350 mL a day, 60-s polls)
against the software pump over its real wire (:class:`~tests.faults.matrix_support.WireRig`),
injects the fault 10 s after a poll at its phase, and asserts:

(a) the safe state, from the simulator's own state log: the pump is not infusing within
    ``detect_polls`` poll intervals of the fault (:attr:`Safe.STOPPED`), or within its own
    watchdog where the gateway cannot act (:attr:`Safe.BY_WATCHDOG`), or never started
    (:attr:`Safe.NEVER_STARTED`), and stays so while the fault stands; an advisory fault
    (:attr:`Safe.RUNS_ON`) must not stop the pump at all, and the pump keeps within the
    ceiling;
(b) the alarm a person sees: one of the row's alarm codes is raised within the same bound (in the
    journal, or on the channel's status when the journal itself is what failed), or the error
    the operator gets;
(c) the simulator's lifetime total is at most the sum of the prescriptions so far, after every
    control cycle (:class:`~tests.faults.matrix_support.Invariants`), through the fault and
    through the recovery after it (the fault ends, a person acknowledges, 20 min more).

Phases: ``start`` (the fault is there before the first connection), ``early`` (1 h into day 1),
``mid`` (12 h), ``late`` (16 min before the day boundary; observed across it into day 2).

The plain suite runs each fault's ``plain`` phases on both protocols; every other row is
``slow``.  Process-level rows (SIGKILL, SIGSTOP of a real ``infusion-gateway run`` against
``infusion-gateway sim``) live in :mod:`tests.faults.test_fault_matrix_processes`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import pytest

from gateway.course_state import AlarmCode
from gateway.daemon import Gateway
from gateway.journal import JOURNAL_FILENAME, JournalCorruptError
from gateway.rules import SILENT_POLLS_BEFORE_STOP, TOTALIZER_STALL_READINGS
from protocol.pump_state import STOPPING_ALARMS, PumpAlarm, PumpState
from simulator.faults import FaultKind, FaultScript, parse_fault_script
from simulator.newera_session import NE_ALARM_FOR
from tests.faults.conftest import FaultRun
from tests.faults.matrix_support import (
    POLL_S,
    PREFIX_STEP_S,
    PROTOCOLS,
    SLACK_ML,
    WireRig,
    prescribed_total_ml,
)

pytestmark = pytest.mark.timeout(120)

H = 3600.0
#: A fault comes this long after a poll (simulated s): between two polls, as faults do.
FAULT_AFTER_POLL_S = 10.0
#: After the fault ends and a person acknowledges, the course runs on this long.
RECOVERY_S = 20 * 60.0
#: A dead or late line costs real time per poll: these rows wait this long for a reply (real s).
DEAD_LINE_TIMEOUT_S = 0.1
#: A late reply arrives this long after its request (real s on a manual clock, > the timeout).
LATE_REPLY_S = 0.3
#: How far a clock step moves the wall clock (simulated s).
CLOCK_STEP_S = 3 * H
#: Offsets of the jumping totalizer and the wrong rate echo.
TOTALIZER_JUMP_ML = 30.0
RATE_ECHO_OFFSET_ML_PER_H = 1.0


class Phase(Enum):
    """When in the course the fault comes (simulated s), and how long it is watched."""

    START = (0.0, 6 * 60.0)
    EARLY = (1 * H, 6 * 60.0)
    MID = (12 * H, 6 * 60.0)
    # On the prefix's 4-min grid, 16 min before the boundary; watched 14 min into day 2.
    LATE = (24 * H - 16 * 60.0, 30 * 60.0)

    def __init__(self, at_s: float, observe_s: float) -> None:
        self.at_s = at_s
        self.observe_s = observe_s

    @property
    def label(self) -> str:
        return self.name.lower()


ALL_PHASES = (Phase.EARLY, Phase.MID, Phase.LATE)


class Safe(Enum):
    """The safe state a fault must end in (see the module docstring, (a))."""

    STOPPED = "stopped within detect_polls polls"
    BY_WATCHDOG = "stopped by the pump's own watchdog"
    NEVER_STARTED = "never started"
    RUNS_ON = "runs on, no stop, within the limits"


Act = Callable[[WireRig], None]


@dataclass(frozen=True)
class Fault:
    """One fault of the matrix: how to make it, how to end it, and what must follow."""

    id: str
    inject: Act
    safe: Safe
    #: The gateway shows one of these (empty: nothing is required).
    alarms: frozenset[str]
    #: ... or these on an NE-1000, where its wire says it otherwise (None: the same).
    newera_alarms: frozenset[str] | None = None
    #: Ends the fault before the acknowledgement; None: nothing to end (the ack clears it).
    clear: Act | None = None
    #: False: no recovery is tried (the gateway cannot go on: a journal that fails).
    recovers: bool = True
    detect_polls: float = 2.0
    #: Safe.BY_WATCHDOG on a line the pump still hears: the gateway stops talking after this
    #: many silent polls (SILENT_POLLS_BEFORE_STOP), and the watchdog counts from there.
    quiet_after_polls: float = 0.0
    phases: tuple[Phase, ...] = ALL_PHASES
    #: Phases run in the plain suite, on ``plain_protocols``; the rest are ``slow``.
    plain: tuple[Phase, ...] = (Phase.EARLY,)
    plain_protocols: tuple[str, ...] = PROTOCOLS
    #: Modbus on a serial line (RTU) instead of TCP: only there can a reply be garbled.
    serial: bool = False
    timeout_s: float | None = None
    retries: int | None = None
    protocols: tuple[str, ...] = PROTOCOLS
    #: A real gateway bug this fault shows: its rows on ``bug_protocols`` in ``bug_phases``
    #: are strict xfails with this reason.
    bug: str | None = None
    bug_protocols: tuple[str, ...] = PROTOCOLS
    bug_phases: tuple[Phase, ...] = tuple(Phase)

    def expected_alarms(self, protocol: str) -> frozenset[str]:
        if protocol == "newera" and self.newera_alarms is not None:
            return self.newera_alarms
        return self.alarms


def pump_code(alarm: PumpAlarm) -> str:
    """The channel's alarm code for an alarm the pump reports (docs/design.md)."""
    return f"pump_{alarm.value}"


def newera_code(alarm: PumpAlarm) -> frozenset[str]:
    """What an NE-1000 reports ``alarm`` as (a stall, a reset, ...), or nothing."""
    ne = NE_ALARM_FOR.get(alarm)
    return frozenset() if ne is None else frozenset({pump_code(ne.pump_alarm)})


def inject(kind: FaultKind, value: float | None = None) -> Act:
    return lambda rig: rig.model.inject_fault(kind, value)


def clear(kind: FaultKind) -> Act:
    return lambda rig: rig.model.clear_fault(kind)


def script(rig: WireRig, *entries: tuple[float, FaultKind, bool]) -> FaultScript:
    """``(seconds from now, fault, inject?)`` entries as a script on the model's own clock."""
    elapsed = rig.now_s - rig.model.started_monotonic_s
    return parse_fault_script(
        {
            "faults": [
                {
                    "at_s": elapsed + after,
                    "fault": kind.value,
                    "action": "inject" if on else "clear",
                }
                for after, kind, on in entries
            ]
        }
    )


def pump_alarm(alarm: PumpAlarm, kind: FaultKind) -> Fault:
    """A pump alarm: the pump stops itself (or, advisory, runs on) and says why."""
    stops = alarm in STOPPING_ALARMS
    return Fault(
        kind.value,
        inject(kind),
        Safe.STOPPED if stops else Safe.RUNS_ON,
        frozenset({pump_code(alarm)}),
        newera_alarms=newera_code(alarm),
        clear=None if kind in (FaultKind.PROGRAM_ERROR, FaultKind.POWER_LOSS) else clear(kind),
    )


def operator_stop_refused(rig: WireRig) -> None:
    rig.model.inject_fault(FaultKind.STOP_REFUSED)
    rig.channel.submit_stop("matrix nurse", "procedure")


def one_poll_drop(rig: WireRig) -> None:
    """The line goes dead now and comes back a poll later (the next poll is lost)."""
    rig.model.schedule(script(rig, (0.0, FaultKind.HANG, True), (POLL_S, FaultKind.HANG, False)))


def not_held_then_reconnect(rig: WireRig) -> None:
    """The watchdog is not held; the gateway finds out at its next connection, which a one-poll
    drop makes (at ``start``: the first poll of the course is lost)."""
    rig.model.inject_fault(FaultKind.WATCHDOG_NOT_HELD)
    one_poll_drop(rig)


#: SQLite's result code for "database or disk is full" (what ENOSPC becomes).
SQLITE_FULL = 13


class FullDisk:
    """The journal's SQLite connection on a full disk: every statement that writes fails with
    SQLite's own ``SQLITE_FULL`` error, and the transaction is rolled back, as SQLite does when
    the disk fills; reads still work.  Everything above it (savepoints, group commit, the
    JournalError the channel gets) is the journal's real code."""

    WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)

    def _check(self, sql: str) -> None:
        if sql.lstrip().upper().startswith(self.WRITES):
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            error = sqlite3.OperationalError("database or disk is full")
            error.sqlite_errorcode = SQLITE_FULL
            error.sqlite_errorname = "SQLITE_FULL"
            raise error

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        self._check(sql)
        return self._db.execute(sql, *args)

    def executemany(self, sql: str, *args: Any) -> sqlite3.Cursor:
        self._check(sql)
        return self._db.executemany(sql, *args)


def fill_the_disk(rig: WireRig) -> None:
    """From now on every journal write fails as on a full disk (:class:`FullDisk`)."""
    journal = rig.journal
    journal._db = FullDisk(journal._connection)  # type: ignore[assignment]


def step_wall(seconds: float) -> Act:
    return lambda rig: rig.clock.step_wall(seconds)


def line(kind: FaultKind, value: float) -> Act:
    return inject(kind, value)


ALARM_FAULTS = [
    pump_alarm(PumpAlarm.OCCLUSION, FaultKind.OCCLUSION),
    pump_alarm(PumpAlarm.AIR_IN_LINE, FaultKind.AIR_IN_LINE),
    pump_alarm(PumpAlarm.DOOR_OPEN, FaultKind.DOOR_OPEN),
    pump_alarm(PumpAlarm.LOW_BATTERY, FaultKind.LOW_BATTERY),
    pump_alarm(PumpAlarm.RESERVOIR_EMPTY, FaultKind.RESERVOIR_EMPTY),
    pump_alarm(PumpAlarm.PROGRAM_ERROR, FaultKind.PROGRAM_ERROR),
    pump_alarm(PumpAlarm.POWER_LOSS, FaultKind.POWER_LOSS),
]

FAULTS: list[Fault] = [
    Fault(
        "link_loss",
        inject(FaultKind.HANG),
        Safe.BY_WATCHDOG,
        frozenset({AlarmCode.PUMP_SILENT.value}),
        clear=clear(FaultKind.HANG),
        timeout_s=DEAD_LINE_TIMEOUT_S,
        retries=0,
        # A dead line costs real seconds a poll: the plain suite keeps the cheaper wire.
        plain_protocols=("modbus",),
    ),
    Fault(
        # Every reply fails its check (a CRC: NE-1000 safe framing, Modbus RTU).
        "garbled_replies",
        line(FaultKind.CORRUPT, 1.0),
        Safe.BY_WATCHDOG,
        frozenset({AlarmCode.PUMP_SILENT.value}),
        clear=clear(FaultKind.CORRUPT),
        serial=True,
        timeout_s=DEAD_LINE_TIMEOUT_S,
        retries=0,
        quiet_after_polls=SILENT_POLLS_BEFORE_STOP,
        plain_protocols=("newera",),
    ),
    Fault(
        # Noise before half the replies: the NE-1000 driver finds the frame behind it; nothing
        # may stop.  (On Modbus RTU noise before a frame is a garbled frame: garbled_replies.)
        "noisy_line",
        line(FaultKind.GARBAGE, 0.5),
        Safe.RUNS_ON,
        frozenset(),
        clear=clear(FaultKind.GARBAGE),
        protocols=("newera",),
    ),
    Fault(
        # One poll lost: within the auto-resume rule (120 s), the pump runs on, advisory only.
        "link_blip",
        one_poll_drop,
        Safe.RUNS_ON,
        frozenset({AlarmCode.PUMP_SILENT.value}),
        phases=(Phase.START, *ALL_PHASES),
        plain=(Phase.START, Phase.EARLY),
        timeout_s=DEAD_LINE_TIMEOUT_S,
        retries=0,
    ),
    Fault(
        "late_replies",
        line(FaultKind.SLOW, LATE_REPLY_S),
        Safe.BY_WATCHDOG,
        frozenset({AlarmCode.PUMP_SILENT.value}),
        clear=clear(FaultKind.SLOW),
        timeout_s=DEAD_LINE_TIMEOUT_S,
        retries=0,
        plain=(),
        quiet_after_polls=SILENT_POLLS_BEFORE_STOP,
    ),
    Fault(
        # Every reply arrives twice: the copy must never be taken for the next reply.
        "duplicated_replies",
        line(FaultKind.DUPLICATE, 1.0),
        Safe.RUNS_ON,
        frozenset(),
        clear=clear(FaultKind.DUPLICATE),
        serial=True,
    ),
    Fault(
        "wrong_rate_echo",
        inject(FaultKind.RATE_ECHO_WRONG, RATE_ECHO_OFFSET_ML_PER_H),
        Safe.STOPPED,
        frozenset({AlarmCode.RATE_MISMATCH.value}),
        clear=clear(FaultKind.RATE_ECHO_WRONG),
    ),
    *ALARM_FAULTS,
    Fault(
        "stop_refused",
        operator_stop_refused,
        Safe.BY_WATCHDOG,
        frozenset({AlarmCode.STOP_FAILED.value}),
        clear=clear(FaultKind.STOP_REFUSED),
    ),
    Fault(
        "frozen_totalizer",
        inject(FaultKind.FROZEN_TOTALIZER),
        Safe.STOPPED,
        frozenset({AlarmCode.TOTALIZER_IMPLAUSIBLE.value}),
        clear=clear(FaultKind.FROZEN_TOTALIZER),
        # It must stand still for that many readings before it is implausible.
        detect_polls=TOTALIZER_STALL_READINGS + 2,
    ),
    Fault(
        "totalizer_jump_up",
        inject(FaultKind.TOTALIZER_JUMP, TOTALIZER_JUMP_ML),
        Safe.STOPPED,
        frozenset({AlarmCode.TOTALIZER_IMPLAUSIBLE.value}),
        clear=clear(FaultKind.TOTALIZER_JUMP),
    ),
    Fault(
        "totalizer_jump_down",
        inject(FaultKind.TOTALIZER_JUMP, -TOTALIZER_JUMP_ML),
        Safe.STOPPED,
        frozenset({AlarmCode.TOTALIZER_WENT_BACK.value, AlarmCode.TOTALIZER_IMPLAUSIBLE.value}),
        clear=clear(FaultKind.TOTALIZER_JUMP),
    ),
    Fault(
        "watchdog_not_held",
        not_held_then_reconnect,
        Safe.STOPPED,
        frozenset({AlarmCode.WATCHDOG_UNCONFIRMED.value}),
        clear=clear(FaultKind.WATCHDOG_NOT_HELD),
        # Found at the next connection: after the one-poll drop.
        detect_polls=3,
        phases=(Phase.START, *ALL_PHASES),
        plain=(Phase.START,),
        timeout_s=DEAD_LINE_TIMEOUT_S,
        retries=0,
    ),
    Fault(
        "disk_full",
        fill_the_disk,
        Safe.STOPPED,
        frozenset({"journal_failed"}),
        recovers=False,
    ),
    Fault(
        "clock_step_forward",
        step_wall(CLOCK_STEP_S),
        Safe.RUNS_ON,
        frozenset({AlarmCode.CLOCK_STEP.value}),
    ),
    Fault(
        "clock_step_back",
        step_wall(-CLOCK_STEP_S),
        Safe.RUNS_ON,
        frozenset({AlarmCode.CLOCK_STEP.value}),
    ),
]

#: Restart with a damaged journal: its own harness (the gateway must refuse to start).
JOURNAL_CORRUPT = "journal_corrupt"


@dataclass(frozen=True)
class Row:
    fault: Fault
    protocol: str
    phase: Phase

    @property
    def id(self) -> str:
        return f"{self.fault.id}-{self.protocol}-{self.phase.label}"


def matrix() -> Iterator[object]:
    """Every row, as pytest params with readable ids and their marks."""
    for fault in FAULTS:
        for phase in fault.phases:
            for protocol in fault.protocols:
                row = Row(fault, protocol, phase)
                marks: list[pytest.MarkDecorator] = []
                if phase not in fault.plain or protocol not in fault.plain_protocols:
                    marks.append(pytest.mark.slow)
                if (
                    fault.bug is not None
                    and protocol in fault.bug_protocols
                    and phase in fault.bug_phases
                ):
                    marks.append(pytest.mark.xfail(strict=True, reason=fault.bug))
                yield pytest.param(row, id=row.id, marks=marks)


def make_rig(row: Row, tmp_path: Path) -> WireRig:
    fault = row.fault
    return WireRig(
        row.protocol,
        tmp_path / "state",
        serial=fault.serial,
        timeout_s=fault.timeout_s,
        retries=fault.retries,
    )


def come_to(rig: WireRig, phase: Phase) -> float:
    """Run the course to ``phase``; then a poll, and the fault's instant 10 s later."""
    rig.run_until(phase.at_s, PREFIX_STEP_S)
    if phase is not Phase.START:
        assert rig.truth().state is PumpState.INFUSING, rig.story()
        rig.cycle()
    rig.clock.advance(FAULT_AFTER_POLL_S)
    return rig.now_s


def alarms_seen(rig: WireRig, since_s: float) -> list[tuple[float, str]]:
    """(when, code) of every alarm that appeared on the channel's status at or after
    ``since_s`` (a journal failure too, which the journal itself cannot hold)."""
    return [(t, code) for t, code in rig.shown if t >= since_s]


def infusing_again(run: FaultRun, after_s: float, until_s: float) -> list[float]:
    return [
        t
        for t, state in run.state_changes()
        if after_s < t <= until_s and state is PumpState.INFUSING
    ]


@pytest.mark.parametrize("row", list(matrix()))
def test_fault_matrix(row: Row, tmp_path: Path) -> None:
    fault = row.fault
    with make_rig(row, tmp_path) as rig:
        fault_s = come_to(rig, row.phase)
        fault.inject(rig)
        rig.clock.advance(POLL_S - FAULT_AFTER_POLL_S)
        observe_s = max(row.phase.observe_s, rig.watchdog_bound_s() + POLL_S)
        rig.run(observe_s)
        ended_s = rig.now_s
        run = rig.fault_run()
        story = f"{row.id}\n{run.describe(limit=80)}"

        assert not rig.crashes(), "a control cycle raised:\n" + "\n".join(rig.crashes())
        # (a) the safe state, by the simulator's own state log.
        if row.phase is Phase.START and fault.safe is Safe.RUNS_ON:
            bound_s = ended_s
            assert run.ever_infused(), f"the course never started\n{story}"
        elif fault.safe is Safe.NEVER_STARTED or row.phase is Phase.START:
            assert not run.ever_infused(), story
            assert rig.truth().lifetime_volume_infused_ml == 0.0
            bound_s = fault_s + rig.polls(fault.detect_polls)
        elif fault.safe is Safe.RUNS_ON:
            bound_s = ended_s
            stops = [
                e.payload["code"]
                for e in run.events("alarm")
                if e.monotonic_s >= fault_s and e.payload["stop"]
            ]
            assert not stops, f"an advisory fault stopped the pump: {stops}\n{story}"
            if row.phase is not Phase.LATE:  # across the boundary the day's own stop is due
                assert run.stopped_at(fault_s) is None, story
        else:
            bound_s = fault_s + (
                rig.watchdog_bound_s() + rig.polls(fault.quiet_after_polls)
                if fault.safe is Safe.BY_WATCHDOG
                else rig.polls(fault.detect_polls)
            )
            stopped_s = run.stopped_at(fault_s)
            assert stopped_s is not None, f"the pump never stopped\n{story}"
            assert stopped_s <= bound_s, (
                f"stopped {(stopped_s - fault_s) / POLL_S:.2f} polls after the fault, allowed "
                f"{(bound_s - fault_s) / POLL_S:.2f}\n{story}"
            )
            again = infusing_again(run, stopped_s, ended_s)
            assert not again, f"infusing again while the fault stands, at {again}\n{story}"

        # (b) the alarm a person sees.
        expected = fault.expected_alarms(row.protocol)
        if expected:
            seen = alarms_seen(rig, fault_s)
            matching = [t for t, code in seen if code in expected]
            assert matching, f"none of {sorted(expected)} raised; saw {seen}\n{story}"
            if fault.safe is not Safe.RUNS_ON or fault.id.startswith("clock_step"):
                assert min(matching) <= max(bound_s, fault_s + rig.polls(fault.detect_polls))

        # (c) never over (also after every cycle, by the rig's invariants), then the recovery.
        assert rig.truth().lifetime_volume_infused_ml <= (
            prescribed_total_ml(rig.channel.course) + SLACK_ML
        )
        if fault.recovers:
            if fault.clear is not None:
                fault.clear(rig)
            rig.ack("the fault was found and put right")
            rig.run(RECOVERY_S)
            assert not rig.crashes(), "a control cycle raised:\n" + "\n".join(rig.crashes())
        assert rig.invariants.checked_cycles > 0


def corrupt_file(path: Path) -> None:
    """Overwrite the middle third of ``path`` with a pattern: a torn write, a bad sector."""
    size = path.stat().st_size
    with path.open("r+b") as file:
        file.seek(size // 3)
        file.write(b"\xa5" * (size // 3))


@pytest.mark.parametrize(
    ("protocol", "phase"),
    [
        pytest.param(
            p,
            ph,
            id=f"{JOURNAL_CORRUPT}-{p}-{ph.label}",
            marks=[] if ph is Phase.EARLY else [pytest.mark.slow],
        )
        for ph in ALL_PHASES
        for p in PROTOCOLS
    ],
)
def test_fault_matrix_journal_corrupt_at_start(protocol: str, phase: Phase, tmp_path: Path) -> None:
    """The gateway process dies mid-course and its journal is damaged: the restarted gateway
    refuses to start (one line naming the file), and the pump, left alone, stops itself."""
    with WireRig(protocol, tmp_path / "state") as rig:
        fault_s = come_to(rig, phase)
        prescribed = prescribed_total_ml(rig.channel.course)
        rig.gateway_dies()  # no stop, no shutdown entry: the pump is left to itself
        corrupt_file(rig.state_dir / JOURNAL_FILENAME)
        with pytest.raises(JournalCorruptError) as refused:
            Gateway(rig.config, clock=rig.clock)
        message = str(refused.value)
        assert str(rig.state_dir / JOURNAL_FILENAME) in message
        assert "\n" not in message
        assert refused.value.exit_code == 2
        rig.clock.advance(rig.watchdog_bound_s())
        run = FaultRun({}, rig.model, [], rig.model.events())
        stopped_s = run.stopped_at(fault_s)
        assert stopped_s is not None
        assert stopped_s <= fault_s + rig.watchdog_bound_s()
        assert PumpAlarm.COMM_TIMEOUT in rig.truth().alarms
        assert rig.truth().lifetime_volume_infused_ml <= prescribed + SLACK_ML
