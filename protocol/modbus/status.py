"""The status block: everything a gateway polls, in one contiguous read.

:func:`decode_status` is the driver's side, :func:`encode_status` the simulator's.  Engineering
values are exact :class:`~decimal.Decimal` in the units their names state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from protocol.modbus.codes import (
    CommandCode,
    decode_alarms,
    decode_last_command,
    decode_state,
    encode_alarms,
    encode_last_command,
    encode_state,
)
from protocol.modbus.layout import BlockReader, BlockWriter
from protocol.modbus.registers import STATUS_SPAN, Reg
from protocol.pump_state import PumpAlarm, PumpState


@dataclass(frozen=True)
class StatusBlock:
    """One poll of the pump (registers ``STATUS_SPAN``).

    Rates are in mL/h with 0.01 mL/h resolution, volumes in mL with 0.001 mL resolution;
    :func:`encode_status` truncates finer values toward zero.
    """

    state: PumpState
    alarms: frozenset[PumpAlarm]
    rate_setpoint_ml_per_h: Decimal
    """RATE_SETPOINT in force; 0 = not set."""
    measured_rate_ml_per_h: Decimal
    """Rate the pump is delivering now."""
    vtbi_ml: Decimal
    """VTBI in force; 0 = continuous."""
    vtbi_remaining_ml: Decimal
    """Volume still to infuse before the pump stops itself; 0 when continuous."""
    volume_infused_ml: Decimal
    """Volume infused since the last CLEAR_TOTALS."""
    watchdog_timeout_s: int
    """Bus watchdog timeout in force, in seconds; 0 = off."""
    uptime_s: int
    """Seconds since the pump powered up (wraps at 2**32)."""
    heartbeat_echo: int
    """The last value the host wrote to HEARTBEAT."""
    last_command: CommandCode | None
    """The last command the pump accepted; ``None`` if none yet."""
    command_counter: int
    """Count of accepted commands, modulo 65536 (the host watches it advance)."""


def decode_status(registers: Sequence[int]) -> StatusBlock:
    """Decode the registers of one status read (``STATUS_SPAN``) into a :class:`StatusBlock`.

    Raises a :class:`~protocol.modbus.errors.RegisterDecodeError` subclass (a
    :class:`~protocol.errors.DecodeError`) for a wrong register count, a word outside
    0..0xFFFF, an unknown state, an unknown alarm bit or an unknown last-command code.
    """
    reader = BlockReader(registers, STATUS_SPAN, what="status block")
    return StatusBlock(
        state=decode_state(reader.u16(Reg.STATE)),
        alarms=decode_alarms(reader.u32(Reg.ALARMS)),
        rate_setpoint_ml_per_h=reader.scaled(Reg.RATE_SETPOINT_ECHO),
        measured_rate_ml_per_h=reader.scaled(Reg.MEASURED_RATE),
        vtbi_ml=reader.scaled(Reg.VTBI_ECHO),
        vtbi_remaining_ml=reader.scaled(Reg.VTBI_REMAINING),
        volume_infused_ml=reader.scaled(Reg.VOLUME_INFUSED),
        watchdog_timeout_s=reader.u16(Reg.WATCHDOG_TIMEOUT_ECHO),
        uptime_s=reader.u32(Reg.UPTIME),
        heartbeat_echo=reader.u16(Reg.HEARTBEAT_ECHO),
        last_command=decode_last_command(reader.u16(Reg.LAST_COMMAND)),
        command_counter=reader.u16(Reg.COMMAND_COUNTER),
    )


def encode_status(status: StatusBlock) -> list[int]:
    """Encode ``status`` into the register values of ``STATUS_SPAN`` (the simulator's side).

    Rates and volumes are truncated toward zero to their resolution.  Raises a
    :class:`~protocol.modbus.errors.RegisterEncodeError` (an :class:`~protocol.errors.EncodeError`)
    for a value that does not fit its register (negative, too large, not a known enum member).
    """
    writer = BlockWriter(STATUS_SPAN)
    writer.u16(Reg.STATE, encode_state(status.state))
    writer.u32(Reg.ALARMS, encode_alarms(status.alarms))
    writer.scaled(Reg.RATE_SETPOINT_ECHO, status.rate_setpoint_ml_per_h)
    writer.scaled(Reg.MEASURED_RATE, status.measured_rate_ml_per_h)
    writer.scaled(Reg.VTBI_ECHO, status.vtbi_ml)
    writer.scaled(Reg.VTBI_REMAINING, status.vtbi_remaining_ml)
    writer.scaled(Reg.VOLUME_INFUSED, status.volume_infused_ml)
    writer.u16(Reg.WATCHDOG_TIMEOUT_ECHO, status.watchdog_timeout_s)
    writer.u32(Reg.UPTIME, status.uptime_s)
    writer.u16(Reg.HEARTBEAT_ECHO, status.heartbeat_echo)
    writer.u16(Reg.LAST_COMMAND, encode_last_command(status.last_command))
    writer.u16(Reg.COMMAND_COUNTER, status.command_counter)
    return writer.words()
