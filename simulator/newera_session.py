"""The NE-1000 side of the software pump, without a transport: bytes in, model calls, bytes out.

:class:`NeweraSession` reads what a host sends (basic lines and safe-mode packets, decoded by
:mod:`protocol.newera`), acts on a :class:`~simulator.model.PumpModel` and returns the bytes an
NE-1000 would answer.  It does no I/O and keeps no clock of its own: the transport
(:mod:`simulator.newera_server`) feeds it bytes, applies the line faults (hang, delay, garbage),
the 0.5 s inter-byte gap rule (:meth:`NeweraSession.discard_pending`) and polls
:meth:`NeweraSession.poll` for the alarm packets a pump in safe mode sends on its own.

Behaviour (facts from docs/newera.md; *decisions* of this simulator in italics, and listed in
docs/newera.md §11):

* **Framing.**  The pump is in safe mode while a watchdog is requested (``SAF<n>``, ``n > 0``; the
  model's ``watchdog_requested_s``), in basic mode otherwise; it replies in the mode it is in
  *after* the command (so ``SAF5`` is answered in safe framing and ``SAF0`` in basic, as nesp-lib
  expects).  In basic mode both framings are accepted; *in safe mode a basic line is answered*
  ``?COM`` *and does not feed the watchdog*.  A broken safe packet (length, ETX, CRC) is answered
  ``?COM``; an unknown command ``?``.  Commands addressed to another pump are ignored (no reply, no
  watchdog feed).
* **Watchdog.**  Every valid packet addressed to this pump calls ``model.feed_watchdog()``.
* **Alarms.**  Alarms the model latches are mapped to NE alarms (:data:`NE_ALARM_FOR`) and kept
  pending.  The reply to the next valid command is the oldest pending alarm (``A?R`` ...) in place
  of the normal reply, and reporting it clears it: from the session's pending set, and on the model
  (``model.clear_alarms()``, which keeps alarms whose condition is still present).  *The command
  itself is carried out first* (the pump acts, only its reply is replaced), so a host that re-sends
  the command after an alarm reply gets the real answer; with the model's rules a ``RUN`` is refused
  anyway while a stopping alarm is latched.  In safe mode the pump also sends an alarm packet on its
  own when an alarm occurs; that does not clear it.  A model created with ``POWER_LOSS`` already
  latched (or one that loses power later) answers the next command ``A?R``.
* **Status character** from the model's state: ``I`` infusing, ``P`` paused, ``S`` stopped; *an
  alarm-stopped pump shows* ``S`` (the alarm itself is reported once, as above).
* **Commands.**  Empty (status), ``DIA``, ``RAT``, ``VOL``, ``DIR``, ``RUN``, ``STP``, ``DIS``,
  ``CLDINF``, ``CLDWDR``, ``VER``, ``SAF``, ``PF``, ``AL``, ``BUZ``, ``LOC``, ``ADR``; see the
  ``_do_*`` methods.  This pump only infuses: ``DIR WDR``/``REV`` and ``PUR`` are ``?NA``.
  *A rate of 0 is* ``?OOR`` *(a pump's minimum rate is above zero: stop it with* ``STP`` *)*.
  Refusals of the model map as :mod:`simulator.errors` says: out of range ``?OOR``, not applicable
  ``?NA``.
* **Lying-pump faults** of the model show here: ``DIS`` answers the *reported* volume infused
  (``frozen_totalizer``, ``totalizer_jump``), the ``RAT`` query the *reported* rate
  (``rate_echo_wrong``), the ``SAF`` query the timeout in force (0 under ``watchdog_not_held``,
  while ``SAF<n>`` is still answered normally, in safe framing).  Under ``stop_refused`` the pump
  keeps infusing after ``STP``, and answers it with the prompt an obeying pump would give:
  ``P`` for the first ``STP``, ``S`` for a second one right after it; the next other command
  shows the truth (``I``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from types import MappingProxyType
from typing import Final

from protocol.newera import (
    CommandFrame,
    CommandItem,
    CommandStreamDecoder,
    Direction,
    FirmwareVersion,
    FrameError,
    Framing,
    Mnemonic,
    NeAlarm,
    NeDecodeError,
    NeErrorCode,
    NeStatus,
    PayloadError,
    RateUnit,
    Reply,
    UnrepresentableNumberError,
    VolumeUnit,
    encode_rate,
    encode_reply,
    format_dispensed,
    format_display_number,
    format_rate,
    format_version,
    format_volume,
    parse_number,
    parse_volume_argument,
    split_rate_argument,
    volume_unit_for_diameter,
)
from protocol.newera.constants import (
    ADDRESS_MAX,
    ADDRESS_MIN,
    SAFE_TIMEOUT_MAX_S,
    STX,
)
from protocol.pump_state import STOPPING_ALARMS, PumpAlarm, PumpState
from simulator.errors import NotApplicableError, OutOfRangeError
from simulator.model import EventKind, ModelEvent, PumpModel, PumpSnapshot

__all__ = [
    "DEFAULT_DIAMETER_MM",
    "DEFAULT_VERSION",
    "DIAMETER_MAX_MM",
    "DIAMETER_MIN_MM",
    "NE_ALARM_FOR",
    "NeweraSession",
    "SessionOutput",
]

#: What ``VER`` answers unless told otherwise: an NE-1000 with firmware 3.928.
DEFAULT_VERSION: Final = FirmwareVersion(model=1000, firmware="3.928")
#: Syringe inside diameter at power-up, mm (a 60 mL syringe; volumes in mL).
DEFAULT_DIAMETER_MM: Final = Decimal("26.59")
#: Smallest syringe diameter ``DIA`` accepts, mm (nesp-lib's range).
DIAMETER_MIN_MM: Final = Decimal("0.1")
#: Largest syringe diameter ``DIA`` accepts, mm (nesp-lib's range).
DIAMETER_MAX_MM: Final = Decimal("80.0")

#: How the model's alarms show on an NE-1000 wire.  The NE-1000 has no occlusion, air or door
#: sensor: whatever stops the motor by itself is a stall (``A?S``).  Advisory alarms (low battery,
#: rate refused, VTBI complete) have no NE alarm: a completed VTBI shows as a stopped pump.
NE_ALARM_FOR: Final = MappingProxyType(
    {
        PumpAlarm.POWER_LOSS: NeAlarm.RESET,
        PumpAlarm.COMM_TIMEOUT: NeAlarm.SAFE_TIMEOUT,
        PumpAlarm.RESERVOIR_EMPTY: NeAlarm.STALLED,
        PumpAlarm.OCCLUSION: NeAlarm.STALLED,
        PumpAlarm.AIR_IN_LINE: NeAlarm.STALLED,
        PumpAlarm.DOOR_OPEN: NeAlarm.STALLED,
        PumpAlarm.PROGRAM_ERROR: NeAlarm.PROGRAM_ERROR,
    }
)

_STATUS_FOR: Final = MappingProxyType(
    {
        PumpState.INFUSING: NeStatus.INFUSING,
        PumpState.PAUSED: NeStatus.PAUSED,
        PumpState.STOPPED: NeStatus.STOPPED,
        PumpState.ALARM: NeStatus.STOPPED,
    }
)

#: Settings the pump stores and echoes but this simulator does not act on, with the arguments
#: each accepts.
#: How many distinct whole command packets a session keeps decoded (see :meth:`NeweraSession.feed`).
_KNOWN_PACKETS_MAX: Final = 64

_STORED_SETTINGS: Final = MappingProxyType(
    {
        Mnemonic.POWER_FAIL: frozenset({"0", "1"}),
        Mnemonic.ALARM: frozenset({"0", "1"}),
        Mnemonic.LOCK: frozenset({"0", "1"}),
    }
)


class _RefusedError(Exception):
    """A command the pump answers with an error code instead of doing it."""

    def __init__(self, code: NeErrorCode) -> None:
        super().__init__(code.value)
        self.code = code


@dataclass(frozen=True)
class SessionOutput:
    """What the pump sends in answer to one decoded item."""

    unsolicited: tuple[bytes, ...] = ()
    """Alarm packets the pump sends on its own first (safe mode: an alarm occurred)."""
    reply: bytes | None = None
    """The reply proper; None when the pump stays silent (another pump's address)."""


def pump_url(base: str, address: int) -> str:
    """The pump URL a driver opens for the NE-1000 at ``address`` behind ``base`` (a scheme and
    a path or host): ``base`` itself for address 0, the pump's default, else ``base?address=N``."""
    return base if address == 0 else f"{base}?address={address}"


class NeweraSession:
    """An NE-1000 serving ``model`` at ``address`` (0-99).  Not thread-safe: one transport
    thread drives it.

    ``version`` is what ``VER`` answers (a test may make the pump claim another model);
    ``diameter_mm`` the syringe diameter at power-up (mm), which sets the volume units.
    """

    def __init__(
        self,
        model: PumpModel,
        *,
        address: int = 0,
        version: FirmwareVersion = DEFAULT_VERSION,
        diameter_mm: Decimal = DEFAULT_DIAMETER_MM,
    ) -> None:
        if isinstance(address, bool) or not ADDRESS_MIN <= address <= ADDRESS_MAX:
            raise ValueError(f"address must be {ADDRESS_MIN}-{ADDRESS_MAX}, got {address!r}")
        self._model = model
        self._address = address
        self._version = version
        self._diameter_mm = Decimal(diameter_mm)
        self._volume_unit = volume_unit_for_diameter(self._diameter_mm)
        self._decoder = CommandStreamDecoder()
        #: Whole packets seen before and what they decode to: a host polls with the same few
        #: packets every cycle, and decoding is pure (a frame is immutable).
        self._known_packets: dict[bytes, CommandFrame] = {}
        # The RAT unit last set, and the exact number set in it (for an exact readback).
        self._rate_unit = RateUnit.ML_PER_H
        self._rate_set: tuple[Decimal, RateUnit] | None = None
        self._vtbi_set_ml: Decimal | None = None
        self._settings: dict[Mnemonic, str] = {m: "0" for m in _STORED_SETTINGS}
        self._settings[Mnemonic.BUZZER] = "0"
        # The prompt a refused STP pretends (``stop_refused``): None, PAUSED, then STOPPED.
        self._pretended: NeStatus | None = None
        # Alarms: pending (oldest first) and the last model event looked at.
        self._pending: list[NeAlarm] = []
        self._handlers = MappingProxyType(self._handler_table())
        events = model.events()
        self._event_seq = events[-1].seq if events else 0
        for alarm in sorted(model.snapshot().alarms, key=lambda a: a.value):
            self._add_pending(alarm)

    # ------------------------------------------------------------------ facts

    @property
    def model(self) -> PumpModel:
        return self._model

    @property
    def address(self) -> int:
        """The pump's address, 0-99."""
        return self._address

    @property
    def safe_mode(self) -> bool:
        """True while the pump is in safe mode (its watchdog armed by ``SAF<n>``, n > 0)."""
        return _is_safe_mode(self._model.snapshot())

    @property
    def framing(self) -> Framing:
        """The framing the pump replies in now."""
        return _framing_of(self._model.snapshot())

    @property
    def pending_alarms(self) -> tuple[NeAlarm, ...]:
        """Alarms the next reply to a valid command will report, oldest first."""
        self._collect_alarms()
        return tuple(self._pending)

    # ------------------------------------------------------------------ bytes in

    def feed(self, data: bytes) -> list[CommandItem]:
        """Decode ``data`` (any chunk of the byte stream); the items of every frame it completed.

        A chunk that is exactly one valid packet seen before, arriving on a clean line (nothing
        pending), is not decoded again: the result would be the same frame."""
        decoder = self._decoder
        whole = isinstance(data, bytes) and not decoder.pending
        if whole:
            known = self._known_packets.get(data)
            if known is not None:
                return [known]
        items = decoder.feed(data)
        if (
            whole
            and len(items) == 1
            and isinstance(frame := items[0], CommandFrame)
            and frame.raw == data
            and not decoder.pending
            and len(self._known_packets) < _KNOWN_PACKETS_MAX
        ):
            self._known_packets[data] = frame
        return items

    @property
    def pending(self) -> bytes:
        """Bytes of a command still arriving."""
        return self._decoder.pending

    def pending_is_safe_packet(self) -> bool:
        """True when the bytes still arriving start a safe-mode packet (the 0.5 s gap rule)."""
        pending = self._decoder.pending
        return bool(pending) and pending[0] == STX

    def discard_pending(self) -> bytes:
        """Drop the command still arriving (a 0.5 s gap inside a packet, or a line that went
        dead); returns the dropped bytes."""
        return self._decoder.discard_pending()

    def exchange(self, data: bytes) -> bytes:
        """Feed ``data`` and answer every item at once: all bytes the pump sends back (no line
        faults, no delays).  For tests and simple transports."""
        out = bytearray()
        for item in self.feed(data):
            answer = self.answer(item)
            for packet in answer.unsolicited:
                out += packet
            if answer.reply is not None:
                out += answer.reply
        return bytes(out)

    # ------------------------------------------------------------------ alarms

    def poll(self) -> list[bytes]:
        """Look for alarms that occurred; in safe mode, the alarm packets the pump sends on its
        own for them (they stay pending for the next reply).  Call it regularly."""
        if self._model.newest_event_seq() == self._event_seq:
            return []  # nothing happened since the last look (the common case)
        snapshot, events = self._model.look(self._event_seq)
        return self._alarm_packets(self._take_alarms(events), snapshot)

    def _alarm_packets(self, new: list[NeAlarm], snapshot: PumpSnapshot) -> list[bytes]:
        """In safe mode, the packets the pump sends on its own for the ``new`` alarms."""
        if not new or not _is_safe_mode(snapshot):
            return []
        return [self._encode(Reply(self._address, alarm=alarm), Framing.SAFE) for alarm in new]

    def _collect_alarms(self) -> list[NeAlarm]:
        """Add NE alarms for the model's newly latched alarms to the pending set; return the
        ones that were not pending yet."""
        return self._take_alarms(self._model.events(self._event_seq))

    def _take_alarms(self, events: tuple[ModelEvent, ...]) -> list[NeAlarm]:
        """:meth:`_collect_alarms` for ``events`` (the model's events after the last seen)."""
        new: list[NeAlarm] = []
        for event in events:
            self._event_seq = event.seq
            if event.kind is EventKind.ALARM and event.alarm is not None:
                added = self._add_pending(event.alarm)
                if added is not None:
                    new.append(added)
        return new

    def _add_pending(self, alarm: PumpAlarm) -> NeAlarm | None:
        ne_alarm = NE_ALARM_FOR.get(alarm)
        if ne_alarm is None or ne_alarm in self._pending:
            return None
        self._pending.append(ne_alarm)
        return ne_alarm

    # ------------------------------------------------------------------ answering

    def answer(self, item: CommandItem) -> SessionOutput:
        """Act on one decoded item and say what the pump sends back."""
        if isinstance(item, NeDecodeError):
            return self._answer_error(item)
        command = item.command
        if command.target_address != self._address:
            return SessionOutput()
        if item.framing is Framing.BASIC and self.safe_mode:
            return SessionOutput(reply=self._error_reply(NeErrorCode.BAD_PACKET))
        model = self._model
        model.feed_watchdog()
        # One look before the command (alarms since the last, and the state) and one after it:
        # each look costs the model a step of its clock.
        snapshot, events = model.look(self._event_seq)
        unsolicited = tuple(self._alarm_packets(self._take_alarms(events), snapshot))
        if not self._pending and snapshot.alarms & STOPPING_ALARMS:
            # Every latched alarm has been reported once: on an NE-1000 that clears it
            # (docs/newera.md §5), so RUN works again.  One whose condition persists (an
            # occlusion still there) stays latched in the model, and RUN is still refused.
            model.clear_alarms()
        pretended, self._pretended = self._pretended, None
        refused: NeErrorCode | None = None
        data = ""
        try:
            data = self._execute(item, pretended)
        except _RefusedError as refusal:
            refused = refusal.code
        except OutOfRangeError:
            refused = NeErrorCode.OUT_OF_RANGE
        except NotApplicableError:
            refused = NeErrorCode.NOT_APPLICABLE
        # After the command: the alarms it may have raised (e.g. a power-loss script), the
        # status it leaves and the framing (a SAF command changes it).
        snapshot, events = model.look(self._event_seq)
        self._take_alarms(events)
        framing = _framing_of(snapshot)
        if self._pending:
            alarm = self._pending.pop(0)
            model.clear_alarms()
            return SessionOutput(
                unsolicited=unsolicited,
                reply=self._encode(Reply(self._address, alarm=alarm), framing),
            )
        status = _STATUS_FOR[snapshot.state]
        if refused is None:
            reply = Reply(self._address, self._pretended or status, data=data)
        else:
            reply = Reply(self._address, status, error=refused)
        return SessionOutput(unsolicited=unsolicited, reply=self._encode(reply, framing))

    def _answer_error(self, error: NeDecodeError) -> SessionOutput:
        if isinstance(error, FrameError):
            if error.framing is Framing.SAFE:
                return SessionOutput(reply=self._error_reply(NeErrorCode.BAD_PACKET))
            return SessionOutput(reply=self._error_reply(NeErrorCode.NOT_RECOGNISED))
        if error.address is not None and error.address != self._address:
            return SessionOutput()
        if error.framing is Framing.BASIC and self.safe_mode:
            return SessionOutput(reply=self._error_reply(NeErrorCode.BAD_PACKET))
        # A valid packet with a command the pump does not know.
        self._model.feed_watchdog()
        return SessionOutput(reply=self._error_reply(NeErrorCode.NOT_RECOGNISED))

    def _error_reply(self, code: NeErrorCode) -> bytes:
        return self._encode(Reply(self._address, self._status(), error=code), self.framing)

    @staticmethod
    def _encode(reply: Reply, framing: Framing) -> bytes:
        return encode_reply(reply, framing)

    def _status(self) -> NeStatus:
        return _STATUS_FOR[self._model.snapshot().state]

    def _execute(self, frame: CommandFrame, pretended: NeStatus | None = None) -> str:
        """Carry out a command; return the reply data.  Raises :class:`_RefusedError` or a model
        error for a refusal.  ``pretended``: the prompt the previous command pretended (a
        refused ``STP``), which a second ``STP`` continues from."""
        command = frame.command
        if command.mnemonic is Mnemonic.STOP:
            return self._do_stop(command.argument, pretended)
        handler = self._handlers.get(command.mnemonic)
        if handler is None:
            raise _RefusedError(NeErrorCode.NOT_APPLICABLE)
        return handler(command.argument)

    def _handler_table(self) -> dict[Mnemonic, Callable[[str], str]]:
        """What carries out each command (built once, in ``__init__``)."""
        return {
            Mnemonic.STATUS: self._do_status,
            Mnemonic.DIAMETER: self._do_diameter,
            Mnemonic.RATE: self._do_rate,
            Mnemonic.VOLUME: self._do_volume,
            Mnemonic.DIRECTION: self._do_direction,
            Mnemonic.RUN: self._do_run,
            Mnemonic.STOP: self._do_stop,
            Mnemonic.DISPENSED: self._do_dispensed,
            Mnemonic.CLEAR_INFUSED: self._do_clear_infused,
            Mnemonic.CLEAR_WITHDRAWN: self._do_clear_withdrawn,
            Mnemonic.VERSION: self._do_version,
            Mnemonic.SAFE_MODE: self._do_safe_mode,
            Mnemonic.POWER_FAIL: self._do_stored(Mnemonic.POWER_FAIL),
            Mnemonic.ALARM: self._do_stored(Mnemonic.ALARM),
            Mnemonic.LOCK: self._do_stored(Mnemonic.LOCK),
            Mnemonic.BUZZER: self._do_buzzer,
            Mnemonic.ADDRESS: self._do_address,
        }

    # ------------------------------------------------------------------ commands

    def _do_status(self, argument: str) -> str:
        return ""

    def _do_diameter(self, argument: str) -> str:
        """``DIA`` query: the diameter (mm).  ``DIA<mm>``: set it (0.1-80.0 mm, not while
        pumping); the volume units follow it (µL at or below 14.00 mm, mL above)."""
        if not argument:
            return format_display_number(self._diameter_mm)
        diameter = _number(argument)
        if not DIAMETER_MIN_MM <= diameter <= DIAMETER_MAX_MM:
            raise _RefusedError(NeErrorCode.OUT_OF_RANGE)
        if self._model.snapshot().state in (PumpState.INFUSING, PumpState.PAUSED):
            raise _RefusedError(NeErrorCode.NOT_APPLICABLE)
        self._diameter_mm = diameter
        self._volume_unit = volume_unit_for_diameter(diameter)
        return ""

    def _do_rate(self, argument: str) -> str:
        """``RAT`` query: the setpoint in the unit last set (``466.6UM``).  ``RAT<n>[unit]``: set
        it (a number without unit is in the unit last set); above the model's maximum, or 0,
        ``?OOR``."""
        if not argument:
            return self._rate_text()
        try:
            number, unit = split_rate_argument(argument)
        except PayloadError:
            raise _RefusedError(NeErrorCode.OUT_OF_RANGE) from None
        unit = unit or self._rate_unit
        rate_ml_per_h = number * unit.ml_per_h
        if rate_ml_per_h <= 0:
            raise _RefusedError(NeErrorCode.OUT_OF_RANGE)
        self._model.set_rate(float(rate_ml_per_h))
        self._rate_unit = unit
        self._rate_set = (number, unit)
        return ""

    def _rate_text(self) -> str:
        rate_ml_per_h = self._model.snapshot().reported_rate_setpoint_ml_per_h
        if self._rate_set is not None:
            number, unit = self._rate_set
            if unit is self._rate_unit and float(number * unit.ml_per_h) == rate_ml_per_h:
                return f"{format_display_number(number)}{unit.value}"
        try:
            return format_rate(rate_ml_per_h, self._rate_unit)
        except UnrepresentableNumberError:
            if rate_ml_per_h <= 0:
                return format_rate(0.0, RateUnit.ML_PER_H)
            return format_rate(rate_ml_per_h, encode_rate(rate_ml_per_h).unit)

    def _do_volume(self, argument: str) -> str:
        """``VOL`` query: the volume to dispense in the volume units (``0.500ML``).  ``VOL<n>``:
        set it in those units, ``VOL0`` continuous.  ``VOLUL``/``VOLML``: set the units."""
        if not argument:
            return self._volume_text()
        try:
            parsed = parse_volume_argument(argument)
        except PayloadError:
            raise _RefusedError(NeErrorCode.OUT_OF_RANGE) from None
        if isinstance(parsed, VolumeUnit):
            self._volume_unit = parsed
            return ""
        volume_ml = parsed * self._volume_unit.ml  # VOL0 (CONTINUOUS_VOLUME_ARGUMENT): 0
        self._model.set_vtbi(float(volume_ml))
        self._vtbi_set_ml = volume_ml
        return ""

    def _volume_text(self) -> str:
        vtbi_ml = self._model.snapshot().vtbi_ml
        shown: Decimal | float = vtbi_ml
        if self._vtbi_set_ml is not None and float(self._vtbi_set_ml) == vtbi_ml:
            shown = self._vtbi_set_ml
        try:
            return format_volume(shown, self._volume_unit)
        except UnrepresentableNumberError:
            return format_volume(shown, VolumeUnit.ML)

    def _do_direction(self, argument: str) -> str:
        """``DIR`` query: ``INF``.  ``DIRINF`` accepted; ``WDR``/``REV`` ``?NA`` (this pump only
        infuses)."""
        if not argument:
            return Direction.INFUSE.value
        try:
            direction = Direction(argument)
        except ValueError:
            raise _RefusedError(NeErrorCode.NOT_RECOGNISED) from None
        if direction is not Direction.INFUSE:
            raise _RefusedError(NeErrorCode.NOT_APPLICABLE)
        return ""

    def _do_run(self, argument: str) -> str:
        """``RUN``: start (or resume) infusing; ``?NA`` when the model refuses.  Program phases
        (``RUN<n>``) are not modelled: ``?NA``."""
        if argument:
            raise _RefusedError(NeErrorCode.NOT_APPLICABLE)
        self._model.start()
        return ""

    def _do_stop(self, argument: str, pretended: NeStatus | None = None) -> str:
        """``STP``: infusing → paused; paused (a second ``STP``) → stopped; else nothing.

        A pump that stays infusing (``stop_refused``) answers as if it had obeyed."""
        state = self._model.snapshot().state
        if state is PumpState.INFUSING:
            self._model.pause()
        elif state is PumpState.PAUSED:
            self._model.stop()
        if state is PumpState.INFUSING and self._model.snapshot().state is PumpState.INFUSING:
            self._pretended = NeStatus.STOPPED if pretended is not None else NeStatus.PAUSED
        return ""

    def _do_dispensed(self, argument: str) -> str:
        """``DIS``: ``I<infused>W<withdrawn><units>`` in the volume units (mL when µL would
        overflow the field)."""
        infused_ml = self._model.snapshot().reported_volume_infused_ml
        try:
            return format_dispensed(infused_ml, 0, self._volume_unit)
        except UnrepresentableNumberError:
            return format_dispensed(infused_ml, 0, VolumeUnit.ML)

    def _do_clear_infused(self, argument: str) -> str:
        self._model.clear_totals()
        return ""

    def _do_clear_withdrawn(self, argument: str) -> str:
        return ""  # this pump never withdraws: nothing to clear

    def _do_version(self, argument: str) -> str:
        return format_version(self._version)

    def _do_safe_mode(self, argument: str) -> str:
        """``SAF`` query: the timeout in whole seconds (0 = basic mode).  ``SAF<n>``, 0-255:
        arm the model's watchdog for ``n`` s (safe mode) or disarm it (basic mode)."""
        if not argument:
            return str(int(self._model.snapshot().watchdog_timeout_s))
        if not argument.isdigit() or int(argument) > SAFE_TIMEOUT_MAX_S:
            raise _RefusedError(NeErrorCode.OUT_OF_RANGE)
        self._model.set_watchdog(float(int(argument)))
        return ""

    def _do_stored(self, mnemonic: Mnemonic) -> Callable[[str], str]:
        """A setting that is stored and echoed: ``PF``, ``AL``, ``LOC`` (``0`` or ``1``)."""

        def handle(argument: str) -> str:
            if not argument:
                return self._settings[mnemonic]
            if argument not in _STORED_SETTINGS[mnemonic]:
                raise _RefusedError(NeErrorCode.OUT_OF_RANGE)
            self._settings[mnemonic] = argument
            return ""

        return handle

    def _do_buzzer(self, argument: str) -> str:
        """``BUZ`` query: ``0``/``1``.  ``BUZ0``/``BUZ1[n]``: stored (the pump has no buzzer)."""
        if not argument:
            return self._settings[Mnemonic.BUZZER]
        if not argument.isdigit() or argument[0] not in "01" or len(argument) > 3:
            raise _RefusedError(NeErrorCode.OUT_OF_RANGE)
        self._settings[Mnemonic.BUZZER] = argument[0]
        return ""

    def _do_address(self, argument: str) -> str:
        """``ADR`` query: the address.  Changing it is not modelled (the transport owns it):
        ``?NA``."""
        if not argument:
            return str(self._address)
        raise _RefusedError(NeErrorCode.NOT_APPLICABLE)


def _is_safe_mode(snapshot: PumpSnapshot) -> bool:
    """A pump is in safe mode while its watchdog is requested (``SAF<n>``, n > 0)."""
    return snapshot.watchdog_requested_s > 0


def _framing_of(snapshot: PumpSnapshot) -> Framing:
    """The framing a pump in ``snapshot``'s state replies in."""
    return Framing.SAFE if _is_safe_mode(snapshot) else Framing.BASIC


def _number(text: str) -> Decimal:
    try:
        return parse_number(text)
    except PayloadError:
        raise _RefusedError(NeErrorCode.OUT_OF_RANGE) from None
