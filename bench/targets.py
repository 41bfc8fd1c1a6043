"""The performance targets, in one place (docs/performance.md repeats them in words)."""

from __future__ import annotations

from typing import Final

#: Our Modbus poll at most this fraction of bare pymodbus's two-request poll (06 + 03).
MODBUS_POLL_RATIO: Final = 0.6
#: Our NE-1000 poll at most this fraction of nesp-lib's reading the same facts.
NEWERA_POLL_RATIO: Final = 0.9
#: Control-cycle p99 at most this many ms with :data:`CYCLE_TARGET_CHANNELS` channels.
CYCLE_P99_MS: Final = 50.0
CYCLE_TARGET_CHANNELS: Final = 64
#: At least this many simulated hours per wall second for the 7-day titer course.
COURSE_H_PER_S: Final = 40.0
#: At most this many MB of journal per channel-day at a 1-s poll.
JOURNAL_MB_PER_CHANNEL_DAY: Final = 2.0
