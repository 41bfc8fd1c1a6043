"""The New Era NE-1000 family backend: ``newera:///dev/ttyUSB0`` and ``newera+tcp://HOST:PORT``.

::

    newera:///dev/ttyUSB0?baud=19200&address=0&safe_timeout_s=10
    newera+tcp://127.0.0.1:4001?address=0

The serial port is opened with ``serial.serial_for_url(path, exclusive=True)`` (an advisory lock:
two gateways cannot drive one pump); TCP goes through pyserial's ``socket://`` handler (a
serial-to-Ethernet converter, or the simulator).

**Wire.**  Every command goes out in *safe-mode framing* (CRC-16 protected): a pump in basic mode
accepts both framings, one in safe mode needs it.  Replies are decoded in either framing (the pump
replies in the mode it is in).  Before each request the input is drained: alarm packets in it are
latched, anything else is dropped (a late reply to an earlier request).

**Errors.**  No reply within ``timeout_s`` (real seconds): :class:`PumpTimeoutError`; bytes that
arrive but make no valid reply (garbage, bad CRC), or ``?COM``: :class:`PumpProtocolError` (both
retried by the base); the port or socket failing: :class:`LinkLostError`; ``?``, ``?NA``, ``?OOR``,
``?IGN``: :class:`PumpRefusedError` naming the command and the answer.

**Alarms are never lost.**  An alarm reply (``A?R``, ``A?S``, ``A?T``, ``A?E``, ``A?O``) may come
back on any command: it is latched, and as it replaced the command's own reply (the pump clears the
alarm by reporting it) the command is sent again to get the real answer.  *Except* ``RUN``: a pump
that answers a start with an alarm is not started again behind the operator's back; the alarm is
latched and :class:`PumpAlarmError` raised.  While a stopping alarm is latched in the driver a
stopped pump reports :attr:`PumpState.ALARM`.

**Totalizer.**  ``DIS`` shows the infused volume truncated to the display's four digits (at most
three after the point), never rounded up, so ``volume_resolution_ml`` is the step of the last
digit of the current reading: in mL units (syringes above 14.00 mm) 0.001 mL below 10 mL, 0.01 mL
below 100 mL, 0.1 mL below 1000 mL and 1 mL above; in µL units the same steps in µL.

**VTBI.**  The NE-1000 counts ``DIS`` (volume dispensed) but has no "volume remaining" nor a
"VTBI complete" status.  The driver remembers the ``VOL`` it set and the ``DIS`` total at that
moment: ``vtbi_remaining_ml = VOL - (DIS - baseline)``; when the pump is stopped and that is zero
within the display resolution it reports the advisory :attr:`PumpAlarm.VTBI_COMPLETE` (until
alarms are cleared), so the gateway can tell a finished day from a pump stopped behind its back.
A VTBI set by someone else (or before this driver was opened) is unknown: ``None``.

**Supported models:** :data:`SUPPORTED_MODELS` (the NE-1000 family whose manuals
``docs/newera.md`` cites: NE-500, NE-1000, NE-1600, NE-4000); anything else is refused with
:class:`UnsupportedPumpError`.  They do not tell their maximum rate (it depends on the syringe),
so ``max_rate_ml_per_h`` is None and a rate above it is refused by the pump (``?OOR``).
"""

from __future__ import annotations

import contextlib
import os
import select
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Final, Protocol

import serial
from pydantic import Field, field_validator

from drivers.base import DriverOptions, PumpDriver
from drivers.errors import (
    DriverError,
    LinkLostError,
    PumpAlarmError,
    PumpProtocolError,
    PumpRefusedError,
    PumpTimeoutError,
    UnsupportedPumpError,
)
from drivers.recording import RecordingOption, tap_for
from drivers.status import PumpIdentity, PumpStatus
from drivers.url import PumpUrl, WholeNumber
from protocol.newera import (
    CONTINUOUS_VOLUME_ARGUMENT,
    Command,
    Dispensed,
    Framing,
    Mnemonic,
    NeAlarm,
    NeDecodeError,
    NeErrorCode,
    NeStatus,
    Reply,
    ReplyFrame,
    ReplyStreamDecoder,
    UnrepresentableNumberError,
    VolumeUnit,
    decode_replies,
    encode_command,
    encode_rate,
    encode_volume,
    exact_value,
    number_resolution,
    parse_dispensed,
    parse_number,
    parse_rate,
    parse_version,
    parse_volume,
    volume_unit_for_diameter,
)
from protocol.newera.constants import (
    ADDRESS_MAX,
    ADDRESS_MIN,
    BAUD_RATES,
    DEFAULT_ADDRESS,
    DEFAULT_BAUD_RATE,
    SAFE_TIMEOUT_MAX_S,
)
from protocol.newera.errors import PayloadError
from protocol.pump_state import STOPPING_ALARMS, PumpAlarm, PumpState

