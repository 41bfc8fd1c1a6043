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
