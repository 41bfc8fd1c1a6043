"""Every status says how far its totalizer may be below the truth: ``volume_resolution_ml``.

The gateway accounts delivered volume from ``volume_infused_ml + volume_resolution_ml``, an upper
bound, so a totalizer that truncates can never make it over-deliver.  These tests hold each
backend to ``0 <= truth - reading < volume_resolution_ml`` against the simulator's model, whose
volume is the truth.  The expected steps come from each pump's own display rule (NE-1000: four
digits, at most three after the point; Modbus: one count of VOLUME_INFUSED in the register map),
never from the driver's helpers.

The NE-1000 runs over the pty (the step does not depend on the transport); Modbus over TCP and
RTU on a pty.  Real timeouts are the drivers' short test ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers import open_pump
from drivers.modbus import ModbusDriver
from drivers.newera import NeweraDriver
from drivers.status import PumpStatus
from protocol.clock import ManualClock
from protocol.modbus import Reg
from protocol.pump_state import PumpState
from simulator.modbus_server import ModbusSimulatorServer
from simulator.model import PumpModel
from simulator.newera_server import NeweraSimulatorServer
from tests.drivers.newera_support import TIMEOUT_S

pytestmark = pytest.mark.timeout(60)

#: Fast enough to deliver any volume here in hours of simulated time.
MAX_RATE_ML_PER_H = 1000.0
#: Room for every volume the NE-1000 field shows in mL (up to 9999 mL).
RESERVOIR_ML = 10_000.0
SECONDS_PER_HOUR = 3600.0


@pytest.fixture
def sim_max_rate_ml_per_h() -> float:
    """Overrides conftest's: a pump that can deliver up to the NE-1000 field's 9999 mL."""
    return MAX_RATE_ML_PER_H


@pytest.fixture
def sim_reservoir_ml() -> float:
    """A reservoir that holds the NE-1000 field's 9999 mL."""
    return RESERVOIR_ML


@pytest.fixture(params=["tcp", "rtu"])
def modbus_driver(request: pytest.FixtureRequest, model: PumpModel) -> Iterator[ModbusDriver]:
    listen = "tcp://127.0.0.1:0" if request.param == "tcp" else "pty"
    with (
        ModbusSimulatorServer(model, listen=listen) as server,
        open_pump(server.pump_url, timeout_s=TIMEOUT_S) as driver,
    ):
        assert isinstance(driver, ModbusDriver)
        yield driver


def deliver(model: PumpModel, clock: ManualClock, volume_ml: float) -> float:
    """Make the model's totalizer hold exactly ``volume_ml`` (from zero) and return it.

    The model infuses a VTBI of ``volume_ml`` and stops on it exactly (no rounding past it), so
    the truth is the very float asked for, binary noise and all.
    """
    model.clear_alarms()  # the last VTBI_COMPLETE: advisory, but keep the status clean
    model.clear_totals()
    model.refill(model.reservoir_capacity_ml)
    if volume_ml > 0:
        model.set_vtbi(volume_ml)
        model.set_rate(model.max_rate_ml_per_h)
        model.start()
        clock.advance(volume_ml * SECONDS_PER_HOUR / model.max_rate_ml_per_h + 1.0)
    snapshot = model.snapshot()
    assert snapshot.state is not PumpState.INFUSING
    assert snapshot.volume_infused_ml == volume_ml
    return snapshot.volume_infused_ml


def assert_within_one_step(truth_ml: float, status: PumpStatus) -> None:
    """The reading is at or below the truth, by less than its step: exactly (the decimals the
    pump and the codecs mean), and in the floats the gateway adds up."""
    reading_ml, step_ml = status.volume_infused_ml, status.volume_resolution_ml
    assert step_ml > 0
    truth, reading, step = (Decimal(repr(value)) for value in (truth_ml, reading_ml, step_ml))
    assert reading <= truth < reading + step
    assert 0.0 <= truth_ml - reading_ml < step_ml
    # Float addition may land on the truth itself (1.027 + 0.001 == 1.0279999999999998): the
    # float upper bound is inclusive, never below the truth.
    assert truth_ml <= reading_ml + step_ml


