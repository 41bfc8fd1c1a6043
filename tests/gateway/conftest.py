"""Fixtures for control-logic tests: a channel on a model-backed driver and a manual clock."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.channel import Channel
from gateway.config import ChannelConfig, ControlConfig, build_config
from gateway.daemon import Gateway
from gateway.journal import Journal
from protocol.clock import ManualClock
from simulator.model import PumpModel
from tests.gateway.model_driver import ModelDriver

#: Control-logic tests poll every 5 simulated minutes: 288 cycles a day.
STEP_S = 300.0
#: The test patients were randomised an hour before a ManualClock starts (2026-01-01T00:00Z).
RANDOMISED_AT = "2025-12-31T23:00:00Z"
#: ... and their baseline titer drawn half an hour before it.
TITER_DRAWN_AT = "2025-12-31T23:30:00Z"


@dataclass
class Rig:
    clock: ManualClock
    model: PumpModel
    driver: ModelDriver
    journal: Journal
    channel: Channel
    state_dir: Path

    def run(self, seconds: float, step_s: float = STEP_S) -> None:
        """Step the channel, advancing the clock, for ``seconds`` of virtual time."""
        end = self.clock.monotonic() + seconds
        while self.clock.monotonic() < end - 1e-9:
            self.channel.step()
            self.clock.advance(step_s)

    def restart(self) -> Channel:
        """A new process: new driver and channel on the same journal and pump."""
        self.driver.close()
        self.journal.close()
        self.journal = Journal(self.state_dir)
        self.driver = ModelDriver(self.model, timeout_s=0.1, retries=0)
        self.channel = Channel(
            self.channel.config,
            self.driver,
            self.journal,
            self.clock,
            self.channel.control,
            pump_watchdog_s=self.channel.pump_watchdog_s,
        )
        return self.channel

    def titer(self, igm_mg_dl: float, hematocrit: float = 0.35, **options: Any) -> str:
        """Post a titer drawn now."""
        return self.channel.submit_titer(igm_mg_dl, hematocrit, self.clock.wall(), **options)

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [e.payload for e in self.journal.events("bed1", kind)]


@pytest.fixture
def make_rig(tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    rigs: list[Rig] = []

    def make(
        *,
        control: ControlConfig | None = None,
        max_rate_ml_per_h: float = 200.0,
        reservoir_ml: float = 10_000.0,
        **config: Any,
    ) -> Rig:
        clock = ManualClock()
        model = PumpModel(clock, max_rate_ml_per_h=max_rate_ml_per_h, reservoir_ml=reservoir_ml)
        driver = ModelDriver(model, timeout_s=0.1, retries=0)
        journal = Journal(tmp_path / f"state{len(rigs)}")
        settings: dict[str, Any] = {
            "id": "bed1",
            "pump": "modbus+tcp://127.0.0.1:1",
            "arm": "flat",
            "weight_kg": 70.0,
            "randomised_at": RANDOMISED_AT,
        }
        settings.update(config)
        if settings["arm"] == "titer":
            settings.setdefault("titer_measured_at", TITER_DRAWN_AT)
        channel = Channel(
            ChannelConfig(**settings),
            driver,
            journal,
            clock,
            control or ControlConfig(),
            pump_watchdog_s=3 * STEP_S,
        )
        rig = Rig(clock, model, driver, journal, channel, tmp_path / f"state{len(rigs)}")
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        rig.driver.close()
        rig.journal.close()


#: The titer-arm channel the API tests drive (a model pump behind a placeholder URL).
API_CHANNEL: dict[str, Any] = {
    "id": "bed1",
    "pump": "modbus+tcp://127.0.0.1:1",
    "arm": "titer",
    "weight_kg": 70.0,
    "igm_mg_dl": 30.0,
    "hematocrit": 0.35,
    "randomised_at": RANDOMISED_AT,
    "titer_measured_at": TITER_DRAWN_AT,
}


def model_gateway(state_dir: Path, *channels: dict[str, Any]) -> Gateway:
    """A Gateway on a ManualClock whose channels all drive one model pump (API tests)."""
    clock = ManualClock()
    model = PumpModel(clock, max_rate_ml_per_h=200.0, reservoir_ml=5000.0)
    config = build_config(
        {
            "state_dir": str(state_dir),
            "control": {"poll_interval_s": 60.0},
            "channels": list(channels) or [API_CHANNEL],
        }
    )
    return Gateway(config, clock=clock, driver_factory=lambda url: ModelDriver(model))