__all__ = ["SUPPORTED_MODELS", "VENDOR", "NeweraDriver", "NeweraOptions"]

#: The vendor name in :class:`PumpIdentity`.
VENDOR: Final = "New Era"
#: Model numbers (``VER`` → ``NE<model>V...``) this driver drives.
SUPPORTED_MODELS: Final = frozenset({500, 1000, 1600, 4000})

#: Rates an infusion gateway commands stay below this (mL/h); the identity's rate resolution is
#: the codec's step here, the coarsest below it (0.01 mL/h; 0.006 mL/h below 60 mL/h).
TYPICAL_MAX_RATE_ML_PER_H: Final = Decimal("99.99")
_TYPICAL_RATE_RESOLUTION_ML_PER_H: Final = float(
    encode_rate(TYPICAL_MAX_RATE_ML_PER_H).resolution_ml_per_h
)

#: Shortest safe-mode timeout ``SAF<n>`` can arm, seconds (``SAF0`` would disarm it).
_WATCHDOG_MIN_S: Final = 1
#: Replies in a row that may be alarms before the driver gives up on a command: every NE alarm
#: once, plus the unsolicited copy a pump in safe mode sends of the first.
_MAX_ALARM_REPLIES: Final = len(NeAlarm) + 2
#: After bytes that do not decode, wait this long (real s) for the rest before giving up.
_SETTLE_S: Final = 0.05
#: How far past a request's deadline a read may wait rather than reconfigure the port (s).
_TIMEOUT_SLACK_S: Final = 0.02
#: After a failed request, drain the input until it has been quiet this long (real s).
_RESYNC_QUIET_S: Final = 0.1
#: Most reads one drain of the input makes (the socket handler reads a byte at a time).
_DRAIN_MAX_READS: Final = 1024
#: Most bytes one read of a local serial port takes (a reply is a few dozen).
_READ_SIZE: Final = 4096

_STATE_FOR: Final = MappingProxyType(
    {
        NeStatus.INFUSING: PumpState.INFUSING,
        NeStatus.WITHDRAWING: PumpState.INFUSING,  # moving: the gateway must see it running
        NeStatus.PURGING: PumpState.INFUSING,
        NeStatus.STOPPED: PumpState.STOPPED,
        NeStatus.PAUSED: PumpState.PAUSED,
        NeStatus.PAUSE_PHASE: PumpState.PAUSED,
        NeStatus.USER_WAIT: PumpState.PAUSED,
    }
)

_ERROR_MEANING: Final = MappingProxyType(
    {
        NeErrorCode.NOT_RECOGNISED: "not recognised",
        NeErrorCode.NOT_APPLICABLE: "not applicable now",
        NeErrorCode.OUT_OF_RANGE: "out of range",
        NeErrorCode.BAD_PACKET: "bad packet",
        NeErrorCode.IGNORED: "ignored",
    }
)


class NeweraOptions(DriverOptions, RecordingOption):
    """Options of ``newera`` and ``newera+tcp`` URLs (query parameters or keyword arguments)."""

    #: Serial line speed, baud (ignored over TCP).
    baud: WholeNumber = DEFAULT_BAUD_RATE
    #: Pump address on the RS-232 network.
    address: WholeNumber = Field(default=DEFAULT_ADDRESS, ge=ADDRESS_MIN, le=ADDRESS_MAX)
    #: If > 0, put the pump in safe mode with this timeout (s) when the driver opens.
    safe_timeout_s: WholeNumber = Field(default=0, ge=0, le=SAFE_TIMEOUT_MAX_S)

    @field_validator("baud")
    @classmethod
    def _baud_allowed(cls, baud: int) -> int:
        if baud not in BAUD_RATES:
            raise ValueError(f"must be one of {', '.join(str(b) for b in BAUD_RATES)}")
        return baud


