"""The course report's data, reader and command line on small journals written here.

Each journal is written through :class:`gateway.journal.Journal`, as the daemon writes one, with
readbacks only where something changed plus sparse checkpoints (the thinned journal), an
operator stop, an alarm, an acknowledgement, a titer and a weight change at known times; the
report's series and markers must say exactly those.  The reader must read a journal whose owner
still holds it, and refuse a missing, damaged or foreign one in one line.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import main
from gateway.errors import InputError
from gateway.journal import JOURNAL_FILENAME, Journal
from gateway.report.course import MarkerKind, build_course_report
from gateway.report.output import load_report
from gateway.report.reader import (
    JournalDamagedError,
    JournalMissingError,
    JournalSchemaError,
    read_journal,
)

#: Day 1's window opens at this wall time (2026-01-01T00:00Z); monotonic 0 there.
T0 = 1_767_225_600.0
RATE = 10.0
CEILING = 28.0
PRESCRIBED_ML = 240.0


@dataclass
class Writer:
    journal: Journal
    channel: str = "bed1"

    def at(self, hours: float, kind: str, **payload: Any) -> None:
        seconds = hours * 3600.0
        self.journal.record(self.channel, kind, payload, wall_s=T0 + seconds, monotonic_s=seconds)

    def readback(self, hours: float, state: str, rate: float, volume_ml: float) -> None:
        self.at(
            hours,
            "readback",
            state=state,
            rate_ml_per_h=rate,
            volume_infused_ml=volume_ml,
            volume_resolution_ml=0.01,
            vtbi_remaining_ml=None,
            alarms=[],
            delivered_ml=volume_ml,
        )


def write_day(journal: Journal, channel: str = "bed1", checkpoint_s: float = 60.0) -> None:
    """Day 1 of a flat course at 10 mL/h, with every kind of mark, readbacks thinned.

    0 h start; 2.5 h operator stop; 2.6 h alarm; 3.0 h weight 72 kg; 3.5 h ack and restart;
    4.0 h titer.  The day is still open at 4.5 h.
    """
    w = Writer(journal, channel)
    w.at(0.0, "order", arm="flat", weight_kg=70.0, concentration_mg_per_ml=50.0)
    w.at(0.0, "state", **{"from": "awaiting_order", "to": "starting", "reason": "order"})
    w.at(0.0, "day_open", day=1, nominal_start_s=T0, window_start_s=T0)
    w.at(0.0, "prescription", day=1, volume_ml=PRESCRIBED_ML, dose_mg_per_kg=171.4,
         weight_kg=70.0, igm_mg_dl=None)  # fmt: skip
    w.readback(0.0, "stopped", 0.0, 0.0)
    w.at(0.0, "command", command="set_rate", rate_ml_per_h=RATE, vtbi_ml=PRESCRIBED_ML,
         ceiling_ml_per_h=CEILING, projected_shortfall_ml=0.0)  # fmt: skip
    w.at(0.0, "command", command="start")
    w.readback(0.0, "infusing", RATE, 0.0)
    t_s = checkpoint_s
    while t_s <= 2.5 * 3600.0 + 1e-9:  # checkpoints only: nothing changes
        w.readback(t_s / 3600.0, "infusing", RATE, RATE * t_s / 3600.0)
        t_s += checkpoint_s
    w.at(2.5, "stop_received", operator="nurse A", reason="line check")
    w.at(2.5, "stop", operator="nurse A", reason="line check")
    w.at(2.5, "command", command="stop", reason="operator stop")
    w.readback(2.5, "stopped", RATE, 25.0)
    w.at(2.6, "alarm", code="pump_occlusion", detail="pump reports occlusion", stop=True)
    w.at(3.0, "weight", weight_kg=72.0, from_config=False, reason="re-weighed")
    w.at(3.5, "ack", operator="nurse B", note="line clear")
    w.at(3.5, "command", command="set_rate", rate_ml_per_h=12.0, vtbi_ml=215.0,
         ceiling_ml_per_h=28.8, projected_shortfall_ml=0.0)  # fmt: skip
    w.readback(3.5, "infusing", 12.0, 25.0)
    w.at(4.0, "titer", seq=1, igm_mg_dl=55.5, hematocrit=0.35, measured_at_s=T0)
    w.readback(4.5, "infusing", 12.0, 37.0)
    journal.upsert_day(
        channel,
        1,
        window_start_wall_s=T0,
        prescribed_ml=PRESCRIBED_ML,
        delivered_ml=37.0,
        detail={"dose_mg_per_kg": 171.4, "shortfall_ml": None, "notes": []},
    )


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A state directory whose journal's owner is still running (it holds the lock).

    Written once for the module: every test only reads it.
    """
    journal = Journal(tmp_path_factory.mktemp("report") / "state")
    try:
        write_day(journal)
        yield journal.state_dir
    finally:
        journal.close()


