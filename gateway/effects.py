"""What the controller asks of the pump (effects), what came of it (outcomes), what it saw.

All plain values: the controller returns effects; the executor (:mod:`gateway.channel`) performs
them in order and hands back one outcome each, with a fresh reading, as the next observation.
A rate reaches a pump only inside :class:`ProgramRate`, which holds an
:class:`~drivers.approved_rate.ApprovedRate` that only ``gateway.safety.check_rate`` makes.
"""

from __future__ import annotations

from dataclasses import dataclass

from drivers.approved_rate import ApprovedRate
from drivers.status import PumpIdentity, PumpStatus, RateReadback


@dataclass(frozen=True)
class StopPump:
    reason: str
    #: Sent to a pump the gateway cannot hear: it may not arrive, and its failure is expected
    #: (the pump's own watchdog is the control then), not a pump that refuses to stop.
    unheard: bool = False


@dataclass(frozen=True)
class ProgramRate:
    """Set the VTBI, then the approved rate, and read the rate back.

    On a running pump ``basis_totalizer_ml`` is the reading the VTBI was computed from: the pump
    keeps infusing until the VTBI is written, so the executor first takes off what the
    totalizer moved since (never adds), and stops the pump instead if nothing is left.
    """

    approved: ApprovedRate
    vtbi_ml: float
    basis_totalizer_ml: float | None = None


@dataclass(frozen=True)
class StartPump:
    pass


@dataclass(frozen=True)
class ClearTotals:
    pass


@dataclass(frozen=True)
class ClearPumpAlarms:
    pass


@dataclass(frozen=True)
class ArmWatchdog:
    timeout_s: float


Effect = StopPump | ProgramRate | StartPump | ClearTotals | ClearPumpAlarms | ArmWatchdog


@dataclass(frozen=True)
class Done:
    effect: Effect


@dataclass(frozen=True)
class Failed:
    effect: Effect
    error: str


@dataclass(frozen=True)
class RateProgrammed:
    effect: ProgramRate
    readback: RateReadback
    vtbi_held_ml: float


@dataclass(frozen=True)
class VolumeReached:
    """A running pump reached the day's volume before its VTBI could be written: stopped."""

    effect: ProgramRate
    totalizer_ml: float


@dataclass(frozen=True)
class WatchdogArmed:
    effect: ArmWatchdog
    held_s: float


Outcome = Done | Failed | RateProgrammed | VolumeReached | WatchdogArmed


@dataclass(frozen=True)
class PumpReading:
    """A good poll, over connection ``connection``, after ``outcomes`` of the last effects."""

    status: PumpStatus
    identity: PumpIdentity | None
    connection: str
    outcomes: tuple[Outcome, ...] = ()
    #: The executor's monotonic clock at the reading (s), for outage lengths a wall-clock step
    #: cannot shorten; None where the observer has none.
    monotonic_s: float | None = None


@dataclass(frozen=True)
class Silence:
    """The pump did not answer (or could not be reached)."""

    error: str
    outcomes: tuple[Outcome, ...] = ()
    #: The executor's monotonic clock when the pump did not answer (s); None: no such clock.
    monotonic_s: float | None = None


Observation = PumpReading | Silence
