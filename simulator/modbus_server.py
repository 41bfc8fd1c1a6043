"""The software pump on Modbus: a pymodbus server whose holding registers are the pump model.

>>> with ModbusSimulatorServer(model) as server:          # doctest: +SKIP
...     driver = open_pump(server.pump_url)

Transports (``listen``):

* ``"tcp://HOST:PORT"``: Modbus TCP; port 0 picks a free port (see :attr:`listening`).
* ``"pty"``: Modbus RTU on a serial line without hardware: a :class:`~simulator.pty.NullModem`
  whose one end the server opens, the other end (:attr:`listening`) is for the client.  Line
  settings 19200 baud **8N1**, not the map's default 8E1: ``tcsetattr`` with parity enabled on
  a pty fails with ``EINVAL`` more often than not (seen on Linux 6.18, so pyserial cannot open
  it), while parity N always works; :attr:`ModbusSimulatorServer.pump_url` says ``parity=N``.

The register logic lives in :class:`simulator.modbus_datastore.PumpRegisters`; this module only
carries it.  pymodbus runs its asyncio server in a thread of its own with its own event loop;
:meth:`ModbusSimulatorServer.close` stops it and joins the thread.

**Line faults** (``model.line``):

* ``hang``: requests are discarded unanswered and never reach the registers (so nothing feeds
  the watchdog); a reply that was due is not sent.
* ``reply_delay_s``: each reply leaves that many simulated seconds late (real seconds =
  simulated / ``clock.time_scale``; with a manual clock, ``time_scale`` 0, the value is taken as
  real seconds).  A request takes effect when it arrives; only its reply is late.  The pump
  works on one request at a time, like a slow device: requests that arrive meanwhile wait
  their turn.
* ``garbage_probability`` / ``corrupt_probability``: on RTU every reply goes through
  :meth:`~simulator.faults.LineFaults.mangle` (garbage before the frame, a corrupted byte that
  breaks the CRC).  On TCP they are ignored: TCP's own checksums keep a payload intact, and a
  TCP frame has no CRC a client could check.

A request addressed to another unit id, or broadcast (unit 0), gets no reply and changes
nothing (as on an RTU bus), on TCP too.  Functions other than 03, 06, 16 and 23 are answered with
exception 01, and a read of more than 125 registers with exception 03, as the map says.
Function 23 (Read/Write Multiple Registers) writes first, then reads from a snapshot taken after
the write; a read part the map refuses refuses the whole request before anything is written.
``read_write=False`` answers function 23 with exception 01 too, as a pump without it does.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import threading
from typing import Final, cast
from urllib.parse import urlsplit

from pymodbus.constants import ExcCodes
from pymodbus.datastore import ModbusServerContext
from pymodbus.pdu import ExceptionResponse, ModbusPDU
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersRequest,
    ReadWriteMultipleRegistersRequest,
)
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from protocol.modbus import (
    MAX_READ_COUNT,
    FunctionCode,
    Identification,
    RequestRefusedError,
    validate_read,
)
from simulator.modbus_datastore import PumpRegisters
from simulator.model import PumpModel
from simulator.pty import NullModem

__all__ = ["RTU_BAUDRATE", "RTU_PARITY", "RTU_STOPBITS", "ModbusSimulatorServer"]

#: Serial line settings of the RTU server: 19200 8N1 (a pty refuses parity, see above).
RTU_BAUDRATE: Final = 19200
RTU_PARITY: Final = "N"
RTU_STOPBITS: Final = 1

#: The functions of the profile: read holding registers, write single, write multiple, and
#: read/write multiple (optional in the map: ``read_write=False`` leaves it out).
_FUNCTIONS: Final = frozenset(FunctionCode)
_READ_WRITE_MULTIPLE: Final = FunctionCode.READ_WRITE_MULTIPLE_REGISTERS
#: Functions whose register access without values to set is a read the registers answer.
_READS: Final = frozenset({FunctionCode.READ_HOLDING_REGISTERS, _READ_WRITE_MULTIPLE})

#: How long :meth:`ModbusSimulatorServer.start` waits for the server to listen, real seconds.
_START_TIMEOUT_S: Final = 10.0
#: How long :meth:`ModbusSimulatorServer.close` waits for the server thread, real seconds.
_STOP_TIMEOUT_S: Final = 10.0


class _RefusedFunction(ModbusPDU):
    """Stands in for a request of a function the profile does not have: answers exception 01."""

    def __init__(self, request: ModbusPDU) -> None:
        super().__init__(dev_id=request.dev_id, transaction_id=request.transaction_id)
        self.function_code = request.function_code

    async def datastore_update(self, context: object, device_id: int) -> ModbusPDU:
        """No datastore access: the answer is always ILLEGAL_FUNCTION."""
        return ExceptionResponse(self.function_code, ExcCodes.ILLEGAL_FUNCTION, device_id)


class _ReadHoldingRequest(ReadHoldingRegistersRequest):
    """Function 03 as the map wants it: a quantity outside 1..125 is exception 03.

    (pymodbus's own request class refuses to decode such a frame and answers exception 01.)
    """

    def decode(self, data: bytes) -> None:
        """Address and quantity, unchecked: :meth:`datastore_update` answers a bad quantity."""
        self.address, self.count = struct.unpack(">HH", data[:4])

    async def datastore_update(self, context: ModbusServerContext, device_id: int) -> ModbusPDU:
        """Exception 03 for a bad quantity, else the normal read (through the registers)."""
        if not 1 <= self.count <= MAX_READ_COUNT:
            return ExceptionResponse(self.function_code, ExcCodes.ILLEGAL_VALUE, device_id)
        return await super().datastore_update(context, device_id)


class _ReadWriteRequest(ReadWriteMultipleRegistersRequest):
    """Function 23 as the map wants it: all or nothing.

    pymodbus writes (through :meth:`ModbusSimulatorServer._action`) before it reads, so a read
    the map refuses would come after a write already applied: the read part is checked first.
    A quantity outside Modbus's limits is exception 03 (pymodbus's own class refuses to decode
    such a frame and answers exception 01).
    """

    def decode(self, data: bytes) -> None:
        """Every field; a bad quantity is left for :meth:`datastore_update` to answer."""
        with contextlib.suppress(ValueError):
            super().decode(data)

    async def datastore_update(self, context: ModbusServerContext, device_id: int) -> ModbusPDU:
        """Exception 02 / 03 for a read the map refuses, before writing; else write, then read."""
        try:
            validate_read(self.read_address, self.read_count)
        except RequestRefusedError as exc:
            return ExceptionResponse(
                self.function_code, ExcCodes(int(exc.exception_code)), device_id
            )
        return await super().datastore_update(context, device_id)


class ModbusSimulatorServer:
    """Serves ``model`` as unit ``unit`` on Modbus TCP (``listen="tcp://HOST:PORT"``) or RTU on a
    pty null modem (``listen="pty"``).

    ``identification`` replaces the identification block (default: the software pump's ids and
    the model's maximum rate), e.g. to present another map version.  ``cable`` makes an RTU
    server use that null modem instead of making its own; the caller keeps it (it outlives the
    server, so a new server on the same cable keeps the same client path).  ``read_write=False``
    refuses function 23 with exception 01, as a pump of the map without it does.
    """

    def __init__(
        self,
        model: PumpModel,
        *,
        listen: str = "tcp://127.0.0.1:0",
        unit: int = 1,
        identification: Identification | None = None,
        cable: NullModem | None = None,
        read_write: bool = True,
    ) -> None:
        if isinstance(unit, bool) or not isinstance(unit, int) or not 1 <= unit <= 247:
            raise ValueError(f"unit must be a Modbus unit id 1..247, got {unit!r}")
        self._model = model
        self._unit = unit
        self._registers = PumpRegisters(model, identification=identification)
        self._functions = _FUNCTIONS if read_write else _FUNCTIONS - {_READ_WRITE_MULTIPLE}
        self._host, self._port = "", 0
        if listen == "pty":
            self._rtu = True
        else:
            self._rtu = False
            self._host, self._port = _parse_tcp(listen)
            if cable is not None:
                raise ValueError("cable= is for listen='pty' only")
        self._cable = cable
        self._owns_cable = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._closing = threading.Event()
        self._error: BaseException | None = None
        self._state_lock = threading.Lock()
        self._started = False
        self._closed = False

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start serving; returns once the server accepts requests.

        Raises ``RuntimeError`` if it was started before or cannot listen (e.g. a port in use).
        """
        with self._state_lock:
            if self._started or self._closed:
                raise RuntimeError("ModbusSimulatorServer: start() only once, before close()")
            self._started = True
        if self._rtu and self._cable is None:
            self._cable = NullModem()
            self._owns_cable = True
        self._thread = threading.Thread(
            target=self._run, name=f"modbus-sim-{'rtu' if self._rtu else 'tcp'}", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(_START_TIMEOUT_S):
            self._error = TimeoutError(f"server did not start within {_START_TIMEOUT_S:g} s")
        if self._error is not None:
            error = self._error
            self.close()
            raise RuntimeError(f"ModbusSimulatorServer cannot serve {self._where()}: {error}")

    def close(self) -> None:
        """Stop the server, join its thread, close the null modem it made.  Safe to call twice."""
        with self._state_lock:
            if self._closed:
                return
            self._closed = True
        self._closing.set()  # ends a reply delay now
        loop, stop, thread = self._loop, self._stop, self._thread
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has ended already
                loop.call_soon_threadsafe(stop.set)
        if thread is not None:
            thread.join(_STOP_TIMEOUT_S)
        if self._owns_cable and self._cable is not None:
            self._cable.close()

    def __enter__(self) -> ModbusSimulatorServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ where to connect

    @property
    def model(self) -> PumpModel:
        return self._model

    @property
    def unit(self) -> int:
        return self._unit

    @property
    def listening(self) -> str:
        """``"tcp://HOST:PORT"`` with the port actually bound, or the client's pty device path."""
        self._check_started()
        if self._rtu:
            assert self._cable is not None
            return self._cable.b.path
        return f"tcp://{_url_host(self._host)}:{self._port}"

    @property
    def pump_url(self) -> str:
        """The pump URL a driver opens: ``modbus+tcp://HOST:PORT?unit=N`` or
        ``modbus+rtu:///dev/pts/N?unit=N&parity=N`` (the pty's line settings, see above)."""
        self._check_started()
        if self._rtu:
            return f"modbus+rtu://{self.listening}?unit={self._unit}&parity={RTU_PARITY}"
        return f"modbus+tcp://{_url_host(self._host)}:{self._port}?unit={self._unit}"

    def _check_started(self) -> None:
        if not self._ready.is_set() or self._error is not None:
            raise RuntimeError("ModbusSimulatorServer is not serving: call start() first")

    def _where(self) -> str:
        return "RTU on a pty" if self._rtu else f"tcp://{_url_host(self._host)}:{self._port}"

    # ------------------------------------------------------------------ the server thread

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported by start(); the thread must end quietly
            self._error = exc
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        device = SimDevice(
            id=self._unit,
            # Every address is a plain register to pymodbus: PumpRegisters alone decides which
            # are mapped (exception 02 otherwise), so the map has one authority.
            simdata=[SimData(address=0, count=0x10000, datatype=DataType.REGISTERS)],
            action=self._action,
        )
        server: ModbusTcpServer | ModbusSerialServer
        if self._rtu:
            assert self._cable is not None
            server = ModbusSerialServer(
                device,
                port=self._cable.a.path,
                baudrate=RTU_BAUDRATE,
                parity=RTU_PARITY,
                stopbits=RTU_STOPBITS,
                bytesize=8,
                trace_packet=self._trace_packet,
                trace_pdu=self._trace_pdu,
                custom_pdu=[_ReadHoldingRequest, _ReadWriteRequest],
            )
        else:
            server = ModbusTcpServer(
                device,
                address=(self._host, self._port),
                trace_packet=self._trace_packet,
                trace_pdu=self._trace_pdu,
                custom_pdu=[_ReadHoldingRequest, _ReadWriteRequest],
            )
        try:
            await server.serve_forever(background=True)  # RuntimeError if it cannot listen
            if not self._rtu:
                listener = cast(asyncio.Server, server.transport)
                self._port = int(listener.sockets[0].getsockname()[1])
            await asyncio.sleep(0)  # let the serial transport register its reader
            self._ready.set()
            await self._stop.wait()
        finally:
            await server.shutdown()  # type: ignore[no-untyped-call]

    async def _action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """pymodbus's datastore hook: every register access goes to :class:`PumpRegisters`."""
        if function_code not in self._functions:
            return ExcCodes.ILLEGAL_FUNCTION
        try:
            if set_values is not None:
                self._registers.write(address, [int(value) for value in set_values])
            elif function_code in _READS:  # function 23 reads after its write
                offset = address - start_address
                registers[offset : offset + count] = self._registers.read(address, count)
            # else: function 06 reading back what it wrote: pymodbus echoes the written value.
        except RequestRefusedError as exc:
            return ExcCodes(int(exc.exception_code))
        return None

    def _trace_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        """Requests in: drop those for another unit or on a hung line; refuse other functions."""
        if sending:
            return pdu
        if pdu.dev_id != self._unit or self._model.line.hang:
            # pymodbus handles no request whose trace returns None: no reply, no register access.
            return cast(ModbusPDU, None)
        if pdu.function_code not in self._functions:
            return _RefusedFunction(pdu)
        return pdu

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        """Replies out: the line's delay, hang and (RTU) garbage / corruption."""
        if not sending:
            return data
        line = self._model.line
        delay_s = line.reply_delay_s
        if delay_s > 0:
            scale = self._model.clock.time_scale
            self._closing.wait(delay_s / scale if scale > 0 else delay_s)
        if self._closing.is_set() or line.hang:
            return b""
        return line.mangle(data) if self._rtu else data


def _parse_tcp(listen: str) -> tuple[str, int]:
    """``"tcp://HOST:PORT"`` -> ``(HOST, PORT)``; ``ValueError`` naming the accepted forms."""
    problem = f"listen must be 'tcp://HOST:PORT' (port 0: any free port) or 'pty', got {listen!r}"
    if not isinstance(listen, str):
        raise ValueError(problem)
    parts = urlsplit(listen)
    try:
        port = parts.port
    except ValueError:
        raise ValueError(problem) from None
    if parts.scheme != "tcp" or not parts.hostname or port is None or parts.path not in ("", "/"):
        raise ValueError(problem)
    return parts.hostname, port


def _url_host(host: str) -> str:
    """``host`` as it goes in a URL (IPv6 addresses in brackets)."""
    return f"[{host}]" if ":" in host else host
