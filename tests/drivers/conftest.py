"""Fixtures of the NE-1000 driver tests: a pump model on a manual clock, served on a wire.

(Test files that need other fixtures under these names define their own, which take precedence.)
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from drivers.newera import NeweraDriver
from protocol.clock import ManualClock
from simulator.model import PumpModel
from simulator.newera_server import NeweraSimulatorServer
from tests.drivers.newera_support import TIMEOUT_S


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def model(clock: ManualClock) -> PumpModel:
    return PumpModel(clock, max_rate_ml_per_h=100.0)


@pytest.fixture
def server(model: PumpModel) -> Iterator[NeweraSimulatorServer]:
    with NeweraSimulatorServer(model) as server:
        yield server


@pytest.fixture
def driver(server: NeweraSimulatorServer) -> Iterator[NeweraDriver]:
    driver = NeweraDriver(server.pump_url, timeout_s=TIMEOUT_S)
    driver.open()
    yield driver
    driver.close()


@pytest.fixture(params=["pty", "tcp"])
def any_server(request: pytest.FixtureRequest, model: PumpModel) -> Iterator[NeweraSimulatorServer]:
    listen = "pty" if request.param == "pty" else "tcp://127.0.0.1:0"
    with NeweraSimulatorServer(model, listen=listen) as server:
        yield server


@pytest.fixture
def any_driver(any_server: NeweraSimulatorServer) -> Iterator[NeweraDriver]:
    driver = NeweraDriver(any_server.pump_url, timeout_s=TIMEOUT_S)
    driver.open()
    yield driver
    driver.close()
