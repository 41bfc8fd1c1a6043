"""Values a driver returns: the pump's identity, its status, and a rate readback."""

from __future__ import annotations

from dataclasses import dataclass, field

from protocol.pump_state import PumpAlarm, PumpState


@dataclass(frozen=True)
class PumpIdentity:
    """What the pump says it is."""

    vendor: str
    model: str
    firmware: str
    #: The pump's own maximum rate, when it tells (mL/h).
    max_rate_ml_per_h: float | None = None
    #: The smallest rate step the pump accepts near typical rates (mL/h).
    rate_resolution_ml_per_h: float = 0.01


@dataclass(frozen=True)
class PumpStatus:
    """One poll of a pump.  ``alarms`` includes every alarm reported since it was last cleared."""

    state: PumpState
    #: The rate the pump holds as its setpoint (mL/h).
    rate_ml_per_h: float
    #: Volume infused since the totalizer was last cleared (mL), as the pump reports it: a
    #: totalizer that truncates, so it may be below the truth but never above it.
    volume_infused_ml: float
    #: The step of the reported totalizer: the true infused volume is at least
    #: ``volume_infused_ml`` and below ``volume_infused_ml + volume_resolution_ml`` (mL).  A
    #: display step, not an error estimate: the gateway accounts delivered volume from that upper
    #: bound, so a totalizer that hides up to one step can never make it over-deliver.  Keyword-only
    #: and without a default, so that every backend has to say what its totalizer's step is.
    volume_resolution_ml: float = field(kw_only=True)
    #: Volume left to infuse before the pump stops by itself, or None for continuous (mL).
    vtbi_remaining_ml: float | None
    alarms: frozenset[PumpAlarm] = field(default_factory=frozenset)
    #: The rate the pump measures it is delivering, when it says (mL/h).
    measured_rate_ml_per_h: float | None = None
    max_rate_ml_per_h: float | None = None
    identity: PumpIdentity | None = None
    #: The pump's own uptime (s), where the protocol has it (Modbus UPTIME; NE-1000: None).  A
    #: pump whose uptime stops advancing is serving stale data.
    uptime_s: float | None = field(default=None, kw_only=True)

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict with stable keys (``state``, ``rate_ml_per_h``, ...)."""
        return {
            "state": self.state.value,
            "rate_ml_per_h": self.rate_ml_per_h,
            "measured_rate_ml_per_h": self.measured_rate_ml_per_h,
            "volume_infused_ml": self.volume_infused_ml,
            "volume_resolution_ml": self.volume_resolution_ml,
            "vtbi_remaining_ml": self.vtbi_remaining_ml,
            "alarms": sorted(alarm.value for alarm in self.alarms),
            "max_rate_ml_per_h": self.max_rate_ml_per_h,
            "uptime_s": self.uptime_s,
            "identity": None
            if self.identity is None
            else {
                "vendor": self.identity.vendor,
                "model": self.identity.model,
                "firmware": self.identity.firmware,
            },
        }


@dataclass(frozen=True)
class RateReadback:
    """What a rate command did: approved, sent (rounded down by the codec), read back."""

    approved_ml_per_h: float
    sent_ml_per_h: float
    readback_ml_per_h: float
    resolution_ml_per_h: float

    @property
    def exact(self) -> bool:
        """True when the pump holds exactly the rate that was sent."""
        return abs(self.readback_ml_per_h - self.sent_ml_per_h) <= 1e-9 * max(
            1.0, abs(self.sent_ml_per_h)
        )