@dataclass(frozen=True)
class _VtbiTrack:
    """The VTBI this driver set and the ``DIS`` total it counts from (mL, exact)."""

    volume_ml: Decimal
    baseline_ml: Decimal
    baseline_resolution_ml: Decimal
    acknowledged: bool = False
    """VTBI_COMPLETE was reported and then cleared: do not report it again for this VTBI."""


class SerialLink(Protocol):
    """What the driver needs of a port: the part of pyserial's ``Serial`` it uses."""

    timeout: float | None

    @property
    def in_waiting(self) -> int: ...

    def read(self, size: int = 1) -> bytes: ...

    def write(self, data: bytes, /) -> int | None: ...

    def close(self) -> None: ...


class NeweraDriver(PumpDriver):
    """A New Era NE-1000 family syringe pump over RS-232 (a serial path) or TCP.

    ``link``: open this instead of the URL's device (the simulator's in-process line,
    :mod:`simulator.in_process`: the same bytes, answered on the caller's thread); the URL then
    only names the pump.
    """

    options_model = NeweraOptions

    def __init__(
        self,
        url: PumpUrl | str,
        *,
        link: Callable[[], SerialLink] | None = None,
        **overrides: object,
    ) -> None:
        super().__init__(url, **overrides)
        self._link = link
        self._port: Any = None
        #: A local serial port's file descriptor, read and written directly (see _read_chunk);
        #: None over TCP or with a wire recording.
        self._fd: int | None = None
        self._packets: dict[tuple[Mnemonic, str], tuple[Command, bytes]] = {}
        self._diameter_mm: Decimal | None = None
        self._vtbi: _VtbiTrack | None = None
        self._tap = tap_for(self.url, self._opts.record)  # ?record=FILE: the wire, to a file

    @property
    def _opts(self) -> NeweraOptions:
        options = self.options
        assert isinstance(options, NeweraOptions)
        return options

    @property
    def diameter_mm(self) -> Decimal | None:
        """The syringe diameter the pump reported at identify (mm), or None before."""
        return self._diameter_mm

    @property
    def volume_unit(self) -> VolumeUnit | None:
        """The pump's volume unit for that diameter (µL at or below 14.00 mm, mL above)."""
        return None if self._diameter_mm is None else volume_unit_for_diameter(self._diameter_mm)

    # -- link ----------------------------------------------------------------------------

    def _connect(self) -> None:
        options = self._opts
        url = self.url
        try:
            if self._link is not None:
                self._port = self._link()
                self._port.timeout = options.timeout_s
            elif url.is_serial:
                self._port = serial.serial_for_url(
                    url.path, baudrate=options.baud, timeout=options.timeout_s, exclusive=True
                )
            else:
                host = f"[{url.host}]" if url.host and ":" in url.host else url.host
                self._port = serial.serial_for_url(
                    f"socket://{host}:{url.port}", timeout=options.timeout_s
                )
        except (serial.SerialException, OSError, ValueError) as exc:
            hint = (
                " (is another program or gateway using this pump?)"
                if url.is_serial and self._link is None
                else ""
            )
            raise LinkLostError(f"{url.redacted()}: cannot open: {exc}{hint}") from exc
        if self._tap is not None:
            self._port = self._tap.attach(self._port)
        elif isinstance(self._port, serial.Serial):  # pyserial's POSIX port: a plain fd
            self._fd = self._port.fileno()

    def _disconnect(self) -> None:
        port, self._port, self._fd = self._port, None, None
        if port is None:
            return
        # pyserial 3.5's socket:// close() skips closing its socket when shutdown() fails (the
        # peer is gone already): close it here too (closing twice is harmless).
        sock = getattr(port, "_socket", None)
        try:
            port.close()
        finally:
            if sock is not None:
                sock.close()
            if self._tap is not None:
                self._tap.detach()

    def _after_failed_request(self) -> None:
        # A late reply may still be on its way: wait until the line is quiet, so the next attempt
        # does not take it for its own (NE replies carry no sequence number).
        if self._port is not None:
            with contextlib.suppress(DriverError):  # the next attempt reports a lost link
                self._drain(quiet_s=min(_RESYNC_QUIET_S, self._opts.timeout_s))

    def _link_lost(self, what: str, exc: BaseException) -> LinkLostError:
        return LinkLostError(f"{self.url.redacted()}: {what}: {exc}")

    def _require_port(self) -> Any:
        if self._port is None:
            raise LinkLostError(f"{self.url.redacted()}: not connected")
        return self._port

    def _drain(self, *, quiet_s: float = 0.0) -> None:
        """Read what is waiting: latch the alarm packets in it, drop the rest.  With ``quiet_s``
        (real s) also what arrives until the line has been quiet that long (at most
        ``timeout_s`` in all)."""
        port = self._require_port()
        data = bytearray()
        try:
            for _ in range(_DRAIN_MAX_READS):
                waiting = int(port.in_waiting)
                if waiting <= 0:
                    break
                data += bytes(port.read(waiting))
        except (serial.SerialException, OSError) as exc:
            raise self._link_lost("link lost while reading", exc) from exc
        if quiet_s > 0:
            deadline = time.monotonic() + self._opts.timeout_s
            while (remaining_s := deadline - time.monotonic()) > 0:
                chunk = self._read_chunk(min(quiet_s, remaining_s))
                if not chunk:
                    break
                data += chunk
        if data:
            _, items = decode_replies(bytes(data))
            for item in items:
                if isinstance(item, ReplyFrame):
                    self._latch_alarm(item.reply)

    def _write(self, data: bytes) -> None:
        port = self._require_port()
        try:
            if self._fd is not None:
                # One system call for a command (pyserial's write adds a select after it); the
                # rest, if the output buffer was full, as pyserial writes it (it waits).
                with contextlib.suppress(BlockingIOError):
                    data = data[os.write(self._fd, data) :]
                if not data:
                    return
            port.write(data)
        except (serial.SerialException, OSError) as exc:
            raise self._link_lost("link lost while writing", exc) from exc

    def _set_read_timeout(self, seconds: float) -> None:
        port = self._require_port()
        try:
            port.timeout = seconds  # a serial port reconfigures itself: may fail if it is gone
        except (serial.SerialException, OSError) as exc:
            raise self._link_lost("link lost while configuring", exc) from exc

    def _read_chunk(self, remaining_s: float) -> bytes:
        """What arrives within ``remaining_s`` (real s): at least one byte, or none.

        Returns as soon as bytes are there, with all that are: no fixed wait."""
        if self._fd is not None:
            return self._read_fd(self._fd, remaining_s)
        port = self._require_port()
        if remaining_s < float(port.timeout) - _TIMEOUT_SLACK_S:
            # The tail of a request: keep to its deadline.  (Not for the first read, whose
            # deadline is a hair shorter than the timeout: reconfiguring a serial port is
            # several system calls, and it would be done twice a request for nothing.)
            self._set_read_timeout(remaining_s)
        try:
            first = bytes(port.read(1))
            if not first:
                return b""
            waiting = int(port.in_waiting)
            return first + (bytes(port.read(waiting)) if waiting > 0 else b"")
        except (serial.SerialException, OSError) as exc:
            raise self._link_lost("link lost while reading", exc) from exc

    def _read_fd(self, fd: int, remaining_s: float) -> bytes:
        """:meth:`_read_chunk` on a local serial port: one wait and one read of all that came
        (pyserial's ``read(1)``, ``in_waiting``, ``read(n)`` make five system calls)."""
        try:
            ready, _, _ = select.select([fd], [], [], max(remaining_s, 0.0))
            if not ready:
                return b""
            data = os.read(fd, _READ_SIZE)
        except BlockingIOError:
            return b""  # woken, but another reader took the bytes: as if none came
        except OSError as exc:
            raise self._link_lost("link lost while reading", exc) from exc
        if not data:  # readable with nothing to read: the device went away (as pyserial says)
            raise self._link_lost(
                "link lost while reading", OSError("device reports readiness but returned no data")
            )
        return data

    # -- one request ---------------------------------------------------------------------

    def _latch_alarm(self, reply: Reply) -> None:
        if reply.alarm is not None and reply.address == self._opts.address:
            self._latch({reply.alarm.pump_alarm})

    def _packet(self, mnemonic: Mnemonic, argument: str) -> tuple[Command, bytes]:
        """The command and its safe-mode packet; those without an argument (the queries a poll
        sends every cycle) are built once."""
        key = (mnemonic, argument)
        kept = self._packets.get(key)
        if kept is None:
            command = Command(mnemonic, argument, self._opts.address)
            kept = (command, encode_command(command, Framing.SAFE))
            if not argument:
                self._packets[key] = kept
        return kept

    def _exchange(self, command: Command, packet: bytes) -> Reply:
        """Send ``command`` (its safe-mode ``packet``) and read this pump's reply to it."""
        options = self._opts
        self._drain()
        if self._require_port().timeout != options.timeout_s:
            self._set_read_timeout(options.timeout_s)
        self._write(packet)
        deadline = time.monotonic() + options.timeout_s
        decoder = ReplyStreamDecoder()
        received = framed = 0
        errors: list[NeDecodeError] = []
        alarm_reply: Reply | None = None
        while (remaining_s := deadline - time.monotonic()) > 0:
            chunk = self._read_chunk(remaining_s)
            received += len(chunk)
            for item in decoder.feed(chunk):
                if isinstance(item, NeDecodeError):
                    errors.append(item)
                    continue
                framed += len(item.raw)
                reply = item.reply
                if reply.address != options.address:
                    continue  # another pump on the line
                if reply.alarm is None:
                    # One command, one reply: an alarm before it was sent unsolicited.
                    if alarm_reply is not None:
                        self._latch_alarm(alarm_reply)
                    return reply
                if alarm_reply is None:
                    alarm_reply = reply
                else:
                    self._latch_alarm(reply)
            if alarm_reply is not None or (errors and not decoder.pending):
                # An alarm may be the reply, or an unsolicited packet with the reply behind it;
                # bytes that did not decode may have the reply behind them: wait a moment.
                deadline = min(deadline, time.monotonic() + _SETTLE_S)
        if alarm_reply is not None:
            return alarm_reply
        where = f"{self.url.redacted()}: {command.text!r}"
        if errors:
            raise PumpProtocolError(f"{where}: reply does not decode: {errors[-1]}")
        if received > framed:
            raise PumpProtocolError(f"{where}: {received - framed} bytes without a valid reply")
        raise PumpTimeoutError(f"{where}: no reply within {options.timeout_s:g} s")

    def _transact(
        self, mnemonic: Mnemonic, argument: str = "", *, resend_on_alarm: bool = True
    ) -> Reply:
        """One command and its real reply; alarm replies are latched and the command re-sent.

        :raises PumpRefusedError: the pump answered ``?``, ``?NA``, ``?OOR`` or ``?IGN``.
        :raises PumpProtocolError: ``?COM``, undecodable bytes, or alarms without end.
        :raises PumpAlarmError: an alarm reply and ``resend_on_alarm`` is False.
        """
        command, packet = self._packet(mnemonic, argument)
        for _ in range(_MAX_ALARM_REPLIES):
            reply = self._exchange(command, packet)
            if reply.alarm is None and reply.error is None:
                return reply
            where = f"{self.url.redacted()}: {command.text!r}"  # named only when it failed
            if reply.alarm is None:
                if reply.error is NeErrorCode.BAD_PACKET:
                    raise PumpProtocolError(f"{where}: the pump received a bad packet (?COM)")
                if reply.error is not None:
                    meaning = _ERROR_MEANING[reply.error]
                    raise PumpRefusedError(
                        f"{where} refused by the pump: {reply.error.value} ({meaning})"
                    )
                return reply
            self._latch({reply.alarm.pump_alarm})
            if not resend_on_alarm:
                raise PumpAlarmError(
                    f"{where}: the pump answered alarm {reply.alarm.value} "
                    f"({reply.alarm.pump_alarm.value}); not re-sent: clear alarms first"
                )
        where = f"{self.url.redacted()}: {command.text!r}"
        raise PumpProtocolError(f"{where}: answered with an alarm {_MAX_ALARM_REPLIES} times")

    def _query(self, mnemonic: Mnemonic) -> str:
        """The data of a query's reply."""
        return self._transact(mnemonic).data

    def _dispensed(self) -> tuple[Dispensed, NeStatus | None]:
        reply = self._transact(Mnemonic.DISPENSED)
        try:
            return parse_dispensed(reply.data), reply.status
        except PayloadError as exc:
            raise PumpProtocolError(f"{self.url.redacted()}: DIS reply: {exc}") from exc

    # -- hooks ---------------------------------------------------------------------------

    def _identify(self) -> PumpIdentity:
        data = self._query(Mnemonic.VERSION)
        try:
            version = parse_version(data)
        except PayloadError as exc:
            raise PumpProtocolError(f"{self.url.redacted()}: VER reply: {exc}") from exc
        if version.model not in SUPPORTED_MODELS:
            supported = ", ".join(f"NE-{m}" for m in sorted(SUPPORTED_MODELS))
            raise UnsupportedPumpError(
                f"{self.url.redacted()}: the pump identifies as NE-{version.model} "
                f"(VER {data!r}); this driver supports {supported}"
            )
        diameter = self._query(Mnemonic.DIAMETER)
        try:
            self._diameter_mm = parse_number(diameter)
        except PayloadError as exc:
            raise PumpProtocolError(f"{self.url.redacted()}: DIA reply: {exc}") from exc
        if self._opts.safe_timeout_s > 0:
            self._arm_watchdog(float(self._opts.safe_timeout_s))
        firmware = version.firmware + (f"X{version.upgrade}" if version.upgrade else "")
        return PumpIdentity(
            vendor=VENDOR,
            model=f"NE-{version.model}",
            firmware=firmware,
            max_rate_ml_per_h=None,
            rate_resolution_ml_per_h=_TYPICAL_RATE_RESOLUTION_ML_PER_H,
        )

    def _read_status(self) -> PumpStatus:
        dispensed, status = self._dispensed()
        rate_ml_per_h = self._read_rate()
        state = _STATE_FOR[status] if status is not None else PumpState.STOPPED
        with self._lock:
            latched = set(self._latched_alarms)
        if state is PumpState.STOPPED and latched & STOPPING_ALARMS:
            state = PumpState.ALARM
        step_ml = _display_resolution_ml(dispensed)
        remaining_ml, complete = self._vtbi_progress(dispensed, step_ml)
        alarms: set[PumpAlarm] = set()
        if complete and state in (PumpState.STOPPED, PumpState.ALARM):
            remaining_ml = Decimal(0)
            if self._vtbi is not None and not self._vtbi.acknowledged:
                alarms.add(PumpAlarm.VTBI_COMPLETE)
        return PumpStatus(
            state=state,
            rate_ml_per_h=rate_ml_per_h,
            volume_infused_ml=float(dispensed.infused_ml),
            # The step of this reading, not a fixed one: the display drops a decimal per decade.
            volume_resolution_ml=float(step_ml),
            vtbi_remaining_ml=None if remaining_ml is None else float(remaining_ml),
            alarms=frozenset(alarms),
            identity=self._identity,  # so that read_status can hand this status on as it is
        )

    def _vtbi_progress(
        self, dispensed: Dispensed, step_ml: Decimal | None = None
    ) -> tuple[Decimal | None, bool]:
        """(VTBI remaining in mL or None if unknown, whether it may all have been delivered).

        ``DIS`` readings are truncated: the delivered volume shown is between the truth minus
        one step of the current reading and the truth plus one step of the baseline reading.
        So a delivered VTBI always shows less than one current step remaining (that is the
        test); a pump stopped short of it by less than the two steps cannot be told apart.
        ``step_ml``: the reading's step, if the caller has it already.
        """
        track = self._vtbi
        if track is None:
            return None, False
        step = _display_resolution_ml(dispensed) if step_ml is None else step_ml
        delivered = dispensed.infused_ml - track.baseline_ml
        if delivered < -(step + track.baseline_resolution_ml):
            return None, False  # the totals were cleared behind this driver's back
        remaining = track.volume_ml - delivered
        return max(remaining, Decimal(0)), remaining <= step

    def _write_rate(self, rate_ml_per_h: float) -> float:
        try:
            encoded = encode_rate(rate_ml_per_h)
        except UnrepresentableNumberError as exc:
            raise PumpRefusedError(
                f"{self.url.redacted()}: {rate_ml_per_h!r} mL/h cannot be sent with RAT "
                f"(stop the pump instead of a zero rate): {exc}"
            ) from exc
        self._transact(Mnemonic.RATE, encoded.argument)
        return float(encoded.rate_ml_per_h)

    def _read_rate(self) -> float:
        data = self._query(Mnemonic.RATE)
        try:
            return float(parse_rate(data))
        except PayloadError as exc:
            raise PumpProtocolError(f"{self.url.redacted()}: RAT reply: {exc}") from exc

    def _rate_resolution_ml_per_h(self, rate_ml_per_h: float, default: float) -> float:
        try:
            return float(encode_rate(rate_ml_per_h).resolution_ml_per_h)
        except UnrepresentableNumberError:
            return default

    def _volume_held(self) -> tuple[Decimal, VolumeUnit]:
        """The VTBI the pump holds (mL) and its volume unit, from a ``VOL`` query."""
        data = self._query(Mnemonic.VOLUME)
        try:
            return parse_volume(data), VolumeUnit(data[-2:])
        except (PayloadError, ValueError) as exc:
            raise PumpProtocolError(f"{self.url.redacted()}: VOL reply {data!r}: {exc}") from exc

    def _write_vtbi(self, volume_ml: float) -> float:
        if volume_ml == 0:
            self._transact(Mnemonic.VOLUME, CONTINUOUS_VOLUME_ARGUMENT)
            self._vtbi = None
            return 0.0
        # The unit the pump reports is the authority (someone may have sent VOLUL/VOLML).
        _, unit = self._volume_held()
        try:
            text = encode_volume(volume_ml, unit)
        except UnrepresentableNumberError as exc:
            raise PumpRefusedError(
                f"{self.url.redacted()}: VTBI {volume_ml!r} mL does not fit the pump's "
                f"volume field in {unit.value}: {exc}"
            ) from exc
        self._transact(Mnemonic.VOLUME, text)
        held_ml, _ = self._volume_held()
        if held_ml > exact_value(volume_ml):
            raise PumpProtocolError(
                f"{self.url.redacted()}: the pump holds VTBI {held_ml} mL after VOL{text}, "
                f"more than the {volume_ml!r} mL sent"
            )
        dispensed, _ = self._dispensed()
        self._vtbi = _VtbiTrack(held_ml, dispensed.infused_ml, _display_resolution_ml(dispensed))
        return float(held_ml)

    def _start(self) -> None:
        track = self._vtbi
        rebase: Dispensed | None = None
        if track is not None:
            dispensed, _ = self._dispensed()
            if self._vtbi_progress(dispensed)[1]:
                rebase = dispensed  # RUN after a completed VTBI dispenses it again
        self._transact(Mnemonic.RUN, resend_on_alarm=False)
        if track is not None:
            if rebase is not None:
                track = replace(
                    track,
                    baseline_ml=rebase.infused_ml,
                    baseline_resolution_ml=_display_resolution_ml(rebase),
                )
            self._vtbi = replace(track, acknowledged=False)

    def _stop(self) -> None:
        reply = self._transact(Mnemonic.STOP)
        if reply.status is not NeStatus.STOPPED:
            self._transact(Mnemonic.STOP)  # the first STP paused it; the second stops it

    def _clear_alarms(self) -> None:
        # Any valid command reports (and so clears) a pending alarm; the NE-1000 keeps no alarm
        # state beyond that.  A completed VTBI is acknowledged: not reported again.
        dispensed, _ = self._dispensed()
        if self._vtbi is not None and self._vtbi_progress(dispensed)[1]:
            self._vtbi = replace(self._vtbi, acknowledged=True)

    def _clear_totals(self) -> None:
        track = self._vtbi
        if track is not None:
            # Keep counting the VTBI across the cleared totals: delivered so far = DIS - baseline.
            before, _ = self._dispensed()
            self._transact(Mnemonic.CLEAR_INFUSED)
            self._vtbi = replace(
                track,
                baseline_ml=track.baseline_ml - before.infused_ml,
                baseline_resolution_ml=track.baseline_resolution_ml
                + _display_resolution_ml(before),
            )
            return
        self._transact(Mnemonic.CLEAR_INFUSED)

    def _arm_watchdog(self, timeout_s: float) -> float:
        seconds = min(max(int(timeout_s), _WATCHDOG_MIN_S), SAFE_TIMEOUT_MAX_S)
        self._transact(Mnemonic.SAFE_MODE, str(seconds))
        data = self._query(Mnemonic.SAFE_MODE)
        if not data.isdigit():
            raise PumpProtocolError(f"{self.url.redacted()}: SAF reply {data!r}: not seconds")
        return float(int(data))


def _display_resolution_ml(dispensed: Dispensed) -> Decimal:
    """The step of the last digit of a ``DIS`` reading of the infused volume, mL."""
    unit_ml = dispensed.unit.ml
    return number_resolution(dispensed.infused_ml / unit_ml) * unit_ml