def test_markers_are_where_they_happened(state_dir: Path) -> None:
    day = load_report(state_dir).channels[0].days[0]
    marks = [(m.kind, round(m.at_h, 6), m.label) for m in day.markers]
    assert marks == [
        (MarkerKind.STOP, 2.5, "stop by nurse A"),
        (MarkerKind.ALARM, 2.6, "pump_occlusion"),
        (MarkerKind.WEIGHT, 3.0, "weight 72 kg"),
        (MarkerKind.ACK, 3.5, "ack by nurse B"),
        (MarkerKind.TITER, 4.0, "titer 55.5 mg/dL"),
    ]


def test_series_step_between_thinned_readbacks(state_dir: Path) -> None:
    day = load_report(state_dir).channels[0].days[0]
    commanded, pump = day.commanded_ml_per_h, day.pump_rate_ml_per_h
    # A point only where the value changed: 0 -> 10 at the start, 0 at the stop, 12 at 3.5 h,
    # then held to the day's last event.
    assert list(zip(commanded.at_h, commanded.values, strict=True)) == [
        (0.0, 0.0),
        (0.0, RATE),
        (2.5, 0.0),
        (3.5, 12.0),
        (4.5, 12.0),
    ]
    assert pump.value_at(1.234) == RATE  # between two checkpoints: the last one holds
    assert pump.value_at(3.0) == 0.0
    assert pump.last == 12.0
    assert day.ceiling_ml_per_h.values == (CEILING, 28.8, 28.8)
    delivered = day.delivered_series_ml
    assert delivered.value_at(1.25) == pytest.approx(12.5)  # a line between samples
    assert delivered.last == 37.0
    assert day.prescribed_series_ml.values[0] == PRESCRIBED_ML
    assert (day.start_h, day.end_h) == (0.0, 4.5)


def test_a_denser_journal_gives_the_same_steps(tmp_path: Path, state_dir: Path) -> None:
    """One readback every 10 s instead of 60 s: the step series do not change."""
    with Journal(tmp_path / "dense") as journal:
        write_day(journal, checkpoint_s=10.0)
    dense = load_report(tmp_path / "dense").channels[0].days[0]
    sparse = load_report(state_dir).channels[0].days[0]
    assert dense.commanded_ml_per_h == sparse.commanded_ml_per_h
    assert dense.pump_rate_ml_per_h == sparse.pump_rate_ml_per_h
    assert dense.ceiling_ml_per_h == sparse.ceiling_ml_per_h
    assert len(dense.delivered_series_ml.values) > len(sparse.delivered_series_ml.values)


def test_day_numbers_are_the_days_table(state_dir: Path) -> None:
    channel = load_report(state_dir).channels[0]
    day = channel.days[0]
    assert (channel.arm, channel.weight_kg, channel.concentration_mg_per_ml) == ("flat", 72.0, 50.0)
    assert (day.prescribed_ml, day.delivered_ml, day.dose_mg_per_kg) == (PRESCRIBED_ML, 37.0, 171.4)
    assert day.shortfall_ml is None  # still open
    assert not day.closed
    # mg/kg at the day's prescription weight (70 kg; the day was not re-prescribed here).
    assert day.delivered_mg_per_kg == pytest.approx(37.0 * 50.0 / 70.0)


def test_trumpet_of_the_longest_steady_period(state_dir: Path) -> None:
    day = load_report(state_dir).channels[0].days[0]
    assert day.trumpet is not None
    assert day.trumpet.rate_ml_per_h == RATE
    assert day.trumpet_period_start_h == 0.0
    assert day.trumpet.mean_error_pct == pytest.approx(0.0, abs=1e-9)
    assert day.trumpet.max_sample_gap_s == pytest.approx(60.0)


def test_a_short_steady_period_gives_no_curve_and_says_why(tmp_path: Path) -> None:
    with Journal(tmp_path / "short") as journal:
        w = Writer(journal)
        w.at(0.0, "day_open", day=1, nominal_start_s=T0, window_start_s=T0)
        for minute in range(0, 91):
            w.readback(minute / 60.0, "infusing", RATE, RATE * minute / 60.0)
        journal.upsert_day("bed1", 1, window_start_wall_s=T0, prescribed_ml=1.0, delivered_ml=0.0)
    day = load_report(tmp_path / "short").channels[0].days[0]
    assert day.trumpet is None
    assert "1.50 h" in day.trumpet_note
    assert "2 h needed" in day.trumpet_note


