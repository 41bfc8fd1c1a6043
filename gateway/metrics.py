"""Prometheus metrics for clinical IT: one registry per gateway (no global state).

Conventions (Prometheus's naming practice): names start ``infusion_gateway_``,
times are seconds (durations) or Unix seconds (``..._timestamp_seconds``), counters end in
``_total``, and every labelled series a rule needs exists from the first scrape (at 0), so a
rule sees it change rather than appear.  Volumes and rates keep the clinical units their
names say (mL, mL/h): Prometheus has no base unit for volume.

No patient data: labels are channel ids, states, alarm codes, outcomes and the software's
version only (never a weight, arm, titer, patient id or pump address).
"""

from __future__ import annotations

import importlib.metadata
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from gateway.channel import ChannelState
from gateway.journal import SCHEMA_VERSION

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: The distribution this gateway is installed as (its version labels ``infusion_gateway_info``).
DISTRIBUTION = "infusion-gateway"
#: Control-cycle duration buckets (real seconds): a cycle is a few pump requests per channel; a
#: pump that does not answer costs its request timeouts and retries.
CYCLE_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: Outcomes of a control cycle (``infusion_gateway_control_cycles_total{outcome}``).
CYCLE_OUTCOMES = ("ok", "failed")


def installed_version() -> str:
    """This gateway's version as installed, or ``unknown`` when run from an uninstalled tree."""
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def link_up(snap: Mapping[str, Any], now_wall_s: float, horizon_s: float) -> bool:
    """The channel heard its pump within ``horizon_s`` and is not in ``link_lost``.

    The same test as the daemon's readiness check (two poll intervals).
    """
    last = snap.get("last_good_poll_wall_s")
    return (
        snap.get("state") != ChannelState.LINK_LOST.value
        and last is not None
        and now_wall_s - float(last) <= horizon_s
    )


@dataclass(frozen=True)
class ChannelReadings:
    """What the per-channel series are set from when the metrics are read: each channel's
    gauges (:meth:`gateway.channel.Channel.gauges`), the gateway clock's wall time and the
    link horizon (two poll intervals); see :meth:`GatewayMetrics.read_channels_from`."""

    gauges: list[dict[str, Any]]
    now_wall_s: float | None = None
    link_horizon_s: float | None = None


@dataclass(frozen=True)
class _ChannelSeries:
    """One channel's labelled series, set from its last cycle each time the metrics are read."""

    states: tuple[tuple[str, Gauge], ...]
    #: rate, ceiling, day, prescribed, delivered, alarms, projected_shortfall, in that order.
    values: tuple[Gauge, ...]
    rate: Gauge
    ceiling: Gauge
    day: Gauge
    prescribed: Gauge
    delivered: Gauge
    alarms: Gauge
    projected_shortfall: Gauge
    last_reply: Gauge
    link: Gauge


