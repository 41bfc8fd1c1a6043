"""Lying-pump faults on the wire: NE-1000 (pty and TCP) and Modbus (TCP and RTU on a pty).

The faults live in the model, so both protocols show them wherever the protocol has the field
(uptime: Modbus only).  Simulated time is a ManualClock the tests advance.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest

from protocol.clock import ManualClock
from protocol.modbus import CommandCode, Reg, join_u32
from protocol.newera import Framing, NeStatus, parse_dispensed, parse_rate
from protocol.pump_state import PumpAlarm, PumpState
from simulator.faults import FaultKind
from simulator.modbus_server import ModbusSimulatorServer
from simulator.model import PumpModel
from simulator.newera_server import NeweraSimulatorServer
from tests.simulator.test_modbus_server import (
    Client,
    command,
    connect,
    read,
    set_rate,
    status,
    write,
)
from tests.simulator.test_newera_server import RawClient, ok

pytestmark = pytest.mark.timeout(20)

HOUR_S = 3600.0


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def model(clock: ManualClock) -> PumpModel:
    return PumpModel(clock, max_rate_ml_per_h=100.0)


# =============================================================================== NE-1000


@pytest.fixture(params=["pty", "tcp"])
def ne(model: PumpModel, request: pytest.FixtureRequest) -> Iterator[RawClient]:
    listen = "pty" if request.param == "pty" else "tcp://127.0.0.1:0"
    with NeweraSimulatorServer(model, listen=listen) as server:
        client = RawClient(server)
        try:
            yield client
        finally:
            client.close()


def ne_infusing(client: RawClient, rate: str = "60MH") -> None:
    ok(client.ask(f"0RAT{rate}"))
    ok(client.ask("0RUN"), NeStatus.INFUSING)


def ne_infused_ml(client: RawClient) -> Decimal:
    reply = client.ask("0DIS")
    assert reply.alarm is None, reply
    assert reply.error is None, reply
    return parse_dispensed(reply.data).infused_ml


def test_ne_dis_shows_a_frozen_totalizer(
    ne: RawClient, model: PumpModel, clock: ManualClock
) -> None:
    ne_infusing(ne)
    clock.advance(HOUR_S)
    assert ne_infused_ml(ne) == 60
    model.inject_fault(FaultKind.FROZEN_TOTALIZER)
    clock.advance(HOUR_S)
    assert ne_infused_ml(ne) == 60
    assert model.snapshot().lifetime_volume_infused_ml == pytest.approx(120.0)
    model.clear_fault(FaultKind.FROZEN_TOTALIZER)
    assert ne_infused_ml(ne) == 120


def test_ne_dis_shows_a_totalizer_jump(ne: RawClient, model: PumpModel, clock: ManualClock) -> None:
    ne_infusing(ne)
    clock.advance(HOUR_S)
    model.inject_fault(FaultKind.TOTALIZER_JUMP, -20.0)
    assert ne_infused_ml(ne) == 40
    model.inject_fault(FaultKind.TOTALIZER_JUMP, 15.0)
    assert ne_infused_ml(ne) == 75
    assert model.snapshot().volume_infused_ml == pytest.approx(60.0)


def test_ne_rat_query_shows_a_wrong_rate_echo(ne: RawClient, model: PumpModel) -> None:
    ok(ne.ask("0RAT50MH"))
    model.inject_fault(FaultKind.RATE_ECHO_WRONG, 2.0)
    reply = ne.ask("0RAT")
    assert parse_rate(reply.data) == 52
    assert model.snapshot().rate_setpoint_ml_per_h == 50.0
    model.inject_fault(FaultKind.RATE_ECHO_WRONG, -60.0)
    assert parse_rate(ne.ask("0RAT").data) == 0  # never below zero
    model.clear_fault(FaultKind.RATE_ECHO_WRONG)
    ok(ne.ask("0RAT"), data="50.00MH")  # the exact readback again


def test_ne_saf_is_answered_but_not_held(
    ne: RawClient, model: PumpModel, clock: ManualClock
) -> None:
    ne_infusing(ne, "1MH")
    model.inject_fault(FaultKind.WATCHDOG_NOT_HELD)
    frame = ne.ask_frame("0SAF5", Framing.SAFE)
    assert frame.framing is Framing.SAFE  # answered normally, in safe framing
    ok(frame.reply, NeStatus.INFUSING)
    frame = ne.ask_frame("0SAF", Framing.SAFE)
    assert frame.framing is Framing.SAFE
    ok(frame.reply, NeStatus.INFUSING, data="0")
    clock.advance(HOUR_S)  # far past 5 s without a packet: no timeout
    snap = model.snapshot()
    assert PumpAlarm.COMM_TIMEOUT not in snap.alarms
    assert snap.state is PumpState.INFUSING
    ok(ne.ask("0", Framing.SAFE), NeStatus.INFUSING)  # no A?T alarm either


def test_ne_stp_is_acknowledged_but_the_pump_keeps_infusing(
    ne: RawClient, model: PumpModel, clock: ManualClock
) -> None:
    ne_infusing(ne)
    model.inject_fault(FaultKind.STOP_REFUSED)
    ok(ne.ask("0STP"), NeStatus.PAUSED)  # the prompt an obeying pump gives
    assert model.snapshot().state is PumpState.INFUSING
    ok(ne.ask("0STP"), NeStatus.STOPPED)  # a second STP: "stopped"
    assert model.snapshot().state is PumpState.INFUSING
    clock.advance(HOUR_S)
    ok(ne.ask("0"), NeStatus.INFUSING)  # the next other command shows the truth
    assert ne_infused_ml(ne) == 60
    model.clear_fault(FaultKind.STOP_REFUSED)
    ok(ne.ask("0STP"), NeStatus.PAUSED)
    ok(ne.ask("0STP"), NeStatus.STOPPED)
    assert model.snapshot().state is PumpState.STOPPED


# =============================================================================== Modbus

UNIT = 1


@pytest.fixture(params=["tcp", "rtu"])
def mb(model: PumpModel, request: pytest.FixtureRequest) -> Iterator[Client]:
    listen = "tcp://127.0.0.1:0" if request.param == "tcp" else "pty"
    with ModbusSimulatorServer(model, listen=listen, unit=UNIT) as server, connect(server) as c:
        yield c


def mb_infusing(client: Client, counts: int = 6000) -> None:
    set_rate(client, counts)  # 0.01 mL/h counts: 60 mL/h
    command(client, CommandCode.START)


def test_modbus_volume_infused_shows_a_frozen_totalizer(
    mb: Client, model: PumpModel, clock: ManualClock
) -> None:
    mb_infusing(mb)
    clock.advance(HOUR_S)
    model.inject_fault(FaultKind.FROZEN_TOTALIZER)
    clock.advance(HOUR_S)
    block = status(mb)
    assert block.volume_infused_ml == 60
    assert block.vtbi_remaining_ml == 0  # continuous; the truth elsewhere is untouched
    assert block.measured_rate_ml_per_h == 60
    assert model.snapshot().volume_infused_ml == pytest.approx(120.0)
    model.clear_fault(FaultKind.FROZEN_TOTALIZER)
    assert status(mb).volume_infused_ml == 120


def test_modbus_volume_infused_shows_a_totalizer_jump(
    mb: Client, model: PumpModel, clock: ManualClock
) -> None:
    mb_infusing(mb)
    clock.advance(HOUR_S)
    model.inject_fault(FaultKind.TOTALIZER_JUMP, 2.5)
    assert status(mb).volume_infused_ml == Decimal("62.5")
    model.inject_fault(FaultKind.TOTALIZER_JUMP, -100.0)
    assert status(mb).volume_infused_ml == 0
    model.clear_fault(FaultKind.TOTALIZER_JUMP)
    assert status(mb).volume_infused_ml == 60


def test_modbus_rate_setpoint_shows_a_wrong_rate_echo(
    mb: Client, model: PumpModel, clock: ManualClock
) -> None:
    mb_infusing(mb)
    model.inject_fault(FaultKind.RATE_ECHO_WRONG, -1.5)
    block = status(mb)
    assert block.rate_setpoint_ml_per_h == Decimal("58.5")  # RATE_SETPOINT_ECHO
    assert block.measured_rate_ml_per_h == 60  # the truth, for a cross-check
    assert join_u32(*read(mb, Reg.RATE_SETPOINT.address, 2)) == 5850  # the setpoint register
    assert model.snapshot().rate_setpoint_ml_per_h == 60.0


def test_modbus_watchdog_write_is_acknowledged_but_not_held(
    mb: Client, model: PumpModel, clock: ManualClock
) -> None:
    mb_infusing(mb, 100)
    model.inject_fault(FaultKind.WATCHDOG_NOT_HELD)
    write(mb, Reg.WATCHDOG_TIMEOUT.address, 10)  # acknowledged (no exception)
    assert status(mb).watchdog_timeout_s == 0  # WATCHDOG_TIMEOUT_ECHO
    assert read(mb, Reg.WATCHDOG_TIMEOUT.address, 1) == [0]
    assert model.snapshot().watchdog_requested_s == 10.0
    clock.advance(HOUR_S)
    block = status(mb)
    assert PumpAlarm.COMM_TIMEOUT not in block.alarms
    assert block.state is PumpState.INFUSING


def test_modbus_stop_is_acknowledged_but_the_pump_keeps_infusing(
    mb: Client, model: PumpModel, clock: ManualClock
) -> None:
    mb_infusing(mb)
    model.inject_fault(FaultKind.STOP_REFUSED)
    before = status(mb).command_counter
    command(mb, CommandCode.STOP)  # acknowledged
    clock.advance(HOUR_S)
    block = status(mb)
    assert block.last_command is CommandCode.STOP
    assert block.command_counter == before + 1
    assert block.state is PumpState.INFUSING
    assert block.volume_infused_ml == 60
    model.clear_fault(FaultKind.STOP_REFUSED)
    command(mb, CommandCode.STOP)
    assert status(mb).state is PumpState.STOPPED


def test_modbus_uptime_stops_advancing_when_frozen(
    mb: Client, model: PumpModel, clock: ManualClock
) -> None:
    clock.advance(100.0)
    model.inject_fault(FaultKind.UPTIME_FROZEN)
    clock.advance(50.0)
    assert status(mb).uptime_s == 100
    model.clear_fault(FaultKind.UPTIME_FROZEN)
    assert status(mb).uptime_s == 150