# --- NE-1000: the step of the display's last digit ------------------------------------------

#: (delivered mL, what DIS shows in mL, the step of its last digit in mL) on a syringe above
#: 14.00 mm (volumes in mL).  The field keeps four digits, at most three after the point, and
#: truncates: three decimals below 10, two below 100, one below 1000, none from 1000.
NE_READINGS_ML = [
    (0.0, 0.0, 0.001),
    (5.4321, 5.432, 0.001),
    (9.9999, 9.999, 0.001),
    (10.0, 10.0, 0.01),
    (54.321, 54.32, 0.01),
    (99.999, 99.99, 0.01),
    (100.0, 100.0, 0.1),
    (543.21, 543.2, 0.1),
    (999.99, 999.9, 0.1),
    (1234.5, 1234.0, 1.0),
]


@pytest.mark.parametrize(("volume_ml", "reading_ml", "step_ml"), NE_READINGS_ML)
def test_ne1000_step_is_the_last_display_digit_of_the_reading(
    driver: NeweraDriver,
    model: PumpModel,
    clock: ManualClock,
    volume_ml: float,
    reading_ml: float,
    step_ml: float,
) -> None:
    truth_ml = deliver(model, clock, volume_ml)
    status = driver.read_status()
    assert (status.volume_infused_ml, status.volume_resolution_ml) == (reading_ml, step_ml)
    assert status.to_dict()["volume_resolution_ml"] == step_ml
    assert_within_one_step(truth_ml, status)


def test_ne1000_step_in_microlitres_on_a_small_syringe(
    model: PumpModel, clock: ManualClock
) -> None:
    # At or below 14.00 mm the pump counts in µL: 123.45 µL shows 123.4 µL, a 0.1 µL step.
    with (
        NeweraSimulatorServer(model, diameter_mm=Decimal("8.0")) as server,
        open_pump(server.pump_url, timeout_s=TIMEOUT_S) as driver,
    ):
        truth_ml = deliver(model, clock, 0.12345)
        status = driver.read_status()
        assert status.volume_infused_ml == pytest.approx(0.1234, abs=1e-12)
        assert status.volume_resolution_ml == pytest.approx(0.0001, abs=1e-12)
        assert_within_one_step(truth_ml, status)


#: Volumes up to the field's 9999 mL, every decade of the display drawn about equally often.
_NE_VOLUMES_ML = st.one_of(
    st.floats(min_value=0.0, max_value=10.0),
    st.floats(min_value=10.0, max_value=100.0),
    st.floats(min_value=100.0, max_value=1000.0),
    st.floats(min_value=1000.0, max_value=9999.0),
)


# One pump serves every example: each starts by zeroing the totalizer and refilling the syringe.
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(volume_ml=_NE_VOLUMES_ML)
@pytest.mark.hazard("H-OV-05")
def test_ne1000_reading_is_below_the_truth_by_less_than_its_step(
    driver: NeweraDriver, model: PumpModel, clock: ManualClock, volume_ml: float
) -> None:
    truth_ml = deliver(model, clock, volume_ml)
    assert_within_one_step(truth_ml, driver.read_status())


# --- Modbus: one count of VOLUME_INFUSED -----------------------------------------------------


@pytest.mark.parametrize("volume_ml", [0.0, 5.4321, 54.3219, 543.2109, 1234.5678])
def test_modbus_step_is_one_count_of_the_volume_infused_register(
    modbus_driver: ModbusDriver, model: PumpModel, clock: ManualClock, volume_ml: float
) -> None:
    scale_ml = Reg.VOLUME_INFUSED.scale  # the map's one home for it: the same at any volume
    truth_ml = deliver(model, clock, volume_ml)
    status = modbus_driver.read_status()
    assert status.volume_resolution_ml == float(scale_ml)
    assert status.volume_infused_ml == float(Decimal(repr(volume_ml)) // scale_ml * scale_ml)
    assert status.to_dict()["volume_resolution_ml"] == float(scale_ml)
    assert_within_one_step(truth_ml, status)
