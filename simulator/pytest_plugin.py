"""pytest plugin: software-pump fixtures for hardware-in-loop tests (installed with the package).

Write a test once against ``pump_url``; it runs against the built-in simulator, or against a real
pump when ``INFUSION_GATEWAY_TEST_PUMP_URL`` (or ``--pump-url``) names one::

    def test_my_rig(pump_url):
        with drivers.open_pump(pump_url) as pump:
            assert pump.read_status().state is PumpState.STOPPED

Fixtures:

``sim_clock``   a :class:`~protocol.clock.ManualClock`: advance it to move simulated time.
``sim_pump``    the :class:`~simulator.model.PumpModel` on ``sim_clock`` (inject faults on it).
``sim_server``  ``sim_pump`` served over ``sim_protocol`` on ``sim_listen``.
``pump_url``    the real pump's URL if one is named, else ``sim_server.pump_url``.
``real_pump``   True when ``pump_url`` is a real pump (tests that need the simulator can skip).

Knobs, each a fixture whose default is its command-line option, so that a test suite pins what
its tests rely on the pytest way: override the fixture in a ``conftest.py``, a module or a class,
or parametrise a test by its name (``@pytest.mark.parametrize("sim_listen", ["pty", ...])``):

``sim_max_rate_ml_per_h``  the pump's own maximum rate (``--sim-max-rate-ml-per-h``)
``sim_reservoir_ml``       the pump's reservoir capacity, full at start (``--sim-reservoir-ml``)
``sim_protocol``           ``newera`` or ``modbus`` (``--sim-protocol``)
``sim_listen``             ``pty`` or ``tcp://127.0.0.1:0`` (``--sim-listen``)

A knob left at ``None`` takes the model's or the protocol's own default.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TypedDict

import pytest

from protocol.clock import ManualClock
from simulator.model import PumpModel
from simulator.server import SimulatorServer, serve

PUMP_URL_ENV = "INFUSION_GATEWAY_TEST_PUMP_URL"

#: Where ``sim_server`` listens when ``sim_listen`` is None (each server class's own default).
DEFAULT_LISTEN: dict[str, str] = {"newera": "pty", "modbus": "tcp://127.0.0.1:0"}


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
        choices=sorted(DEFAULT_LISTEN),
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
        default=None,
        help="the simulated pump's own maximum rate (default: the model's)",
    )
    group.addoption(
        "--sim-reservoir-ml",
        type=float,
        default=None,
        help="the simulated pump's reservoir capacity (default: the model's)",
    )


def _real_pump_url(config: pytest.Config) -> str | None:
    url: str | None = config.getoption("--pump-url") or os.environ.get(PUMP_URL_ENV) or None
    return url


@pytest.fixture
def sim_max_rate_ml_per_h(request: pytest.FixtureRequest) -> float | None:
    """The simulated pump's own maximum rate; None: the model's default."""
    rate: float | None = request.config.getoption("--sim-max-rate-ml-per-h")
    return rate


@pytest.fixture
def sim_reservoir_ml(request: pytest.FixtureRequest) -> float | None:
    """The simulated pump's reservoir capacity, full at start; None: the model's default."""
    capacity: float | None = request.config.getoption("--sim-reservoir-ml")
    return capacity


@pytest.fixture
def sim_protocol(request: pytest.FixtureRequest) -> str:
    """The wire protocol ``sim_server`` speaks: ``newera`` or ``modbus``."""
    protocol: str = request.config.getoption("--sim-protocol")
    return protocol


@pytest.fixture
def sim_listen(request: pytest.FixtureRequest) -> str | None:
    """Where ``sim_server`` listens; None: :data:`DEFAULT_LISTEN` for its protocol."""
    listen: str | None = request.config.getoption("--sim-listen")
    return listen


@pytest.fixture
def sim_clock() -> ManualClock:
    return ManualClock()


class _PumpSizes(TypedDict, total=False):
    max_rate_ml_per_h: float
    reservoir_ml: float


@pytest.fixture
def sim_pump(
    sim_clock: ManualClock, sim_max_rate_ml_per_h: float | None, sim_reservoir_ml: float | None
) -> PumpModel:
    sizes: _PumpSizes = {}  # the knobs left at None keep the model's own defaults
    if sim_max_rate_ml_per_h is not None:
        sizes["max_rate_ml_per_h"] = sim_max_rate_ml_per_h
    if sim_reservoir_ml is not None:
        sizes["reservoir_ml"] = sim_reservoir_ml
    return PumpModel(sim_clock, **sizes)


@pytest.fixture
def sim_server(
    sim_pump: PumpModel,
    sim_protocol: str,
    sim_listen: str | None,
    request: pytest.FixtureRequest,
) -> Iterator[SimulatorServer]:
    # An indirect parametrisation of sim_server names the protocol (the plugin's first knob).
    protocol: str = getattr(request, "param", None) or sim_protocol
    listen = sim_listen or DEFAULT_LISTEN.get(protocol, "pty")  # serve() refuses a bad protocol
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
