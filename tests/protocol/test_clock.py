"""The injected clocks: manual for tests, scaled for hardware-in-loop rigs."""

from __future__ import annotations

import threading
import time

import pytest

from protocol.clock import Clock, ManualClock, ScaledClock, SystemClock


def test_manual_clock_moves_only_when_told() -> None:
    clock = ManualClock(start_monotonic=5.0, start_wall=1000.0)
    assert (clock.monotonic(), clock.wall(), clock.time_scale) == (5.0, 1000.0, 0.0)
    assert clock.advance(7 * 86400.0) == 5.0 + 7 * 86400.0
    assert clock.wall() == 1000.0 + 7 * 86400.0
    with pytest.raises(ValueError, match="finite and >= 0"):
        clock.advance(-1.0)


def test_scaled_clock_runs_faster_than_real_time() -> None:
    clock = ScaledClock(600.0)
    start = clock.monotonic()
    real_start = time.monotonic()
    while time.monotonic() - real_start < 0.01:  # a short busy wait: the clock is what's tested
        pass
    assert clock.monotonic() - start >= 6.0
    assert clock.real_seconds(600.0) == 1.0


def test_scaled_clock_anchor_keeps_simulated_wall_time_across_restarts() -> None:
    anchor = time.time() - 10.0  # a gateway that first started 10 real seconds ago
    restarted = ScaledClock(600.0, anchor_wall_s=anchor)
    assert restarted.wall() - anchor == pytest.approx(6000.0, abs=60.0)


@pytest.mark.parametrize("scale", [0.0, -1.0, float("inf"), float("nan")])
def test_scaled_clock_refuses_bad_scale(scale: float) -> None:
    with pytest.raises(ValueError, match="time_scale"):
        ScaledClock(scale)


def test_all_clocks_satisfy_the_protocol() -> None:
    for clock in (SystemClock(), ScaledClock(2.0), ManualClock()):
        assert isinstance(clock, Clock)


@pytest.mark.timeout(30)
def test_manual_clock_readers_never_see_half_a_move() -> None:
    """Reads take no lock: a reader sees the times before or after a move, never the monotonic
    time of one and the wall offset of another."""
    clock = ManualClock(start_monotonic=0.0, start_wall=1000.0)
    done = threading.Event()
    walls: set[float] = set()

    def read() -> None:
        while not done.is_set():
            walls.add(clock.wall())

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for _ in range(20_000):
            # Monotonic forward, then the wall stepped back as far: the wall is 1000 or 1000.5;
            # a torn read would show 999.5 (a new offset on an old time) or 1001.
            clock.advance(0.5)
            clock.step_wall(-0.5)
    finally:
        done.set()
        reader.join()
    assert clock.monotonic() == 10_000.0
    assert clock.wall() == 1000.0
    assert walls <= {1000.0, 1000.5}
