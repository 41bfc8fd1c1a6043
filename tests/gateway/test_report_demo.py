"""The course report of a real demo journal with a fault: one flat-arm day with an occlusion.

One demo per module (about 2 s): the daemon drives the simulator over Modbus TCP, the pump
alarms an occlusion an hour in, the virtual nurse acknowledges 15 minutes later, and the demo
writes its own report (``DemoOptions.report``, as ``demo --report``).  The numbers the figure is
drawn from must be the journal's: the day's prescribed, delivered and shortfall, the series'
ends, the alarm and acknowledgement where the journal has them.  The files must be what they
say they are.
"""

from __future__ import annotations

import base64
import re
import struct
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import main
from gateway.demo import CHANNEL_ID, DemoOptions, run_demo
from gateway.display import floor_display
from gateway.dosing import Arm
from gateway.journal import JournalEvent
from gateway.report.course import ChannelReport, MarkerKind
from gateway.report.output import ReportFormat, load_report, write_report
from gateway.report.reader import JournalRows, read_journal
from gateway.report.render import ACCURACY_TITLE, day_title

pytestmark = [pytest.mark.timeout(120), pytest.mark.filterwarnings("error::UserWarning")]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class Demo:
    state_dir: Path
    summary: dict[str, Any]
    rows: JournalRows
    channel: ChannelReport
    html: Path

    def events(self, kind: str) -> list[JournalEvent]:
        return [e for e in self.rows.events if e.kind == kind]

    def hours(self, event: JournalEvent, day: int = 1) -> float:
        record = self.rows.days[CHANNEL_ID][day - 1]
        return (event.wall_s - record.window_start_wall_s) / 3600.0


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    state_dir = tmp_path_factory.mktemp("occlusion")
    html = state_dir / "course.html"
    summary = run_demo(
        DemoOptions(
            arm=Arm.FLAT,
            protocol="modbus",
            days=1,
            faults="occlusion",
            state_dir=state_dir,
            report=html,
        )
    )
    report = load_report(state_dir)
    return Demo(state_dir, summary, read_journal(state_dir), report.channels[0], html)


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk, after checking the signature."""
    assert data[:8] == PNG_MAGIC
    length, chunk = struct.unpack(">I4s", data[8:16])
    assert (length, chunk) == (13, b"IHDR")
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_day_numbers_are_the_journals(demo: Demo) -> None:
    records = demo.rows.days[CHANNEL_ID]
    assert [d.day for d in demo.channel.days] == [r.day for r in records] == [1, 2]
    closes = {e.payload["day"]: e.payload for e in demo.events("day_close")}
    day = demo.channel.days[0]
    assert day.closed
    assert day.prescribed_ml == records[0].prescribed_ml == closes[1]["prescribed_ml"] == 350.0
    assert day.delivered_ml == records[0].delivered_ml == closes[1]["delivered_ml"]
    assert day.shortfall_ml == closes[1]["shortfall_ml"]
    assert day.dose_mg_per_kg == 250.0
    assert day.delivered_mg_per_kg == pytest.approx(day.delivered_ml * 50.0 / 70.0)
    summary_day = demo.summary["days"][0]
    assert summary_day["delivered_ml"] == pytest.approx(day.delivered_ml, abs=0.001)
    # The title says the same numbers, rounded down.
    title = day_title(day)
    assert "250.0 mg/kg = 350.00 mL" in title
    assert f"delivered {floor_display(day.delivered_ml):.2f} mL" in title
    assert f"short {floor_display(day.shortfall_ml):.2f} mL" in title
    assert "short 0.00 mL" in title  # 0.007 mL, rounded down
    assert not demo.channel.days[1].closed  # the demo stops just after day 2 opened


def test_series_ends_are_the_journals(demo: Demo) -> None:
    day = demo.channel.days[0]
    day_two_opens = demo.events("day_open")[1].id
    readbacks = [e for e in demo.events("readback") if e.id < day_two_opens]
    set_rates = [e for e in demo.events("command") if e.payload["command"] == "set_rate"]
    assert day.delivered_series_ml.values[0] == readbacks[0].payload["delivered_ml"] == 0.0
    assert day.delivered_series_ml.last == readbacks[-1].payload["delivered_ml"]
    assert day.delivered_series_ml.last == day.delivered_ml
    assert day.commanded_ml_per_h.values[1] == set_rates[0].payload["rate_ml_per_h"]
    assert set(day.ceiling_ml_per_h.values) == {28.0}  # 0.4 mL/kg/h x 70 kg
    assert day.prescribed_series_ml.values[0] == 350.0
    assert max(day.commanded_ml_per_h.values) <= 28.0
    # The pump stopped for the alarm: both rates are 0 between the alarm and the ack.
    alarm_h = demo.hours(demo.events("alarm")[0])
    ack_h = demo.hours(demo.events("ack")[0])
    middle = (alarm_h + ack_h) / 2
    assert day.commanded_ml_per_h.value_at(middle) == 0.0
    assert day.pump_rate_ml_per_h.value_at(middle) == 0.0
    assert day.pump_rate_ml_per_h.value_at(ack_h + 1.0) == pytest.approx(14.75, abs=0.1)
    assert (day.start_h, day.end_h) == (0.0, 24.0)


def test_alarm_and_ack_are_marked_where_the_journal_has_them(demo: Demo) -> None:
    marks = demo.channel.days[0].markers
    alarms = demo.events("alarm")
    acks = demo.events("ack")
    assert [m.kind for m in marks] == [MarkerKind.ALARM, MarkerKind.ACK]
    assert marks[0].label == alarms[0].payload["code"] == "pump_occlusion"
    assert marks[0].at_h == pytest.approx(demo.hours(alarms[0])) == pytest.approx(1.0)
    assert marks[1].at_h == pytest.approx(demo.hours(acks[0]))
    assert marks[1].label == "ack by demo operator"
    assert demo.summary["alarms"][0]["at_h"] == pytest.approx(marks[0].at_h, abs=0.01)


def test_accuracy_panel_of_the_steady_period_after_the_ack(demo: Demo) -> None:
    day = demo.channel.days[0]
    curve = day.trumpet
    assert curve is not None, day.trumpet_note
    ack_h = demo.hours(demo.events("ack")[0])
    assert day.trumpet_period_start_h == pytest.approx(ack_h)  # the longest steady period
    assert [p.window_min for p in curve.points] == [2, 5, 11, 19, 31]
    assert abs(curve.mean_error_pct) < 0.5  # the simulated pump is accurate
    for point in curve.points:
        assert point.min_error_pct <= point.max_error_pct
    assert "computed from the pump's own totalizer" in ACCURACY_TITLE


def test_demo_report_html_holds_the_picture_and_the_table(demo: Demo) -> None:
    page = demo.html.read_text()
    assert page.startswith("<!doctype html>")
    match = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert match is not None
    width, height = png_size(base64.b64decode(match.group(1)))
    assert width >= 800
    assert height >= 600
    assert "<td>350.00</td>" in page
    assert "pump_occlusion" in page
    assert "ack by demo operator" in page


def test_png_and_svg_files_are_sane(demo: Demo, tmp_path: Path) -> None:
    png, svg = tmp_path / "course.png", tmp_path / "course.svg"
    write_report(demo.state_dir, [(ReportFormat.PNG, png), (ReportFormat.SVG, svg)])
    width, height = png_size(png.read_bytes())
    assert 800 <= width <= 4000
    assert 600 <= height <= 3000
    assert 20_000 <= png.stat().st_size <= 400_000
    root = ET.fromstring(svg.read_bytes())
    assert root.tag == "{http://www.w3.org/2000/svg}svg"


def test_demo_report_flag_is_checked_first_and_passed_on(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", "--report", str(tmp_path / "course.pdf")]) == 2
    assert "--report" in capsys.readouterr().err
    seen: list[DemoOptions] = []

    def fake_run_demo(options: DemoOptions, progress: Any = None) -> dict[str, Any]:
        seen.append(options)
        raise SystemExit(0)  # stop before anything runs

    monkeypatch.setattr("gateway.demo.run_demo", fake_run_demo)
    with pytest.raises(SystemExit):
        main(["demo", "--report", str(tmp_path / "course.svg")])
    assert seen[0].report == tmp_path / "course.svg"
