"""Pump observations out: one IHE PCD-01 ORU^R01 per channel, when something changed or at the
configured interval, into the outbox (:mod:`gateway.outbox`) that forwards it.

Deciding is pure (:func:`observation_due`, :func:`observation_of`); :class:`ObservationPublisher`
runs after every control cycle on the control thread and only writes to the journal (the
outbox): the network is the sender thread's, so a dead or slow receiver delays no tick.

A channel sends an observation:

* on its first cycle;
* when its state changes (``infusing`` -> ``alarm`` ...) or its set of active alarms changes;
* otherwise every ``hl7.observation_interval_s`` (clock seconds).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from gateway.config import ChannelConfig, Hl7Config
from gateway.hl7_inbound import bound_patient, new_control_id
from gateway.hl7_messages import PumpObservation, build_observation
from gateway.journal import Journal
from gateway.outbox import Outbox

log = structlog.get_logger("gateway.hl7")


@dataclass(frozen=True)
class Sent:
    """What the last observation of a channel showed, and when it was queued."""

    state: str
    alarms: tuple[str, ...]
    wall_s: float


def observation_due(
    last: Sent | None, state: str, alarms: tuple[str, ...], now_s: float, interval_s: float
) -> bool:
    """Whether a channel in ``state`` with ``alarms`` sends an observation now."""
    if last is None or last.state != state or last.alarms != alarms:
        return True
    return now_s - last.wall_s >= interval_s


def _alarm_codes(snapshot: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(sorted(str(alarm["code"]) for alarm in snapshot.get("alarms") or ()))


def observation_of(
    snapshot: Mapping[str, Any], *, patient_id: str | None, bed: str | None, now_s: float
) -> PumpObservation:
    """A channel's status snapshot (``Channel.snapshot()``) as a PCD-01 observation."""
    today = snapshot["days"][-1] if snapshot.get("days") else None
    pump = snapshot.get("pump_status") or {}
    return PumpObservation(
        channel_id=str(snapshot["id"]),
        patient_id=patient_id,
        bed=bed,
        pump_state=str(pump.get("state") or "unknown"),
        channel_state=str(snapshot["state"]),
        commanded_rate_ml_per_h=snapshot.get("commanded_rate_ml_per_h"),
        readback_rate_ml_per_h=pump.get("rate_ml_per_h"),
        delivered_today_ml=float(today["delivered_ml"]) if today else 0.0,
        prescribed_today_ml=float(today["prescribed_ml"]) if today else None,
        ceiling_ml_per_h=snapshot.get("ceiling_ml_per_h"),
        alarms=_alarm_codes(snapshot),
        observed_at_s=now_s,
    )


class ObservationPublisher:
    """Queues each channel's observations into the outbox, after every control cycle."""

    def __init__(
        self,
        outbox: Outbox,
        hl7: Hl7Config,
        journal: Journal,
        channels: Iterable[ChannelConfig],
    ) -> None:
        self.outbox = outbox
        self.hl7 = hl7
        self.journal = journal
        self.channels = {c.id: c for c in channels}
        self._last: dict[str, Sent] = {}

    def after_cycle(self, snapshots: Iterable[Mapping[str, Any]], now_s: float) -> int:
        """Queue what is due; returns how many observations were queued."""
        queued = 0
        for snapshot in snapshots:
            channel = self.channels[str(snapshot["id"])]
            state, alarms = str(snapshot["state"]), _alarm_codes(snapshot)
            due = observation_due(
                self._last.get(channel.id), state, alarms, now_s, self.hl7.observation_interval_s
            )
            if not due:
                continue
            observation = observation_of(
                snapshot,
                patient_id=bound_patient(self.journal, channel),
                bed=channel.bed,
                now_s=now_s,
            )
            control_id = new_control_id()
            message = build_observation(
                observation,
                control_id=control_id,
                now_s=now_s,
                sending_application=self.hl7.sending_application,
                sending_facility=self.hl7.sending_facility,
            )
            self.outbox.put(channel.id, control_id, message)
            self._last[channel.id] = Sent(state, alarms, now_s)
            queued += 1
        return queued
