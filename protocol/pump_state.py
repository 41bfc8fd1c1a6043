"""Protocol-neutral names for what a pump is doing and what it is alarming about.

The Modbus register map gives each :class:`PumpAlarm` a bit; the NE-1000 codec maps its alarm
replies onto them; the simulator raises them; the drivers report them.  This is their one home.
"""

from __future__ import annotations

from enum import StrEnum


class PumpState(StrEnum):
    """The pump's own operating state."""

    STOPPED = "stopped"
    INFUSING = "infusing"
    PAUSED = "paused"
    ALARM = "alarm"


class PumpAlarm(StrEnum):
    """Conditions a pump reports.  Members marked *stopping* halt the infusion."""

    OCCLUSION = "occlusion"  # stopping
    AIR_IN_LINE = "air_in_line"  # stopping
    DOOR_OPEN = "door_open"  # stopping
    RESERVOIR_EMPTY = "reservoir_empty"  # stopping (NE-1000: A?S, motor stalled)
    LOW_BATTERY = "low_battery"  # advisory
    POWER_LOSS = "power_loss"  # stopping (NE-1000: A?R, reset / power interrupted)
    COMM_TIMEOUT = "comm_timeout"  # stopping (NE-1000: A?T, safe-mode timeout)
    RATE_REFUSED = "rate_refused"  # advisory: the last rate write was refused
    VTBI_COMPLETE = "vtbi_complete"  # advisory: the VTBI was delivered; the pump stopped
    PROGRAM_ERROR = "program_error"  # stopping (NE-1000: A?E program error, A?O phase out of range)


#: Alarms that stop the pump and put it in :attr:`PumpState.ALARM`.
STOPPING_ALARMS: frozenset[PumpAlarm] = frozenset(
    {
        PumpAlarm.OCCLUSION,
        PumpAlarm.AIR_IN_LINE,
        PumpAlarm.DOOR_OPEN,
        PumpAlarm.RESERVOIR_EMPTY,
        PumpAlarm.POWER_LOSS,
        PumpAlarm.COMM_TIMEOUT,
        PumpAlarm.PROGRAM_ERROR,
    }
)