class GatewayMetrics:
    def __init__(self, channel_ids: Iterable[str] = ()) -> None:
        self.registry = CollectorRegistry()
        self._series: dict[str, _ChannelSeries] = {}
        #: Alarm series once set stay exported (at 0 when cleared), so a rule sees them end.
        self._alarms_seen: dict[str, set[tuple[str, str]]] = {}
        #: Per channel, the state and the active alarms the series show (they are set again
        #: only when that changes: a cycle that changes neither sets none of their series).
        self._state_shown: dict[str, str] = {}
        #: Per channel, the values the per-cycle series show (see :meth:`update`).
        self._values_shown: dict[str, tuple[float, ...]] = {}
        self._alarms_shown: dict[str, set[tuple[str, str]]] = {}
        self._channels: set[str] = set()
        #: Where :meth:`render` reads the channels (None: only what :meth:`update` was given).
        self._channel_source: Callable[[], ChannelReadings] | None = None
        #: One render at a time sets the series and reads them (two scrapes at once, say).
        self._render_lock = threading.Lock()
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
        # Exposed as infusion_gateway_control_cycles_total (the client adds _total either way).
        self.cycles = Counter(
            "infusion_gateway_control_cycles_total",
            "Control cycles run",
            ["outcome"],
            registry=r,
        )
        # Both from the start (rate() sees the first failure), looked up once: ok -> its child.
        self._cycle_outcomes = {
            outcome == "ok": self.cycles.labels(outcome) for outcome in CYCLE_OUTCOMES
        }
        self.cycle_duration = Histogram(
            "infusion_gateway_cycle_duration_seconds",
            "Real seconds each control cycle took (every channel polled, decided and acted)",
            buckets=CYCLE_DURATION_BUCKETS,
            registry=r,
        )
        #: Kept for dashboards made before the histogram: the last cycle only.
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
        self.last_reply = Gauge(
            "infusion_gateway_pump_last_reply_timestamp_seconds",
            "Unix time of the pump's last good reply, on the gateway's clock (simulated time"
            " under time_scale); 0 until the first",
            ["channel"],
            registry=r,
        )
        self.link = Gauge(
            "infusion_gateway_pump_link_up",
            "1 while the pump answered within two poll intervals and the channel is not"
            " link_lost, else 0",
            ["channel"],
            registry=r,
        )
        self.info = Gauge(
            "infusion_gateway_info",
            "Always 1: the gateway's version and the journal schema version it reads",
            ["version", "journal_schema"],
            registry=r,
        )
        self.info.labels(installed_version(), str(SCHEMA_VERSION)).set(1.0)
        # The HL7 outbox (results to the hospital's interface engine), per channel.
        self.outbox_backlog = Gauge(
            "infusion_gateway_outbox_backlog_messages",
            "Messages waiting in the channel's HL7 outbox (not yet acknowledged)",
            ["channel"],
            registry=r,
        )
        self.outbox_last_ack = Gauge(
            "infusion_gateway_outbox_last_ack_timestamp_seconds",
            "Unix time of the last message the receiver acknowledged; 0 until the first",
            ["channel"],
            registry=r,
        )
        self.outbox_dropped_count = Counter(
            "infusion_gateway_outbox_dropped_total",
            "Outbox messages given up on (never delivered)",
            ["channel"],
            registry=r,
        )
        self.outbox_rejected_count = Counter(
            "infusion_gateway_outbox_rejected_total",
            "Outbox messages the receiver refused (HL7 AE/AR acknowledgements)",
            ["channel"],
            registry=r,
        )
        for channel in channel_ids:
            self._add_channel(channel)

    def _add_channel(self, channel: str) -> None:
        """Make the channel's series that have no value of their own yet exist, at 0."""
        if channel in self._channels:
            return
        self._channels.add(channel)
        for metric in (
            self.last_reply,
            self.link,
            self.outbox_backlog,
            self.outbox_last_ack,
            self.outbox_dropped_count,
            self.outbox_rejected_count,
        ):
            metric.labels(channel)

    # -- the control loop ------------------------------------------------------------------

    def cycle_done(self, ok: bool, duration_s: float) -> None:
        """One control cycle ended: its outcome and how long it took (real seconds)."""
        self._cycle_outcomes[ok].inc()
        self.cycle_duration.observe(max(duration_s, 0.0))
        self.cycle_seconds.set(duration_s)

    def update(
        self,
        snapshots: Iterable[dict[str, Any]],
        *,
        now_wall_s: float | None = None,
        link_horizon_s: float | None = None,
    ) -> None:
        """Per-channel series from the channels' snapshots.

        ``now_wall_s`` and ``link_horizon_s`` (the gateway clock's wall time and two poll
        intervals) decide ``infusion_gateway_pump_link_up``; without them a channel's link is up
        when it is not ``link_lost`` and has heard its pump at all.
        """
        for snap in snapshots:
            channel = snap["id"]
            series = self._series.get(channel) or self._add_series(channel)
            current = snap["state"]
            if self._state_shown.get(channel) != current:
                for state, child in series.states:
                    child.set(1.0 if current == state else 0.0)
                self._state_shown[channel] = current
            today = snap["days"][-1] if snap["days"] else None
            values = (
                snap["commanded_rate_ml_per_h"] or 0.0,
                snap["ceiling_ml_per_h"] or 0.0,
                snap["day"],
                today["prescribed_ml"] if today else 0.0,
                today["delivered_ml"] if today else 0.0,
                len(snap["alarms"]),
                (today or {}).get("projected_shortfall_ml") or 0.0,
            )
            # Set only what changed (a set takes the series' lock): most cycles, the delivered
            # volume and the projected shortfall.
            shown = self._values_shown.get(channel)
            for index, (gauge, value) in enumerate(zip(series.values, values, strict=True)):
                if shown is None or shown[index] != value:
                    gauge.set(value)
            self._values_shown[channel] = values
            active = {(a["code"], str(a["stops"]).lower()) for a in snap["alarms"]}
            seen = self._alarms_seen.get(channel, set())
            if self._alarms_shown.get(channel) != active and (active or seen):
                self._alarms_shown[channel] = active
                for code, stops in active | seen:
                    self.alarm.labels(channel, code, stops).set(
                        1.0 if (code, stops) in active else 0.0
                    )
                self._alarms_seen[channel] = seen | active
            last = snap.get("last_good_poll_wall_s")
            if last is not None:
                series.last_reply.set(float(last))
            if now_wall_s is None or link_horizon_s is None:
                up = snap.get("state") != ChannelState.LINK_LOST.value and last is not None
            else:
                up = link_up(snap, now_wall_s, link_horizon_s)
            series.link.set(1.0 if up else 0.0)

    def _add_series(self, channel: str) -> _ChannelSeries:
        """The channel's per-cycle series, looked up once (``labels()`` takes a lock and
        builds a key each call: 19 calls per channel per cycle at 64 channels add up)."""
        self._add_channel(channel)
        values = tuple(
            metric.labels(channel)
            for metric in (
                self.rate,
                self.ceiling,
                self.day,
                self.prescribed,
                self.delivered,
                self.alarms,
                self.projected_shortfall,
            )
        )
        rate, ceiling, day, prescribed, delivered, alarms, projected_shortfall = values
        series = _ChannelSeries(
            states=tuple(
                (state.value, self.state.labels(channel, state.value)) for state in ChannelState
            ),
            values=values,
            rate=rate,
            ceiling=ceiling,
            day=day,
            prescribed=prescribed,
            delivered=delivered,
            alarms=alarms,
            projected_shortfall=projected_shortfall,
            last_reply=self.last_reply.labels(channel),
            link=self.link.labels(channel),
        )
        self._series[channel] = series
        return series

    # -- the HL7 outbox --------------------------------------------------------------------

    def outbox_state(self, channel: str, backlog: int, last_ack_s: float | None) -> None:
        """The outbox's backlog (messages) and the Unix time of its last ack (None: none yet)."""
        self._add_channel(channel)
        self.outbox_backlog.labels(channel).set(float(backlog))
        if last_ack_s is not None:
            self.outbox_last_ack.labels(channel).set(float(last_ack_s))

    def outbox_dropped(self, channel: str, n: int = 1) -> None:
        """``n`` messages given up on (never to be delivered)."""
        self._add_channel(channel)
        self.outbox_dropped_count.labels(channel).inc(n)

    def outbox_rejected(self, channel: str, n: int = 1) -> None:
        """``n`` messages the receiver refused."""
        self._add_channel(channel)
        self.outbox_rejected_count.labels(channel).inc(n)

    def read_channels_from(self, source: Callable[[], ChannelReadings]) -> None:
        """Set the per-channel series from ``source()`` each time the metrics are read
        (:meth:`render`), not after every control cycle: a cycle then spends nothing on them,
        and a scrape shows the channels as their last cycle left them, with the link's age
        judged at the time of the scrape.  ``source`` runs on the reader's thread: it must only
        read what the cycles publish (:meth:`gateway.channel.Channel.gauges` does)."""
        self._channel_source = source

    def render(self) -> bytes:
        with self._render_lock:
            if self._channel_source is not None:
                readings = self._channel_source()
                self.update(
                    readings.gauges,
                    now_wall_s=readings.now_wall_s,
                    link_horizon_s=readings.link_horizon_s,
                )
            return generate_latest(self.registry)
