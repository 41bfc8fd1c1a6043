"""Function 23 (Read/Write Multiple Registers) on the software pump, driven by pymodbus's clients
(connected and read as in test_modbus_server.py).

The map (docs/modbus-map.md section 1) makes function 23 optional: the pump writes first, then
reads, so one request can feed the watchdog and read the status block that already echoes it;
and it is all or nothing, so a read part the map refuses leaves every register as it was.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from decimal import Decimal

import pytest
from pymodbus.pdu import ExceptionResponse, ModbusPDU

from protocol.clock import ManualClock
from protocol.modbus import (
    STATUS_SPAN,
    ModbusException,
    Reg,
    StatusBlock,
    decode_status,
    join_u32,
    split_u32,
)
from protocol.pump_state import PumpAlarm, PumpState
from simulator.modbus_server import ModbusSimulatorServer
from simulator.model import PumpModel
from tests.simulator.test_modbus_server import Client, connect, read

pytestmark = pytest.mark.timeout(20)


UNIT = 1
READ_WRITE = 23


@pytest.fixture(params=["tcp", "rtu"])
def listen(request: pytest.FixtureRequest) -> str:
    return "tcp://127.0.0.1:0" if request.param == "tcp" else "pty"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def model(clock: ManualClock) -> PumpModel:
    return PumpModel(clock, max_rate_ml_per_h=100.0)


@pytest.fixture
def server(model: PumpModel, listen: str) -> Iterator[ModbusSimulatorServer]:
    with ModbusSimulatorServer(model, listen=listen, unit=UNIT) as running:
        yield running


@pytest.fixture
def client(server: ModbusSimulatorServer) -> Iterator[Client]:
    with connect(server) as connected:
        yield connected


def beat_and_poll(client: Client, heartbeat: int) -> ModbusPDU:
    """One function-23 request: HEARTBEAT = ``heartbeat``, then the whole status block."""
    return client.readwrite_registers(
        read_address=STATUS_SPAN.address,
        read_count=STATUS_SPAN.count,
        write_address=Reg.HEARTBEAT.address,
        values=[heartbeat],
        device_id=UNIT,
    )


def status_of(reply: ModbusPDU) -> StatusBlock:
    assert not reply.isError(), reply
    assert reply.function_code == READ_WRITE
    return decode_status(list(reply.registers))


def exception_code(reply: ModbusPDU) -> int:
    assert isinstance(reply, ExceptionResponse), reply
    assert reply.function_code == READ_WRITE | 0x80
    return int(reply.exception_code)


def test_the_write_comes_first_so_the_block_echoes_the_heartbeat(client: Client) -> None:
    for heartbeat in (7, 8, 65535, 0):
        assert status_of(beat_and_poll(client, heartbeat)).heartbeat_echo == heartbeat
    assert read(client, Reg.HEARTBEAT.address, 1) == [0]


def test_only_a_changed_heartbeat_feeds_the_watchdog(
    client: Client, clock: ManualClock, model: PumpModel
) -> None:
    model.set_watchdog(3.0)
    for heartbeat in range(1, 6):  # a new value every 2 s: fed in time
        clock.advance(2.0)
        assert PumpAlarm.COMM_TIMEOUT not in status_of(beat_and_poll(client, heartbeat)).alarms
    for _ in range(2):  # the same value again: accepted, but it feeds nothing
        clock.advance(2.0)
        block = status_of(beat_and_poll(client, 5))
    assert block.state is PumpState.ALARM
    assert PumpAlarm.COMM_TIMEOUT in block.alarms


def test_a_setpoint_written_is_in_the_block_read_by_the_same_request(
    client: Client, model: PumpModel
) -> None:
    reply = client.readwrite_registers(
        read_address=STATUS_SPAN.address,
        read_count=STATUS_SPAN.count,
        write_address=Reg.RATE_SETPOINT.address,
        values=split_u32(1234),
        device_id=UNIT,
    )
    assert status_of(reply).rate_setpoint_ml_per_h == Decimal("12.34")
    assert model.snapshot().rate_setpoint_ml_per_h == pytest.approx(12.34)


@pytest.mark.parametrize(
    ("read_address", "read_count"),
    [
        (Reg.COMMAND.address, 1),  # write-only
        (STATUS_SPAN.address, STATUS_SPAN.count + 1),  # runs into unmapped addresses
        (Reg.VOLUME_INFUSED.address + 1, 1),  # half a u32
    ],
)
def test_a_refused_read_part_writes_nothing(
    client: Client, read_address: int, read_count: int
) -> None:
    reply = client.readwrite_registers(
        read_address=read_address,
        read_count=read_count,
        write_address=Reg.HEARTBEAT.address,
        values=[42],
        device_id=UNIT,
    )
    assert exception_code(reply) == ModbusException.ILLEGAL_DATA_ADDRESS
    assert read(client, Reg.HEARTBEAT.address, 1) == [0]


def test_a_refused_write_part_is_answered_with_its_exception(
    client: Client, model: PumpModel
) -> None:
    above_max = split_u32(100_01)  # 100.01 mL/h: above the pump's 100 mL/h
    reply = client.readwrite_registers(
        read_address=STATUS_SPAN.address,
        read_count=STATUS_SPAN.count,
        write_address=Reg.RATE_SETPOINT.address,
        values=above_max,
        device_id=UNIT,
    )
    assert exception_code(reply) == ModbusException.ILLEGAL_DATA_VALUE
    assert model.snapshot().rate_setpoint_ml_per_h == 0.0
    state = read(client, Reg.STATE.address, Reg.STATE.words)
    reply = client.readwrite_registers(
        read_address=STATUS_SPAN.address,
        read_count=STATUS_SPAN.count,
        write_address=Reg.STATE.address,  # read-only
        values=state,
        device_id=UNIT,
    )
    assert exception_code(reply) == ModbusException.ILLEGAL_DATA_ADDRESS


def test_a_read_quantity_outside_1_to_125_is_exception_03(model: PumpModel) -> None:
    with ModbusSimulatorServer(model) as server:
        host, port = server.listening.removeprefix("tcp://").rsplit(":", 1)
        pdu = struct.pack(
            ">BHHHHBH", READ_WRITE, STATUS_SPAN.address, 126, Reg.HEARTBEAT.address, 1, 2, 9
        )
        with socket.create_connection((host, int(port)), timeout=5.0) as sock:
            sock.sendall(struct.pack(">HHHB", 7, 0, len(pdu) + 1, UNIT) + pdu)
            reply = sock.recv(64)
        with connect(server) as client:
            assert read(client, Reg.HEARTBEAT.address, 1) == [0]  # nothing written
    assert reply == struct.pack(
        ">HHHBBB", 7, 0, 3, UNIT, READ_WRITE | 0x80, ModbusException.ILLEGAL_DATA_VALUE
    )


def test_a_pump_without_function_23_refuses_it_with_01_and_writes_nothing(
    model: PumpModel, listen: str
) -> None:
    with (
        ModbusSimulatorServer(model, listen=listen, read_write=False) as server,
        connect(server) as client,
    ):
        assert exception_code(beat_and_poll(client, 9)) == ModbusException.ILLEGAL_FUNCTION
        assert read(client, Reg.HEARTBEAT.address, 1) == [0]
        # The profile's own functions still work on that pump.
        assert client.write_register(Reg.HEARTBEAT.address, 9, device_id=UNIT).registers == [9]
        status = decode_status(read(client, STATUS_SPAN.address, STATUS_SPAN.count))
        assert status.heartbeat_echo == 9
        assert join_u32(*read(client, Reg.RATE_SETPOINT_ECHO.address, 2)) == 0
