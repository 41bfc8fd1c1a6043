"""Fixtures of the NE-1000 driver tests: the plugin's pump (simulator/pytest_plugin.py) on a wire.

``clock``, ``model`` and ``server`` are this directory's names for the plugin's ``sim_clock``,
``sim_pump`` and ``sim_server``: a 100 mL/h pump, an NE-1000 on a pty (tests/conftest.py pins the
protocol and the line); tests that take ``any_server`` run over a pty and over TCP.  A test file
that needs another pump overrides the plugin's knobs (``sim_max_rate_ml_per_h``, ...); one that
needs other fixtures under these names defines its own, which take precedence.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from drivers.newera import NeweraDriver
from protocol.clock import ManualClock
from simulator.model import PumpModel
from simulator.newera_server import NeweraSimulatorServer
from simulator.server import SimulatorServer
from tests.drivers.newera_support import TIMEOUT_S

#: The lines an NE-1000 is reached on, for ``any_server``: its ids are the test ids' suffixes.
LINES = {"pty": "pty", "tcp": "tcp://127.0.0.1:0"}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrising the plugin's ``sim_listen`` knob overrides it for the test."""
    if "any_server" in metafunc.fixturenames:
        metafunc.parametrize("sim_listen", list(LINES.values()), ids=list(LINES))


@pytest.fixture
def sim_max_rate_ml_per_h() -> float:
    return 100.0


@pytest.fixture
def clock(sim_clock: ManualClock) -> ManualClock:
    return sim_clock


@pytest.fixture
def model(sim_pump: PumpModel) -> PumpModel:
    return sim_pump


@pytest.fixture
def server(sim_server: SimulatorServer) -> NeweraSimulatorServer:
    assert isinstance(sim_server, NeweraSimulatorServer)
    return sim_server


@pytest.fixture
def driver(server: NeweraSimulatorServer) -> Iterator[NeweraDriver]:
    driver = NeweraDriver(server.pump_url, timeout_s=TIMEOUT_S)
    driver.open()
    yield driver
    driver.close()


@pytest.fixture
def any_server(server: NeweraSimulatorServer) -> NeweraSimulatorServer:
    """``server`` on each of :data:`LINES` in turn."""
    return server


@pytest.fixture
def any_driver(any_server: NeweraSimulatorServer, driver: NeweraDriver) -> NeweraDriver:
    """``driver`` on each of :data:`LINES` in turn."""
    return driver
