"""Time, injected.

Every piece of control logic and the simulator take a :class:`Clock`, so that a 7-day course
runs in seconds under test and a hardware-in-loop rig can run faster than real time.

``monotonic()`` is for intervals and physics; ``wall()`` (Unix seconds) only for display and for
day boundaries recorded in a journal.  Both are in *simulated* seconds.  ``time_scale`` says how
many simulated seconds pass per real second (``1.0`` for real time; ``0.0`` for a manual clock
that only moves when told to).

This module lives in ``protocol/`` because it is the one package every other package may import;
it does no I/O.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """What control logic and the simulator need to know about time."""

    @property
    def time_scale(self) -> float:
        """Simulated seconds per real second (0.0 for a manual clock)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards (simulated time)."""
        ...

    def wall(self) -> float:
        """Unix time in seconds (simulated time), for display and day boundaries only."""
        ...


class SystemClock:
    """Real time: ``time.monotonic`` and ``time.time``."""

    @property
    def time_scale(self) -> float:
        return 1.0

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()


class ScaledClock:
    """Real time sped up by ``time_scale``: simulated seconds = real seconds x ``time_scale``.

    Both sides of a hardware-in-loop rig run one of these at the same scale.

    ``anchor_wall_s`` (Unix seconds) is the real moment at which simulated wall time equals real
    wall time: ``wall() = anchor + (time.time() - anchor) x time_scale``.  A gateway keeps its
    anchor in its journal, so that after a restart its simulated days line up with the ones
    before, and the time it was down counts at the same scale.
    """

    def __init__(self, time_scale: float, *, anchor_wall_s: float | None = None) -> None:
        _check_scale(time_scale)
        self._scale = float(time_scale)
        self._real_start = time.monotonic()
        self.anchor_wall_s = time.time() if anchor_wall_s is None else float(anchor_wall_s)
        # Simulated seconds (monotonic, wall) already counted at ``_real_start`` / at
        # ``_wall_real_start`` under earlier scales: 0 and the anchor until set_time_scale.
        self._lock = threading.Lock()
        self._monotonic_base = 0.0
        self._wall_real_start = self.anchor_wall_s
        self._wall_base = self.anchor_wall_s

    @property
    def time_scale(self) -> float:
        return self._scale

    def monotonic(self) -> float:
        with self._lock:
            return self._monotonic_base + (time.monotonic() - self._real_start) * self._scale

    def wall(self) -> float:
        with self._lock:
            return self._wall_base + (time.time() - self._wall_real_start) * self._scale

    def set_time_scale(self, time_scale: float) -> None:
        """Run at ``time_scale`` from now on, without a jump: simulated time so far is kept and
        only its rate changes (a simulator whose rig asks for another speed mid-run).

        ``anchor_wall_s`` then no longer describes the mapping (it is for a gateway's journal,
        whose clock never changes scale).  ValueError unless a finite number > 0.
        """
        _check_scale(time_scale)
        with self._lock:
            real_now, wall_now = time.monotonic(), time.time()
            self._monotonic_base += (real_now - self._real_start) * self._scale
            self._wall_base += (wall_now - self._wall_real_start) * self._scale
            self._real_start, self._wall_real_start = real_now, wall_now
            self._scale = float(time_scale)

    def real_seconds(self, simulated_s: float) -> float:
        """How many real seconds ``simulated_s`` simulated seconds take on this clock."""
        return simulated_s / self._scale


def _check_scale(time_scale: float) -> None:
    if not (0.0 < time_scale < float("inf")):
        raise ValueError(f"time_scale must be a finite number > 0, got {time_scale!r}")


class ManualClock:
    """A clock that moves only when told to: for tests. Thread-safe.

    Both readings come from one tuple that a move replaces whole, so a reader needs no lock
    (it sees the times before or after a move, never half of one); moves take the lock.  A
    course in virtual time reads the clock thousands of times a simulated hour."""

    def __init__(self, start_monotonic: float = 0.0, start_wall: float = 1_767_225_600.0) -> None:
        # Default wall start: 2026-01-01T00:00:00Z, so journals in tests have stable dates.
        self._lock = threading.Lock()
        #: (monotonic now, wall - monotonic).
        self._times = (float(start_monotonic), float(start_wall) - float(start_monotonic))

    @property
    def time_scale(self) -> float:
        return 0.0

    def monotonic(self) -> float:
        return self._times[0]

    def wall(self) -> float:
        now, wall_offset = self._times
        return now + wall_offset

    def step_wall(self, seconds: float) -> None:
        """Step the wall clock alone by ``seconds`` (either way), as a time-source correction
        would; the monotonic clock does not move."""
        if seconds != seconds or seconds in (float("inf"), float("-inf")):
            raise ValueError(f"seconds must be finite, got {seconds!r}")
        with self._lock:
            now, wall_offset = self._times
            self._times = (now, wall_offset + seconds)

    def advance(self, seconds: float) -> float:
        """Move time forward by ``seconds`` (>= 0); returns the new monotonic time."""
        if not (seconds >= 0.0) or seconds == float("inf"):
            raise ValueError(f"seconds must be finite and >= 0, got {seconds!r}")
        with self._lock:
            now, wall_offset = self._times
            now += seconds
            self._times = (now, wall_offset)
            return now
