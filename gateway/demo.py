"""``infusion-gateway demo``: the whole product on the built-in simulator, in virtual time.

The simulator runs in-process and is served over the real wire (NE-1000 on a pty, or Modbus
TCP on loopback); the daemon drives it through the same driver a real pump would get.  With
``link="in-process"`` (NE-1000 only) the driver's port is the simulator's in-process line
(:mod:`simulator.in_process`): the same bytes, answered on the daemon's thread, no pty and no
server thread, so a course runs about twice as fast (``bench/bench_course.py``).  Time is a
shared manual clock that the daemon advances one poll interval per cycle, so a 3-day course
takes seconds.  For the titer arm a virtual patient's morning titers are posted an hour before
each day begins; a virtual operator acknowledges alarms after a while, as a nurse would.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from drivers.base import PumpDriver
from drivers.newera import NeweraDriver
from gateway.channel import ChannelState
from gateway.config import GatewayConfig, build_config
from gateway.daemon import Gateway
from gateway.dosing import Arm, course_days_max
from gateway.journal import Journal
from gateway.planner import DAY_S, SECONDS_PER_HOUR
from gateway.timestamps import format_instant
from gateway.virtual_patient import VirtualPatient
from protocol.clock import ManualClock
from simulator.in_process import InProcessNewera
from simulator.model import PumpModel
from simulator.server import SimulatorServer, load_scenario, serve

CHANNEL_ID = "demo"

#: How the demo's daemon reaches its pump: over the wire, or on the simulator's in-process line.
DemoLink = Literal["wire", "in-process"]
DEMO_LINKS: tuple[DemoLink, ...] = ("wire", "in-process")


@dataclass(frozen=True)
class DemoOptions:
    arm: Arm = Arm.FLAT
    protocol: str = "newera"
    #: "in-process": the NE-1000 on the simulator's in-process line (not for Modbus).
    link: DemoLink = "wire"
    days: int | None = None
    faults: str | None = None
    weight_kg: float = 70.0
    igm_mg_dl: float = 30.0
    hematocrit: float = 0.35
    half_life_h: float = 72.0
    poll_interval_s: float = 60.0
    ack_after_s: float = 900.0
    pump_max_rate_ml_per_h: float = 100.0
    reservoir_ml: float = 5000.0
    state_dir: Path | None = None
    #: Confirm a weight or titer outside the soft limits (e.g. a 250-kg patient).
    confirm: bool = False
    #: Write the course report of the run here (.png, .svg or .html: gateway/report/).
    report: Path | None = None


Progress = Callable[[str], None]


def run_demo(options: DemoOptions, progress: Progress | None = None) -> dict[str, Any]:
    """Run the demo to the end of the course (or ``days``); return the summary."""
    if options.state_dir is not None:
        return _run(options, options.state_dir, progress)
    with tempfile.TemporaryDirectory(prefix="infusion-gateway-demo-") as tmp:
        return _run(options, Path(tmp), progress)


def _run(options: DemoOptions, state_dir: Path, progress: Progress | None) -> dict[str, Any]:
    days_wanted = options.days or course_days_max(options.arm)
    clock = ManualClock()
    model = PumpModel(
        clock, max_rate_ml_per_h=options.pump_max_rate_ml_per_h, reservoir_ml=options.reservoir_ml
    )
    if options.faults:
        model.schedule(load_scenario(options.faults))
    if options.link == "in-process":
        if options.protocol != "newera":
            raise ValueError(f"link 'in-process': NE-1000 only, not {options.protocol!r}")
        server: InProcessNewera | SimulatorServer = InProcessNewera(model)
    else:
        listen = "pty" if options.protocol == "newera" else "tcp://127.0.0.1:0"
        server = serve(model, protocol=options.protocol, listen=listen)
    try:
        channel: dict[str, Any] = {
            "id": CHANNEL_ID,
            "pump": server.pump_url,
            "arm": options.arm.value,
            "weight_kg": options.weight_kg,
            # The virtual patient was randomised an hour before the infusion starts.
            "randomised_at": format_instant(clock.wall() - SECONDS_PER_HOUR),
            "confirm": options.confirm,
        }
        if options.arm is Arm.TITER:
            channel.update(
                igm_mg_dl=options.igm_mg_dl,
                hematocrit=options.hematocrit,
                # The enrolment titer was drawn at randomisation.
                titer_measured_at=channel["randomised_at"],
            )
        config = build_config(
            {
                "state_dir": str(state_dir),
                "control": {
                    "poll_interval_s": options.poll_interval_s,
                    "request_timeout_s": 0.5,
                    "request_retries": 1,
                },
                "channels": [channel],
            },
            source="demo",
        )
        # Nothing else runs on the demo's loop: its one channel is stepped there directly.
        gateway = Gateway(
            config, clock=clock, step_in_loop=True, driver_factory=_driver_factory(server, config)
        )
        started = time.monotonic()
        driver = _DemoWorld(gateway, model, options, progress)
        asyncio.run(
            gateway.run(
                asyncio.Event(),
                until=lambda: driver.finished(days_wanted),
                after_tick=driver.after_tick,
            )
        )
        elapsed = time.monotonic() - started
        kept = str(state_dir) if options.state_dir else None
        summary = driver.summary(elapsed, days_wanted, kept)
    finally:
        server.close()
    if options.report is not None:
        from gateway.report.output import format_for, write_report  # matplotlib: only if asked

        write_report(state_dir, [(format_for(options.report), options.report)])
    return summary


def _driver_factory(
    server: InProcessNewera | SimulatorServer, config: GatewayConfig
) -> Callable[[str], PumpDriver] | None:
    """The daemon's own drivers over the wire (None); on the in-process line, an NE-1000 driver
    whose port is that line, with the request timeout and retries the daemon would give it."""
    if not isinstance(server, InProcessNewera):
        return None
    control = config.control

    def factory(url: str) -> PumpDriver:
        return NeweraDriver(
            url,
            link=server.open,
            timeout_s=control.request_timeout_s,
            retries=control.request_retries,
        )

    return factory


class _DemoWorld:
    """The virtual patient and the virtual operator around one channel."""

    def __init__(
        self, gateway: Gateway, model: PumpModel, options: DemoOptions, progress: Progress | None
    ) -> None:
        self.gateway = gateway
        self.channel = gateway.channels[CHANNEL_ID]
        self.model = model
        self.options = options
        self.progress = progress
        self.start_wall = gateway.clock.wall()
        self.patient = (
            VirtualPatient(
                options.weight_kg, options.hematocrit, options.igm_mg_dl, options.half_life_h
            )
            if options.arm is Arm.TITER
            else None
        )
        self.last_volume_ml = 0.0
        self.last_wall = self.start_wall
        self.titers_posted: list[dict[str, float]] = []
        self.alarm_since: float | None = None
        self.acks = 0
        self.next_report_h = 6.0

    def elapsed_s(self) -> float:
        return self.gateway.clock.wall() - self.start_wall

    def after_tick(self) -> None:
        now = self.gateway.clock.wall()
        volume = self.model.lifetime_volume_infused_ml()
        if self.patient is not None:
            self.patient.advance(
                (now - self.last_wall) / SECONDS_PER_HOUR, volume - self.last_volume_ml
            )
            self._maybe_post_titer()
        self.last_volume_ml, self.last_wall = volume, now
        self._maybe_acknowledge(now)
        hours = self.elapsed_s() / SECONDS_PER_HOUR
        if self.progress is not None and hours >= self.next_report_h:
            self.next_report_h += 6.0
            snap = self.channel.snapshot()
            today = (
                snap["days"][-1] if snap["days"] else {"prescribed_ml": 0.0, "delivered_ml": 0.0}
            )
            rate = snap["commanded_rate_ml_per_h"]
            self.progress(
                f"day {snap['day']} +{hours % 24:04.1f} h  {snap['state']:<14} "
                f"rate {rate if rate is not None else 0.0:6.2f} mL/h  "
                f"delivered {today['delivered_ml']:7.2f} / {today['prescribed_ml']:7.2f} mL"
                + (
                    f"  alarms: {', '.join(a['code'] for a in snap['alarms'])}"
                    if snap["alarms"]
                    else ""
                )
            )

    def _maybe_post_titer(self) -> None:
        assert self.patient is not None
        next_day = len(self.titers_posted) + 2  # day 1 uses the baseline titer
        if next_day > course_days_max(self.options.arm):
            return
        due_s = (next_day - 1) * DAY_S - SECONDS_PER_HOUR
        if self.elapsed_s() >= due_s:
            titer = round(self.patient.titer_mg_dl, 1)
            self.channel.submit_titer(titer, self.options.hematocrit, self.gateway.clock.wall())
            self.titers_posted.append({"for_day": next_day, "igm_mg_dl": titer})
            if self.progress:
                self.progress(f"morning titer for day {next_day}: {titer} mg/dL")

    def _maybe_acknowledge(self, now: float) -> None:
        if self.channel.state in (ChannelState.ALARM, ChannelState.LINK_LOST):
            if self.alarm_since is None:
                self.alarm_since = now
            elif (
                now - self.alarm_since >= self.options.ack_after_s
                and self.channel.state is ChannelState.ALARM
            ):
                self.channel.submit_ack("demo operator", "virtual nurse checked the pump")
                self.acks += 1
                self.alarm_since = now
                if self.progress:
                    self.progress("operator acknowledged the alarm")
        else:
            self.alarm_since = None

    def finished(self, days_wanted: int) -> bool:
        if self.channel.state is ChannelState.COMPLETED:
            return True
        return self.elapsed_s() >= days_wanted * DAY_S + self.options.poll_interval_s

    def summary(
        self, elapsed_real_s: float, days_wanted: int, state_dir: str | None
    ) -> dict[str, Any]:
        snap = self.channel.snapshot()
        days = [
            {
                "day": d["day"],
                "prescribed_ml": round(d["prescribed_ml"], 3),
                "dose_mg_per_kg": d["dose_mg_per_kg"],
                "day_rate_ml_per_h": d["day_rate_ml_per_h"],
                "day_rate_mg_per_kg_per_h": d["day_rate_mg_per_kg_per_h"],
                "titer_mg_dl": d["titer"]["igm_mg_dl"] if d["titer"] else None,
                "titer_drawn_at": d["titer"]["measured_at"] if d["titer"] else None,
                "delivered_ml": round(d["delivered_ml"], 3),
                "shortfall_ml": round(d["shortfall_ml"], 3)
                if d["shortfall_ml"] is not None
                else None,
                "notes": list(d["notes"]),
            }
            for d in snap["days"]
            if d["day"] <= days_wanted
        ]
        with Journal(self.gateway.config.state_dir) as journal:  # the daemon closed its own
            alarms = [
                {
                    "code": e.payload["code"],
                    "detail": e.payload["detail"],
                    "at_h": round((e.wall_s - self.start_wall) / SECONDS_PER_HOUR, 2),
                }
                for e in journal.events(CHANNEL_ID, "alarm")
            ]
        return {
            "arm": self.options.arm.value,
            "protocol": self.options.protocol,
            "weight_kg": self.options.weight_kg,
            "faults": self.options.faults,
            "days": days,
            "max_commanded_rate_ml_per_h": snap["max_commanded_rate_ml_per_h"],
            "ceiling_ml_per_h": snap["ceiling_ml_per_h"],
            "ceiling_mg_per_kg_per_h": snap["ceiling_mg_per_kg_per_h"],
            "alarms": alarms,
            "acknowledgements": self.acks,
            "titers_posted": self.titers_posted,
            "final_state": snap["state"],
            "lifetime_volume_infused_ml": round(
                self.model.snapshot().lifetime_volume_infused_ml, 3
            ),
            "elapsed_real_s": round(elapsed_real_s, 2),
            "state_dir": state_dir,
        }
