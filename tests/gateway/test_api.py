"""The daemon's HTTP API: token on every write, field-level 4xx, status shape, health, metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from gateway.api import create_app
from gateway.daemon import Gateway
from protocol.pump_state import PumpAlarm
from tests.gateway.conftest import model_gateway
from tests.gateway.model_driver import ModelDriver

TOKEN = "s3cret-token-for-tests-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
#: Blood drawn 30 min before the ManualClock's start.
DRAWN = "2025-12-31T23:30:00Z"


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    gw = model_gateway(tmp_path)
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
    body = client.get("/v1/channels", headers=AUTH).json()
    (channel,) = body["channels"]
    assert channel["id"] == "bed1"
    assert channel["state"] == "infusing"
    assert channel["alarms"] == []
    assert channel["days"][0]["day"] == 1
    assert channel["days"][0]["prescribed_ml"] == pytest.approx(371.583, abs=0.001)
    assert "delivered_ml" in channel["days"][0]
    assert client.get("/v1/channels/bed1", headers=AUTH).json()["id"] == "bed1"
    assert client.get("/v1/channels/bed9", headers=AUTH).status_code == 404


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
@pytest.mark.hazard("H-AU-01")
def test_every_write_needs_the_token(client: TestClient, path: str) -> None:
    assert client.post(path, json={}).status_code == 401
    wrong = client.post(path, json={}, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401


@pytest.mark.hazard("H-AU-01")
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
@pytest.mark.hazard("H-IN-01")
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
