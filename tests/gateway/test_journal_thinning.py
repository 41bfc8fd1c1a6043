"""A 1-s poll journals what changed, every decision and a checkpoint, not every reading.

At a 1-s poll a course made 86,400 ``readback`` rows a day (about 18 MB per channel-day); the
journal now holds a reading when it shows a new pump state, rate or alarm set, when anything
else is decided on it, and at least every ``readback_checkpoint_s`` (30 s) as a checkpoint of
the totalizer and the channel's state.  A cycle that decides nothing writes nothing.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import pytest

from gateway.course_state import STATE_VERSION, CourseState, dump_state, load_state
from gateway.journal import JOURNAL_FILENAME, Journal
from gateway.rules import CourseRules
from protocol.pump_state import PumpAlarm
from tests.gateway.conftest import Rig

POLL_S = 1.0
CHECKPOINT_S = CourseRules().readback_checkpoint_s


def _event_rows(rig: Rig) -> int:
    db = sqlite3.connect(rig.state_dir / JOURNAL_FILENAME)
    try:
        return int(db.execute("SELECT count(*) FROM events").fetchone()[0])
    finally:
        db.close()


def _readback_times(rig: Rig) -> list[float]:
    return [e.monotonic_s for e in rig.journal.events("bed1", "readback")]


def test_a_steady_infusion_journals_a_checkpoint_every_30_s(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    rig.run(120.0, step_s=POLL_S)  # start-up: watchdog, programme, start
    before = _event_rows(rig)
    start = rig.clock.monotonic()
    rig.run(600.0, step_s=POLL_S)
    times = [t for t in _readback_times(rig) if t >= start]
    # 600 polls: one readback per checkpoint, and no other event while nothing changes.
    assert len(times) == pytest.approx(600.0 / CHECKPOINT_S, abs=1)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(gap == pytest.approx(CHECKPOINT_S) for gap in gaps)
    assert _event_rows(rig) - before == len(times)
    # The checkpoint carries the totalizer: the last one is within 30 s of the pump's truth.
    last = list(rig.journal.events("bed1", "readback"))[-1].payload
    truth_ml = rig.model.snapshot().volume_infused_ml
    rate_ml_per_s = last["rate_ml_per_h"] / 3600.0
    # (the clock has moved one poll past the last cycle)
    assert truth_ml - last["volume_infused_ml"] <= rate_ml_per_s * (CHECKPOINT_S + POLL_S) + 1e-6


def test_a_change_is_journalled_at_once_with_the_reading_that_showed_it(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig()
    rig.run(120.0, step_s=POLL_S)
    rig.run(7.0, step_s=POLL_S)  # between checkpoints
    rig.model.inject(PumpAlarm.OCCLUSION)
    at = rig.clock.monotonic()
    rig.channel.step()
    readbacks = [e for e in rig.journal.events("bed1") if e.monotonic_s == at]
    kinds = [e.kind for e in readbacks]
    assert kinds[0] == "readback", kinds  # the reading comes first, then what it caused
    assert "occlusion" in readbacks[0].payload["alarms"]
    assert "alarm" in kinds


def test_a_cycle_that_decides_nothing_writes_nothing(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    rig.run(120.0 + CHECKPOINT_S, step_s=POLL_S)
    rig.run(float(int(CHECKPOINT_S) - 2), step_s=POLL_S)
    before = _event_rows(rig)
    stored = rig.journal.channel_state("bed1")
    rig.channel.step()  # a quiet reading, not yet a checkpoint
    assert _event_rows(rig) == before
    assert rig.journal.channel_state("bed1") == stored
    # ... while the channel's own status moves on.
    assert rig.channel.snapshot()["last_good_poll_wall_s"] == rig.clock.wall()


def test_a_restart_from_a_checkpoint_counts_what_was_given_since(
    make_rig: Callable[..., Rig],
) -> None:
    """Invariant 6 with a thinned journal: the state on disk is up to one checkpoint old; the
    restarted channel takes what the pump gave since from its totalizer, nothing is lost."""
    rig = make_rig()
    rig.run(3600.0, step_s=POLL_S)
    rig.run(CHECKPOINT_S - 5.0, step_s=POLL_S)  # the journal's state is 25 s old
    rig.channel.step()
    live = rig.channel.snapshot()["days"][-1]["delivered_ml"]
    stored = load_state(rig.journal.channel_state("bed1"))
    assert stored.today is not None
    assert stored.today.delivered_ml < live
    rig.restart()
    rig.run(2.0, step_s=POLL_S)
    after = rig.channel.snapshot()["days"][-1]["delivered_ml"]
    truth = rig.model.snapshot().volume_infused_ml
    assert after >= live
    assert after == pytest.approx(truth, abs=0.01)


def test_a_version_2_state_is_read_as_version_3() -> None:
    data = dump_state(CourseState())
    data["version"] = 2
    for key in ("readback_journalled_s", "readback_journalled_key"):
        del data["link"][key]
    state = load_state(json.dumps(data))
    assert state.version == STATE_VERSION == 3
    assert state.link.readback_journalled_s is None


def test_the_status_json_is_the_view_as_json(make_rig: Callable[..., Rig]) -> None:
    """The fast converter gives what ``asdict`` plus a JSON round trip gave."""
    from gateway.status_view import channel_view

    rig = make_rig(arm="titer", igm_mg_dl=30.0, hematocrit=0.35)
    rig.run(2 * 86_400.0)
    rig.model.inject(PumpAlarm.OCCLUSION)
    rig.run(600.0)
    view = channel_view(
        channel_id="bed1",
        pump_url="x",
        state=rig.channel.course,
        status=rig.driver.read_status(),
        now_s=rig.clock.wall(),
    )
    expected = json.loads(json.dumps(asdict(view)))
    assert view.to_json() == expected
    assert json.dumps(view.to_json(), sort_keys=True) == json.dumps(expected, sort_keys=True)
    assert {a["code"] for a in expected["alarms"]} >= {"pump_occlusion"}
    assert len(expected["days"]) == 2
    assert expected["days"][0]["titer"] is not None


def test_a_checkpoint_is_fsynced_with_the_next_durable_write(
    make_rig: Callable[..., Rig],
) -> None:
    """Checkpoints commit without an fsync of their own; commands and alarms still fsync."""
    rig = make_rig()
    rig.run(120.0, step_s=POLL_S)
    transactions, syncs = rig.journal.transactions, rig.journal.syncs
    rig.run(10 * CHECKPOINT_S, step_s=POLL_S)  # ten checkpoints, nothing else
    assert rig.journal.transactions - transactions == 10
    assert rig.journal.syncs == syncs  # within MAX_UNSYNCED_S of the last fsync
    rig.model.inject(PumpAlarm.OCCLUSION)
    rig.channel.step()  # an alarm and a stop: durable before the stop is sent
    assert rig.journal.syncs == syncs + 1
    db = rig.journal._connection
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL again after each


def test_a_checkpoint_survives_a_killed_process(tmp_path: Path) -> None:
    """Committed is committed: only a power cut (not a kill) can lose an unsynced checkpoint."""
    script = (
        "import os, sys\n"
        "from gateway.journal import Journal\n"
        "j = Journal(sys.argv[1])\n"
        "j.commit('bed1', [('readback', {'n': 1})], state={'s': 1}, days=[], wall_s=1.0,"
        " monotonic_s=1.0, durable=False)\n"
        "os._exit(0)\n"  # no close, no checkpoint of the WAL: as kill -9 after the commit
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, timeout=30)
    with Journal(tmp_path) as journal:
        assert [e.payload for e in journal.events("bed1", "readback")] == [{"n": 1}]
        assert journal.channel_state("bed1") is not None
