"""The software pump on Modbus, driven by pymodbus's own sync clients over TCP and RTU on a pty.

Simulated effects (infusion, watchdog expiry) are reached by advancing a ManualClock, never by
sleeping; only the real-time line faults (reply delay, hang) take real time.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal

import pytest
from pymodbus.client import ModbusSerialClient, ModbusTcpClient
from pymodbus.exceptions import ModbusIOException
from pymodbus.pdu import ExceptionResponse, ModbusPDU

from protocol.clock import ManualClock
from protocol.modbus import (
    IDENTIFICATION_SPAN,
    MAP_VERSION,
    STATUS_SPAN,
    CommandCode,
    Identification,
    Reg,
    StatusBlock,
    decode_identification,
    decode_status,
    join_u32,
    split_u32,
)
from protocol.pump_state import PumpAlarm, PumpState
from simulator.modbus_datastore import (
    SIMULATOR_MODEL_ID,
    SIMULATOR_MODEL_NAME,
    SIMULATOR_SERIAL_NUMBER,
    SIMULATOR_VENDOR_ID,
)
from simulator.modbus_server import ModbusSimulatorServer
from simulator.model import PumpModel
from simulator.pty import NullModem

pytestmark = pytest.mark.timeout(20)

Client = ModbusTcpClient | ModbusSerialClient

MAX_RATE_ML_PER_H = 100.0
UNIT = 1
ILLEGAL_FUNCTION, ILLEGAL_ADDRESS, ILLEGAL_VALUE = 1, 2, 3


@contextmanager
def connect(server: ModbusSimulatorServer, *, timeout_s: float = 2.0) -> Iterator[Client]:
    """A connected pymodbus sync client for ``server`` (no pymodbus retries), closed after."""
    client: Client
    if server.listening.startswith("tcp://"):
        host, port = server.listening.removeprefix("tcp://").rsplit(":", 1)
        client = ModbusTcpClient(host, port=int(port), timeout=timeout_s, retries=0)
    else:
        client = ModbusSerialClient(server.listening, parity="N", timeout=timeout_s, retries=0)
    try:
        assert client.connect()
        yield client
    finally:
        client.close()  # type: ignore[no-untyped-call]


@pytest.fixture(params=["tcp", "rtu"])
def listen(request: pytest.FixtureRequest) -> str:
    return "tcp://127.0.0.1:0" if request.param == "tcp" else "pty"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def model(clock: ManualClock) -> PumpModel:
    return PumpModel(clock, max_rate_ml_per_h=MAX_RATE_ML_PER_H)


@pytest.fixture
def server(model: PumpModel, listen: str) -> Iterator[ModbusSimulatorServer]:
    with ModbusSimulatorServer(model, listen=listen, unit=UNIT) as running:
        yield running


@pytest.fixture
def client(server: ModbusSimulatorServer) -> Iterator[Client]:
    with connect(server) as connected:
        yield connected


# -- helpers -------------------------------------------------------------------------------


def read(client: Client, address: int, count: int) -> list[int]:
    reply = client.read_holding_registers(address, count=count, device_id=UNIT)
    assert not reply.isError(), reply
    return list(reply.registers)


def status(client: Client) -> StatusBlock:
    return decode_status(read(client, STATUS_SPAN.address, STATUS_SPAN.count))


def write(client: Client, address: int, *values: int) -> None:
    if len(values) == 1:
        reply = client.write_register(address, values[0], device_id=UNIT)
    else:
        reply = client.write_registers(address, list(values), device_id=UNIT)
    assert not reply.isError(), reply


def command(client: Client, code: CommandCode) -> None:
    write(client, Reg.COMMAND.address, int(code))


def exception_code(reply: ModbusPDU) -> int:
    assert isinstance(reply, ExceptionResponse), reply
    return int(reply.exception_code)


def set_rate(client: Client, counts: int) -> None:
    write(client, Reg.RATE_SETPOINT.address, *split_u32(counts))


def set_vtbi(client: Client, counts: int) -> None:
    write(client, Reg.VTBI.address, *split_u32(counts))


# -- identification and status -----------------------------------------------------------


def test_identification_block_decodes(client: Client) -> None:
    identification = decode_identification(
        read(client, IDENTIFICATION_SPAN.address, IDENTIFICATION_SPAN.count)
    )
    assert identification.map_version == MAP_VERSION
    assert identification.vendor_id == SIMULATOR_VENDOR_ID
    assert identification.model_id == SIMULATOR_MODEL_ID
    assert identification.model_name == SIMULATOR_MODEL_NAME
    assert identification.serial_number == SIMULATOR_SERIAL_NUMBER
    assert identification.firmware_version == "1.0.0"
    assert identification.max_rate_ml_per_h == Decimal("100.00")
    assert read(client, Reg.WORD_ORDER_TEST.address, 2) == [0x1234, 0x5678]


def test_status_block_is_one_read_of_the_model_now(
    client: Client, clock: ManualClock, model: PumpModel
) -> None:
    block = status(client)
    assert block.state is PumpState.STOPPED
    assert block.alarms == frozenset()
    assert block.rate_setpoint_ml_per_h == 0
    assert block.volume_infused_ml == 0
    assert block.uptime_s == 0
    assert block.last_command is None
    assert block.command_counter == 0
    clock.advance(90_061.0)
    assert status(client).uptime_s == 90_061
    model.inject(PumpAlarm.LOW_BATTERY)
    assert status(client).alarms == {PumpAlarm.LOW_BATTERY}


def test_rate_and_vtbi_written_in_one_transaction_reach_the_model(
    client: Client, model: PumpModel
) -> None:
    rate_hi, rate_lo = split_u32(1548)
    vtbi_hi, vtbi_lo = split_u32(100_000)
    write(client, Reg.RATE_SETPOINT.address, rate_hi, rate_lo, vtbi_hi, vtbi_lo)
    snapshot = model.snapshot()
    assert snapshot.rate_setpoint_ml_per_h == 15.48
    assert snapshot.vtbi_ml == 100.0
    assert read(client, Reg.RATE_SETPOINT.address, 4) == [rate_hi, rate_lo, vtbi_hi, vtbi_lo]
    block = status(client)
    assert block.rate_setpoint_ml_per_h == Decimal("15.48")
    assert block.vtbi_ml == Decimal("100.000")
    assert block.vtbi_remaining_ml == Decimal("100.000")


def test_commands_drive_the_model_and_are_counted(
    client: Client, clock: ManualClock, model: PumpModel
) -> None:
    set_rate(client, 1250)  # 12.50 mL/h
    command(client, CommandCode.START)
    block = status(client)
    assert block.state is PumpState.INFUSING
    assert block.measured_rate_ml_per_h == Decimal("12.50")
    assert block.last_command is CommandCode.START
    assert block.command_counter == 1
    clock.advance(3600.0)
    assert status(client).volume_infused_ml == Decimal("12.500")
    command(client, CommandCode.START)  # already infusing: accepted, changes nothing
    command(client, CommandCode.STOP)
    block = status(client)
    assert block.state is PumpState.STOPPED
    assert block.measured_rate_ml_per_h == 0
    assert block.command_counter == 3
    command(client, CommandCode.CLEAR_TOTALS)
    assert status(client).volume_infused_ml == 0
    assert model.snapshot().lifetime_volume_infused_ml == 12.5
    model.inject(PumpAlarm.PROGRAM_ERROR)
    assert status(client).state is PumpState.ALARM
    command(client, CommandCode.CLEAR_ALARMS)
    block = status(client)
    assert block.state is PumpState.STOPPED
    assert block.alarms == frozenset()
    assert block.last_command is CommandCode.CLEAR_ALARMS
    assert block.command_counter == 5


def test_writes_are_applied_at_the_models_time(client: Client, clock: ManualClock) -> None:
    set_rate(client, 3600)  # 36 mL/h = 0.01 mL/s
    command(client, CommandCode.START)
    clock.advance(100.0)
    set_rate(client, 7200)  # applies now: the first 100 s count at the old rate
    clock.advance(100.0)
    assert status(client).volume_infused_ml == Decimal("3.000")


# -- refusals --------------------------------------------------------------------------------


def test_rate_above_the_pumps_maximum_is_refused_with_03(client: Client, model: PumpModel) -> None:
    set_rate(client, 1000)
    reply = client.write_registers(
        Reg.RATE_SETPOINT.address, list(split_u32(10_001)), device_id=UNIT
    )
    assert exception_code(reply) == ILLEGAL_VALUE
    assert model.snapshot().rate_setpoint_ml_per_h == 10.0  # the old setpoint stays
    assert PumpAlarm.RATE_REFUSED in status(client).alarms
    set_rate(client, 10_000)  # exactly MAX_RATE is accepted
    assert model.snapshot().rate_setpoint_ml_per_h == 100.0


def test_a_refused_rate_leaves_the_vtbi_of_the_same_write_unchanged(
    client: Client, model: PumpModel
) -> None:
    reply = client.write_registers(
        Reg.RATE_SETPOINT.address, [*split_u32(99_999), *split_u32(5_000)], device_id=UNIT
    )
    assert exception_code(reply) == ILLEGAL_VALUE
    assert model.snapshot().vtbi_ml == 0


def test_unknown_command_code_is_refused_with_03(client: Client) -> None:
    for code in (0, 1, 0x1234):
        reply = client.write_register(Reg.COMMAND.address, code, device_id=UNIT)
        assert exception_code(reply) == ILLEGAL_VALUE
    assert status(client).command_counter == 0


def test_bad_addresses_are_refused_with_02(client: Client) -> None:
    cases = [
        client.read_holding_registers(IDENTIFICATION_SPAN.end, count=1, device_id=UNIT),
        client.read_holding_registers(STATUS_SPAN.address, count=20, device_id=UNIT),
        client.read_holding_registers(Reg.COMMAND.address, count=1, device_id=UNIT),  # W only
        client.read_holding_registers(Reg.RATE_SETPOINT.address + 1, count=1, device_id=UNIT),
        client.read_holding_registers(0xFFFF, count=1, device_id=UNIT),
        client.write_register(Reg.STATE.address, 1, device_id=UNIT),  # read-only
        client.write_register(Reg.RATE_SETPOINT.address, 1, device_id=UNIT),  # half a u32
        client.write_register(5000, 1, device_id=UNIT),
    ]
    assert [exception_code(reply) for reply in cases] == [ILLEGAL_ADDRESS] * len(cases)


def test_functions_outside_the_profile_are_refused_with_01(client: Client) -> None:
    replies = [
        client.read_coils(0, count=1, device_id=UNIT),
        client.read_input_registers(STATUS_SPAN.address, count=1, device_id=UNIT),
        client.write_coil(0, True, device_id=UNIT),
        client.report_device_id(device_id=UNIT),
        client.read_device_information(device_id=UNIT),
    ]
    assert [exception_code(reply) for reply in replies] == [ILLEGAL_FUNCTION] * len(replies)


def test_rate_zero_while_infusing_is_refused_with_03(client: Client, model: PumpModel) -> None:
    set_rate(client, 500)
    command(client, CommandCode.START)
    reply = client.write_registers(Reg.RATE_SETPOINT.address, [0, 0], device_id=UNIT)
    assert exception_code(reply) == ILLEGAL_VALUE
    assert model.snapshot().rate_setpoint_ml_per_h == 5.0


def test_start_is_refused_while_a_stopping_alarm_is_latched(
    client: Client, model: PumpModel
) -> None:
    set_rate(client, 500)
    model.inject(PumpAlarm.DOOR_OPEN)
    reply = client.write_register(Reg.COMMAND.address, int(CommandCode.START), device_id=UNIT)
    assert exception_code(reply) == ILLEGAL_VALUE
    command(client, CommandCode.CLEAR_ALARMS)  # the door is still open: stays latched
    assert status(client).state is PumpState.ALARM
    model.clear_condition(PumpAlarm.DOOR_OPEN)
    command(client, CommandCode.CLEAR_ALARMS)
    command(client, CommandCode.START)
    assert status(client).state is PumpState.INFUSING


def test_start_after_a_completed_vtbi_is_refused_until_vtbi_is_written_again(
    client: Client, clock: ManualClock, model: PumpModel
) -> None:
    set_rate(client, 6000)  # 60 mL/h
    set_vtbi(client, 1000)  # 1 mL: one minute
    command(client, CommandCode.START)
    clock.advance(120.0)
    block = status(client)
    assert block.state is PumpState.STOPPED
    assert PumpAlarm.VTBI_COMPLETE in block.alarms
    assert block.volume_infused_ml == Decimal("1.000")
    assert block.vtbi_remaining_ml == 0
    reply = client.write_register(Reg.COMMAND.address, int(CommandCode.START), device_id=UNIT)
    assert exception_code(reply) == ILLEGAL_VALUE
    command(client, CommandCode.CLEAR_ALARMS)  # clearing the alarm is not enough
    reply = client.write_register(Reg.COMMAND.address, int(CommandCode.START), device_id=UNIT)
    assert exception_code(reply) == ILLEGAL_VALUE
    assert model.snapshot().state is PumpState.STOPPED
    set_vtbi(client, 1000)
    command(client, CommandCode.START)
    clock.advance(600.0)
    assert status(client).volume_infused_ml == Decimal("2.000")  # exactly the two volumes


def test_watchdog_timeout_above_600_s_is_refused_with_03(client: Client) -> None:
    reply = client.write_register(Reg.WATCHDOG_TIMEOUT.address, 601, device_id=UNIT)
    assert exception_code(reply) == ILLEGAL_VALUE
    assert status(client).watchdog_timeout_s == 0


def test_a_read_of_more_than_125_registers_is_refused_with_03(model: PumpModel) -> None:
    # pymodbus's client will not send such a request: speak Modbus TCP by hand.
    with ModbusSimulatorServer(model) as server:
        host, port = server.listening.removeprefix("tcp://").rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=5.0) as sock:
            sock.sendall(struct.pack(">HHHBBHH", 7, 0, 6, UNIT, 3, 300, 126))
            reply = sock.recv(64)
    assert reply == struct.pack(">HHHBBB", 7, 0, 3, UNIT, 0x83, ILLEGAL_VALUE)


# -- watchdog and heartbeat ---------------------------------------------------------------


def test_watchdog_expiry_stops_the_pump_and_it_stays_stopped(
    client: Client, clock: ManualClock
) -> None:
    set_rate(client, 1000)
    write(client, Reg.WATCHDOG_TIMEOUT.address, 10)
    command(client, CommandCode.START)
    for beat in range(1, 6):  # fed every 8 s: keeps infusing
        clock.advance(8.0)
        write(client, Reg.HEARTBEAT.address, beat)
    block = status(client)
    assert block.state is PumpState.INFUSING
    assert block.watchdog_timeout_s == 10
    assert block.heartbeat_echo == 5
    clock.advance(10.0)  # not fed for 10 s
    block = status(client)
    assert block.state is PumpState.ALARM
    assert PumpAlarm.COMM_TIMEOUT in block.alarms
    assert block.measured_rate_ml_per_h == 0
    for beat in range(6, 10):  # the host is back: the pump stays stopped
        write(client, Reg.HEARTBEAT.address, beat)
        clock.advance(3600.0)
    command(client, CommandCode.CLEAR_ALARMS)
    block = status(client)
    assert block.state is PumpState.STOPPED  # cleared, and still not infusing
    assert block.volume_infused_ml == Decimal("0.138")  # 50 s at 10 mL/h, truncated


def test_only_a_changed_heartbeat_feeds_the_watchdog(client: Client, clock: ManualClock) -> None:
    write(client, Reg.WATCHDOG_TIMEOUT.address, 5)
    write(client, Reg.HEARTBEAT.address, 7)
    clock.advance(4.0)
    write(client, Reg.HEARTBEAT.address, 7)  # the same value: accepted, does not feed
    status(client)  # reads do not feed either
    set_rate(client, 100)  # nor do other writes
    clock.advance(1.0)
    assert PumpAlarm.COMM_TIMEOUT in status(client).alarms


def test_heartbeat_65535_to_0_is_a_change(client: Client, clock: ManualClock) -> None:
    write(client, Reg.HEARTBEAT.address, 0xFFFF)
    write(client, Reg.WATCHDOG_TIMEOUT.address, 5)
    clock.advance(4.0)
    write(client, Reg.HEARTBEAT.address, 0)
    clock.advance(4.0)
    block = status(client)
    assert PumpAlarm.COMM_TIMEOUT not in block.alarms
    assert block.heartbeat_echo == 0


# -- line faults and addressing ------------------------------------------------------------


def test_hang_answers_nothing_and_feeds_nothing(
    server: ModbusSimulatorServer, model: PumpModel, clock: ManualClock
) -> None:
    with connect(server, timeout_s=0.3) as client:
        write(client, Reg.WATCHDOG_TIMEOUT.address, 5)
        model.line.hang = True
        with pytest.raises(ModbusIOException):
            client.write_register(Reg.HEARTBEAT.address, 1, device_id=UNIT)
        clock.advance(5.0)
        model.line.hang = False
        block = status(client)
        assert PumpAlarm.COMM_TIMEOUT in block.alarms  # the hung heartbeat fed nothing
        assert block.heartbeat_echo == 0


def test_reply_delay_is_real_seconds_with_a_manual_clock(
    server: ModbusSimulatorServer, model: PumpModel
) -> None:
    with connect(server) as client:
        model.line.reply_delay_s = 0.3
        start = time.monotonic()
        status(client)
        assert time.monotonic() - start >= 0.3
        model.line.reply_delay_s = 0.0


class _FastClock(ManualClock):
    """A manual clock that claims to run 10x real time (for the reply-delay scaling)."""

    @property
    def time_scale(self) -> float:
        return 10.0


def test_reply_delay_is_simulated_seconds_with_a_scaled_clock() -> None:
    model = PumpModel(_FastClock())
    with ModbusSimulatorServer(model) as server, connect(server) as client:
        model.line.reply_delay_s = 3.0  # 0.3 real seconds at 10x
        start = time.monotonic()
        status(client)
        elapsed = time.monotonic() - start
    assert 0.3 <= elapsed < 2.5


def test_a_request_for_another_unit_gets_no_reply(server: ModbusSimulatorServer) -> None:
    with connect(server, timeout_s=0.3) as client:
        with pytest.raises(ModbusIOException):
            client.read_holding_registers(STATUS_SPAN.address, count=1, device_id=UNIT + 1)
        status(client)  # the right unit still answers


def test_corrupted_rtu_replies_fail_their_crc(model: PumpModel) -> None:
    server = ModbusSimulatorServer(model, listen="pty")
    with server, connect(server, timeout_s=0.3) as client:
        model.line.corrupt_probability = 1.0
        with pytest.raises(ModbusIOException):
            client.read_holding_registers(STATUS_SPAN.address, count=1, device_id=UNIT)
        model.line.corrupt_probability = 0.0
        status(client)


# -- lifecycle -------------------------------------------------------------------------------


def test_listening_and_pump_url_name_the_actual_endpoint(model: PumpModel) -> None:
    with ModbusSimulatorServer(model, unit=7) as server:
        port = int(server.listening.rsplit(":", 1)[1])
        assert port > 0
        assert server.listening == f"tcp://127.0.0.1:{port}"
        assert server.pump_url == f"modbus+tcp://127.0.0.1:{port}?unit=7"
    with ModbusSimulatorServer(model, listen="pty", unit=7) as server:
        assert server.listening.startswith("/dev/")
        assert server.pump_url == f"modbus+rtu://{server.listening}?unit=7&parity=N"


def test_close_is_idempotent_and_a_closed_server_cannot_restart(model: PumpModel) -> None:
    server = ModbusSimulatorServer(model)
    server.close()  # never started: fine
    with pytest.raises(RuntimeError):
        server.start()
    with pytest.raises(RuntimeError):
        _ = server.pump_url
    started = ModbusSimulatorServer(model, listen="pty")
    started.start()
    started.close()
    started.close()


def test_a_port_in_use_fails_start(model: PumpModel) -> None:
    with ModbusSimulatorServer(model) as first, pytest.raises(RuntimeError, match="cannot serve"):
        ModbusSimulatorServer(model, listen=first.listening).start()


def test_a_new_server_can_listen_on_the_port_of_a_closed_one(model: PumpModel) -> None:
    with ModbusSimulatorServer(model) as first:
        listening = first.listening
    with ModbusSimulatorServer(model, listen=listening) as second, connect(second) as client:
        status(client)


def test_servers_on_a_kept_cable_share_its_client_path(model: PumpModel) -> None:
    with NullModem() as cable:
        with ModbusSimulatorServer(model, listen="pty", cable=cable) as first:
            path = first.listening
        with ModbusSimulatorServer(model, listen="pty", cable=cable) as second:
            assert second.listening == path
            with connect(second) as client:
                status(client)


@pytest.mark.parametrize(
    "listen", ["", "tcp://127.0.0.1", "udp://127.0.0.1:502", "tcp://:502", "tcp://h:99999", "rtu"]
)
def test_a_bad_listen_is_refused(model: PumpModel, listen: str) -> None:
    with pytest.raises(ValueError, match="listen"):
        ModbusSimulatorServer(model, listen=listen)


@pytest.mark.parametrize("unit", [0, 248, True])
def test_a_bad_unit_is_refused(model: PumpModel, unit: int) -> None:
    with pytest.raises(ValueError, match="unit"):
        ModbusSimulatorServer(model, unit=unit)


def test_identification_can_be_replaced(model: PumpModel) -> None:
    other = Identification(
        vendor_id=0x1234,
        model_id=9,
        firmware_major=2,
        firmware_minor=0,
        firmware_patch=0,
        max_rate_ml_per_h=Decimal("50"),
        model_name="OTHER",
        serial_number="X",
        map_version=2,
    )
    server = ModbusSimulatorServer(model, identification=other)
    with server, connect(server) as client:
        words = read(client, IDENTIFICATION_SPAN.address, IDENTIFICATION_SPAN.count)
    assert words[Reg.MAP_VERSION.address] == 2
    assert words[Reg.VENDOR_ID.address] == 0x1234
    assert join_u32(*words[Reg.MAX_RATE.address : Reg.MAX_RATE.end]) == 5000
