"""The software pump's holding registers (register map v1), computed from a :class:`PumpModel`.

No I/O and no pymodbus here: :class:`PumpRegisters` answers a read or a write the way the map
(``docs/modbus-map.md``) says a pump does, and :mod:`simulator.modbus_server` carries it over
Modbus TCP or RTU.

* **Reads are computed at request time** from one :meth:`PumpModel.snapshot`, so one read of the
  status block describes one instant of the model's (lazy, exact) time.
* **The status block**, read every poll, is encoded straight from the snapshot's floats
  (:meth:`PumpRegisters._status_words`): word for word what :func:`protocol.modbus.encode_status`
  gives, and any value it refuses goes through ``encode_status`` itself, which raises as always.
* **Function 23** (read/write multiple) is a :meth:`PumpRegisters.write` then a
  :meth:`PumpRegisters.read`, in that order (the server checks the read part first, so a refused
  request writes nothing): a poll that writes HEARTBEAT and reads the status block gets a block
  whose HEARTBEAT_ECHO already shows the value written, and the write has fed the watchdog.
* **Writes** are checked by :func:`protocol.modbus.validate_write` first (the map's own limits:
  exception 02 / 03, never a fallback), then go into the model.  A refusal by the model
  (:class:`~simulator.errors.RateRefusedError`, :class:`~simulator.errors.NotApplicableError`,
  :class:`~simulator.errors.OutOfRangeError`) is exception 03 too.
* **START after a completed VTBI** is refused (03) until the host writes VTBI again, although
  the model itself would deliver the same volume again (map section 6).
* **Watchdog**: a write of WATCHDOG_TIMEOUT sets (and restarts) the model's watchdog; a write of
  HEARTBEAT with a value other than the one it holds feeds it.  Nothing else feeds it.
* **What the pump reports** comes from the snapshot's ``reported_*`` fields (rate setpoint,
  volume infused, uptime) and the watchdog timeout in force, so the model's lying-pump faults
  (``rate_echo_wrong``, ``frozen_totalizer``, ``totalizer_jump``, ``uptime_frozen``,
  ``watchdog_not_held``) show on the wire; ``stop_refused`` acknowledges (and counts) STOP.

Refusals are raised as :class:`protocol.modbus.RequestRefusedError` subclasses, whose
``exception_code`` is the Modbus exception the transport answers with.
"""

from __future__ import annotations

import contextlib
import functools
import math
import threading
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Final

from protocol.errors import ProtocolError
from protocol.modbus import (
    IDENTIFICATION_SPAN,
    SETPOINTS_SPAN,
    STATUS_SPAN,
    U16_MAX,
    U32_MAX,
    WATCHDOG_SPAN,
    BlockId,
    CommandCode,
    Identification,
    IllegalDataValueError,
    Number,
    Reg,
    Register,
    RegisterEncodeError,
    RegisterWrite,
    StatusBlock,
    as_decimal,
    counts_to_rate_ml_per_h,
    counts_to_volume_ml,
    encode_alarms,
    encode_identification,
    encode_last_command,
    encode_state,
    encode_status,
    join_u32,
    validate_read,
    validate_write,
    volume_ml_to_counts,
)
from protocol.modbus.layout import BlockWriter
from protocol.modbus.scaling import count_truncator
from protocol.modbus.status import status_words
from protocol.modbus.vendors import PROJECT_VENDOR_ID, SOFTWARE_PUMP_MODEL_ID
from protocol.pump_state import PumpState
from simulator.errors import SimulatorError
from simulator.model import PumpModel, PumpSnapshot

__all__ = [
    "SIMULATOR_FIRMWARE",
    "SIMULATOR_MODEL_ID",
    "SIMULATOR_MODEL_NAME",
    "SIMULATOR_SERIAL_NUMBER",
    "SIMULATOR_VENDOR_ID",
    "PumpRegisters",
    "simulator_identification",
]

#: VENDOR_ID and MODEL_ID of the software pump (their home: protocol/modbus/vendors.py).
SIMULATOR_VENDOR_ID: Final = PROJECT_VENDOR_ID
SIMULATOR_MODEL_ID: Final = SOFTWARE_PUMP_MODEL_ID
#: MODEL_NAME of the software pump.
SIMULATOR_MODEL_NAME: Final = "IG-SIM-PUMP"
#: SERIAL_NUMBER of the software pump.
SIMULATOR_SERIAL_NUMBER: Final = "SIM-0001"
#: Firmware version (major, minor, patch) of the software pump's Modbus interface.
SIMULATOR_FIRMWARE: Final = (1, 0, 0)

