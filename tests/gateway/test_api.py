"""The daemon's HTTP API: token on every write, field-level 4xx, status shape, health, metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from gateway.api import create_app
from gateway.config import build_config
from gateway.daemon import Gateway
from gateway.errors import ConfigError
from gateway.tokens import read_token_file
from protocol.clock import ManualClock
from protocol.pump_state import PumpAlarm
from simulator.model import PumpModel
from tests.gateway.conftest import RANDOMISED_AT, TITER_DRAWN_AT
from tests.gateway.model_driver import ModelDriver

TOKEN = "s3cret-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
#: Blood drawn 30 min before the ManualClock's start.
DRAWN = "2025-12-31T23:30:00Z"


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    clock = ManualClock()
    model = PumpModel(clock, max_rate_ml_per_h=200.0, reservoir_ml=5000.0)
    config = build_config(
        {
            "state_dir": str(tmp_path),
            "control": {"poll_interval_s": 60.0},
            "channels": [
                {
                    "id": "bed1",
                    "pump": "modbus+tcp://127.0.0.1:1",
                    "arm": "titer",
                    "weight_kg": 70.0,
                    "igm_mg_dl": 30.0,
                    "hematocrit": 0.35,
                    "randomised_at": RANDOMISED_AT,
                    "titer_measured_at": TITER_DRAWN_AT,
                }
            ],
        }
    )
    gw = Gateway(config, clock=clock, driver_factory=lambda url: ModelDriver(model))
    yield gw
    asyncio.run(gw.shutdown("test over"))


@pytest.fixture
def client(gateway: Gateway) -> Iterator[TestClient]:
    with TestClient(create_app(gateway, TOKEN)) as test_client:
        yield test_client


def test_health_before_and_after_first_cycle(gateway: Gateway, client: TestClient) -> None:
    assert client.get("/livez").status_code == 200
    not_ready = client.get("/readyz")
    assert not_ready.status_code == 503
    assert "no completed control cycle yet" in not_ready.json()["problems"]
    asyncio.run(gateway.tick())
    assert client.get("/readyz").json() == {"ready": True, "problems": []}


def test_status_lists_channels_with_days(gateway: Gateway, client: TestClient) -> None:
    asyncio.run(gateway.tick())
    body = client.get("/v1/channels").json()
    (channel,) = body["channels"]
    assert channel["id"] == "bed1"
    assert channel["state"] == "infusing"
    assert channel["alarms"] == []
    assert channel["days"][0]["day"] == 1
    assert channel["days"][0]["prescribed_ml"] == pytest.approx(371.583, abs=0.001)
    assert "delivered_ml" in channel["days"][0]
    assert client.get("/v1/channels/bed1").json()["id"] == "bed1"
    assert client.get("/v1/channels/bed9").status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        "/v1/channels/bed1/titers",
        "/v1/channels/bed1/weight",
        "/v1/channels/bed1/ack",
        "/v1/channels/bed1/stop",
        "/v1/channels/bed1/vasopressors-withdrawn",
    ],
)
def test_every_write_needs_the_token(client: TestClient, path: str) -> None:
    assert client.post(path, json={}).status_code == 401
    wrong = client.post(path, json={}, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401


def test_writes_refused_when_no_token_configured(gateway: Gateway) -> None:
    with TestClient(create_app(gateway, None)) as open_client:
        response = open_client.post("/v1/channels/bed1/ack", json={"operator": "x"}, headers=AUTH)
    assert response.status_code == 403


@pytest.mark.parametrize(
    ("path", "body", "field", "text"),
    [
        (
            "titers",
            {"igm_mg_dl": -1, "hematocrit": 0.35, "measured_at": DRAWN},
            "igm_mg_per_dl",
            "from 0 to 1000 mg/dL",
        ),
        (
            "titers",
            {"igm_mg_dl": 30, "hematocrit": 35, "measured_at": DRAWN},
            "hematocrit",
            "from 0.1 to 0.7",
        ),
        ("titers", {"igm_mg_dl": 30, "measured_at": DRAWN}, "hematocrit", "Field required"),
        ("titers", {"igm_mg_dl": 30, "hematocrit": 0.3}, "measured_at", "Field required"),
        (
            "titers",
            {"igm_mg_dl": 30, "hematocrit": 0.3, "measured_at": "2026-01-01T00:00:00"},
            "measured_at",
            "timezone",
        ),
        (
            "titers",
            {"igm_mg_dl": 30, "hematocrit": 0.3, "measured_at": "2026-01-11T00:00:00Z"},
            "measured_at",
            "at most 300 s after now",
        ),
        (
            "titers",
            {"igm_mg_dl": 0.3, "hematocrit": 0.3, "measured_at": DRAWN},
            "igm_mg_dl",
            "did you mean g/L? 0.3 g/L = 30 mg/dL",
        ),
        (
            "titers",
            {"igm_mg_dl": 30, "hematocrit": 0.3, "measured_at": DRAWN, "hct": 1},
            "hct",
            "Extra inputs",
        ),
        ("weight", {"weight_kg": 154}, "weight_kg", "did you mean pounds?"),
        ("weight", {"weight_kg": 154}, "weight_kg", 'send it again with "confirm": true'),
        ("weight", {"weight_kg": 300}, "weight_kg", "from 30 to 250 kg"),
        ("ack", {"operator": ""}, "operator", "at least 1 character"),
    ],
)
def test_invariant_7_bad_api_body_is_422_naming_the_field_and_changes_nothing(
    gateway: Gateway, client: TestClient, path: str, body: dict[str, object], field: str, text: str
) -> None:
    before = list(gateway.journal.events("bed1"))
    response = client.post(f"/v1/channels/bed1/{path}", json=body, headers=AUTH)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert any(field in [str(p) for p in d["loc"]] and text in d["msg"] for d in detail), detail
    assert list(gateway.journal.events("bed1")) == before


def test_accepted_titer_is_journalled_then_applied(gateway: Gateway, client: TestClient) -> None:
    response = client.post(
        "/v1/channels/bed1/titers",
        json={"igm_mg_dl": 55, "hematocrit": 0.3, "measured_at": DRAWN},
        headers=AUTH,
    )
    assert response.status_code == 202
    assert [e.payload["igm_mg_dl"] for e in gateway.journal.events("bed1", "titer_received")] == [
        55.0
    ]
    asyncio.run(gateway.tick())
    assert [e.payload["igm_mg_dl"] for e in gateway.journal.events("bed1", "titer")] == [55.0]


def test_metrics_are_prometheus_text(gateway: Gateway, client: TestClient) -> None:
    asyncio.run(gateway.tick())
    text = client.get("/metrics").text
    assert 'infusion_gateway_channel_state{channel="bed1",state="infusing"} 1.0' in text
    assert 'infusion_gateway_ceiling_ml_per_h{channel="bed1"} 28.0' in text
    assert 'infusion_gateway_control_cycles_total{outcome="ok"} 1.0' in text
    assert 'infusion_gateway_day_projected_shortfall_ml{channel="bed1"} 0.0' in text


def test_metrics_keep_a_cleared_alarm_at_zero(gateway: Gateway, client: TestClient) -> None:
    series = 'infusion_gateway_alarm_active{channel="bed1",code="pump_occlusion",stops="true"}'
    asyncio.run(gateway.tick())
    channel = gateway.channels["bed1"]
    driver = channel.driver
    assert isinstance(driver, ModelDriver)
    driver.model.inject(PumpAlarm.OCCLUSION)
    asyncio.run(gateway.tick())
    assert f"{series} 1.0" in client.get("/metrics").text
    driver.model.clear_condition(PumpAlarm.OCCLUSION)
    channel.submit_ack("nurse", "line checked")
    for _ in range(2):
        asyncio.run(gateway.tick())
    assert channel.state.value == "infusing"
    assert f"{series} 0.0" in client.get("/metrics").text


def test_token_file_must_hold_a_real_token(tmp_path: Path) -> None:
    short = tmp_path / "short"
    short.write_text("abc\n")
    with pytest.raises(ConfigError, match="at least 16 characters"):
        read_token_file(short)
    with pytest.raises(ConfigError, match="cannot read"):
        read_token_file(tmp_path / "missing")
    good = tmp_path / "token"
    good.write_text(TOKEN + "\n")
    assert read_token_file(good) == TOKEN
