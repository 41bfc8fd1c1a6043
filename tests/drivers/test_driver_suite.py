"""One driver suite, written once, run against every transport of the simulator.

NE-1000 over a pty, over TCP and on the simulator's in-process line, Modbus over TCP and RTU on a
pty: the gateway cannot tell them apart, and neither can these tests.  When
``INFUSION_GATEWAY_TEST_PUMP_URL`` names a real pump, the tests that need no simulator control run
against it too (``-m hardware`` selects only those).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from drivers import make_pump
from drivers.base import PumpDriver
from drivers.errors import PumpRefusedError
from drivers.newera import NeweraDriver, SerialLink
from gateway.safety import check_rate
from protocol.clock import ManualClock
from protocol.pump_state import STOPPING_ALARMS, PumpAlarm, PumpState
from simulator.in_process import InProcessNewera
from simulator.model import PumpModel
from simulator.server import SimulatorServer, serve

pytestmark = pytest.mark.timeout(30)

TRANSPORTS = [
    ("newera", "pty"),
    ("newera", "tcp://127.0.0.1:0"),
    ("newera", "in-process"),
    ("modbus", "tcp://127.0.0.1:0"),
    ("modbus", "pty"),
]
PUMP_MAX_RATE_ML_PER_H = 20.0
REAL_PUMP_URL = os.environ.get("INFUSION_GATEWAY_TEST_PUMP_URL")


@dataclass
class Target:
    url: str
    clock: ManualClock | None = None
    model: PumpModel | None = None
    #: The in-process line's opener (the driver's ``link``), or None over a wire.
    link: Callable[[], SerialLink] | None = None

    def driver(self) -> PumpDriver:
        if self.link is not None:
            return NeweraDriver(self.url, link=self.link, timeout_s=0.5, retries=1)
        return make_pump(self.url, timeout_s=0.5, retries=1)

    def need_simulator(self) -> tuple[ManualClock, PumpModel]:
        if self.clock is None or self.model is None:
            pytest.skip("needs control of the simulated pump")
        return self.clock, self.model


def _ids() -> list[str]:
    return [f"{protocol}-{listen.split(':')[0]}" for protocol, listen in TRANSPORTS]


@pytest.fixture(
    params=[*TRANSPORTS, *([("real", REAL_PUMP_URL)] if REAL_PUMP_URL else [])],
    ids=[*_ids(), *(["real"] if REAL_PUMP_URL else [])],
)
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    protocol, listen = request.param
    if protocol == "real":
        request.applymarker(pytest.mark.hardware)
        yield Target(url=listen)
        return
    clock = ManualClock()
    model = PumpModel(clock, max_rate_ml_per_h=PUMP_MAX_RATE_ML_PER_H, reservoir_ml=500.0)
    if listen == "in-process":
        line = InProcessNewera(model)
        try:
            yield Target(url=line.pump_url, clock=clock, model=model, link=line.open)
        finally:
            line.close()
        return
    server: SimulatorServer = serve(model, protocol=protocol, listen=listen)
    try:
        yield Target(url=server.pump_url, clock=clock, model=model)
    finally:
        server.close()


@pytest.fixture
def pump(target: Target) -> Iterator[PumpDriver]:
    driver = target.driver()
    try:
        driver.open()
        yield driver
    finally:
        driver.close()


def test_identifies_itself(pump: PumpDriver) -> None:
    identity = pump.identify()
    assert identity.model
    assert identity.firmware
    assert identity.rate_resolution_ml_per_h > 0


@pytest.mark.hazard("H-OV-05")
def test_rate_goes_out_rounded_down_and_reads_back_exactly(pump: PumpDriver) -> None:
    approved = check_rate(15.4826, weight_kg=70.0)
    readback = pump.set_rate(approved)
    assert readback.sent_ml_per_h <= approved.rate_ml_per_h
    assert approved.rate_ml_per_h - readback.sent_ml_per_h <= readback.resolution_ml_per_h
    assert readback.exact
    assert pump.read_status().rate_ml_per_h == pytest.approx(readback.sent_ml_per_h)


def test_start_infuse_stop_and_totalizer(pump: PumpDriver, target: Target) -> None:
    clock, model = target.need_simulator()
    sent = pump.set_rate(check_rate(12.0, weight_kg=70.0)).sent_ml_per_h
    pump.set_vtbi(100.0)
    pump.start()
    assert pump.read_status().state is PumpState.INFUSING
    clock.advance(3600.0)
    status = pump.read_status()
    assert status.volume_infused_ml == pytest.approx(sent, abs=0.01)
    pump.stop()
    assert pump.read_status().state is PumpState.STOPPED
    assert model.snapshot().lifetime_volume_infused_ml == pytest.approx(sent, abs=0.001)


def test_vtbi_bounds_delivery_and_is_reported_complete(pump: PumpDriver, target: Target) -> None:
    clock, model = target.need_simulator()
    pump.set_rate(check_rate(10.0, weight_kg=70.0))
    held = pump.set_vtbi(2.5)
    assert held <= 2.5
    pump.start()
    clock.advance(7200.0)
    status = pump.read_status()
    assert status.state is PumpState.STOPPED
    assert PumpAlarm.VTBI_COMPLETE in status.alarms
    assert model.snapshot().lifetime_volume_infused_ml == pytest.approx(held, abs=0.001)


def test_pump_alarm_is_latched_until_cleared(pump: PumpDriver, target: Target) -> None:
    clock, model = target.need_simulator()
    pump.set_rate(check_rate(10.0, weight_kg=70.0))
    pump.start()
    model.inject(PumpAlarm.OCCLUSION)
    clock.advance(1.0)
    # Modbus names the occlusion; an NE-1000 can only say its motor stalled (A?S).
    first = pump.read_status()
    assert first.state is PumpState.ALARM
    reported = first.alarms & STOPPING_ALARMS
    assert reported & {PumpAlarm.OCCLUSION, PumpAlarm.RESERVOIR_EMPTY}
    assert pump.read_status().alarms >= reported  # still there on the next poll: latched
    model.clear_condition(PumpAlarm.OCCLUSION)
    pump.clear_alarms()
    status = pump.read_status()
    assert not status.alarms & STOPPING_ALARMS
    assert status.state is not PumpState.INFUSING  # clearing never restarts a pump


def test_pump_refuses_a_rate_above_its_own_maximum(pump: PumpDriver, target: Target) -> None:
    target.need_simulator()
    approved = check_rate(25.0, weight_kg=70.0)  # within the 28 mL/h ceiling, above the pump's 20
    with pytest.raises(PumpRefusedError):
        pump.set_rate(approved)
    readback = pump.set_rate(check_rate(5.0, weight_kg=70.0))  # still usable afterwards
    assert readback.exact


@pytest.mark.hazard("H-CL-01")
def test_pump_watchdog_stops_it_when_the_host_falls_silent(
    pump: PumpDriver, target: Target
) -> None:
    clock, model = target.need_simulator()
    held = pump.arm_watchdog(10.0)
    assert held >= 10.0
    pump.set_rate(check_rate(10.0, weight_kg=70.0))
    pump.start()
    clock.advance(held + 1.0)  # the gateway says nothing for longer than the watchdog
    snap = model.snapshot()
    assert snap.state is PumpState.ALARM
    assert PumpAlarm.COMM_TIMEOUT in snap.alarms
    clock.advance(3600.0)
    assert model.snapshot().state is not PumpState.INFUSING  # never restarts by itself
    assert PumpAlarm.COMM_TIMEOUT in pump.read_status().alarms
