"""pytest plugin: software-pump fixtures for hardware-in-loop tests (installed with the package).

Write a test once against ``pump_url``; it runs against the built-in simulator, or against a real
pump when ``INFUSION_GATEWAY_TEST_PUMP_URL`` (or ``--pump-url``) names one::

    def test_my_rig(pump_url):
        with drivers.open_pump(pump_url) as pump:
            assert pump.read_status().state is PumpState.STOPPED

Fixtures:

``sim_clock``   a :class:`~protocol.clock.ManualClock`: advance it to move simulated time.
``sim_pump``    the :class:`~simulator.model.PumpModel` on ``sim_clock`` (inject faults on it).
``sim_server``  ``sim_pump`` served over ``--sim-protocol`` (newera|modbus) on ``--sim-listen``.
``pump_url``    the real pump's URL if one is named, else ``sim_server.pump_url``.
``real_pump``   True when ``pump_url`` is a real pump (tests that need the simulator can skip).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from protocol.clock import ManualClock
from simulator.model import PumpModel
from simulator.server import SimulatorServer, serve

PUMP_URL_ENV = "INFUSION_GATEWAY_TEST_PUMP_URL"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("infusion-gateway", "infusion-gateway simulator fixtures")
    group.addoption(
        "--pump-url",
        default=None,
        help=f"a real pump for HIL tests (default: ${PUMP_URL_ENV}, else the simulator)",
    )
    group.addoption(
        "--sim-protocol",
        default="newera",
        choices=["newera", "modbus"],
        help="wire protocol of the simulator fixture (default newera)",
    )
    group.addoption(
        "--sim-listen",
        default=None,
        help="pty or tcp://127.0.0.1:0 (default: pty for newera, tcp for modbus)",
    )
    group.addoption(
        "--sim-max-rate-ml-per-h",
        type=float,
        default=500.0,
        help="the simulated pump's own maximum rate",
    )


def _real_pump_url(config: pytest.Config) -> str | None:
    url: str | None = config.getoption("--pump-url") or os.environ.get(PUMP_URL_ENV) or None
    return url


@pytest.fixture
def sim_clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def sim_pump(sim_clock: ManualClock, request: pytest.FixtureRequest) -> PumpModel:
    max_rate: float = request.config.getoption("--sim-max-rate-ml-per-h")
    return PumpModel(sim_clock, max_rate_ml_per_h=max_rate)


@pytest.fixture
def sim_server(sim_pump: PumpModel, request: pytest.FixtureRequest) -> Iterator[SimulatorServer]:
    protocol: str = getattr(request, "param", None) or request.config.getoption("--sim-protocol")
    listen: str | None = request.config.getoption("--sim-listen")
    if listen is None:
        listen = "pty" if protocol == "newera" else "tcp://127.0.0.1:0"
    server = serve(sim_pump, protocol=protocol, listen=listen)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def real_pump(request: pytest.FixtureRequest) -> bool:
    return _real_pump_url(request.config) is not None


@pytest.fixture
def pump_url(request: pytest.FixtureRequest) -> str:
    real = _real_pump_url(request.config)
    if real is not None:
        return real
    server: SimulatorServer = request.getfixturevalue("sim_server")
    return server.pump_url
