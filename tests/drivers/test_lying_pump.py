"""The drivers against a lying pump: they return what the pump holds and reports, over every
transport of the simulator (NE-1000 over a pty and TCP, Modbus over TCP and RTU on a pty).

A driver cannot tell a lie from the truth by itself; what it must do is read back instead of
echoing what it sent, so that the gateway gets the pump's own word to cross-check.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from drivers import make_pump
from drivers.base import PumpDriver
from protocol.clock import ManualClock
from protocol.pump_state import PumpAlarm, PumpState
from simulator.faults import FaultKind
from simulator.model import PumpModel
from simulator.server import SimulatorServer
from tests.drivers.newera_support import approved

TRANSPORTS = [
    ("newera", "pty"),
    ("newera", "tcp://127.0.0.1:0"),
    ("modbus", "tcp://127.0.0.1:0"),
    ("modbus", "pty"),
]
HOUR_S = 3600.0

pytestmark = [
    pytest.mark.timeout(30),
    pytest.mark.parametrize(
        ("sim_protocol", "sim_listen"),
        TRANSPORTS,
        ids=[f"{protocol}-{listen.split(':')[0]}" for protocol, listen in TRANSPORTS],
    ),
]


@dataclass
class Rig:
    protocol: str
    clock: ManualClock
    model: PumpModel
    pump: PumpDriver


@pytest.fixture
def sim_max_rate_ml_per_h() -> float:
    return 20.0


@pytest.fixture
def sim_reservoir_ml() -> float:
    return 500.0


@pytest.fixture
def rig(
    sim_protocol: str, sim_clock: ManualClock, sim_pump: PumpModel, sim_server: SimulatorServer
) -> Iterator[Rig]:
    driver = make_pump(sim_server.pump_url, timeout_s=0.5, retries=1)
    try:
        driver.open()
        yield Rig(sim_protocol, sim_clock, sim_pump, driver)
    finally:
        driver.close()


def infusing(rig: Rig, rate_ml_per_h: float = 12.0) -> float:
    sent = rig.pump.set_rate(approved(rate_ml_per_h)).sent_ml_per_h
    rig.pump.start()
    return sent


def test_arm_watchdog_returns_what_the_pump_holds(rig: Rig) -> None:
    assert rig.pump.arm_watchdog(5.0) == 5.0
    assert rig.model.snapshot().watchdog_timeout_s == 5.0


def test_arm_watchdog_returns_zero_when_the_pump_does_not_hold_it(rig: Rig) -> None:
    rig.model.inject_fault(FaultKind.WATCHDOG_NOT_HELD)
    assert rig.pump.arm_watchdog(5.0) == 0.0  # acknowledged, not held: the driver says so
    assert rig.model.snapshot().watchdog_requested_s == 5.0
    infusing(rig)
    rig.clock.advance(HOUR_S)
    status = rig.pump.read_status()
    assert PumpAlarm.COMM_TIMEOUT not in status.alarms
    assert status.state is PumpState.INFUSING


def test_a_frozen_totalizer_stops_the_read_volume_while_the_truth_advances(rig: Rig) -> None:
    sent = infusing(rig)
    rig.clock.advance(HOUR_S)
    first = rig.pump.read_status().volume_infused_ml
    assert first == pytest.approx(sent, abs=0.01)
    rig.model.inject_fault(FaultKind.FROZEN_TOTALIZER)
    rig.clock.advance(HOUR_S)
    assert rig.pump.read_status().volume_infused_ml == first
    rig.clock.advance(HOUR_S)
    status = rig.pump.read_status()
    assert status.volume_infused_ml == first
    assert status.state is PumpState.INFUSING
    truth = rig.model.snapshot()
    assert truth.volume_infused_ml == pytest.approx(3 * sent, abs=0.001)
    assert truth.lifetime_volume_infused_ml == pytest.approx(3 * sent, abs=0.001)


def test_uptime_is_read_where_the_protocol_has_it(rig: Rig) -> None:
    rig.clock.advance(90.0)
    status = rig.pump.read_status()
    if rig.protocol == "newera":
        assert status.uptime_s is None
        assert status.to_dict()["uptime_s"] is None
        return
    assert status.uptime_s == 90.0
    assert status.to_dict()["uptime_s"] == 90.0
    rig.model.inject_fault(FaultKind.UPTIME_FROZEN)
    rig.clock.advance(60.0)
    assert rig.pump.read_status().uptime_s == 90.0  # stale data: the pump's clock stands still
    rig.model.clear_fault(FaultKind.UPTIME_FROZEN)
    assert rig.pump.read_status().uptime_s == 150.0


def test_a_refused_stop_returns_and_the_next_status_says_infusing(rig: Rig) -> None:
    infusing(rig)
    rig.model.inject_fault(FaultKind.STOP_REFUSED)
    rig.pump.stop()  # no error: the pump acknowledged it
    rig.clock.advance(60.0)
    assert rig.pump.read_status().state is PumpState.INFUSING
    assert rig.model.snapshot().state is PumpState.INFUSING
    rig.model.clear_fault(FaultKind.STOP_REFUSED)
    rig.pump.stop()
    assert rig.pump.read_status().state is PumpState.STOPPED


def test_a_wrong_rate_echo_shows_in_the_readback(rig: Rig) -> None:
    rig.model.inject_fault(FaultKind.RATE_ECHO_WRONG, 1.0)
    readback = rig.pump.set_rate(approved(10.0))
    assert not readback.exact
    # (An NE-1000 shows it in the rate unit last set, to its display step.)
    assert readback.readback_ml_per_h == pytest.approx(readback.sent_ml_per_h + 1.0, abs=0.01)
    assert rig.model.snapshot().rate_setpoint_ml_per_h == pytest.approx(readback.sent_ml_per_h)
    assert rig.pump.read_status().rate_ml_per_h == readback.readback_ml_per_h
