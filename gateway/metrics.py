"""Prometheus metrics for clinical IT: one registry per gateway (no global state)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from gateway.channel import ChannelState

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        #: Alarm series once set stay exported (at 0 when cleared), so a rule sees them end.
        self._alarms_seen: dict[str, set[tuple[str, str]]] = {}
        r = self.registry
        self.state = Gauge(
            "infusion_gateway_channel_state",
            "1 for the channel's current state",
            ["channel", "state"],
            registry=r,
        )
        self.rate = Gauge(
            "infusion_gateway_commanded_rate_ml_per_h",
            "Rate last commanded and read back (mL/h)",
            ["channel"],
            registry=r,
        )
        self.ceiling = Gauge(
            "infusion_gateway_ceiling_ml_per_h", "Rate ceiling (mL/h)", ["channel"], registry=r
        )
        self.prescribed = Gauge(
            "infusion_gateway_day_prescribed_ml",
            "Volume prescribed for the current day (mL)",
            ["channel"],
            registry=r,
        )
        self.delivered = Gauge(
            "infusion_gateway_day_delivered_ml",
            "Volume delivered in the current day, from the pump totalizer (mL)",
            ["channel"],
            registry=r,
        )
        self.day = Gauge(
            "infusion_gateway_course_day", "Current day of the course", ["channel"], registry=r
        )
        self.alarms = Gauge(
            "infusion_gateway_alarms_active", "Active alarms", ["channel"], registry=r
        )
        self.projected_shortfall = Gauge(
            "infusion_gateway_day_projected_shortfall_ml",
            "Volume of the running day that cannot be given by its window's end (mL)",
            ["channel"],
            registry=r,
        )
        self.alarm = Gauge(
            "infusion_gateway_alarm_active",
            "1 while the alarm is active; stops=false for advisories that keep the pump running",
            ["channel", "code", "stops"],
            registry=r,
        )
        self.cycles = Counter(
            "infusion_gateway_control_cycles", "Control cycles run", ["outcome"], registry=r
        )
        self.cycle_seconds = Gauge(
            "infusion_gateway_last_cycle_real_seconds",
            "Real seconds the last control cycle took",
            registry=r,
        )
        self.tick_lateness = Histogram(
            "infusion_gateway_tick_lateness_seconds",
            "Real seconds a control cycle started after it was due (the API never delays it)",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=r,
        )

    def update(self, snapshots: Iterable[dict[str, Any]]) -> None:
        for snap in snapshots:
            channel = snap["id"]
            for state in ChannelState:
                self.state.labels(channel, state.value).set(
                    1.0 if snap["state"] == state.value else 0.0
                )
            self.rate.labels(channel).set(snap["commanded_rate_ml_per_h"] or 0.0)
            self.ceiling.labels(channel).set(snap["ceiling_ml_per_h"] or 0.0)
            self.day.labels(channel).set(snap["day"])
            today = snap["days"][-1] if snap["days"] else None
            self.prescribed.labels(channel).set(today["prescribed_ml"] if today else 0.0)
            self.delivered.labels(channel).set(today["delivered_ml"] if today else 0.0)
            self.alarms.labels(channel).set(len(snap["alarms"]))
            self.projected_shortfall.labels(channel).set(
                (today or {}).get("projected_shortfall_ml") or 0.0
            )
            active = {(a["code"], str(a["stops"]).lower()) for a in snap["alarms"]}
            for code, stops in active | self._alarms_seen.get(channel, set()):
                self.alarm.labels(channel, code, stops).set(1.0 if (code, stops) in active else 0.0)
            self._alarms_seen[channel] = self._alarms_seen.get(channel, set()) | active

    def render(self) -> bytes:
        return generate_latest(self.registry)
