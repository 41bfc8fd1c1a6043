"""The rules a channel's controller runs by: site settings and the fixed tolerances.

Site settings come from the configuration (:class:`CourseRules`, built once per channel); the
tolerances below are constants of the design with one home here (docs/design.md says why each
is what it is).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

#: Volumes below this are "nothing left" (mL): the finest volume a pump resolves.
VOLUME_EPSILON_ML: Final[float] = 0.01
#: A day may end this much over its prescription (a fraction) before it alarms.  With the
#: upper-bound accounting it should never be reached; it is the alarm for a lying pump.
OVER_DELIVERY_TOLERANCE: Final[float] = 0.005
#: Re-command the rate when the plan moves by more than this fraction (and two pump steps).
REPLAN_FRACTION: Final[float] = 0.005
#: No re-planning of a running infusion in the last this-many seconds of a day window.
REPLAN_QUIET_S: Final[float] = 1800.0
#: Slack for comparing two rates that should be equal in binary floating point (mL/h).
RATE_FLOAT_SLACK_ML_PER_H: Final[float] = 1e-9
#: A projected shortfall above this (mL) is alarmed as an advisory as soon as it is known.
SHORTFALL_ALARM_ML: Final[float] = 0.5
#: The most decide/act rounds in one control cycle; more is a bug (the pump is stopped).
MAX_ROUNDS_PER_CYCLE: Final[int] = 8

# -- never trust one signal (docs/design.md, "Never trust one signal") ---------------------------
#: A totalizer that has not moved for this many readings while the pump reported infusing ...
TOTALIZER_STALL_READINGS: Final[int] = 3
#: ... and while the read-back rate says more than two display steps, and at least this much
#: (mL), should have been given, is frozen: ``totalizer_implausible``.
TOTALIZER_STALL_MIN_ML: Final[float] = 0.05
#: The day's totalizer count and the read-back rate integrated over time may differ by this
#: much (mL) plus :data:`ESTIMATE_DIVERGENCE_FRACTION` of the larger, plus one display step.
#: The estimate is off by up to one poll of infusion at each start, stop and rate change.
ESTIMATE_DIVERGENCE_ML: Final[float] = 1.0
ESTIMATE_DIVERGENCE_FRACTION: Final[float] = 0.05
#: After a failed stop the gateway keeps quiet for the pump's watchdog plus this fraction of
#: it (at least :data:`QUIET_MARGIN_MIN_S`), so the pump's own watchdog stops it.
QUIET_MARGIN_FRACTION: Final[float] = 0.2
QUIET_MARGIN_MIN_S: Final[float] = 2.0
#: Polls in a row without a reply from which the gateway sends a stop on every poll, for a
#: pump that hears it while it cannot hear the pump (a line that garbles only the replies).
SILENT_POLLS_BEFORE_STOP: Final[int] = 2
#: The pump's uptime and the wall clock may disagree about an outage by this much (s, and
#: this fraction of it) before the outage counts as unknown (needs an acknowledgement).
UPTIME_AGREEMENT_S: Final[float] = 5.0
UPTIME_AGREEMENT_FRACTION: Final[float] = 0.1


class LateTiterPolicy(StrEnum):
    """What a titer-arm day does when no fresh titer is there when its window opens."""

    #: The day's 24-h window starts when its titer arrives (the dose still runs over 24 h).
    SHIFT = "shift"
    #: The window keeps its clock times; the remaining time is shorter, caught up to the ceiling.
    COMPRESS = "compress"


@dataclass(frozen=True)
class CourseRules:
    """Site settings the controller needs, all in seconds and plain numbers."""

    #: The pump's own communication watchdog to arm on every connection (s).
    pump_watchdog_s: float = 10.0
    #: A titer drawn longer than this before its day's window opens is not that day's titer.
    titer_max_age_s: float = 12.0 * 3600.0
    late_titer: LateTiterPolicy = LateTiterPolicy.SHIFT
    #: An order without a randomisation time is refused unless this is False.
    require_randomisation_time: bool = True
    auto_resume_enabled: bool = True
    auto_resume_max_gap_s: float = 120.0
    auto_resume_max_per_day: int = 3
    #: A pump reading that changes nothing the journal shows (state, rate, alarms) and comes with
    #: no decision is journalled at most this often (s): a checkpoint of the totalizer and of
    #: the channel's state.  30 s is the sampling interval of the IEC 60601-2-24 trumpet curve,
    #: so the course report can still draw it from the journal alone.
    readback_checkpoint_s: float = 30.0
