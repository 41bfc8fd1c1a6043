"""The course report of a titer-arm demo journal: the morning titer marked, and the next day
prescribed from it.

One demo per module (about 3 s): day 1 on the baseline titer; an hour before day 2 the virtual
patient's titer is posted; day 2 opens on it.  The report's titer mark, each day's titer and
its prescription must be the journal's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from gateway.demo import CHANNEL_ID, DemoOptions, run_demo
from gateway.dosing import Arm
from gateway.report.course import ChannelReport, MarkerKind
from gateway.report.output import load_report
from gateway.report.reader import JournalRows, read_journal

pytestmark = pytest.mark.timeout(120)


@dataclass(frozen=True)
class Demo:
    summary: dict[str, Any]
    rows: JournalRows
    channel: ChannelReport


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    state_dir = tmp_path_factory.mktemp("titer")
    summary = run_demo(DemoOptions(arm=Arm.TITER, days=1, state_dir=state_dir))
    channel = load_report(state_dir, channel=CHANNEL_ID).channels[0]
    return Demo(summary, read_journal(state_dir), channel)


def test_the_morning_titer_is_marked_when_it_was_taken(demo: Demo) -> None:
    titers = [e for e in demo.rows.events if e.kind == "titer"]
    posted = demo.summary["titers_posted"]
    assert len(titers) == len(posted) == 1
    day_one = demo.channel.days[0]
    marks = [m for m in day_one.markers if m.kind is MarkerKind.TITER]
    assert [m.event_id for m in marks] == [titers[0].id]
    assert marks[0].label == f"titer {posted[0]['igm_mg_dl']:g} mg/dL"
    expected_h = (titers[0].wall_s - day_one.window_start_wall_s) / 3600.0
    assert marks[0].at_h == pytest.approx(expected_h)
    assert 22.0 <= marks[0].at_h < 24.0  # an hour or so before day 2


def test_each_day_has_its_titer_and_its_prescription(demo: Demo) -> None:
    prescriptions = {
        e.payload["day"]: e.payload for e in demo.rows.events if e.kind == "prescription"
    }
    records = {r.day: r for r in demo.rows.days[CHANNEL_ID]}
    assert [d.day for d in demo.channel.days] == sorted(records) == [1, 2]
    for day in demo.channel.days:
        assert day.titer_mg_dl == prescriptions[day.day]["igm_mg_dl"]
        assert day.dose_mg_per_kg == prescriptions[day.day]["dose_mg_per_kg"]
        assert day.prescribed_ml == records[day.day].prescribed_ml
        assert day.prescribed_series_ml.values[0] == prescriptions[day.day]["volume_ml"]
        assert day.delivered_ml == records[day.day].delivered_ml
    day_one, day_two = demo.channel.days
    assert day_one.titer_mg_dl == 30.0  # the baseline
    assert day_two.titer_mg_dl == demo.summary["titers_posted"][0]["igm_mg_dl"]
    assert day_two.prescribed_ml < day_one.prescribed_ml  # a higher titer, a smaller dose
    assert day_one.shortfall_ml == pytest.approx(demo.summary["days"][0]["shortfall_ml"], abs=1e-3)
    assert day_one.trumpet is not None
    assert day_one.trumpet.rate_ml_per_h == pytest.approx(15.48, abs=0.01)
