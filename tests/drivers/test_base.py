"""The shared driver mechanism, tested with a scripted in-memory backend (no I/O)."""

from __future__ import annotations

from collections import deque

import pytest

from drivers import driver_class, make_pump
from drivers.base import PumpDriver
from drivers.errors import (
    DriverConfigError,
    LinkLostError,
    PumpProtocolError,
    PumpTimeoutError,
)
from drivers.status import PumpIdentity, PumpStatus
from drivers.url import parse_pump_url
from gateway.safety import check_rate
from protocol.pump_state import PumpAlarm, PumpState


class ScriptedDriver(PumpDriver):
    """A backend whose hooks fail as the test scripts them."""

    def __init__(self, *failures: Exception, **options: object) -> None:
        super().__init__("newera+tcp://127.0.0.1:9", **options)
        self.failures: deque[Exception] = deque(failures)
        self.calls: list[str] = []
        self.connects = 0
        self.disconnects = 0
        self.rate = 0.0
        self.alarms: frozenset[PumpAlarm] = frozenset()

    def _maybe_fail(self, name: str) -> None:
        self.calls.append(name)
        if self.failures:
            raise self.failures.popleft()

    def _connect(self) -> None:
        self.connects += 1

    def _disconnect(self) -> None:
        self.disconnects += 1

    def _identify(self) -> PumpIdentity:
        self._maybe_fail("identify")
        return PumpIdentity("test", "scripted", "1.0", max_rate_ml_per_h=100.0)

    def _read_status(self) -> PumpStatus:
        self._maybe_fail("status")
        alarms, self.alarms = self.alarms, frozenset()  # a pump reports an alarm once
        # A totalizer in 0.05 mL steps: a value no backend uses, so a lost field shows.
        return PumpStatus(
            PumpState.INFUSING, self.rate, 1.0, None, alarms, volume_resolution_ml=0.05
        )

    def _write_rate(self, rate_ml_per_h: float) -> float:
        self._maybe_fail("write_rate")
        self.rate = int(rate_ml_per_h * 10) / 10  # a pump with 0.1 mL/h steps
        return self.rate

    def _read_rate(self) -> float:
        self._maybe_fail("read_rate")
        return self.rate

    def _write_vtbi(self, volume_ml: float) -> float:
        self._maybe_fail("vtbi")
        return volume_ml

    def _start(self) -> None:
        self._maybe_fail("start")

    def _stop(self) -> None:
        self._maybe_fail("stop")

    def _clear_alarms(self) -> None:
        self._maybe_fail("clear_alarms")

    def _clear_totals(self) -> None:
        self._maybe_fail("clear_totals")

    def _arm_watchdog(self, timeout_s: float) -> float:
        self._maybe_fail("watchdog")
        return timeout_s


def test_safe_requests_are_retried_a_bounded_number_of_times() -> None:
    driver = ScriptedDriver(PumpTimeoutError("1"), PumpProtocolError("2"), retries=2)
    assert driver.read_status().state is PumpState.INFUSING
    assert driver.calls == ["status", "status", "status"]
    driver = ScriptedDriver(*(PumpTimeoutError(str(i)) for i in range(3)), retries=2)
    with pytest.raises(PumpTimeoutError, match="2"):
        driver.read_status()
    assert driver.calls == ["status"] * 3


def test_start_is_not_retried() -> None:
    driver = ScriptedDriver(PumpTimeoutError("lost reply"), retries=5)
    with pytest.raises(PumpTimeoutError):
        driver.start()
    assert driver.calls == ["start"]


def test_lost_link_reconnects_on_the_next_attempt() -> None:
    driver = ScriptedDriver(LinkLostError("cable"), retries=1)
    driver.stop()
    assert driver.connects == 2
    assert driver.disconnects == 1
    assert driver.connected


def test_close_is_safe_twice_and_refuses_later_requests() -> None:
    driver = ScriptedDriver()
    with driver:
        assert driver.identity is not None
    driver.close()
    assert driver.disconnects == 1
    with pytest.raises(LinkLostError, match="closed"):
        driver.read_status()


def test_alarms_are_latched_until_cleared() -> None:
    driver = ScriptedDriver()
    driver.alarms = frozenset({PumpAlarm.POWER_LOSS})
    assert PumpAlarm.POWER_LOSS in driver.read_status().alarms
    assert PumpAlarm.POWER_LOSS in driver.read_status().alarms  # pump no longer says it
    driver.clear_alarms()
    assert driver.read_status().alarms == frozenset()


def test_status_keeps_the_backends_totalizer_step() -> None:
    status = ScriptedDriver().read_status()  # rebuilt by the base: the step must survive that
    assert (status.volume_infused_ml, status.volume_resolution_ml) == (1.0, 0.05)
    assert status.to_dict()["volume_resolution_ml"] == 0.05


def test_a_status_without_its_totalizer_step_is_refused() -> None:
    with pytest.raises(TypeError, match="volume_resolution_ml"):
        PumpStatus(PumpState.STOPPED, 0.0, 0.0, None)  # type: ignore[call-arg]


@pytest.mark.hazard("H-OV-01", "H-OV-05")
def test_set_rate_takes_only_approved_rates_and_reads_back() -> None:
    driver = ScriptedDriver()
    with pytest.raises(TypeError, match="ApprovedRate"):
        driver.set_rate(15.0)  # type: ignore[arg-type]
    assert driver.calls == []
    readback = driver.set_rate(check_rate(15.48, weight_kg=70.0))
    assert readback.sent_ml_per_h == 15.4
    assert readback.readback_ml_per_h == 15.4
    assert readback.exact


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://x:1", "scheme 'http'"),
        ("newera://dev/ttyUSB0", "three slashes"),
        ("newera:///", "path is missing"),
        ("modbus+tcp://127.0.0.1", "HOST:PORT"),
        ("modbus+tcp://127.0.0.1:99999", "port must be 1-65535"),
        ("newera+tcp://h:1/x", "no path"),
        ("newera+tcp://h:1?a=1&a=2", "given twice"),
        ("", "non-empty"),
    ],
)
def test_bad_urls_are_refused_with_what_is_wrong(url: str, message: str) -> None:
    with pytest.raises(DriverConfigError, match=message):
        make_pump(url)


def test_unknown_and_bad_options_named() -> None:
    with pytest.raises(
        DriverConfigError, match=r"'bogus': unknown \(allowed: retries, timeout_s\)"
    ):
        ScriptedDriver(bogus=1)
    with pytest.raises(DriverConfigError, match="'timeout_s'"):
        ScriptedDriver(timeout_s=0)


def test_url_shapes() -> None:
    serial = parse_pump_url("newera:///dev/ttyUSB0?baud=19200&address=0&safe_timeout_s=10")
    assert (serial.path, serial.params["baud"], serial.is_serial) == ("/dev/ttyUSB0", "19200", True)
    tcp = parse_pump_url("modbus+tcp://127.0.0.1:5020?unit=1")
    assert (tcp.host, tcp.port, tcp.params["unit"]) == ("127.0.0.1", 5020, "1")
    with pytest.raises(DriverConfigError, match="must be one of"):
        driver_class("can")
