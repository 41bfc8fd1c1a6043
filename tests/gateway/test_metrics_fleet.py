"""/metrics for a fleet: Prometheus conventions, per-pump liveness, build info, the HL7 outbox.

A Gateway on a ManualClock drives the model pump (conftest ``model_gateway``); the exposition is
read as Prometheus would, with ``prometheus_client``'s own parser.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from gateway.api import create_app
from gateway.daemon import Gateway
from gateway.journal import SCHEMA_VERSION
from gateway.metrics import CYCLE_DURATION_BUCKETS, GatewayMetrics, link_up
from protocol.pump_state import PumpAlarm
from tests.gateway.conftest import API_CHANNEL, model_gateway
from tests.gateway.model_driver import ModelDriver

#: model_gateway polls every 60 s: a pump is "up" while heard within two polls.
POLL_S = 60.0
#: Every label name /metrics may use: none can carry patient data.
ALLOWED_LABELS = {"channel", "state", "code", "stops", "outcome", "le", "version", "journal_schema"}


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    gw = model_gateway(tmp_path)
    yield gw
    asyncio.run(gw.shutdown("test over"))


def ticks(gateway: Gateway, n: int) -> None:
    """``n`` control cycles one poll interval apart (the clock advances between them)."""
    for i in range(n):
        if i:
            gateway.clock.advance(POLL_S)  # type: ignore[attr-defined]
        asyncio.run(gateway.tick())


def exposition(gateway: Gateway) -> str:
    return gateway.metrics.render().decode()


def families(text: str) -> dict[str, Any]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def samples(text: str, name: str) -> list[Sample]:
    return [s for family in families(text).values() for s in family.samples if s.name == name]


def value(text: str, name: str, **labels: str) -> float:
    (found,) = [s.value for s in samples(text, name) if s.labels == labels]
    return float(found)


def model_driver(gateway: Gateway, channel: str = "bed1") -> ModelDriver:
    driver = gateway.channels[channel].driver
    assert isinstance(driver, ModelDriver)
    return driver


# -- control cycles --------------------------------------------------------------------------


def test_cycle_duration_histogram_counts_every_cycle(gateway: Gateway) -> None:
    ticks(gateway, 5)
    text = exposition(gateway)
    name = "infusion_gateway_cycle_duration_seconds"
    assert families(text)[name].type == "histogram"
    buckets = {s.labels["le"]: s.value for s in samples(text, f"{name}_bucket")}
    assert set(buckets) == {repr(float(b)) for b in CYCLE_DURATION_BUCKETS} | {"+Inf"}
    assert buckets["+Inf"] == 5.0
    counts = [buckets[repr(float(b))] for b in CYCLE_DURATION_BUCKETS] + [buckets["+Inf"]]
    assert counts == sorted(counts)  # cumulative
    assert value(text, f"{name}_count") == 5.0
    assert 0.0 < value(text, f"{name}_sum") < 5 * CYCLE_DURATION_BUCKETS[-1]
    # The last-cycle gauge is kept for existing dashboards.
    assert value(text, "infusion_gateway_last_cycle_real_seconds") > 0.0
    assert value(text, "infusion_gateway_control_cycles_total", outcome="ok") == 5.0


def test_failed_cycles_series_exists_at_zero_before_any_failure() -> None:
    # A counter series that first appears at 1 hides that failure from rate() and increase().
    text = GatewayMetrics().render().decode()
    assert value(text, "infusion_gateway_control_cycles_total", outcome="failed") == 0.0
    assert value(text, "infusion_gateway_control_cycles_total", outcome="ok") == 0.0


# -- pump liveness ---------------------------------------------------------------------------


def test_last_reply_is_the_wall_time_of_the_last_good_poll(gateway: Gateway) -> None:
    ticks(gateway, 3)
    heard_at = gateway.clock.wall()
    text = exposition(gateway)
    assert value(text, "infusion_gateway_pump_last_reply_timestamp_seconds", channel="bed1") == (
        heard_at
    )
    assert value(text, "infusion_gateway_pump_link_up", channel="bed1") == 1.0

    model_driver(gateway).silent = True
    gateway.clock.advance(POLL_S)  # type: ignore[attr-defined]
    asyncio.run(gateway.tick())
    text = exposition(gateway)
    assert value(text, "infusion_gateway_pump_last_reply_timestamp_seconds", channel="bed1") == (
        heard_at
    )
    assert value(text, "infusion_gateway_pump_link_up", channel="bed1") == 0.0

    model_driver(gateway).silent = False  # the pump answers again
    gateway.clock.advance(POLL_S)  # type: ignore[attr-defined]
    asyncio.run(gateway.tick())
    text = exposition(gateway)
    assert value(text, "infusion_gateway_pump_last_reply_timestamp_seconds", channel="bed1") == (
        gateway.clock.wall()
    )
    assert value(text, "infusion_gateway_pump_link_up", channel="bed1") == 1.0


def test_channels_are_read_when_scraped_so_a_stalled_loop_shows_its_links_down(
    gateway: Gateway, mocker: Any
) -> None:
    """The per-channel series are set from the channels' last published cycle when /metrics
    is read, not by the cycle: a control loop that stops ticking leaves its pumps' links
    judged against the time of the scrape, so they go down after two polls."""
    ticks(gateway, 2)
    channel = gateway.channels["bed1"]
    gauges = mocker.spy(channel, "gauges")
    asyncio.run(gateway.tick())  # a cycle reads none of the channel's gauges
    assert gauges.call_count == 0
    text = exposition(gateway)
    assert gauges.call_count == 1
    today = channel.snapshot()["days"][-1]
    assert value(text, "infusion_gateway_day_delivered_ml", channel="bed1") == today["delivered_ml"]
    assert value(text, "infusion_gateway_pump_link_up", channel="bed1") == 1.0

    gateway.clock.advance(2 * POLL_S + 1.0)  # type: ignore[attr-defined]  # no tick runs
    text = exposition(gateway)
    assert value(text, "infusion_gateway_pump_link_up", channel="bed1") == 0.0
    assert value(text, "infusion_gateway_day_delivered_ml", channel="bed1") == today["delivered_ml"]


def test_link_is_down_without_a_reply_within_two_polls_or_when_link_lost() -> None:
    heard = {"state": "infusing", "last_good_poll_wall_s": 1000.0}
    assert link_up(heard, now_wall_s=1000.0 + 2 * POLL_S, horizon_s=2 * POLL_S)
    assert not link_up(heard, now_wall_s=1000.1 + 2 * POLL_S, horizon_s=2 * POLL_S)
    assert not link_up({**heard, "state": "link_lost"}, now_wall_s=1000.0, horizon_s=2 * POLL_S)
    never = {"state": "starting", "last_good_poll_wall_s": None}
    assert not link_up(never, now_wall_s=1000.0, horizon_s=2 * POLL_S)


def test_a_pump_never_heard_is_down_with_a_zero_timestamp(tmp_path: Path) -> None:
    gateway = model_gateway(tmp_path)
    try:
        model_driver(gateway).silent = True
        asyncio.run(gateway.tick())
        text = exposition(gateway)
    finally:
        asyncio.run(gateway.shutdown("test over"))
    assert value(text, "infusion_gateway_pump_link_up", channel="bed1") == 0.0
    assert value(text, "infusion_gateway_pump_last_reply_timestamp_seconds", channel="bed1") == 0.0


# -- build info and the outbox ---------------------------------------------------------------


def test_info_names_the_version_and_the_journal_schema(gateway: Gateway) -> None:
    text = exposition(gateway)
    assert families(text)["infusion_gateway_info"].type == "gauge"
    version = importlib.metadata.version("infusion-gateway")
    labels = {"version": version, "journal_schema": str(SCHEMA_VERSION)}
    assert value(text, "infusion_gateway_info", **labels) == 1.0


def test_outbox_series_exist_at_zero_for_every_channel(tmp_path: Path) -> None:
    bed2 = {**API_CHANNEL, "id": "bed2", "pump": "modbus+tcp://127.0.0.1:2"}
    gateway = model_gateway(tmp_path, API_CHANNEL, bed2)
    try:
        asyncio.run(gateway.tick())
        text = exposition(gateway)
    finally:
        asyncio.run(gateway.shutdown("test over"))
    for channel in ("bed1", "bed2"):
        for name in (
            "infusion_gateway_outbox_backlog_messages",
            "infusion_gateway_outbox_last_ack_timestamp_seconds",
            "infusion_gateway_outbox_dropped_total",
            "infusion_gateway_outbox_rejected_total",
        ):
            assert value(text, name, channel=channel) == 0.0, (name, channel)


def test_outbox_methods_set_their_series() -> None:
    metrics = GatewayMetrics(channel_ids=["bed1"])
    text = metrics.render().decode()
    assert value(text, "infusion_gateway_outbox_backlog_messages", channel="bed1") == 0.0
    metrics.outbox_state("bed1", backlog=12, last_ack_s=1_767_225_600.0)
    metrics.outbox_state("bed1", backlog=3, last_ack_s=None)  # no new ack: the last one stays
    metrics.outbox_dropped("bed1", 2)
    metrics.outbox_rejected("bed1")
    metrics.outbox_rejected("bed2")  # a channel first seen here gets all its series
    text = metrics.render().decode()
    assert value(text, "infusion_gateway_outbox_backlog_messages", channel="bed1") == 3.0
    ack = value(text, "infusion_gateway_outbox_last_ack_timestamp_seconds", channel="bed1")
    assert ack == 1_767_225_600.0
    assert value(text, "infusion_gateway_outbox_dropped_total", channel="bed1") == 2.0
    assert value(text, "infusion_gateway_outbox_rejected_total", channel="bed1") == 1.0
    assert value(text, "infusion_gateway_outbox_rejected_total", channel="bed2") == 1.0
    assert value(text, "infusion_gateway_outbox_dropped_total", channel="bed2") == 0.0
    assert value(text, "infusion_gateway_outbox_backlog_messages", channel="bed2") == 0.0


# -- conventions -----------------------------------------------------------------------------


EXPECTED_TYPES = {
    "infusion_gateway_control_cycles": "counter",
    "infusion_gateway_outbox_dropped": "counter",
    "infusion_gateway_outbox_rejected": "counter",
    "infusion_gateway_cycle_duration_seconds": "histogram",
    "infusion_gateway_tick_lateness_seconds": "histogram",
    "infusion_gateway_pump_last_reply_timestamp_seconds": "gauge",
    "infusion_gateway_pump_link_up": "gauge",
    "infusion_gateway_info": "gauge",
    "infusion_gateway_outbox_backlog_messages": "gauge",
    "infusion_gateway_outbox_last_ack_timestamp_seconds": "gauge",
    "infusion_gateway_alarm_active": "gauge",
    "infusion_gateway_channel_state": "gauge",
    "infusion_gateway_last_cycle_real_seconds": "gauge",
}


def test_types_parse_as_prometheus_reads_them(gateway: Gateway) -> None:
    ticks(gateway, 2)
    model_driver(gateway).model.inject(PumpAlarm.OCCLUSION)  # so alarm_active has a series
    ticks(gateway, 1)
    found = {name: family.type for name, family in families(exposition(gateway)).items()}
    assert {name: found.get(name) for name in EXPECTED_TYPES} == EXPECTED_TYPES


def test_every_counter_ends_in_total_and_every_name_is_ours(gateway: Gateway) -> None:
    ticks(gateway, 2)
    text = exposition(gateway)
    declared = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    counters = [name for name, kind in declared.items() if kind == "counter"]
    assert counters, "no counters declared"
    assert all(name.endswith("_total") for name in counters), counters
    for family in families(text).values():
        assert family.name.startswith("infusion_gateway_"), family.name
        if family.type == "counter":
            for sample in family.samples:
                assert sample.name in (f"{family.name}_total", f"{family.name}_created")


def test_metrics_hold_no_patient_data(gateway: Gateway) -> None:
    ticks(gateway, 2)
    gateway.metrics.outbox_state("bed1", backlog=1, last_ack_s=None)
    with TestClient(create_app(gateway, None)) as client:
        response = client.get("/metrics")
    assert response.status_code == 200
    text = response.text
    for family in families(text).values():
        for sample in family.samples:
            assert set(sample.labels) <= ALLOWED_LABELS, sample
            if "channel" in sample.labels:
                assert sample.labels["channel"] == "bed1"
    lowered = text.lower()  # ("titer" may appear: the state awaiting_titer, the alarm titer_late)
    for secret in ("weight", "70.0", "igm", "hematocrit", "arm=", "patient", "modbus+tcp"):
        assert secret not in lowered, secret
    assert "127.0.0.1" not in text  # the pump's address
