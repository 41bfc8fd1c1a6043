"""The journal is the single owner of a course: one process per state directory, an intact file,
one time scale, and a daemon that is not ready while a pump would not stop or the journal fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from fastapi.testclient import TestClient

from gateway.api import create_app
from gateway.config import GatewayConfig, build_config
from gateway.daemon import TIME_SCALE_KEY, Gateway, TimeScaleChangedError, clock_for
from gateway.errors import ConfigError
from gateway.journal import (
    _SCHEMA,
    JOURNAL_FILENAME,
    LOCK_FILENAME,
    PAGE_SIZE_BYTES,
    WAL_CHECKPOINT_BYTES,
    DayRecord,
    Journal,
    JournalCorruptError,
    JournalError,
    JournalLockedError,
)
from gateway.timestamps import format_instant
from protocol.clock import ManualClock
from simulator.model import PumpModel
from tests.gateway.model_driver import ModelDriver

REPO = Path(__file__).resolve().parents[2]
#: A child process that opens a Journal on argv[1], says so, then waits to be killed; or, when
#: refused, prints the error's one line and exits with its code, as the CLI does.
OPENER = """
import sys, time
from gateway.journal import Journal, JournalError
try:
    journal = Journal(sys.argv[1])
except JournalError as exc:
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(exc.exit_code)
print("open", flush=True)
time.sleep(60)
"""


def _opener(state_dir: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", OPENER, str(state_dir)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _fill(journal: Journal, events: int = 400) -> None:
    """Enough events and days to spread the journal over many pages."""
    for i in range(events):
        journal.record(
            "bed1", "poll", {"i": i, "pad": "x" * 100}, wall_s=float(i), monotonic_s=float(i)
        )
    journal.upsert_day("bed1", 1, window_start_wall_s=0.0, prescribed_ml=100.0, delivered_ml=5.0)


# -- one gateway per state directory --------------------------------------------------------


@pytest.mark.hazard("H-JN-03")
def test_a_second_journal_on_the_same_state_dir_is_refused_naming_the_holder(
    tmp_path: Path,
) -> None:
    with Journal(tmp_path) as first:
        with pytest.raises(JournalLockedError) as refused:
            Journal(tmp_path)
        message = str(refused.value)
        assert message.startswith(f"state_dir {tmp_path} is in use by pid {os.getpid()} on host")
        assert socket.gethostname() in message
        assert message.endswith(": one gateway per state directory")
        assert "Z: one gateway" in message  # the holder's start time, UTC
        assert "\n" not in message
        assert refused.value.exit_code == 2
        assert isinstance(refused.value, JournalError)
        holder = json.loads((tmp_path / LOCK_FILENAME).read_text())
        assert holder["pid"] == os.getpid()
        assert holder["host"] == socket.gethostname()
        first.record("bed1", "still_mine", {}, wall_s=1.0, monotonic_s=1.0)  # the holder is fine
    with Journal(tmp_path) as again:  # close() released the directory
        assert [e.kind for e in again.events("bed1")] == ["still_mine"]


def test_close_is_idempotent_and_a_closed_journal_refuses_to_write(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.close()
    journal.close()
    with pytest.raises(JournalError, match="closed"):
        journal.record("bed1", "late", {}, wall_s=0.0, monotonic_s=0.0)
    with pytest.raises(JournalError, match="closed"):
        journal.get_meta("schema_version")
    Journal(tmp_path).close()


def test_a_stale_lock_file_from_a_dead_gateway_does_not_block(tmp_path: Path) -> None:
    (tmp_path / LOCK_FILENAME).write_text('{"pid": 1, "host": "gone", "since": "then"}\n')
    with Journal(tmp_path):
        holder = json.loads((tmp_path / LOCK_FILENAME).read_text())
        assert holder["pid"] == os.getpid()


@pytest.mark.timeout(60)
@pytest.mark.hazard("H-JN-03")
def test_a_second_process_is_refused_and_a_killed_holder_releases(tmp_path: Path) -> None:
    # This process holds the directory: another process exits 2 with one line naming us.
    with Journal(tmp_path):
        refused = subprocess.run(
            [sys.executable, "-c", OPENER, str(tmp_path)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert refused.returncode == 2, refused.stderr
    line = refused.stderr.strip()
    assert len(line.splitlines()) == 1
    assert f"is in use by pid {os.getpid()} on host {socket.gethostname()} since" in line
    assert "Traceback" not in refused.stderr

    # Another process holds it, and dies by SIGKILL: the kernel releases its lock.
    holder = _opener(tmp_path)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(JournalLockedError, match=f"pid {holder.pid} "):
            Journal(tmp_path)
    finally:
        holder.kill()
        holder.communicate(timeout=30)
    with Journal(tmp_path) as journal:
        assert journal.get_meta("schema_version") == "2"


@pytest.mark.timeout(60)
@pytest.mark.hazard("H-JN-03")
def test_the_cli_refuses_a_second_gateway_on_a_state_dir_with_one_line(tmp_path: Path) -> None:
    with Journal(tmp_path):
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "gateway",
                "run",
                "--pump",
                "modbus+tcp://127.0.0.1:1",
                "--arm",
                "flat",
                "--weight-kg",
                "70",
                "--randomised-at",
                format_instant(time.time() - 3600.0),
                "--state-dir",
                str(tmp_path),
                "--log-json",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip().splitlines() == [
        next(line for line in run.stderr.splitlines() if line.startswith("error: "))
    ]
    assert f"is in use by pid {os.getpid()}" in run.stderr
    assert "one gateway per state directory" in run.stderr


# -- integrity at open ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("page 2", "database disk image is malformed"),  # SQLite itself refuses to read it
        ("cells of a later page", "On tree page"),  # quick_check answers with its findings
    ],
)
@pytest.mark.hazard("H-JN-02")
def test_a_journal_with_a_damaged_page_is_refused_at_open_and_left_as_it_was(
    tmp_path: Path, where: str, expected: str
) -> None:
    with Journal(tmp_path) as journal:
        _fill(journal)
    path = tmp_path / JOURNAL_FILENAME
    size = path.stat().st_size
    page = PAGE_SIZE_BYTES
    assert size > 32 * page
    with path.open("r+b") as f:
        if where == "page 2":
            f.seek(page)
            f.write(bytes((i * 7 + 13) % 256 for i in range(page)))
        else:
            f.seek(size - 2 * page + 100)
            f.write(b"\xff" * 300)
    damaged = path.read_bytes()
    with pytest.raises(JournalCorruptError) as refused:
        Journal(tmp_path)
    message = str(refused.value)
    assert message.startswith(f"{path}: integrity check failed: ")
    assert expected in message
    assert "\n" not in message
    assert message.endswith("; keep the file for the investigation, see docs/operations.md")
    assert refused.value.exit_code == 2
    assert path.read_bytes() == damaged  # nothing was written to the evidence
    with pytest.raises(JournalCorruptError):  # and the refusal released the directory
        Journal(tmp_path)


@pytest.mark.hazard("H-JN-02")
def test_a_new_journal_has_small_pages_and_an_old_one_keeps_its_own(tmp_path: Path) -> None:
    """New journals use PAGE_SIZE_BYTES pages (a cycle's commit writes fewer bytes); a journal
    written with SQLite's default 4 kB pages is opened, written and read as it is.  Both
    checkpoint their write-ahead log at WAL_CHECKPOINT_BYTES."""
    new_dir, old_dir = tmp_path / "new", tmp_path / "old"
    new_dir.mkdir()
    old_dir.mkdir()
    Journal(new_dir).close()
    with sqlite3.connect(old_dir / JOURNAL_FILENAME) as raw:
        raw.execute("PRAGMA page_size=4096")
        raw.execute("PRAGMA journal_mode=WAL")
        raw.executescript(_SCHEMA)
        raw.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?)", ("2",))
    raw.close()
    for state_dir, page_size in ((new_dir, PAGE_SIZE_BYTES), (old_dir, 4096)):
        with Journal(state_dir) as journal:
            journal.record("bed1", "note", {"n": 1}, wall_s=1.0, monotonic_s=1.0)
            # The log is checkpointed at the same size in bytes whatever the page size.
            (pages,) = journal._connection.execute("PRAGMA wal_autocheckpoint").fetchone()
            assert pages * page_size == WAL_CHECKPOINT_BYTES
        with sqlite3.connect(state_dir / JOURNAL_FILENAME) as raw:
            assert raw.execute("PRAGMA page_size").fetchone() == (page_size,)
        raw.close()
        with Journal(state_dir) as journal:
            assert [e.payload for e in journal.events("bed1", "note")] == [{"n": 1}]


@pytest.mark.hazard("H-JN-02")
def test_a_file_that_is_not_sqlite_is_refused_at_open(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_FILENAME
    path.write_bytes(b"this is not a journal\n" * 500)
    with pytest.raises(JournalCorruptError, match="not a journal") as refused:
        Journal(tmp_path)
    assert str(path) in str(refused.value)
    assert "\n" not in str(refused.value)
    assert path.read_bytes() == b"this is not a journal\n" * 500


@pytest.mark.hazard("H-JN-02")
def test_another_schema_version_is_refused_and_releases_the_directory(tmp_path: Path) -> None:
    Journal(tmp_path).close()
    with sqlite3.connect(tmp_path / JOURNAL_FILENAME) as raw:
        raw.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    raw.close()
    for _ in range(2):  # a JournalError, not JournalLockedError, the second time too
        with pytest.raises(JournalError, match="schema version 99, this gateway reads 2") as e:
            Journal(tmp_path)
        assert not isinstance(e.value, JournalLockedError)


@pytest.mark.hazard("H-JN-02")
def test_sqlite_errors_on_writes_and_reads_are_journal_errors(tmp_path: Path) -> None:
    with Journal(tmp_path) as journal:
        journal.record("bed1", "first", {}, wall_s=0.0, monotonic_s=0.0, state={"v": 1})
        raw = sqlite3.connect(tmp_path / JOURNAL_FILENAME, isolation_level=None)
        raw.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON events"
            " BEGIN SELECT RAISE(ABORT, 'disk says no'); END"
        )
        with pytest.raises(JournalError, match="cannot write: disk says no") as refused:
            journal.record("bed1", "second", {}, wall_s=1.0, monotonic_s=1.0, state={"v": 2})
        assert str(tmp_path / JOURNAL_FILENAME) in str(refused.value)
        assert isinstance(refused.value.__cause__, sqlite3.Error)
        with pytest.raises(JournalError, match="disk says no"):
            journal.commit(
                "bed1",
                [("decision", {})],
                state={"v": 3},
                days=[DayRecord(1, 0.0, 10.0, 1.0, False, {})],
                wall_s=2.0,
                monotonic_s=2.0,
            )
        # Rolled back whole: neither the event nor the state nor the day.
        assert json.loads(journal.channel_state("bed1") or "{}") == {"v": 1}
        assert journal.days("bed1") == []
        raw.execute("DROP TRIGGER refuse")
        journal.record("bed1", "third", {}, wall_s=3.0, monotonic_s=3.0)  # usable again
        assert [e.kind for e in journal.events("bed1")] == ["first", "third"]

        raw.execute("DROP TABLE days")
        with pytest.raises(JournalError, match="cannot read days: no such table"):
            journal.days("bed1")
        with pytest.raises(JournalError, match="cannot write: no such table"):
            journal.upsert_day(
                "bed1", 1, window_start_wall_s=0.0, prescribed_ml=1.0, delivered_ml=0.0
            )
        raw.execute("DROP TABLE events")
        with pytest.raises(JournalError, match="cannot read events"):
            list(journal.events("bed1"))
        raw.close()


# -- one time scale per course --------------------------------------------------------------


def _config(state_dir: Path, time_scale: float) -> GatewayConfig:
    return build_config(
        {
            "state_dir": str(state_dir),
            "time_scale": time_scale,
            "channels": [{"id": "bed1", "pump": "modbus+tcp://127.0.0.1:1"}],
        }
    )


@pytest.mark.parametrize(("first", "then"), [(1200.0, 600.0), (1.0, 1200.0), (1200.0, 1.0)])
@pytest.mark.hazard("H-CK-01")
def test_a_restart_with_another_time_scale_is_refused(
    tmp_path: Path, first: float, then: float
) -> None:
    with Journal(tmp_path) as journal:
        clock_for(_config(tmp_path, first), journal)
        assert journal.get_meta(TIME_SCALE_KEY) == repr(first)
    with Journal(tmp_path) as journal:
        clock_for(_config(tmp_path, first), journal)  # the same scale: fine
        with pytest.raises(TimeScaleChangedError) as refused:
            clock_for(_config(tmp_path, then), journal)
    message = str(refused.value)
    assert message.startswith("time_scale: ")
    assert f"started with time_scale {first!r}" in message
    assert f"this configuration says {then!r}" in message
    assert "\n" not in message
    assert isinstance(refused.value, ConfigError)
    assert refused.value.exit_code == 2


@pytest.fixture
def default_logging() -> Iterator[None]:
    """structlog's defaults for one test (an in-process CLI test may have left it writing to a
    captured stderr that is closed by now), then whatever was configured before."""
    saved = structlog.get_config()
    structlog.reset_defaults()
    yield
    structlog.configure(**saved)


@pytest.mark.usefixtures("default_logging")  # a time_scale other than 1 logs a warning
def test_the_daemon_refuses_another_time_scale_and_releases_the_directory(
    tmp_path: Path,
) -> None:
    model = PumpModel(ManualClock(), max_rate_ml_per_h=200.0, reservoir_ml=5000.0)
    gateway = Gateway(_config(tmp_path, 1200.0), driver_factory=lambda url: ModelDriver(model))
    asyncio.run(gateway.shutdown("test over"))
    with pytest.raises(
        TimeScaleChangedError, match=re.escape("1200.0, this configuration says 600.0")
    ):
        Gateway(_config(tmp_path, 600.0), driver_factory=lambda url: ModelDriver(model))
    with Journal(tmp_path) as journal:  # the refused daemon closed its journal
        assert journal.get_meta(TIME_SCALE_KEY) == "1200.0"


# -- readiness ------------------------------------------------------------------------------


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    clock = ManualClock()
    model = PumpModel(clock, max_rate_ml_per_h=200.0, reservoir_ml=5000.0)
    gw = Gateway(_config(tmp_path, 1.0), clock=clock, driver_factory=lambda url: ModelDriver(model))
    yield gw
    asyncio.run(gw.shutdown("test over"))


def _fake_snapshots(gateway: Gateway, *codes: str) -> list[dict[str, Any]]:
    alarms = [{"code": c, "detail": "", "stops": True} for c in codes]
    heard = gateway.clock.wall()
    return [
        {"id": "bed1", "state": "alarm", "last_good_poll_wall_s": heard, "alarms": alarms},
        {"id": "bed2", "state": "infusing", "last_good_poll_wall_s": heard, "alarms": []},
    ]


@pytest.mark.parametrize("code", ["stop_failed", "journal_failed"])
@pytest.mark.hazard("H-OV-09", "H-JN-02")
def test_not_ready_while_a_channel_cannot_stop_its_pump_or_record(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch, code: str
) -> None:
    asyncio.run(gateway.tick())
    monkeypatch.setattr(
        Gateway, "snapshots", lambda self: _fake_snapshots(self, "pump_occlusion", code)
    )
    assert gateway.ready() == (False, [f"channel bed1: alarm {code}"])
    with TestClient(create_app(gateway, None)) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"ready": False, "problems": [f"channel bed1: alarm {code}"]}


def test_other_alarms_do_not_make_the_daemon_unready(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    asyncio.run(gateway.tick())
    monkeypatch.setattr(Gateway, "snapshots", lambda self: _fake_snapshots(self, "pump_occlusion"))
    assert gateway.ready() == (True, [])
