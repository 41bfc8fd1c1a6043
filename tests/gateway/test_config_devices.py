"""Two channels can never drive one pump, however its URL is spelled."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.config import build_config
from gateway.errors import ConfigError


def _config(tmp_path: Path, *pumps: str) -> dict[str, object]:
    return {
        "state_dir": str(tmp_path / "state"),
        "channels": [{"id": f"bed{i}", "pump": pump} for i, pump in enumerate(pumps, 1)],
    }


@pytest.mark.hazard("H-WP-01")
def test_same_serial_device_through_a_by_id_link_is_refused(tmp_path: Path) -> None:
    device = tmp_path / "ttyUSB0"
    device.touch()
    by_id = tmp_path / "usb-FTDI_FT232R_USB_UART_A600xyz-if00-port0"
    os.symlink(device, by_id)
    with pytest.raises(ConfigError, match=r"one pump per channel \(these reach the same device\)"):
        build_config(_config(tmp_path, f"newera://{device}", f"newera://{by_id}"))


@pytest.mark.hazard("H-WP-01")
def test_localhost_and_127_0_0_1_are_one_pump(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"channels\.pump"):
        build_config(
            _config(tmp_path, "modbus+tcp://localhost:5020", "modbus+tcp://127.0.0.1:5020")
        )


def test_two_units_on_one_bus_are_two_pumps(tmp_path: Path) -> None:
    config = build_config(
        _config(
            tmp_path, "modbus+tcp://127.0.0.1:5020?unit=1", "modbus+tcp://127.0.0.1:5020?unit=2"
        )
    )
    assert [c.id for c in config.channels] == ["bed1", "bed2"]


@pytest.mark.timeout(10)
def test_unresolvable_pump_host_among_channels_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as refused:
        build_config(
            _config(tmp_path, "modbus+tcp://pump.invalid:5020", "modbus+tcp://127.0.0.1:5020")
        )
    assert "\n" not in str(refused.value)
    assert "channels.pump" in str(refused.value)
    assert "pump.invalid" in str(refused.value)