_SPANS: Final = {
    BlockId.IDENTIFICATION: IDENTIFICATION_SPAN,
    BlockId.SETPOINTS: SETPOINTS_SPAN,
    BlockId.WATCHDOG: WATCHDOG_SPAN,
    BlockId.STATUS: STATUS_SPAN,
}


def simulator_identification(model: PumpModel) -> Identification:
    """The identification block the software pump serves: its ids and the model's max rate."""
    major, minor, patch = SIMULATOR_FIRMWARE
    return Identification(
        vendor_id=SIMULATOR_VENDOR_ID,
        model_id=SIMULATOR_MODEL_ID,
        firmware_major=major,
        firmware_minor=minor,
        firmware_patch=patch,
        max_rate_ml_per_h=as_decimal(model.max_rate_ml_per_h),
        model_name=SIMULATOR_MODEL_NAME,
        serial_number=SIMULATOR_SERIAL_NUMBER,
    )


# The status block is readable as a whole (validate_read raises here, at import, if the map ever
# says otherwise), so a read of exactly that block, every poll, skips validate_read.
validate_read(STATUS_SPAN.address, STATUS_SPAN.count)
_STATUS_ADDRESS: Final = STATUS_SPAN.address
_STATUS_COUNT: Final = STATUS_SPAN.count

# A write of HEARTBEAT alone (a word in its range) is the one register write validate_write
# accepts as it is (checked here, at import, at both ends of the range), so the poll's write,
# every poll, skips validate_write.
_HEARTBEAT_ADDRESS: Final = Reg.HEARTBEAT.address
_HEARTBEAT_RANGE: Final = range(Reg.HEARTBEAT.minimum, Reg.HEARTBEAT.write_maximum + 1)
for _word in (_HEARTBEAT_RANGE[0], _HEARTBEAT_RANGE[-1]):
    if validate_write(_HEARTBEAT_ADDRESS, [_word], max_rate_ml_per_h=0.0) != (
        RegisterWrite(register=Reg.HEARTBEAT, value=_word),
    ):
        raise RuntimeError(f"the register map no longer takes HEARTBEAT {_word} as it is")

#: Recent float values whose counts each remembering status register keeps.
_REMEMBERED_VALUES: Final = 16


def _float_counts(register: Register) -> Callable[[Number], int]:
    """:func:`count_truncator` of ``register``'s scale, remembering the counts of recent floats.

    Only floats are remembered (``typed``): ``1 == 1.0 == True`` must not share an answer, as
    ``True`` is refused.  A refusal is never remembered (``lru_cache`` keeps no exception).
    """
    truncate = count_truncator(register.scale)
    remembered = functools.lru_cache(maxsize=_REMEMBERED_VALUES, typed=True)(truncate)

    def counts(value: Number) -> int:
        return remembered(value) if type(value) is float else truncate(value)

    return counts


# The setpoint, the measured rate and the VTBI repeat poll after poll: remembered.  The volumes
# change at every poll while infusing, so remembering them would only cost (measured: 0.8 µs a
# read), and they are truncated afresh.
_rate_setpoint_counts: Final = _float_counts(Reg.RATE_SETPOINT_ECHO)
_measured_rate_counts: Final = _float_counts(Reg.MEASURED_RATE)
_vtbi_counts: Final = _float_counts(Reg.VTBI_ECHO)
_vtbi_remaining_counts: Final = count_truncator(Reg.VTBI_REMAINING.scale)
_volume_infused_counts: Final = count_truncator(Reg.VOLUME_INFUSED.scale)


def _whole_seconds(seconds: float) -> int:
    """A model duration (s) as a u16 register value: rounded up, so a set watchdog never reads 0."""
    return min(U16_MAX, max(0, math.ceil(seconds)))


