"""Enumerated register values: command codes, state values, alarm bits.

Each value is written out explicitly here, never derived from the order of an enum, so that
reordering :class:`~protocol.pump_state.PumpState` or :class:`~protocol.pump_state.PumpAlarm`
can never move a value on the wire.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import IntEnum
from types import MappingProxyType
from typing import Final

from protocol.modbus.errors import (
    RegisterEncodeError,
    UnknownAlarmBitError,
    UnknownCommandError,
    UnknownStateError,
    show,
)
from protocol.modbus.words import U32_MAX
from protocol.pump_state import PumpAlarm, PumpState


class CommandCode(IntEnum):
    """Codes written to the COMMAND register.

    Each code is two ASCII letters (readable in a traffic dump) rather than a small integer, so a
    stray 0, 1 or a value meant for a neighbouring register is refused instead of acted on.
    """

    START = 0x524E  # "RN": run
    STOP = 0x5350  # "SP"
    CLEAR_ALARMS = 0x4341  # "CA"
    CLEAR_TOTALS = 0x4354  # "CT"


#: LAST_COMMAND reads this until the pump has accepted its first command.
NO_COMMAND: Final = 0

#: STATE register value of each pump state.  0 is deliberately unused: a zeroed block is invalid.
STATE_VALUES: Final[Mapping[PumpState, int]] = MappingProxyType(
    {
        PumpState.STOPPED: 1,
        PumpState.INFUSING: 2,
        PumpState.PAUSED: 3,
        PumpState.ALARM: 4,
    }
)

#: Bit number (0 = least significant) of each alarm in the 32-bit ALARMS register pair.
ALARM_BITS: Final[Mapping[PumpAlarm, int]] = MappingProxyType(
    {
        PumpAlarm.OCCLUSION: 0,
        PumpAlarm.AIR_IN_LINE: 1,
        PumpAlarm.DOOR_OPEN: 2,
        PumpAlarm.RESERVOIR_EMPTY: 3,
        PumpAlarm.LOW_BATTERY: 4,
        PumpAlarm.POWER_LOSS: 5,
        PumpAlarm.COMM_TIMEOUT: 6,
        PumpAlarm.RATE_REFUSED: 7,
        PumpAlarm.VTBI_COMPLETE: 8,
        PumpAlarm.PROGRAM_ERROR: 9,
    }
)

_STATE_BY_VALUE: Final[Mapping[int, PumpState]] = MappingProxyType(
    {value: state for state, value in STATE_VALUES.items()}
)
_KNOWN_ALARM_MASK: Final = sum(1 << bit for bit in ALARM_BITS.values())
_COMMAND_BY_VALUE: Final[Mapping[int, CommandCode]] = MappingProxyType(
    {int(code): code for code in CommandCode}
)
_NO_ALARMS: Final[frozenset[PumpAlarm]] = frozenset()


def encode_state(state: PumpState) -> int:
    """Return the STATE register value of ``state``."""
    if not isinstance(state, PumpState):
        raise RegisterEncodeError(f"{show(state)} is not a PumpState")
    return STATE_VALUES[state]


def decode_state(value: int) -> PumpState:
    """Return the :class:`PumpState` a STATE register value names, else raise UnknownStateError."""
    state = _STATE_BY_VALUE.get(value) if type(value) is int else None
    if state is None:
        raise UnknownStateError(f"STATE value {show(value)} names no pump state")
    return state


def encode_alarms(alarms: Iterable[PumpAlarm]) -> int:
    """Return the 32-bit ALARMS bit field with one bit set per alarm in ``alarms``."""
    bits = 0
    for alarm in alarms:
        if not isinstance(alarm, PumpAlarm):
            raise RegisterEncodeError(f"{show(alarm)} is not a PumpAlarm")
        bits |= 1 << ALARM_BITS[alarm]
    return bits


def decode_alarms(bits: int) -> frozenset[PumpAlarm]:
    """Return the alarms set in a 32-bit ALARMS bit field.

    Raises :class:`UnknownAlarmBitError` when a bit is set that names no alarm, or when ``bits``
    is not an integer 0..0xFFFFFFFF.
    """
    if not isinstance(bits, int) or isinstance(bits, bool) or not 0 <= bits <= U32_MAX:
        raise UnknownAlarmBitError(f"ALARMS value {show(bits)} is not a 32-bit bit field")
    if bits == 0:
        return _NO_ALARMS  # the common case, on every poll
    unknown = bits & ~_KNOWN_ALARM_MASK
    if unknown:
        raise UnknownAlarmBitError(f"ALARMS 0x{bits:08X}: bits 0x{unknown:08X} name no alarm")
    return frozenset(alarm for alarm, bit in ALARM_BITS.items() if bits & (1 << bit))


def decode_last_command(value: int) -> CommandCode | None:
    """Return the command a LAST_COMMAND value names, ``None`` for :data:`NO_COMMAND`."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value == NO_COMMAND:
            return None
        command = _COMMAND_BY_VALUE.get(value)
        if command is not None:
            return command
    raise UnknownCommandError(f"LAST_COMMAND value {show(value)} is neither 0 nor a command code")


def encode_last_command(command: CommandCode | None) -> int:
    """Return the LAST_COMMAND register value for ``command`` (``None``: no command yet)."""
    if command is None:
        return NO_COMMAND
    if not isinstance(command, CommandCode):
        raise RegisterEncodeError(f"{show(command)} is not a CommandCode")
    return int(command)
