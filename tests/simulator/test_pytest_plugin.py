"""The installed pytest plugin: a HIL user's test file gets a pump URL and the simulated pump."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

USER_TESTS = """
import drivers
from gateway.safety import check_rate
from protocol.pump_state import PumpAlarm, PumpState


def test_rate_reads_back(pump_url, real_pump):
    assert not real_pump
    with drivers.open_pump(pump_url, timeout_s=0.5) as pump:
        assert pump.set_rate(check_rate(10.0, weight_kg=70)).exact


def test_the_simulated_pump_is_in_my_hands(pump_url, sim_pump, sim_clock):
    with drivers.open_pump(pump_url, timeout_s=0.5) as pump:
        pump.set_rate(check_rate(12.0, weight_kg=70))
        pump.start()
        sim_clock.advance(3600)
        assert abs(pump.read_status().volume_infused_ml - 12.0) < 0.02
        sim_pump.inject(PumpAlarm.DOOR_OPEN)
        sim_clock.advance(1)
        assert pump.read_status().state is PumpState.ALARM
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("protocol", ["newera", "modbus"])
def test_plugin_fixtures_serve_a_pump(pytester: pytest.Pytester, protocol: str) -> None:
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--sim-protocol={protocol}")
    result.assert_outcomes(passed=2)


USER_CONFTEST = """
import pytest


@pytest.fixture
def sim_max_rate_ml_per_h():
    return 20.0
"""

USER_KNOB_TESTS = """
import pytest


def test_the_suite_pins_the_rate_and_the_command_line_sizes_the_reservoir(sim_pump):
    assert sim_pump.max_rate_ml_per_h == 20.0
    assert sim_pump.reservoir_capacity_ml == 40.0


@pytest.mark.parametrize("sim_max_rate_ml_per_h", [7.5])
def test_a_test_pins_its_own_rate(sim_pump):
    assert sim_pump.max_rate_ml_per_h == 7.5


@pytest.mark.parametrize("sim_listen", ["pty", "tcp://127.0.0.1:0"])
def test_each_line(sim_server, sim_listen):
    assert sim_server.listening.startswith("tcp://" if sim_listen != "pty" else "/dev/")


@pytest.mark.parametrize("sim_protocol", ["modbus"])
def test_modbus_listens_on_tcp_by_default(sim_server):
    assert sim_server.pump_url.startswith("modbus+tcp://127.0.0.1:")
"""


@pytest.mark.timeout(60)
def test_a_suite_sets_the_pump_by_fixture_option_or_parameter(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(USER_CONFTEST)
    pytester.makepyfile(test_knobs=USER_KNOB_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--sim-reservoir-ml=40")
    result.assert_outcomes(passed=5)