class PumpRegisters:
    """The holding registers of one software pump.  Thread-safe.

    ``identification`` replaces the identification block the pump serves (default:
    :func:`simulator_identification`); tests use it to present another map version or vendor.
    Its ``max_rate_ml_per_h`` is served as MAX_RATE, but RATE_SETPOINT writes are always capped
    by the model's own maximum.
    """

    def __init__(self, model: PumpModel, *, identification: Identification | None = None) -> None:
        self._model = model
        ident = identification if identification is not None else simulator_identification(model)
        self._identification_words: Final = tuple(encode_identification(ident))
        self._lock = threading.Lock()
        self._heartbeat = 0
        self._last_command: CommandCode | None = None
        self._command_counter = 0

    @property
    def model(self) -> PumpModel:
        return self._model

    # ------------------------------------------------------------------ reads

    def read(self, address: int, count: int) -> list[int]:
        """Function 03 (and the read part of 23): ``count`` registers from ``address``.

        Raises :class:`~protocol.modbus.RequestRefusedError` (exception 02 / 03) as the map says.
        """
        if (
            address == _STATUS_ADDRESS
            and count == _STATUS_COUNT
            and type(address) is int
            and type(count) is int
        ):  # the poll: validated at import
            with self._lock:
                return self._status_words(self._model.snapshot())
        registers = validate_read(address, count)
        block = registers[0].block  # blocks are separated by unmapped gaps: one read, one block
        span = _SPANS[block]
        with self._lock:
            words = self._block_words(block)
        offset = address - span.address
        return words[offset : offset + count]

    def _block_words(self, block: BlockId) -> list[int]:
        """Every register of ``block``, now (lock held)."""
        if block is BlockId.IDENTIFICATION:
            return list(self._identification_words)
        snapshot = self._model.snapshot()
        if block is BlockId.STATUS:
            return self._status_words(snapshot)
        writer = BlockWriter(_SPANS[block])
        if block is BlockId.SETPOINTS:
            writer.scaled(Reg.RATE_SETPOINT, snapshot.reported_rate_setpoint_ml_per_h)
            writer.scaled(Reg.VTBI, snapshot.vtbi_ml)
        elif block is BlockId.WATCHDOG:
            writer.u16(Reg.WATCHDOG_TIMEOUT, _whole_seconds(snapshot.watchdog_timeout_s))
            writer.u16(Reg.HEARTBEAT, self._heartbeat)
        else:  # pragma: no cover - validate_read refuses the write-only COMMAND block
            raise AssertionError(f"block {block} is not readable")
        return writer.words()

    def _status_words(self, snapshot: PumpSnapshot) -> list[int]:
        """The status block's words (lock held): exactly ``encode_status(self._status(snapshot))``,
        which cost most of a poll's read.

        Each value is computed as :meth:`_status` and :func:`encode_status` compute it, in their
        order, so an error other than an encoding one is the one they raise first; the scaled
        registers are truncated by :func:`count_truncator` (the steady ones remembered).  Any
        encoding refusal goes the reference way, which raises it as always (register named).
        """
        try:
            uptime_s = int(snapshot.reported_uptime_s) & U32_MAX
            rate_setpoint = _rate_setpoint_counts(snapshot.reported_rate_setpoint_ml_per_h)
            measured_rate = _measured_rate_counts(snapshot.measured_rate_ml_per_h)
            vtbi = _vtbi_counts(snapshot.vtbi_ml)
            vtbi_remaining = _vtbi_remaining_counts(snapshot.vtbi_remaining_ml)
            volume_infused = _volume_infused_counts(snapshot.reported_volume_infused_ml)
            watchdog_timeout_s = _whole_seconds(snapshot.watchdog_timeout_s)
            state = encode_state(snapshot.state)
            alarms = encode_alarms(snapshot.alarms)
            last_command = encode_last_command(self._last_command)
        except RegisterEncodeError:
            return encode_status(self._status(snapshot))
        return status_words(
            state=state,
            alarms=alarms,
            rate_setpoint_counts=rate_setpoint,
            measured_rate_counts=measured_rate,
            vtbi_counts=vtbi,
            vtbi_remaining_counts=vtbi_remaining,
            volume_infused_counts=volume_infused,
            watchdog_timeout_s=watchdog_timeout_s,
            uptime_s=uptime_s,
            heartbeat_echo=self._heartbeat,
            last_command=last_command,
            command_counter=self._command_counter,
        )

    def _status(self, snapshot: PumpSnapshot) -> StatusBlock:
        """The status block as :func:`encode_status` takes it: the reference for
        :meth:`_status_words`, and the way any refusal is raised."""
        uptime_s = int(snapshot.reported_uptime_s) & U32_MAX
        return StatusBlock(
            state=snapshot.state,
            alarms=snapshot.alarms,
            rate_setpoint_ml_per_h=as_decimal(snapshot.reported_rate_setpoint_ml_per_h),
            measured_rate_ml_per_h=as_decimal(snapshot.measured_rate_ml_per_h),
            vtbi_ml=as_decimal(snapshot.vtbi_ml),
            vtbi_remaining_ml=as_decimal(snapshot.vtbi_remaining_ml),
            volume_infused_ml=as_decimal(snapshot.reported_volume_infused_ml),
            watchdog_timeout_s=_whole_seconds(snapshot.watchdog_timeout_s),
            uptime_s=uptime_s,
            heartbeat_echo=self._heartbeat,
            last_command=self._last_command,
            command_counter=self._command_counter,
        )

    # ------------------------------------------------------------------ writes

    def write(self, address: int, values: Sequence[int]) -> None:
        """Function 06 / 16 (and the write part of 23): write ``values`` from ``address``, all or
        nothing.

        Raises :class:`~protocol.modbus.RequestRefusedError` (exception 02 / 03) for a write the
        map or the pump refuses; nothing has changed then (except the advisory RATE_REFUSED
        alarm, latched when a RATE_SETPOINT above MAX_RATE is refused).
        """
        if (
            address == _HEARTBEAT_ADDRESS
            and len(values) == 1
            and type(word := values[0]) is int
            and word in _HEARTBEAT_RANGE
            and type(address) is int
        ):  # the poll's write: what validate_write would return (checked at import)
            with self._lock:
                self._apply(RegisterWrite(register=Reg.HEARTBEAT, value=word))
            return
        max_rate_ml_per_h = self._model.max_rate_ml_per_h
        try:
            writes = validate_write(address, values, max_rate_ml_per_h=max_rate_ml_per_h)
        except IllegalDataValueError as exc:
            if exc.register_name == Reg.RATE_SETPOINT.name:
                self._latch_rate_refused(address, values)
            raise
        with self._lock:
            # Only RATE_SETPOINT can be refused by the model once the map accepted the values, and
            # it comes first in address order (a write never spans two blocks): all or nothing.
            for write in writes:
                try:
                    self._apply(write)
                except SimulatorError as exc:
                    raise IllegalDataValueError(
                        f"{write.register.name} (address {write.register.address}): {exc}",
                        register_name=write.register.name,
                    ) from exc

    def _latch_rate_refused(self, address: int, values: Sequence[int]) -> None:
        """Let the model refuse a RATE_SETPOINT above its maximum, so it latches RATE_REFUSED."""
        offset = Reg.RATE_SETPOINT.address - address
        if not 0 <= offset < len(values) - 1:
            return
        try:
            counts = join_u32(values[offset], values[offset + 1])
        except ProtocolError:  # a word outside 0..0xFFFF: refused for that reason already
            return
        rate_ml_per_h = float(counts_to_rate_ml_per_h(counts))
        if rate_ml_per_h > self._model.max_rate_ml_per_h:  # so the model refuses it for certain
            with contextlib.suppress(SimulatorError):
                self._model.set_rate(rate_ml_per_h)

    def _apply(self, write: RegisterWrite) -> None:
        """Put one accepted register write into the model (lock held)."""
        register: Register = write.register
        value = write.value
        if register is Reg.RATE_SETPOINT:
            self._model.set_rate(float(counts_to_rate_ml_per_h(value)))
        elif register is Reg.VTBI:
            self._model.set_vtbi(float(counts_to_volume_ml(value)))
        elif register is Reg.WATCHDOG_TIMEOUT:
            self._model.set_watchdog(float(value))
        elif register is Reg.HEARTBEAT:
            if value != self._heartbeat:
                self._model.feed_watchdog()
            self._heartbeat = value
        elif register is Reg.COMMAND:
            self._command(CommandCode(value))
        else:  # pragma: no cover - validate_write refuses read-only registers
            raise AssertionError(f"{register.name} is not writable")

    def _command(self, command: CommandCode) -> None:
        """Carry out an accepted command code (lock held); refusals raise SimulatorError or 03."""
        if command is CommandCode.START:
            self._start()
        elif command is CommandCode.STOP:
            self._model.stop()
        elif command is CommandCode.CLEAR_ALARMS:
            self._model.clear_alarms()
        elif command is CommandCode.CLEAR_TOTALS:
            self._model.clear_totals()
        self._last_command = command
        self._command_counter = (self._command_counter + 1) & U16_MAX

    def _start(self) -> None:
        """START: refused after a completed VTBI until VTBI is written again (map section 6)."""
        snapshot = self._model.snapshot()
        if snapshot.state is PumpState.INFUSING:
            # Already infusing: START changes nothing.  The model is not asked, so a VTBI that
            # completes between this snapshot and a start() can never be delivered a second time.
            return
        if snapshot.vtbi_ml > 0 and volume_ml_to_counts(snapshot.vtbi_remaining_ml) == 0:
            raise IllegalDataValueError(
                f"COMMAND (address {Reg.COMMAND.address}): START refused: the VTBI of "
                f"{_volume(snapshot.vtbi_ml)} mL was delivered; write VTBI again (a new volume, "
                "or 0 for continuous) before START",
                register_name=Reg.COMMAND.name,
            )
        self._model.start()


def _volume(volume_ml: float) -> Decimal:
    """``volume_ml`` at register resolution, for messages."""
    return counts_to_volume_ml(volume_ml_to_counts(volume_ml))