def test_reader_reads_what_the_journal_holds_while_its_owner_runs(state_dir: Path) -> None:
    rows = read_journal(state_dir)
    assert rows.channels == ("bed1",)
    # The owner holds the lock: compare against a second reader of the same file's rows.
    db = sqlite3.connect(f"{(state_dir / JOURNAL_FILENAME).as_uri()}?mode=ro", uri=True)
    try:
        count = db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    finally:
        db.close()
    assert len(rows.events) == count
    assert [e.id for e in rows.events] == sorted(e.id for e in rows.events)


def test_reader_rows_equal_the_journals_own(tmp_path: Path) -> None:
    with Journal(tmp_path / "j") as journal:
        write_day(journal, channel="bed2")
        write_day(journal, channel="bed1")
        own_events = list(journal.events())
        own_days = {c: tuple(journal.days(c)) for c in ("bed1", "bed2")}
    rows = read_journal(tmp_path / "j")
    assert list(rows.events) == own_events
    assert rows.days == own_days
    assert rows.channels == ("bed1", "bed2")
    one = read_journal(tmp_path / "j", "bed2")
    assert {e.channel for e in one.events} == {"bed2"}
    assert one.channels == ("bed1", "bed2")  # the others are still named
    report = build_course_report("x", rows.events, rows.days)
    assert [c.channel for c in report.channels] == ["bed1", "bed2"]


def test_refusals_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="--state-dir"):
        read_journal(tmp_path / "nowhere")
    with pytest.raises(JournalMissingError, match="no journal here"):
        read_journal(tmp_path)
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / JOURNAL_FILENAME).write_bytes(b"not a database, not at all" * 200)
    with pytest.raises(JournalDamagedError, match="damaged or not a journal"):
        read_journal(damaged)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    db = sqlite3.connect(foreign / JOURNAL_FILENAME)
    db.executescript(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);"
        "INSERT INTO meta VALUES ('schema_version', '99');"
    )
    db.close()
    with pytest.raises(JournalSchemaError, match="schema version 99"):
        read_journal(foreign)
    other = tmp_path / "other"
    other.mkdir()
    sqlite3.connect(other / JOURNAL_FILENAME).execute("CREATE TABLE x (y)").connection.close()
    with pytest.raises(JournalSchemaError, match="not a gateway journal"):
        read_journal(other)


@pytest.mark.parametrize(
    ("argv", "code", "says"),
    [
        (["--state-dir", "{missing}", "--png", "{out}"], 2, "--state-dir"),
        (["--state-dir", "{empty}", "--png", "{out}"], 1, "no journal here"),
        (["--state-dir", "{state}", "--channel", "bed9", "--png", "{out}"], 2, "--channel"),
        (["--state-dir", "{state}", "--day", "0", "--png", "{out}"], 2, "--day"),
        (["--state-dir", "{state}", "--day", "2", "--png", "{out}"], 2, "(1-1)"),
        (["--state-dir", "{state}"], 2, "at least one output"),
        (["--state-dir", "{state}", "--png", "{missing}/r.png"], 2, "--png"),
        (["--state-dir", "{state}", "--day", "x", "--png", "{out}"], 2, "--day"),
    ],
)
def test_cli_bad_input_is_one_line(
    argv: list[str],
    code: int,
    says: str,
    state_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    names = {
        "missing": str(tmp_path / "missing"),
        "empty": str(empty),
        "state": str(state_dir),
        "out": str(tmp_path / "r.png"),
    }
    assert main(["report", *(a.format(**names) for a in argv)]) == code
    err = capsys.readouterr().err
    assert err.startswith("error: "), err
    assert err.count("\n") == 1, err
    assert says in err
    assert not (tmp_path / "r.png").exists()


def test_cli_writes_svg_of_one_channel_and_day(
    tmp_path: Path, state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import xml.etree.ElementTree as ET

    out = tmp_path / "bed1.svg"
    argv = ["report", "--state-dir", str(state_dir), "--channel", "bed1", "--day", "1"]
    assert main([*argv, "--svg", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    root = ET.fromstring(out.read_bytes())
    assert root.tag.endswith("svg")
    assert b"Day 1" in out.read_bytes()
