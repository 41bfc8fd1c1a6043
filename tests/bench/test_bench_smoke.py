"""The benches run, at toy sizes, and their table says what it should.  Nothing here is timed:
benchmarks are figures (``python -m bench``), never tests.

The plain suite calls each bench function in-process with the smallest sizes (pumps served in
this process, a stand-in for the demo's whole course); the ``slow`` test runs
``python -m bench --dry-run --json`` as CI would, child processes and the real daemon included.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench import __main__ as bench_cli
from bench import bench_channels, bench_course, journal_growth, poll_modbus, poll_newera, targets
from bench.figures import Figure, Target, json_text, markdown_table, text_table
from bench.pumps import REPO_ROOT, serving
from gateway.demo import DemoOptions
from gateway.dosing import Arm

pytestmark = pytest.mark.timeout(60)


def test_modbus_poll_figures_compare_with_both_bare_pymodbus_polls() -> None:
    with serving("modbus", 1, infuse_ml_per_h=10.0, in_process=True) as pumps:
        two, one = poll_modbus.measure(pumps, per_round=3, rounds=1)
    assert two.key == "modbus_poll_vs_two_requests"
    assert two.target == Target("<=", targets.MODBUS_POLL_RATIO, on="ratio")
    assert one.key == "modbus_poll_vs_read_write"
    assert one.target is None
    assert two.ours == one.ours > 0
    assert two.peer is not None
    assert two.peer > 0
    assert one.peer is not None
    assert one.peer > 0
    assert "(06)" in (two.peer_does or "")
    assert "function-23" in (one.peer_does or "")


def test_newera_poll_figure_compares_with_nesp_lib() -> None:
    with serving("newera", 1, infuse_ml_per_h=10.0, in_process=True) as pumps:
        (figure,) = poll_newera.measure(pumps, per_round=3, rounds=1)
    assert figure.key == "newera_poll_vs_nesp_lib"
    assert figure.ours > 0
    assert figure.peer is not None
    assert figure.peer > 0
    assert figure.ratio == figure.ours / figure.peer


def test_control_cycle_figures_from_a_two_channel_run() -> None:
    run = bench_channels.measure(
        2, mode="after", warmup=1, ticks=2, poll_s=0.0, sim_cpus=None, in_process=True
    )
    assert len(run.cycle_ms) == 2
    assert run.failed_ticks == 0
    cycles = bench_channels.control_cycle_figures([run])
    assert [f.key for f in cycles] == ["control_cycle_p50_2", "control_cycle_p99_2"]
    assert all(f.target is None for f in cycles)  # the target is at 64 channels
    assert cycles[0].ours <= cycles[1].ours


def test_journal_figure_from_a_short_run_says_it_is_scaled() -> None:
    figure = journal_growth.measure(0.02)  # 72 polls after the start-up's
    assert figure.key == "journal_mb_per_channel_day"
    assert figure.target == Target("<=", targets.JOURNAL_MB_PER_CHANNEL_DAY)
    assert figure.ours >= 0  # 72 polls may fit in the pages already in use
    assert "72 polls" in figure.method
    assert "scaled to 86,400 polls" in figure.method
    assert "infusing at the end" in figure.method


def test_course_figure_from_the_demos_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo itself is tested in tests/gateway; here only what the bench makes of it."""
    courses: list[DemoOptions] = []

    def demo(options: DemoOptions) -> float:
        courses.append(options)
        return {"in-process": 3.5, "wire": 7.0}[options.link] + len(courses) / 100

    monkeypatch.setattr(bench_course, "run_course_process", demo)
    speed, over_wire = bench_course.course_speed_figures(runs=2)
    # Alternating links, the whole titer course each time.
    assert [(c.arm.value, c.days, c.link) for c in courses] == [
        ("titer", None, "wire"),
        ("titer", None, "in-process"),
    ] * 2
    assert speed.key == "course_simulated_h_per_s"
    assert speed.target == Target(">=", targets.COURSE_H_PER_S)
    assert "--link in-process" in speed.ours_does
    assert over_wire.key == "course_simulated_h_per_s_wire"
    assert over_wire.target is None
    assert "--link wire" in over_wire.ours_does
    # 7 days of hours over the median of the two runs' seconds (3.52 and 3.54 s; 7.01, 7.03).
    assert speed.ours == pytest.approx(168 / 3.53)
    assert over_wire.ours == pytest.approx(168 / 7.02)
    assert "median of 2 runs, each the command in a process of its own" in speed.method


def test_the_course_command_is_the_demo_with_its_summary_as_json() -> None:
    command = bench_course.course_command(DemoOptions(arm=Arm.TITER, link="in-process", days=1))
    assert command[1:] == [
        "-m",
        "gateway",
        "demo",
        "--arm",
        "titer",
        "--link",
        "in-process",
        "--days",
        "1",
        "--json",
    ]
    whole = bench_course.course_command(DemoOptions(arm=Arm.TITER, link="wire"))
    assert "--days" not in whole


def test_the_table_shows_ratio_target_and_met() -> None:
    figures = [
        Figure(
            "a_poll", "a poll", "µs", 150.0, "ours", 300.0, "theirs", Target("<=", 0.6, "ratio")
        ),
        Figure("b_speed", "b speed", "h/s", 12.0, "ours", target=Target(">=", 40.0)),
        Figure("c_rss", "c rss", "MB", 61.3, "ours"),
    ]
    text = text_table(figures)
    assert "150 µs" in text
    assert "0.50" in text
    assert "ratio <= 0.6" in text
    assert ">= 40.0 h/s" in text
    rows = markdown_table(figures).splitlines()
    assert rows[2] == "| a poll | 150 µs | 300 µs | 0.50 | ratio <= 0.6 | yes |"
    assert rows[3] == "| b speed | 12.0 h/s | — | — | >= 40.0 h/s | NO |"
    assert rows[4] == "| c rss | 61.3 MB | — | — | — | — |"
    data = json.loads(json_text(figures, {"mode": "test"}))
    assert [(f["key"], f["ratio"], f["met"]) for f in data["figures"]] == [
        ("a_poll", 0.5, True),
        ("b_speed", None, False),
        ("c_rss", None, None),
    ]


def test_a_broken_bench_is_reported_and_the_others_still_run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(sizes: bench_cli.Sizes) -> list[Figure]:
        raise RuntimeError("pump process gone")

    def fine(sizes: bench_cli.Sizes) -> list[Figure]:
        return [Figure("daemon_peak_rss_1", "rss", "MB", 60.0, "ours")]

    monkeypatch.setitem(bench_cli.BENCHES, "modbus", broken)
    monkeypatch.setitem(bench_cli.BENCHES, "rss", fine)
    assert bench_cli.main(["--dry-run", "--json", "--only", "modbus", "rss"]) == 1
    out, err = capsys.readouterr()
    assert [f["key"] for f in json.loads(out)["figures"]] == ["daemon_peak_rss_1"]
    assert "pump process gone" in err
    assert "broken: modbus" in err


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_python_m_bench_dry_run_prints_every_figure() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--dry-run", "--json"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    keys = [figure["key"] for figure in json.loads(done.stdout)["figures"]]
    assert keys == [
        "modbus_poll_vs_two_requests",
        "modbus_poll_vs_read_write",
        "newera_poll_vs_nesp_lib",
        "control_cycle_p50_2",
        "control_cycle_p99_2",
        "course_simulated_h_per_s",
        "course_simulated_h_per_s_wire",
        "journal_mb_per_channel_day",
        "daemon_peak_rss_1",
    ]
