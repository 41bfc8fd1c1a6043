"""The status block: everything a gateway polls, in one contiguous read.

:func:`decode_status` is the driver's side, :func:`encode_status` the simulator's.  Engineering
values are exact :class:`~decimal.Decimal` in the units their names state.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
from protocol.modbus.layout import BlockWriter, field_offset
from protocol.modbus.registers import STATUS_SPAN, Reg, Register, WireType
from protocol.modbus.scaling import count_scaler
from protocol.modbus.words import U16_MAX, check_words
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


def _u16(register: Register) -> int:
    return field_offset(STATUS_SPAN, register, WireType.U16)


def _u32(register: Register) -> int:
    return field_offset(STATUS_SPAN, register, WireType.U32)


def _scaled(register: Register) -> tuple[int, Callable[[int], Decimal]]:
    return _u32(register), count_scaler(register.scale)


# Where each field lies in the block, from the table, and how each scaled field is scaled,
# computed once: every poll decodes a block, and looking each field up again per poll cost more
# than the rest of decoding.
_STATE = _u16(Reg.STATE)
_ALARMS = _u32(Reg.ALARMS)
_RATE_SETPOINT, _rate_setpoint = _scaled(Reg.RATE_SETPOINT_ECHO)
_MEASURED_RATE, _measured_rate = _scaled(Reg.MEASURED_RATE)
_VTBI, _vtbi = _scaled(Reg.VTBI_ECHO)
_VTBI_REMAINING, _vtbi_remaining = _scaled(Reg.VTBI_REMAINING)
_VOLUME_INFUSED, _volume_infused = _scaled(Reg.VOLUME_INFUSED)
_WATCHDOG_TIMEOUT = _u16(Reg.WATCHDOG_TIMEOUT_ECHO)
_UPTIME = _u32(Reg.UPTIME)
_HEARTBEAT = _u16(Reg.HEARTBEAT_ECHO)
_LAST_COMMAND = _u16(Reg.LAST_COMMAND)
_COMMAND_COUNTER = _u16(Reg.COMMAND_COUNTER)


def decode_status(registers: Sequence[int]) -> StatusBlock:
    """Decode the registers of one status read (``STATUS_SPAN``) into a :class:`StatusBlock`.

    Raises a :class:`~protocol.modbus.errors.RegisterDecodeError` subclass (a
    :class:`~protocol.errors.DecodeError`) for a wrong register count, a word outside
    0..0xFFFF, an unknown state, an unknown alarm bit or an unknown last-command code.
    """
    # Every word is an int 0..0xFFFF from here on, so each pair joins into a whole count
    # 0..0xFFFFFFFF: the scalers need not check it again.
    words = check_words(registers, STATUS_SPAN.count, what="status block")
    return StatusBlock(
        state=decode_state(words[_STATE]),
        alarms=decode_alarms((words[_ALARMS] << 16) | words[_ALARMS + 1]),
        rate_setpoint_ml_per_h=_rate_setpoint(
            (words[_RATE_SETPOINT] << 16) | words[_RATE_SETPOINT + 1]
        ),
        measured_rate_ml_per_h=_measured_rate(
            (words[_MEASURED_RATE] << 16) | words[_MEASURED_RATE + 1]
        ),
        vtbi_ml=_vtbi((words[_VTBI] << 16) | words[_VTBI + 1]),
        vtbi_remaining_ml=_vtbi_remaining(
            (words[_VTBI_REMAINING] << 16) | words[_VTBI_REMAINING + 1]
        ),
        volume_infused_ml=_volume_infused(
            (words[_VOLUME_INFUSED] << 16) | words[_VOLUME_INFUSED + 1]
        ),
        watchdog_timeout_s=words[_WATCHDOG_TIMEOUT],
        uptime_s=(words[_UPTIME] << 16) | words[_UPTIME + 1],
        heartbeat_echo=words[_HEARTBEAT],
        last_command=decode_last_command(words[_LAST_COMMAND]),
        command_counter=words[_COMMAND_COUNTER],
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


def status_words(
    *,
    state: int,
    alarms: int,
    rate_setpoint_counts: int,
    measured_rate_counts: int,
    vtbi_counts: int,
    vtbi_remaining_counts: int,
    volume_infused_counts: int,
    watchdog_timeout_s: int,
    uptime_s: int,
    heartbeat_echo: int,
    last_command: int,
    command_counter: int,
) -> list[int]:
    """The words of ``STATUS_SPAN`` from register values already encoded: the last step of
    :func:`encode_status`, laid out by the same offsets, **without its checks**.

    For a caller whose values fit their registers by construction (u16 fields 0..0xFFFF, u32
    fields and counts 0..0xFFFFFFFF); anything else must go through :func:`encode_status`.
    Why: the software pump answers every poll with this block, and ``encode_status``'s checks
    and field look-ups cost more than the rest of its read (``docs/performance.md``).
    """
    words = [0] * STATUS_SPAN.count
    words[_STATE] = state
    words[_ALARMS], words[_ALARMS + 1] = alarms >> 16, alarms & U16_MAX
    words[_RATE_SETPOINT] = rate_setpoint_counts >> 16
    words[_RATE_SETPOINT + 1] = rate_setpoint_counts & U16_MAX
    words[_MEASURED_RATE] = measured_rate_counts >> 16
    words[_MEASURED_RATE + 1] = measured_rate_counts & U16_MAX
    words[_VTBI], words[_VTBI + 1] = vtbi_counts >> 16, vtbi_counts & U16_MAX
    words[_VTBI_REMAINING] = vtbi_remaining_counts >> 16
    words[_VTBI_REMAINING + 1] = vtbi_remaining_counts & U16_MAX
    words[_VOLUME_INFUSED] = volume_infused_counts >> 16
    words[_VOLUME_INFUSED + 1] = volume_infused_counts & U16_MAX
    words[_WATCHDOG_TIMEOUT] = watchdog_timeout_s
    words[_UPTIME], words[_UPTIME + 1] = uptime_s >> 16, uptime_s & U16_MAX
    words[_HEARTBEAT] = heartbeat_echo
    words[_LAST_COMMAND] = last_command
    words[_COMMAND_COUNTER] = command_counter
    return words
