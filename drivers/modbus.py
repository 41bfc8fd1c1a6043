"""Modbus backend: pumps that speak the project's register map (``docs/modbus-map.md``).

``modbus+tcp://HOST:PORT?unit=1``
``modbus+rtu:///dev/ttyUSB0?baud=19200&parity=E&unit=1``

pymodbus (its *sync* clients) is used here and nowhere else in ``drivers``; every pymodbus
exception and ``OSError`` becomes one of the typed errors of :mod:`drivers.errors`:

* no reply within ``timeout_s``: :class:`~drivers.errors.PumpTimeoutError`;
* connection refused, reset or closed, a serial port that cannot be opened or went away:
  :class:`~drivers.errors.LinkLostError`;
* Modbus exception 02 / 03: :class:`ModbusRefusedError` (a
  :class:`~drivers.errors.PumpRefusedError`) naming the register and the exception;
* a reply that does not decode or does not answer the request (another function, address,
  count or value, e.g. a late reply to an earlier request on RTU, which has no transaction
  ids): :class:`~drivers.errors.PumpProtocolError`.

A poll is one transaction: function 23 (Read/Write Multiple Registers) writes the new HEARTBEAT
and reads the status block at once (the pump writes before it reads, so the block already echoes
the heartbeat).  That one request is framed by this project (:mod:`protocol.modbus.frame`) and
sent on the pymodbus client's connection through its ``send`` / ``recv``
(:mod:`drivers.modbus_poll`), which costs less than pymodbus's own per-request machinery
(``docs/performance.md``).  Its reply is checked as strictly (transaction id, unit, function,
register count; RTU: address and CRC) and fails with the same typed errors.  Every other
request goes through pymodbus.  The map makes function 23 optional: a pump that answers it with
exception 01 (ILLEGAL_FUNCTION) is polled with two requests (06 then 03) for the rest of that
connection, and that is logged once (``modbus_read_write_unsupported``).

pymodbus's own retries are off (``retries=0``): :class:`~drivers.base.PumpDriver` owns retrying,
so one attempt waits at most about ``timeout_s``.  The serial port is opened exclusively:
pymodbus 3.16 opens it with pyserial's ``exclusive=True`` (an advisory ``flock``), so a second
driver (or any other program honouring the lock) on the same port fails with
:class:`~drivers.errors.LinkLostError`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Final, Literal, TypeVar

import structlog
from pydantic import Field, field_validator
from pymodbus.client import ModbusSerialClient, ModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.pdu import ExceptionResponse, ModbusPDU
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersResponse,
    WriteMultipleRegistersResponse,
    WriteSingleRegisterResponse,
)

from drivers.base import DriverOptions, PumpDriver
from drivers.errors import (
    DriverConfigError,
    DriverError,
    LinkLostError,
    PumpProtocolError,
    PumpRefusedError,
    PumpTimeoutError,
    UnsupportedPumpError,
)
from drivers.modbus_poll import FramedExchange
from drivers.recording import RecordingOption, tap_for
from drivers.status import PumpIdentity, PumpStatus
from drivers.url import PumpUrl, WholeNumber
from protocol.errors import DecodeError, EncodeError
from protocol.modbus import (
    EXCEPTION_FLAG,
    IDENTIFICATION_SPAN,
    MAP_VERSION,
    RATE_RESOLUTION_ML_PER_H,
    STATUS_SPAN,
    U16_MAX,
    WATCHDOG_TIMEOUT_MAX_S,
    CommandCode,
    ExceptionReplyError,
    FrameDecodeError,
    FunctionCode,
    Identification,
    MapVersionError,
    ReadWriteRequest,
    Reg,
    Register,
    Span,
    WordOrderError,
    count_scaler,
    counts_to_rate_ml_per_h,
    counts_to_volume_ml,
    decode_identification,
    decode_status,
    join_u32,
    rate_ml_per_h_to_counts,
    register_at,
    split_u32,
    volume_ml_to_counts,
)
from protocol.modbus import (
    ModbusException as MapException,
)
from protocol.modbus.vendors import KNOWN_PUMPS

__all__ = [
    "BAUD_RATES",
    "SUPPORTED_PUMPS",
    "ModbusDriver",
    "ModbusOptions",
    "ModbusRefusedError",
]

T = TypeVar("T")

log = structlog.get_logger("drivers.modbus")

#: Baud rates a ``modbus+rtu`` URL may ask for.
BAUD_RATES: Final = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)

#: Pumps this driver supports: ``(VENDOR_ID, MODEL_ID)`` -> vendor name.  MAP_VERSION must be
#: :data:`protocol.modbus.MAP_VERSION` as well.
SUPPORTED_PUMPS: Final[Mapping[tuple[int, int], str]] = KNOWN_PUMPS

#: After a failed request on RTU, input is discarded until the line has been quiet this long (s).
_DRAIN_QUIET_S: Final = 0.05
_DRAIN_POLL_S: Final = 0.005

#: The step of the VOLUME_INFUSED totalizer, mL: one count of that register, as the map scales it
#: (the pump truncates the volume to whole counts, so the truth is less than one count above).
_VOLUME_INFUSED_RESOLUTION_ML: Final = float(Reg.VOLUME_INFUSED.scale)

#: Function 23, Read/Write Multiple Registers: one poll's heartbeat write and status read.
_READ_WRITE_MULTIPLE: Final = FunctionCode.READ_WRITE_MULTIPLE_REGISTERS

#: The poll's request: HEARTBEAT written, then the status block read.  Its addresses and counts
#: are checked once, here; each poll only packs the new HEARTBEAT value.
_STATUS_REQUEST: Final = ReadWriteRequest(
    STATUS_SPAN.address, STATUS_SPAN.count, Reg.HEARTBEAT.address, write_count=1
)

#: UPTIME counts to seconds, exactly (the register's scale, from the map).
_uptime_s: Final = count_scaler(Reg.UPTIME.scale)

#: Text pymodbus 3.16 puts in the ModbusIOException it raises when no reply came in time.
_NO_RESPONSE_TEXT: Final = "No response received"

_Client = ModbusTcpClient | ModbusSerialClient


class ModbusOptions(DriverOptions, RecordingOption):
    """Options of a ``modbus+tcp`` / ``modbus+rtu`` pump URL."""

    #: Modbus unit id (RTU slave address) of the pump.
    unit: WholeNumber = Field(default=1, ge=1, le=247)
    #: Serial line speed, baud (``modbus+rtu`` only).
    baud: WholeNumber = 19200
    #: Serial parity: N, E or O (``modbus+rtu`` only); the map's default line is 8E1.
    parity: Literal["N", "E", "O"] = "E"

    @field_validator("baud")
    @classmethod
    def _common_baud_rate(cls, baud: int) -> int:
        if baud not in BAUD_RATES:
            raise ValueError(f"must be one of {', '.join(str(rate) for rate in BAUD_RATES)}")
        return baud


class ModbusRefusedError(PumpRefusedError):
    """The pump answered a Modbus exception 02 or 03 (or the driver refused to send a value
    the register cannot hold: ``exception_code`` None).

    ``register_name`` is the register the request was for.
    """

    def __init__(
        self, message: str, *, register_name: str, exception_code: MapException | None
    ) -> None:
        super().__init__(message)
        self.register_name = register_name
        self.exception_code = exception_code


class ModbusDriver(PumpDriver):
    """A pump on Modbus TCP or RTU speaking register map :data:`~protocol.modbus.MAP_VERSION`.

    Rates are in mL/h (0.01 mL/h steps), volumes in mL (0.001 mL steps), both truncated toward
    zero before sending.  Each :meth:`read_status` writes a new HEARTBEAT value (feeding the
    pump's bus watchdog) and reads the status block in one function-23 transaction; a pump
    without function 23 gets the write (06) and then the read (03), two transactions.
    """

    options_model = ModbusOptions

    def __init__(self, url: PumpUrl | str, **overrides: object) -> None:
        super().__init__(url, **overrides)
        if self.url.scheme not in ("modbus+tcp", "modbus+rtu"):
            raise DriverConfigError(
                f"pump URL scheme {self.url.scheme!r}: ModbusDriver takes modbus+tcp or modbus+rtu"
            )
        options = self.options
        assert isinstance(options, ModbusOptions)
        serial_only = sorted(options.model_fields_set & {"baud", "parity"})
        if serial_only and not self.url.is_serial:
            raise DriverConfigError(
                f"pump URL parameter {serial_only[0]!r}: only for modbus+rtu (a serial line)"
            )
        self._options: Final = options
        self._client: _Client | None = None
        self._tap = tap_for(self.url, options.record)  # ?record=FILE: the wire, to a file
        self._identification: Identification | None = None
        # Its MAX_RATE in mL/h as every status reports it (None before the first identification).
        self._max_rate_ml_per_h: float | None = None
        self._heartbeat: int | None = None  # the value we last wrote, or None: not known yet
        # Function 23 for polls: True until the pump on this connection answers it with
        # exception 01; then two requests per poll until the next connection.
        self._read_write = True
        self._received = False  # bytes arrived during the current transaction
        # The poll's function-23 request, framed by us on the pymodbus client's connection.
        self._poll = FramedExchange(
            unit=options.unit,
            rtu=self.url.is_serial,
            timeout_s=options.timeout_s,
            trace=self._trace_packet,
        )

    # -- link ----------------------------------------------------------------------------

    def _connect(self) -> None:
        timeout_s = self._options.timeout_s
        client: _Client
        if self.url.is_serial:
            assert self.url.path is not None
            client = ModbusSerialClient(
                self.url.path,
                baudrate=self._options.baud,
                parity=self._options.parity,
                bytesize=8,
                stopbits=1,
                timeout=timeout_s,
                retries=0,
                trace_packet=self._trace_packet,
            )
            problem = (
                f"cannot open serial port {self.url.path} (missing, refused by its line "
                "settings, or in use: the port is opened exclusively)"
            )
        else:
            assert self.url.host is not None
            assert self.url.port is not None
            client = ModbusTcpClient(
                self.url.host,
                port=self.url.port,
                timeout=timeout_s,
                retries=0,
                trace_packet=self._trace_packet,
            )
            problem = (
                f"cannot connect to {self.url.host}:{self.url.port} "
                f"(refused, unreachable, or no answer within {timeout_s:g} s)"
            )
        try:
            connected = client.connect()
        except (ModbusException, OSError) as exc:  # pymodbus returns False; be sure anyway
            raise LinkLostError(f"{self.url.redacted()}: {problem}: {exc}") from None
        if not connected:
            _close(client)
            raise LinkLostError(f"{self.url.redacted()}: {problem}")
        if self._tap is not None:
            client.socket = self._tap.attach(client.socket)
        self._client = client

    def _disconnect(self) -> None:
        client, self._client = self._client, None
        self._heartbeat = None  # the pump may have restarted: read what it holds next time
        self._read_write = True  # it may be another pump next time: offer function 23 again
        if client is not None:
            _close(client)
        if self._tap is not None:
            self._tap.detach()

    def _after_failed_request(self) -> None:
        """RTU has no transaction ids: discard what a late reply left until the line is quiet."""
        client = self._client
        if not isinstance(client, ModbusSerialClient) or client.socket is None:
            return
        port = client.socket
        start = quiet_since = time.monotonic()
        try:
            while True:
                now = time.monotonic()
                if now - quiet_since >= _DRAIN_QUIET_S or now - start >= self._options.timeout_s:
                    return
                waiting = int(port.in_waiting)
                if waiting:
                    port.read(waiting)
                    quiet_since = time.monotonic()
                else:
                    time.sleep(_DRAIN_POLL_S)
        except (OSError, ValueError, TypeError):
            return  # the port is going away: the next request finds out and reports it

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        """pymodbus hook on every packet: notes that bytes arrived (for error messages)."""
        if not sending and data:
            self._received = True
        return data

    # -- one transaction -----------------------------------------------------------------

    def _transact(self, what: str, call: Callable[[_Client], T]) -> T:
        """Run one pymodbus request; every failure becomes a typed driver error."""
        client = self._client
        if client is None:
            raise LinkLostError(f"{self.url.redacted()}: not connected")
        self._received = False
        try:
            return call(client)
        except ConnectionException as exc:
            raise LinkLostError(f"{self.url.redacted()}: {what}: link lost ({exc})") from None
        except ModbusIOException as exc:
            if _NO_RESPONSE_TEXT in str(exc):
                raise self._no_reply(what) from None
            raise PumpProtocolError(f"{self.url.redacted()}: {what}: bad reply ({exc})") from None
        except ModbusException as exc:
            raise PumpProtocolError(f"{self.url.redacted()}: {what}: {exc}") from None
        except OSError as exc:
            raise LinkLostError(f"{self.url.redacted()}: {what}: link lost ({exc})") from None
        except (ValueError, TypeError, IndexError, KeyError) as exc:  # pymodbus decoding garbage
            raise PumpProtocolError(f"{self.url.redacted()}: {what}: bad reply ({exc})") from None

    def _no_reply(self, what: str) -> PumpTimeoutError:
        """The error of a request that got no (whole) reply within the timeout."""
        late = " (only bytes that were not the reply arrived)" if self._received else ""
        return PumpTimeoutError(
            f"{self.url.redacted()}: {what}: no reply from unit {self._options.unit} "
            f"within {self._options.timeout_s:g} s{late}"
        )

    def _refusal(
        self, replied_function: int, code: int, function_code: int, register: Register, what: str
    ) -> DriverError:
        """The error of an exception reply (function ``replied_function``, exception ``code``)
        to a request of ``function_code``: 02/03 are ModbusRefusedError."""
        if replied_function != function_code:
            return PumpProtocolError(
                f"{self.url.redacted()}: {what}: exception reply to function "
                f"{replied_function}, not {function_code} (a late reply?)"
            )
        if code in (MapException.ILLEGAL_DATA_ADDRESS, MapException.ILLEGAL_DATA_VALUE):
            exception = MapException(code)
            return ModbusRefusedError(
                f"{self.url.redacted()}: {what}: the pump refused {register.name} "
                f"(address {register.address}) with Modbus exception {code:02d} "
                f"{exception.name}",
                register_name=register.name,
                exception_code=exception,
            )
        return PumpProtocolError(
            f"{self.url.redacted()}: {what}: Modbus exception {code:02d} on {register.name}: "
            "not an answer this register map gives"
        )

    def _check_reply(
        self, reply: ModbusPDU, function_code: int, register: Register, what: str
    ) -> None:
        """Raise for an exception reply (02/03: ModbusRefusedError) or one for another function."""
        if isinstance(reply, ExceptionResponse):
            raise self._refusal(
                reply.function_code & ~EXCEPTION_FLAG,
                reply.exception_code,
                function_code,
                register,
                what,
            )
        if reply.function_code != function_code:
            raise PumpProtocolError(
                f"{self.url.redacted()}: {what}: reply is function {reply.function_code}, "
                f"not {function_code} (a late reply?)"
            )

    def _read(self, register: Register, count: int, what: str) -> list[int]:
        """Function 03: ``count`` registers from ``register``'s address, in one transaction."""
        unit = self._options.unit
        reply = self._transact(
            what,
            lambda client: client.read_holding_registers(
                register.address, count=count, device_id=unit
            ),
        )
        self._check_reply(reply, FunctionCode.READ_HOLDING_REGISTERS, register, what)
        if not isinstance(reply, ReadHoldingRegistersResponse) or len(reply.registers) != count:
            raise PumpProtocolError(
                f"{self.url.redacted()}: {what}: expected {count} registers from address "
                f"{register.address}, got {len(reply.registers)} (a late reply?)"
            )
        return list(reply.registers)

    def _read_span(self, span: Span, what: str) -> list[int]:
        """One read of a whole block."""
        first = register_at(span.address)
        assert first is not None
        return self._read(first, span.count, what)

    def _write_single(self, register: Register, value: int, what: str) -> None:
        """Function 06: one register; the reply must echo address and value."""
        unit = self._options.unit
        reply = self._transact(
            what,
            lambda client: client.write_register(register.address, value, device_id=unit),
        )
        self._check_reply(reply, FunctionCode.WRITE_SINGLE_REGISTER, register, what)
        if (
            not isinstance(reply, WriteSingleRegisterResponse)
            or reply.address != register.address
            or list(reply.registers) != [value]
        ):
            raise PumpProtocolError(
                f"{self.url.redacted()}: {what}: reply does not echo {register.name} = {value} "
                "(a late reply?)"
            )

    def _write_multiple(self, register: Register, values: Sequence[int], what: str) -> None:
        """Function 16: ``values`` from ``register``'s address, in one transaction."""
        unit = self._options.unit
        words = list(values)
        reply = self._transact(
            what,
            lambda client: client.write_registers(register.address, words, device_id=unit),
        )
        self._check_reply(reply, FunctionCode.WRITE_MULTIPLE_REGISTERS, register, what)
        if (
            not isinstance(reply, WriteMultipleRegistersResponse)
            or reply.address != register.address
            or reply.count != len(words)
        ):
            raise PumpProtocolError(
                f"{self.url.redacted()}: {what}: reply does not confirm {len(words)} registers "
                f"from {register.name} (a late reply?)"
            )

    def _read_u32(self, register: Register, what: str) -> int:
        high, low = self._read(register, 2, what)
        return join_u32(high, low)

    def _counts(self, register: Register, value: float, encode: Callable[[float], int]) -> int:
        """``value`` in counts of ``register`` (truncated); ModbusRefusedError if it won't fit."""
        try:
            return encode(value)
        except EncodeError as exc:
            raise ModbusRefusedError(
                f"{self.url.redacted()}: {register.name}: {value!r} {register.unit} not sent "
                f"({exc})",
                register_name=register.name,
                exception_code=None,
            ) from None

    # -- backend hooks ---------------------------------------------------------------------

    def _identify(self) -> PumpIdentity:
        """Read the identification block (one transaction) and check map version and model."""
        what = "identify"
        try:
            words = self._read_span(IDENTIFICATION_SPAN, what)
        except ModbusRefusedError as exc:
            raise UnsupportedPumpError(
                f"{self.url.redacted()}: unit {self._options.unit} has no identification block "
                f"of register map {MAP_VERSION} ({exc})"
            ) from None
        try:
            identification = decode_identification(words)
        except MapVersionError as exc:
            raise UnsupportedPumpError(
                f"{self.url.redacted()}: the pump speaks register map version "
                f"{exc.pump_map_version}; this driver implements version {MAP_VERSION} only"
            ) from None
        except WordOrderError as exc:
            raise UnsupportedPumpError(f"{self.url.redacted()}: {exc}") from None
        except DecodeError as exc:
            raise PumpProtocolError(
                f"{self.url.redacted()}: identification block does not decode: {exc}"
            ) from None
        key = (identification.vendor_id, identification.model_id)
        vendor = SUPPORTED_PUMPS.get(key)
        if vendor is None:
            supported = ", ".join(
                f"vendor 0x{v:04X} model 0x{m:04X} ({name})"
                for (v, m), name in SUPPORTED_PUMPS.items()
            )
            raise UnsupportedPumpError(
                f"{self.url.redacted()}: vendor 0x{key[0]:04X} model 0x{key[1]:04X} "
                f"({identification.model_name!r}) is not supported by this driver; "
                f"supported: {supported}"
            )
        self._identification = identification
        self._max_rate_ml_per_h = float(identification.max_rate_ml_per_h)
        return PumpIdentity(
            vendor=vendor,
            model=identification.model_name or f"0x{identification.model_id:04X}",
            firmware=identification.firmware_version,
            max_rate_ml_per_h=self._max_rate_ml_per_h,
            rate_resolution_ml_per_h=float(RATE_RESOLUTION_ML_PER_H),
        )

    def _read_status(self) -> PumpStatus:
        """Feed the watchdog (a new HEARTBEAT) and read the whole status block at once."""
        words = self._beat_and_read_status()
        try:
            block = decode_status(words)
        except DecodeError as exc:
            raise PumpProtocolError(
                f"{self.url.redacted()}: status block does not decode: {exc}"
            ) from None
        return PumpStatus(
            state=block.state,
            rate_ml_per_h=float(block.rate_setpoint_ml_per_h),
            volume_infused_ml=float(block.volume_infused_ml),
            # The register truncates to whole counts: one count is the totalizer's step.
            volume_resolution_ml=_VOLUME_INFUSED_RESOLUTION_ML,
            vtbi_remaining_ml=None if block.vtbi_ml == 0 else float(block.vtbi_remaining_ml),
            alarms=block.alarms,
            measured_rate_ml_per_h=float(block.measured_rate_ml_per_h),
            max_rate_ml_per_h=self._max_rate_ml_per_h,
            identity=self._identity,
            uptime_s=float(_uptime_s(block.uptime_s)),
        )

    def _beat_and_read_status(self) -> Sequence[int]:
        """A new HEARTBEAT, then the status block: one function-23 transaction, or two requests
        (06, 03) to a pump that refused function 23 on this connection."""
        if self._read_write:
            words = self._read_write_status(self._next_heartbeat())
            if words is not None:
                return words
        self._beat()
        return self._read_span(STATUS_SPAN, "read status")

    def _next_heartbeat(self) -> int:
        """A HEARTBEAT value other than the one the pump holds (writing it feeds the watchdog)."""
        if self._heartbeat is None:
            (self._heartbeat,) = self._read(Reg.HEARTBEAT, 1, "read heartbeat")
        value = (self._heartbeat + 1) & U16_MAX
        # Counted as written before the reply: a retry after a lost reply writes a new value.
        self._heartbeat = value
        return value

    def _beat(self) -> None:
        """Write a new HEARTBEAT value (function 06)."""
        self._write_single(Reg.HEARTBEAT, self._next_heartbeat(), "heartbeat")

    def _read_write_status(self, heartbeat: int) -> Sequence[int] | None:
        """Function 23: write ``heartbeat`` to HEARTBEAT, then read the status block, in one
        transaction framed by us (:mod:`drivers.modbus_poll`).  None when the pump answers
        exception 01 (the map lets a pump go without function 23): polls take two requests from
        then on, until the next connection."""
        what = "heartbeat and read status"
        try:
            words = self._transact(
                what, lambda client: self._poll.read_write(client, _STATUS_REQUEST, (heartbeat,))
            )
            if words is None:
                raise self._no_reply(what)
            return words
        except ExceptionReplyError as exc:
            function, code = exc.function, exc.exception_code
            if function == _READ_WRITE_MULTIPLE and code == MapException.ILLEGAL_FUNCTION:
                self._read_write = False
                log.info(
                    "modbus_read_write_unsupported",
                    pump=self.url.redacted(),
                    unit=self._options.unit,
                    polls="two requests each (06 then 03) until the next connection",
                )
                return None
            raise self._refusal(function, code, _READ_WRITE_MULTIPLE, Reg.HEARTBEAT, what) from None
        except FrameDecodeError as exc:  # garbled, cut short, or not an answer to this request
            raise PumpProtocolError(f"{self.url.redacted()}: {what}: bad reply ({exc})") from None

    def _write_rate(self, rate_ml_per_h: float) -> float:
        """Write RATE_SETPOINT (both words at once), truncated to 0.01 mL/h; return it (mL/h)."""
        counts = self._counts(Reg.RATE_SETPOINT, rate_ml_per_h, rate_ml_per_h_to_counts)
        self._write_multiple(Reg.RATE_SETPOINT, split_u32(counts), "set rate")
        return float(counts_to_rate_ml_per_h(counts))

    def _read_rate(self) -> float:
        """The rate setpoint the pump holds (RATE_SETPOINT_ECHO), mL/h."""
        return float(counts_to_rate_ml_per_h(self._read_u32(Reg.RATE_SETPOINT_ECHO, "read rate")))

    def _write_vtbi(self, volume_ml: float) -> float:
        """Write VTBI (0 = continuous), truncated to 0.001 mL; return what the pump holds (mL)."""
        counts = self._counts(Reg.VTBI, volume_ml, volume_ml_to_counts)
        self._write_multiple(Reg.VTBI, split_u32(counts), "set VTBI")
        return float(counts_to_volume_ml(self._read_u32(Reg.VTBI_ECHO, "read VTBI")))

    def _command(self, command: CommandCode) -> None:
        self._write_single(Reg.COMMAND, int(command), command.name.lower().replace("_", " "))

    def _start(self) -> None:
        self._command(CommandCode.START)

    def _stop(self) -> None:
        self._command(CommandCode.STOP)

    def _clear_alarms(self) -> None:
        self._command(CommandCode.CLEAR_ALARMS)

    def _clear_totals(self) -> None:
        self._command(CommandCode.CLEAR_TOTALS)

    def _arm_watchdog(self, timeout_s: float) -> float:
        """Write WATCHDOG_TIMEOUT, ``timeout_s`` rounded up to whole seconds, then return what the
        pump holds: WATCHDOG_TIMEOUT_ECHO (s), read back (0 when it did not take it).

        A timeout above the map's :data:`~protocol.modbus.WATCHDOG_TIMEOUT_MAX_S` is refused
        (ModbusRefusedError) without sending anything.
        """
        seconds = max(1, math.ceil(timeout_s))
        if seconds > WATCHDOG_TIMEOUT_MAX_S:
            raise ModbusRefusedError(
                f"{self.url.redacted()}: WATCHDOG_TIMEOUT: {timeout_s:g} s not sent: the map "
                f"allows 1 .. {WATCHDOG_TIMEOUT_MAX_S} s",
                register_name=Reg.WATCHDOG_TIMEOUT.name,
                exception_code=None,
            )
        self._write_single(Reg.WATCHDOG_TIMEOUT, seconds, "arm watchdog")
        (held,) = self._read(Reg.WATCHDOG_TIMEOUT_ECHO, 1, "read watchdog")
        return float(Reg.WATCHDOG_TIMEOUT_ECHO.scale * held)


def _close(client: _Client) -> None:
    """Close a pymodbus client (its ``close`` carries no type annotations)."""
    client.close()  # type: ignore[no-untyped-call]
