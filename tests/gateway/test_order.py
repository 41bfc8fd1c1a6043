"""A channel configured with its pump only waits for an order, which comes over the API."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from gateway.api import create_app
from gateway.channel import ChannelState
from gateway.config import build_config
from gateway.daemon import Gateway
from gateway.tokens import TokenSource
from protocol.clock import ManualClock
from protocol.pump_state import PumpState
from simulator.model import PumpModel
from tests.gateway.conftest import RANDOMISED_AT, TITER_DRAWN_AT
from tests.gateway.model_driver import ModelDriver
from tests.gateway.token_files import write_token_file

TOKEN = "order-test-token-0123456789-abcdefghij"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[tuple[Gateway, PumpModel, TestClient]]:
    clock = ManualClock()
    model = PumpModel(clock, max_rate_ml_per_h=200.0, reservoir_ml=5000.0)
    config = build_config(
        {
            "state_dir": str(tmp_path),
            "control": {"poll_interval_s": 60.0},
            "channels": [{"id": "bed1", "pump": "modbus+tcp://127.0.0.1:1"}],
        }
    )
    gateway = Gateway(config, clock=clock, driver_factory=lambda url: ModelDriver(model))
    token = TokenSource(write_token_file(tmp_path / "token", TOKEN))
    with TestClient(create_app(gateway, token)) as client:
        yield gateway, model, client
    asyncio.run(gateway.shutdown("test over"))


@pytest.mark.hazard("H-OV-10")
def test_channel_without_order_waits_with_the_pump_stopped(
    rig: tuple[Gateway, PumpModel, TestClient],
) -> None:
    gateway, model, client = rig
    asyncio.run(gateway.tick())
    snap = client.get("/v1/channels/bed1", headers=AUTH).json()
    assert snap["state"] == "awaiting_order"
    assert snap["ceiling_ml_per_h"] is None
    assert model.snapshot().state is PumpState.STOPPED


def test_order_over_the_api_starts_the_course(rig: tuple[Gateway, PumpModel, TestClient]) -> None:
    gateway, model, client = rig
    asyncio.run(gateway.tick())
    body = {
        "arm": "titer",
        "weight_kg": 70,
        "igm_mg_dl": 30,
        "hematocrit": 0.35,
        "randomised_at": RANDOMISED_AT,
        "titer_measured_at": TITER_DRAWN_AT,
    }
    assert client.post("/v1/channels/bed1/order", json=body, headers=AUTH).status_code == 202
    asyncio.run(gateway.tick())
    snap = client.get("/v1/channels/bed1", headers=AUTH).json()
    assert snap["state"] == "infusing"
    assert snap["days"][0]["prescribed_ml"] == pytest.approx(371.583, abs=0.001)
    assert model.snapshot().state is PumpState.INFUSING
    # A second order while a course runs is a conflict, not a silent replacement.
    again = client.post("/v1/channels/bed1/order", json=body, headers=AUTH)
    assert again.status_code == 409
    assert "awaiting_order" in again.json()["detail"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"arm": "titer", "weight_kg": 70, "igm_mg_dl": 30}, "hematocrit"),
        (
            {
                "arm": "titer",
                "weight_kg": 70,
                "igm_mg_dl": 30,
                "hematocrit": 0.35,
                "randomised_at": "2025-12-31T23:00:00Z",
            },
            "titer_measured_at",
        ),
        ({"arm": "flat", "weight_kg": 20}, "weight_kg"),
        (
            {"arm": "flat", "weight_kg": 70, "ceiling_ml_per_kg_per_h": 0.5},
            "ceiling_ml_per_kg_per_h",
        ),
        ({"arm": "bolus", "weight_kg": 70}, "arm"),
        ({"arm": "flat", "weight_kg": 70, "wieght": 1}, "wieght"),
    ],
)
@pytest.mark.hazard("H-IN-01")
def test_invariant_7_bad_order_is_422_and_changes_nothing(
    rig: tuple[Gateway, PumpModel, TestClient], body: dict[str, object], field: str
) -> None:
    gateway, _, client = rig
    response = client.post("/v1/channels/bed1/order", json=body, headers=AUTH)
    assert response.status_code == 422
    assert field in str(response.json()["detail"])
    asyncio.run(gateway.tick())
    assert gateway.channels["bed1"].state is ChannelState.AWAITING_ORDER


@pytest.mark.hazard("H-OV-10")
def test_pump_running_without_an_order_is_stopped_and_alarmed(
    rig: tuple[Gateway, PumpModel, TestClient],
) -> None:
    gateway, model, client = rig
    model.set_rate(10.0)
    model.start()  # someone started it at the keypad
    asyncio.run(gateway.tick())
    assert model.snapshot().state is PumpState.STOPPED
    assert [a["code"] for a in client.get("/v1/channels/bed1", headers=AUTH).json()["alarms"]] == [
        "state_mismatch"
    ]
