"""The shipped example config and systemd unit stay true to the code."""

from __future__ import annotations

import configparser
from pathlib import Path

from gateway.config import load_config

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_example_config_loads_and_keeps_safe_defaults() -> None:
    config = load_config(DEPLOY / "gateway.example.toml")
    assert config.time_scale == 1.0
    assert config.api is not None
    assert config.api.listen.startswith("127.0.0.1:")
    (channel,) = config.channels
    assert channel.ceiling_ml_per_kg_per_h == 0.4
    assert channel.pump.startswith("newera:///dev/ttyUSB0")


def test_systemd_unit_is_notify_with_watchdog_and_runs_the_example_path() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read(DEPLOY / "infusion-gateway.service")
    service = unit["Service"]
    assert service["Type"] == "notify"
    assert int(service["WatchdogSec"]) > 0
    assert "infusion-gateway run --config" in service["ExecStart"]
    assert service["KillSignal"] == "SIGTERM"
