"""One channel: one patient's course on one pump, driven one control cycle at a time.

:meth:`Channel.step` is one cycle: apply what operators sent, poll the pump, account delivered
volume from the pump's own totalizer, verify the readback, move through day windows, and
command the planned rate through the one safety check.  The daemon calls it every poll
interval; tests call it directly on a manual clock, so a 7-day course runs in seconds.

The safety invariants this module carries (ARCHITECTURE.md):

3. Readback: after each command and on each poll the pump's rate and state are compared with
   what was commanded; above the ceiling, or off by more than one step -> stop and alarm.
4. Never over-deliver: the pump's VTBI is set to what remains of the day; the channel accounts
   from the pump's totalizer; catch-up is ``min(ceiling, remaining / remaining time)``.
5. Fail safe on silence: the pump's own watchdog is armed; a silent pump is alarmed on the
   first failed poll (within two intervals) and not resumed without an acknowledgement or the
   bounded auto-resume rule.
6. Crash-safe: every decision is journalled before it is acted on; a restarted channel
   reconciles with the totalizer and never restarts a day from zero.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import structlog

from drivers.base import PumpDriver
from drivers.errors import DriverError
from drivers.status import PumpStatus
from gateway.config import ChannelConfig, ControlConfig, OrderConfig
from gateway.dosing import (
    Arm,
    DailyDose,
    Product,
    course_days_max,
    flat_daily_dose,
    titer_daily_dose,
    validate_hematocrit,
    validate_titer_mg_per_dl,
)
from gateway.errors import GatewayError, InputError
from gateway.journal import Journal
from gateway.planner import DAY_S, SECONDS_PER_HOUR, check_start_delay, day_window, plan_rate
from gateway.safety import RateRefusedError, ceiling_ml_per_h, check_rate, validate_weight_kg
from protocol.clock import Clock
from protocol.pump_state import STOPPING_ALARMS, PumpAlarm, PumpState

log = structlog.get_logger("gateway.channel")

#: Volumes below this are "nothing left" (mL): the pump's own volume resolution.
VOLUME_EPSILON_ML = 0.01
#: A day may end this much over its prescription (rounding, one poll of lag) before it alarms.
OVER_DELIVERY_TOLERANCE = 0.005
#: Re-command the rate when the plan moves by more than this fraction (and two pump steps).
REPLAN_FRACTION = 0.005
#: No re-planning of a running infusion in the last this-many seconds of a day window.
REPLAN_QUIET_S = 1800.0


class ChannelBusyError(GatewayError):
    """The channel cannot take this input in its present state (the API answers 409)."""


class ChannelState(StrEnum):
    """What the channel is doing, as reported by ``status``."""

    AWAITING_ORDER = "awaiting_order"
    STARTING = "starting"
    INFUSING = "infusing"
    DAY_COMPLETE = "day_complete"
    AWAITING_TITER = "awaiting_titer"
    ALARM = "alarm"
    LINK_LOST = "link_lost"
    STOPPED = "stopped"
    COMPLETED = "completed"


class AlarmCode(StrEnum):
    """Gateway alarms.  Pump alarms are reported as ``pump_<name>``."""

    PUMP_SILENT = "pump_silent"
    RATE_ABOVE_CEILING = "rate_above_ceiling"
    RATE_MISMATCH = "rate_mismatch"
    STATE_MISMATCH = "state_mismatch"
    SAFETY_REFUSED = "safety_refused"
    PUMP_REFUSED = "pump_refused"
    TOTALIZER_WENT_BACK = "totalizer_went_back"
    OVER_DELIVERY = "over_delivery"
    UNSUPPORTED_PUMP = "unsupported_pump"
    LOW_BATTERY = "pump_low_battery"
    START_WINDOW_EXCEEDED = "start_window_exceeded"


#: Pump alarms that an automatic resume may clear: the pump's watchdog stopped it while the
#: link was down.  Anything else needs a person at the bedside.
AUTO_RESUMABLE_PUMP_ALARMS = frozenset({PumpAlarm.COMM_TIMEOUT})

#: Channel states in which the pump should be infusing.
_RUNNING = frozenset({ChannelState.INFUSING})


@dataclass(frozen=True)
class Titer:
    igm_mg_dl: float
    hematocrit: float
    measured_wall_s: float


class Channel:
    """A course on one pump.  ``step()`` from one thread; the ``submit_*`` methods from any."""

    def __init__(
        self,
        config: ChannelConfig,
        driver: PumpDriver,
        journal: Journal,
        clock: Clock,
        control: ControlConfig,
        *,
        pump_watchdog_s: float | None = None,
    ) -> None:
        self.id = config.id
        self.config = config
        self.driver = driver
        self.journal = journal
        self.clock = clock
        self.control = control
        self.pump_watchdog_s = pump_watchdog_s or control.pump_watchdog_s
        self._inbox: queue.SimpleQueue[tuple[str, dict[str, Any]]] = queue.SimpleQueue()
        self._snapshot_lock = threading.Lock()
        self._snapshot: dict[str, Any] = {}
        self._log = log.bind(channel=self.id)
        self._pump_ready = False  # identified and watchdog armed on this connection
        self._last_status: PumpStatus | None = None
        self._recovering = False
        self.s: dict[str, Any] = self._load_or_create_state()
        self._publish()

    # -- durable state -------------------------------------------------------------------

    def _load_or_create_state(self) -> dict[str, Any]:
        stored = self.journal.channel_state(self.id)
        if stored is not None:
            # A restart: reconcile with the pump before doing anything (invariant 6).
            self._recovering = stored.get("state") not in (None, ChannelState.COMPLETED)
            stored["restarted"] = True
            return stored
        state: dict[str, Any] = {
            "state": ChannelState.AWAITING_ORDER.value,
            "arm": None,
            "weight_kg": None,
            "ceiling_ml_per_kg_per_h": None,
            "concentration_mg_per_ml": None,
            "igm_content_mg_per_ml": None,
            "randomised_at_s": None,
            "start_override_reason": None,
            "course_start_wall_s": None,
            "day": 0,
            "day_start_wall_s": None,
            "prescribed_ml": None,
            "delivered_ml": 0.0,
            "last_totalizer_ml": None,
            "commanded_rate_ml_per_h": None,
            "max_commanded_rate_ml_per_h": 0.0,
            "alarms": [],
            "titers": [],
            "vasopressors_withdrawn_wall_s": None,
            "auto_resumes_today": 0,
            "lost_since_wall_s": None,
            "state_before_loss": None,
            "resume_requested": False,
            "totals_clear_pending": False,
            "last_good_poll_wall_s": None,
        }
        order = self.config.order()
        if order is None:
            self._journal("channel_created", {"pump": self.config.pump}, state)
        else:
            self._take_order(state, order)
        return state

    def _take_order(self, state: dict[str, Any], order: OrderConfig) -> None:
        """Fill the order's fields into ``state`` and journal the order."""
        state.update(
            state=ChannelState.STARTING.value,
            arm=order.arm.value,
            weight_kg=order.weight_kg,
            ceiling_ml_per_kg_per_h=order.ceiling_ml_per_kg_per_h,
            concentration_mg_per_ml=order.product.concentration_mg_per_ml,
            igm_content_mg_per_ml=order.product.igm_content_mg_per_ml,
            randomised_at_s=order.randomised_at_s,
            start_override_reason=order.start_override_reason,
        )
        if order.arm is Arm.TITER:
            assert order.igm_mg_dl is not None
            assert order.hematocrit is not None
            state["titers"].append(
                {
                    "igm_mg_dl": order.igm_mg_dl,
                    "hematocrit": order.hematocrit,
                    "measured_wall_s": self.clock.wall(),
                    "baseline": True,
                }
            )
        self._journal("order", {"order": order.model_dump(mode="json")}, state)

    def _journal(
        self, kind: str, payload: dict[str, Any], state: dict[str, Any] | None = None
    ) -> None:
        """Write first, act after.  Every event is also one structlog event."""
        self.journal.record(
            self.id,
            kind,
            payload,
            wall_s=self.clock.wall(),
            monotonic_s=self.clock.monotonic(),
            state=state if state is not None else self.s,
        )
        self._log.info(kind, **payload)

    @property
    def state(self) -> ChannelState:
        return ChannelState(self.s["state"])

    def _set_state(self, new: ChannelState, reason: str) -> None:
        old = self.s["state"]
        if old != new.value:
            self.s["state"] = new.value
            self._journal("state", {"from": old, "to": new.value, "reason": reason})

    # -- inputs from operators (thread-safe: queued, journalled on arrival) ------------------

    def submit_titer(
        self, igm_mg_dl: float, hematocrit: float, measured_wall_s: float | None = None
    ) -> None:
        """A new morning titer.  Validated here (InputError names the field); applied next cycle."""
        titer = {
            "igm_mg_dl": validate_titer_mg_per_dl(igm_mg_dl),
            "hematocrit": validate_hematocrit(hematocrit),
            "measured_wall_s": self.clock.wall() if measured_wall_s is None else measured_wall_s,
        }
        if self.s["arm"] != Arm.TITER.value:
            raise InputError("arm", "titer for a titer to be used", self.s["arm"])
        self._receive("titer", titer)

    def submit_order(self, order: OrderConfig) -> None:
        """A new order for a channel waiting for one; ChannelBusyError otherwise."""
        if self.state is not ChannelState.AWAITING_ORDER:
            raise ChannelBusyError(
                f"channel {self.id} is {self.state.value}: an order is taken only while it is "
                f"{ChannelState.AWAITING_ORDER.value}"
            )
        payload = {"order": order.model_dump(mode="json")}
        self._receive("order", payload, queued={"order": order})

    def submit_weight(self, weight_kg: float, reason: str = "") -> None:
        payload = {"weight_kg": validate_weight_kg(weight_kg), "reason": reason}
        self._receive("weight", payload)

    def submit_vasopressors_withdrawn(self) -> None:
        payload = {"withdrawn_wall_s": self.clock.wall()}
        self._receive("vasopressors", payload)

    def submit_ack(self, operator: str, note: str = "") -> None:
        payload = {"operator": operator, "note": note}
        self._receive("ack", payload)

    def submit_stop(self, operator: str, reason: str = "") -> None:
        payload = {"operator": operator, "reason": reason}
        self._receive("stop", payload)

    def _receive(
        self, kind: str, payload: dict[str, Any], *, queued: dict[str, Any] | None = None
    ) -> None:
        """Journal an operator input on arrival (``<kind>_received``), then queue it for the
        next cycle.  Called from API threads: it touches neither the channel state nor the pump."""
        self.journal.record(
            self.id,
            f"{kind}_received",
            payload,
            wall_s=self.clock.wall(),
            monotonic_s=self.clock.monotonic(),
        )
        self._inbox.put((kind, payload if queued is None else queued))

    def _apply_inbox(self) -> None:
        while True:
            try:
                kind, payload = self._inbox.get_nowait()
            except queue.Empty:
                return
            if kind == "order":
                if self.state is ChannelState.AWAITING_ORDER:
                    self._take_order(self.s, payload["order"])
                else:
                    self._journal("order_rejected", {"state": self.s["state"]})
            elif kind == "titer":
                self.s["titers"].append(payload)
                self._journal("titer", payload)
                if self.state is ChannelState.AWAITING_TITER:
                    self._open_day_dose()
            elif kind == "weight":
                if self.s["arm"] is None:
                    self._journal("weight_rejected", {"reason": "no order yet"})
                    continue
                self.s["weight_kg"] = payload["weight_kg"]
                self._journal("weight", payload)
                if self.s["prescribed_ml"] is not None and self.s["day"] > 0:
                    dose = self._dose_for_day(
                        self.s["day_start_wall_s"], baseline=self.s["day"] == 1
                    )
                    if dose is not None:
                        self.s["prescribed_ml"] = dose.volume_ml
                        self._journal("prescription", self._dose_payload(dose, "weight corrected"))
                        self._upsert_day()
                self.s["commanded_rate_ml_per_h"] = None  # re-plan against the new ceiling
            elif kind == "vasopressors":
                self.s["vasopressors_withdrawn_wall_s"] = payload["withdrawn_wall_s"]
                self._journal("vasopressors_withdrawn", payload)
            elif kind == "ack":
                self.s["resume_requested"] = True
                self._journal("ack", payload)
            elif kind == "stop":
                self._stop_pump("operator stop")
                self._set_state(ChannelState.STOPPED, f"stopped by {payload['operator']}")

    # -- alarms ---------------------------------------------------------------------------

    def _raise_alarm(self, code: str, detail: str, *, stop: bool = True) -> None:
        active = {a["code"] for a in self.s["alarms"]}
        if code not in active:
            self.s["alarms"].append(
                {"code": code, "detail": detail, "raised_wall_s": self.clock.wall()}
            )
            self._journal("alarm", {"code": code, "detail": detail, "stop": stop})
        if stop:
            self._stop_pump(f"alarm {code}")
            if self.state is not ChannelState.LINK_LOST:
                self._set_state(ChannelState.ALARM, code)

    def _clear_alarms(self, reason: str, codes: set[str] | None = None) -> None:
        kept = [a for a in self.s["alarms"] if codes is not None and a["code"] not in codes]
        cleared = [a["code"] for a in self.s["alarms"] if a not in kept]
        if cleared:
            self.s["alarms"] = kept
            self._journal("alarm_cleared", {"codes": cleared, "reason": reason})

    def _stop_pump(self, reason: str) -> None:
        """Best effort: tell the pump to stop.  A silent pump stops on its own watchdog."""
        self._journal("command", {"command": "stop", "reason": reason})
        try:
            self.driver.stop()
        except DriverError as exc:
            self._log.warning("stop_failed", error=str(exc))
        self.s["commanded_rate_ml_per_h"] = None

    # -- the control cycle ----------------------------------------------------------------

    def step(self) -> None:
        """One control cycle.  Never raises for a pump problem: it alarms instead."""
        try:
            self._apply_inbox()
            if self.state is ChannelState.COMPLETED:
                return
            status = self._poll()
            if status is None:
                return
            self._cycle(status)
        finally:
            self._publish()

    def _poll(self) -> PumpStatus | None:
        try:
            if not self._pump_ready or not self.driver.connected:
                self._prepare_pump()
            status = self.driver.read_status()
        except DriverError as exc:
            self._pump_ready = False
            self._on_silence(exc)
            return None
        self._last_status = status
        return status

    def _prepare_pump(self) -> None:
        identity = self.driver.open()
        held_s = self.driver.arm_watchdog(self.pump_watchdog_s)
        self._pump_ready = True
        self._journal(
            "pump_connected",
            {
                "vendor": identity.vendor,
                "model": identity.model,
                "firmware": identity.firmware,
                "max_rate_ml_per_h": identity.max_rate_ml_per_h,
                "watchdog_s": held_s,
            },
        )

    def _on_silence(self, exc: DriverError) -> None:
        if self.state is ChannelState.LINK_LOST:
            return
        self.s["lost_since_wall_s"] = self.s.get("last_good_poll_wall_s") or self.clock.wall()
        self.s["state_before_loss"] = self.s["state"]
        self._set_state(ChannelState.LINK_LOST, f"pump silent: {exc}")
        self._raise_alarm(AlarmCode.PUMP_SILENT, f"{type(exc).__name__}: {exc}", stop=False)
        self._recovering = True

    def _cycle(self, status: PumpStatus) -> None:
        previous_poll_wall_s = self.s["last_good_poll_wall_s"]
        self.s["last_good_poll_wall_s"] = self.clock.wall()
        self._account(status)
        self._journal(
            "readback",
            {
                "state": status.state.value,
                "rate_ml_per_h": status.rate_ml_per_h,
                "volume_infused_ml": status.volume_infused_ml,
                "vtbi_remaining_ml": status.vtbi_remaining_ml,
                "alarms": sorted(a.value for a in status.alarms),
                "delivered_ml": self.s["delivered_ml"],
            },
        )
        if self._recovering:
            self._recover(status, previous_poll_wall_s)
            return
        if self.s["course_start_wall_s"] is not None:
            day = self.s["day"]
            self._roll_days()
            if self.s["day"] != day:  # a new day stopped or reprogrammed the pump: look again
                try:
                    status = self.driver.read_status()
                except DriverError as exc:
                    self._on_silence(exc)
                    return
        if self.state is ChannelState.COMPLETED:
            return
        if self.state in (ChannelState.ALARM, ChannelState.STOPPED):
            self._hold_stopped(status)
            return
        if self.state is ChannelState.AWAITING_ORDER:
            if status.state is PumpState.INFUSING:  # no order: nothing may run
                self._stop_pump("pump infusing with no order")
                self._raise_alarm(AlarmCode.STATE_MISMATCH, "pump was infusing with no order")
            return
        if not self._verify(status):
            return
        if self.s["course_start_wall_s"] is None:
            self._start_course()
            if self.s["course_start_wall_s"] is None:
                return  # refused (start window): alarmed
        self._drive(status)

    # -- accounting (invariant 4) ---------------------------------------------------------

    def _account(self, status: PumpStatus) -> None:
        last = self.s["last_totalizer_ml"]
        now_ml = status.volume_infused_ml
        self.s["last_totalizer_ml"] = now_ml
        if last is None:
            return
        delta = now_ml - last
        if delta < -VOLUME_EPSILON_ML and self.s.get("totals_clear_pending"):
            # The day-boundary clear went through before it could be recorded.
            self.s["totals_clear_pending"] = False
            self._journal("totals_cleared", {"recovered": True, "totalizer_ml": now_ml})
            delta = now_ml
        if delta < -VOLUME_EPSILON_ML:
            # The pump's totalizer went back (cleared, or replaced): what it delivered since the
            # last reading is unknown.  Never guess low and over-deliver: stop, ask a person.
            self._raise_alarm(
                AlarmCode.TOTALIZER_WENT_BACK,
                f"pump totalizer went from {last:.3f} to {now_ml:.3f} mL",
            )
            return
        if delta > 0.0 and self.s["day"] > 0:
            self.s["delivered_ml"] += delta
            self._upsert_day()

    # -- verification (invariant 3) -------------------------------------------------------

    def _ceiling(self) -> float:
        """The rate ceiling in mL/h; 0 while there is no order (nothing may run)."""
        if self.s["weight_kg"] is None:
            return 0.0
        return ceiling_ml_per_h(self.s["weight_kg"], self.s["ceiling_ml_per_kg_per_h"])

    def _resolution(self) -> float:
        identity = self.driver.identity
        return identity.rate_resolution_ml_per_h if identity else 0.01

    def _verify(self, status: PumpStatus) -> bool:
        """Compare the pump with what was commanded; stop and alarm on any disagreement."""
        ceiling = self._ceiling()
        if status.rate_ml_per_h > ceiling + 1e-9 and status.state is PumpState.INFUSING:
            self._raise_alarm(
                AlarmCode.RATE_ABOVE_CEILING,
                f"pump reports {status.rate_ml_per_h} mL/h, ceiling {ceiling:.2f}",
            )
            return False
        stopping = {a for a in status.alarms if a in STOPPING_ALARMS}
        if stopping:
            for alarm in sorted(stopping):
                self._raise_alarm(f"pump_{alarm.value}", f"pump reports {alarm.value}")
            return False
        if PumpAlarm.LOW_BATTERY in status.alarms:
            self._raise_alarm(AlarmCode.LOW_BATTERY, "pump reports low battery", stop=False)
        if PumpAlarm.RATE_REFUSED in status.alarms:
            self._raise_alarm(AlarmCode.PUMP_REFUSED, "pump refused a rate")
            return False
        commanded = self.s["commanded_rate_ml_per_h"]
        if self.state in _RUNNING:
            if status.state is not PumpState.INFUSING:
                if PumpAlarm.VTBI_COMPLETE in status.alarms:
                    return True  # the pump delivered the day's volume: _drive closes the day
                self._raise_alarm(
                    AlarmCode.STATE_MISMATCH, f"pump is {status.state.value}, expected infusing"
                )
                return False
            if (
                commanded is not None
                and abs(status.rate_ml_per_h - commanded) > self._resolution() + 1e-9
            ):
                self._raise_alarm(
                    AlarmCode.RATE_MISMATCH,
                    f"pump holds {status.rate_ml_per_h} mL/h, commanded {commanded}",
                )
                return False
        elif status.state is PumpState.INFUSING and self.state is not ChannelState.STARTING:
            self._raise_alarm(
                AlarmCode.STATE_MISMATCH,
                f"pump is infusing while the channel is {self.state.value}",
            )
            return False
        prescribed = self.s["prescribed_ml"]
        if (
            prescribed is not None
            and self.s["delivered_ml"]
            > prescribed * (1 + OVER_DELIVERY_TOLERANCE) + VOLUME_EPSILON_ML
        ):
            self._raise_alarm(
                AlarmCode.OVER_DELIVERY,
                f"delivered {self.s['delivered_ml']:.3f} mL of {prescribed:.3f} mL",
            )
            return False
        return True

    # -- course and day windows -----------------------------------------------------------

    def _product(self) -> Product:
        return Product(self.s["concentration_mg_per_ml"], self.s["igm_content_mg_per_ml"])

    def _start_course(self) -> None:
        now = self.clock.wall()
        randomised_at_s = self.s["randomised_at_s"]
        if randomised_at_s is not None:
            try:
                check = check_start_delay(
                    randomised_at_s, now, override_reason=self.s["start_override_reason"]
                )
            except InputError as exc:
                self._raise_alarm(AlarmCode.START_WINDOW_EXCEEDED, str(exc))
                return
            self._journal(
                "start_check",
                {
                    "delay_h": check.delay_h,
                    "within_window": check.within_window,
                    "override_reason": check.override_reason,
                },
            )
        self.s["course_start_wall_s"] = now
        self._journal("course_start", {"arm": self.s["arm"], "weight_kg": self.s["weight_kg"]})
        self._open_day(1)

    def _dose_for_day(self, day_start_wall_s: float, *, baseline: bool) -> DailyDose | None:
        if self.s["arm"] == Arm.FLAT.value:
            return flat_daily_dose(self.s["weight_kg"], self._product())
        fresh = [
            t
            for t in self.s["titers"]
            if day_start_wall_s - t["measured_wall_s"]
            <= self.control.titer_max_age_h * SECONDS_PER_HOUR
            and (baseline or not t.get("baseline"))
        ]
        if not fresh:
            return None
        titer = max(fresh, key=lambda t: t["measured_wall_s"])
        return titer_daily_dose(
            self.s["weight_kg"],
            titer["igm_mg_dl"],
            titer["hematocrit"],
            self._product(),
            baseline=baseline,
        )

    @staticmethod
    def _dose_payload(dose: DailyDose, why: str) -> dict[str, Any]:
        return {
            "why": why,
            "dose_mg_per_kg": dose.dose_mg_per_kg,
            "volume_ml": dose.volume_ml,
            "igm_mg_dl": dose.igm_mg_per_dl,
            "hematocrit": dose.hematocrit,
            "capped": dose.capped,
            "notes": list(dose.notes),
        }

    def _open_day(self, day: int) -> None:
        start = self.s["course_start_wall_s"] + (day - 1) * DAY_S
        self.s.update(
            day=day,
            day_start_wall_s=start,
            prescribed_ml=None,
            delivered_ml=0.0,
            auto_resumes_today=0,
            commanded_rate_ml_per_h=None,
        )
        self._journal("day_open", {"day": day, "window_start_wall_s": start})
        self._open_day_dose()

    def _open_day_dose(self) -> None:
        dose = self._dose_for_day(self.s["day_start_wall_s"], baseline=self.s["day"] == 1)
        if dose is None:
            self._upsert_day()
            self._stop_pump("no fresh titer for the new day")
            self._set_state(
                ChannelState.AWAITING_TITER,
                f"no titer newer than {self.control.titer_max_age_h:g} h for day {self.s['day']}",
            )
            return
        self.s["prescribed_ml"] = dose.volume_ml
        self._journal("prescription", self._dose_payload(dose, f"day {self.s['day']}"))
        self._upsert_day()
        if self.state is ChannelState.AWAITING_TITER:
            self._set_state(ChannelState.STARTING, "titer received")

    def _upsert_day(self) -> None:
        if self.s["day"] <= 0:
            return
        self.journal.upsert_day(
            self.id,
            self.s["day"],
            window_start_wall_s=self.s["day_start_wall_s"],
            prescribed_ml=self.s["prescribed_ml"] or 0.0,
            delivered_ml=self.s["delivered_ml"],
            detail={"awaiting_titer": self.s["prescribed_ml"] is None},
        )

    def _course_over_after(self, day: int) -> str | None:
        if day >= course_days_max(Arm(self.s["arm"])):
            return f"day {day} was the last of the course"
        withdrawn = self.s["vasopressors_withdrawn_wall_s"]
        if withdrawn is not None:
            return "vasopressors withdrawn"
        return None

    def _roll_days(self) -> None:
        elapsed = self.clock.wall() - self.s["course_start_wall_s"]
        window_day = day_window(max(elapsed, 0.0)).day
        while window_day > self.s["day"] and self.state is not ChannelState.COMPLETED:
            day = self.s["day"]
            if not self._settle_totalizer(day, clear=self._course_over_after(day) is None):
                return  # the pump did not answer: the day closes on a later cycle
            prescribed = self.s["prescribed_ml"] or 0.0
            delivered = self.s["delivered_ml"]
            self._journal(
                "day_close",
                {
                    "day": day,
                    "prescribed_ml": prescribed,
                    "delivered_ml": delivered,
                    "shortfall_ml": max(prescribed - delivered, 0.0),
                },
            )
            self.journal.upsert_day(
                self.id,
                day,
                window_start_wall_s=self.s["day_start_wall_s"],
                prescribed_ml=prescribed,
                delivered_ml=delivered,
                closed=True,
                detail={"shortfall_ml": max(prescribed - delivered, 0.0)},
            )
            over = self._course_over_after(day)
            if over:
                self._stop_pump("course complete")
                self._set_state(ChannelState.COMPLETED, over)
                return
            if self.state in (
                ChannelState.INFUSING,
                ChannelState.DAY_COMPLETE,
                ChannelState.AWAITING_TITER,
            ):
                self._set_state(ChannelState.STARTING, f"day {day + 1} begins")
            self._open_day(day + 1)

    def _settle_totalizer(self, day: int, *, clear: bool) -> bool:
        """At a window's end: stop, account the last drop, and zero the pump's totalizer.

        A fresh totalizer each day keeps the count in an NE-1000's finest units (its display
        has four digits: 0.1 mL above 100 mL, 1 mL above 1000 mL).  The clear is journalled as
        pending first; if the gateway dies before recording it, the next reading below the
        last one is recognised as this clear, not as a totalizer going back.
        """
        self._stop_pump(f"day {day} window ends")
        try:
            self._account(self.driver.read_status())
            if clear:
                self.s["totals_clear_pending"] = True
                self._journal("command", {"command": "clear_totals", "reason": "new day window"})
                self.driver.clear_totals()
                self.s["last_totalizer_ml"] = 0.0
                self.s["totals_clear_pending"] = False
                self._journal("totals_cleared", {"day": day + 1})
        except DriverError as exc:
            self._on_silence(exc)
            return False
        return True

    # -- driving the pump -----------------------------------------------------------------

    def _window_remaining_s(self) -> float:
        return max(self.s["day_start_wall_s"] + DAY_S - self.clock.wall(), 0.0)

    def _drive(self, status: PumpStatus) -> None:
        if self.state is ChannelState.AWAITING_TITER:
            return
        remaining = max((self.s["prescribed_ml"] or 0.0) - self.s["delivered_ml"], 0.0)
        vtbi_complete = PumpAlarm.VTBI_COMPLETE in status.alarms
        if vtbi_complete and self.s["commanded_rate_ml_per_h"] is None:
            # Left over from a VTBI this day never set (yesterday's, or before a re-plan).
            self._clear_pump_advisories(status)
            vtbi_complete = False
        if remaining <= VOLUME_EPSILON_ML or vtbi_complete:
            if self.state is not ChannelState.DAY_COMPLETE:
                if status.state is PumpState.INFUSING:
                    self._stop_pump("day's volume delivered")
                self._clear_pump_advisories(status)
                self._set_state(
                    ChannelState.DAY_COMPLETE,
                    f"day {self.s['day']}: {self.s['delivered_ml']:.2f} mL delivered",
                )
            return
        plan = plan_rate(
            remaining_volume_ml=remaining,
            remaining_time_s=self._window_remaining_s(),
            ceiling_ml_per_h=self._ceiling(),
        )
        commanded = self.s["commanded_rate_ml_per_h"]
        # In the window's last half hour the pump's VTBI finishes the day: re-planning there
        # would only chase the totalizer's rounding.
        settled = self._window_remaining_s() < REPLAN_QUIET_S
        needs_command = commanded is None or (
            not settled
            and abs(plan.rate_ml_per_h - commanded)
            > max(2 * self._resolution(), REPLAN_FRACTION * commanded)
        )
        if needs_command or status.state is not PumpState.INFUSING:
            self._command(
                plan.rate_ml_per_h, remaining, status, shortfall_ml=plan.projected_shortfall_ml
            )

    def _command(
        self, rate_ml_per_h: float, remaining_ml: float, status: PumpStatus, *, shortfall_ml: float
    ) -> None:
        """Program VTBI and rate through the one safety check, verify, start."""
        identity = self.driver.identity
        try:
            approved = check_rate(
                rate_ml_per_h,
                weight_kg=self.s["weight_kg"],
                ceiling_ml_per_kg_per_h=self.s["ceiling_ml_per_kg_per_h"],
                pump_max_rate_ml_per_h=identity.max_rate_ml_per_h if identity else None,
            )
        except (RateRefusedError, InputError) as exc:
            self._journal("command_refused", {"rate_ml_per_h": rate_ml_per_h, "reason": str(exc)})
            self._raise_alarm(AlarmCode.SAFETY_REFUSED, str(exc))
            return
        self._journal(
            "command",
            {
                "command": "set_rate",
                "rate_ml_per_h": approved.rate_ml_per_h,
                "vtbi_ml": remaining_ml,
                "ceiling_ml_per_h": approved.ceiling_ml_per_h,
                "projected_shortfall_ml": shortfall_ml,
            },
        )
        try:
            vtbi_held = self.driver.set_vtbi(remaining_ml)
            readback = self.driver.set_rate(approved)
        except DriverError as exc:
            self._raise_alarm(AlarmCode.PUMP_REFUSED, f"{type(exc).__name__}: {exc}")
            return
        self._journal(
            "command_readback",
            {
                "sent_ml_per_h": readback.sent_ml_per_h,
                "readback_ml_per_h": readback.readback_ml_per_h,
                "resolution_ml_per_h": readback.resolution_ml_per_h,
                "vtbi_held_ml": vtbi_held,
            },
        )
        if readback.readback_ml_per_h > approved.ceiling_ml_per_h + 1e-9:
            self._raise_alarm(
                AlarmCode.RATE_ABOVE_CEILING,
                f"pump holds {readback.readback_ml_per_h} mL/h after command",
            )
            return
        if (
            abs(readback.readback_ml_per_h - readback.sent_ml_per_h)
            > readback.resolution_ml_per_h + 1e-9
        ):
            self._raise_alarm(
                AlarmCode.RATE_MISMATCH,
                f"sent {readback.sent_ml_per_h}, pump holds {readback.readback_ml_per_h}",
            )
            return
        if vtbi_held > remaining_ml + VOLUME_EPSILON_ML:
            self._raise_alarm(
                AlarmCode.STATE_MISMATCH,
                f"pump holds VTBI {vtbi_held} mL, above the {remaining_ml:.3f} mL left",
            )
            return
        self.s["commanded_rate_ml_per_h"] = readback.readback_ml_per_h
        self.s["max_commanded_rate_ml_per_h"] = max(
            self.s["max_commanded_rate_ml_per_h"], readback.sent_ml_per_h
        )
        if status.state is not PumpState.INFUSING:
            self._journal("command", {"command": "start"})
            try:
                self.driver.start()
            except DriverError as exc:
                self._raise_alarm(AlarmCode.PUMP_REFUSED, f"start: {type(exc).__name__}: {exc}")
                return
        self._set_state(
            ChannelState.INFUSING,
            f"{readback.sent_ml_per_h} mL/h, {remaining_ml:.2f} mL left today",
        )

    def _clear_pump_advisories(self, status: PumpStatus) -> None:
        """VTBI complete is not an alarm: clear it on the pump unless a real alarm is latched."""
        if status.alarms and not (status.alarms & STOPPING_ALARMS):
            self._clear_pump_alarms()

    # -- recovery (invariants 5 and 6) ----------------------------------------------------

    def _recover(self, status: PumpStatus, previous_poll_wall_s: float | None) -> None:
        """First good poll after silence or a restart: reconcile, then resume or wait."""
        self._recovering = False
        now = self.clock.wall()
        lost_since = self.s.get("lost_since_wall_s") or previous_poll_wall_s or now
        gap_s = max(now - lost_since, 0.0)
        before = self.s.get("state_before_loss") or self.s["state"]
        self._journal(
            "reconciled",
            {
                "gap_s": gap_s,
                "pump_state": status.state.value,
                "totalizer_ml": status.volume_infused_ml,
                "delivered_ml": self.s["delivered_ml"],
                "state_before": before,
                "restarted": bool(self.s.pop("restarted", False)),
            },
        )
        self.s["lost_since_wall_s"] = None
        self.s["state_before_loss"] = None
        if before == ChannelState.LINK_LOST.value:
            before = ChannelState.INFUSING.value
        self.s["state"] = before
        if self.s["course_start_wall_s"] is not None:
            self._roll_days()
            if self.state is ChannelState.COMPLETED:
                return
        others = {a for a in status.alarms if a in STOPPING_ALARMS} - AUTO_RESUMABLE_PUMP_ALARMS
        rule = self.control.auto_resume
        was_running = before in (ChannelState.INFUSING.value, ChannelState.STARTING.value)
        if others or not was_running:
            if others or (status.state is PumpState.INFUSING and not was_running):
                self._verify(status)  # raises the pump alarms / state mismatch, stops the pump
            return
        if (
            rule.enabled
            and gap_s <= rule.max_gap_s
            and self.s["auto_resumes_today"] < rule.max_per_day
        ):
            self.s["auto_resumes_today"] += 1
            self._journal(
                "auto_resume",
                {
                    "gap_s": gap_s,
                    "count_today": self.s["auto_resumes_today"],
                    "max_per_day": rule.max_per_day,
                },
            )
            if status.alarms & AUTO_RESUMABLE_PUMP_ALARMS:
                self._clear_pump_alarms()
            self._clear_alarms("auto-resume after a short link drop", {AlarmCode.PUMP_SILENT.value})
            self.s["commanded_rate_ml_per_h"] = None
            if self.state is ChannelState.INFUSING and status.state is not PumpState.INFUSING:
                self.s["state"] = ChannelState.STARTING.value
            self._drive(self.driver.read_status() if status.alarms else status)
            return
        self._stop_pump("link restored outside the auto-resume rule")
        self._set_state(
            ChannelState.ALARM, f"silent {gap_s:.0f} s; resume needs an operator acknowledgement"
        )

    def _hold_stopped(self, status: PumpStatus) -> None:
        """In alarm or stopped: keep the pump stopped; resume only on an acknowledgement."""
        if status.state is PumpState.INFUSING:
            self._stop_pump(f"pump infusing while the channel is {self.state.value}")
            self._raise_alarm(
                AlarmCode.STATE_MISMATCH,
                f"pump was infusing while the channel was {self.state.value}",
            )
        if self.s["resume_requested"]:
            self._resume_after_ack()

    def _clear_pump_alarms(self) -> None:
        try:
            self.driver.clear_alarms()
        except DriverError as exc:
            self._log.warning("clear_alarms_failed", error=str(exc))

    def _resume_after_ack(self) -> None:
        """An operator acknowledged: clear the pump's alarms and resume if they are gone."""
        self.s["resume_requested"] = False
        self._clear_pump_alarms()
        try:
            status = self.driver.read_status()
        except DriverError as exc:
            self._on_silence(exc)
            return
        still = {a for a in status.alarms if a in STOPPING_ALARMS}
        if still:
            self._journal("ack_not_effective", {"pump_alarms": sorted(a.value for a in still)})
            return
        self._clear_alarms("acknowledged by operator")
        self.s["commanded_rate_ml_per_h"] = None
        if self.s["arm"] is None:
            self._set_state(ChannelState.AWAITING_ORDER, "acknowledged; no order yet")
            return
        self._set_state(ChannelState.STARTING, "resumed after acknowledgement")
        if self.s["course_start_wall_s"] is None:
            self._start_course()
            if self.s["course_start_wall_s"] is None:
                return
        if self.s["prescribed_ml"] is None and self.s["day"] > 0:
            self._open_day_dose()
        self._drive(status)

    # -- shutdown and status --------------------------------------------------------------

    def shutdown(self, reason: str) -> None:
        """Orderly stop (SIGTERM): stop the pump, journal it, release the port."""
        self._journal("shutdown", {"reason": reason, "state": self.s["state"]})
        if self.state in _RUNNING:
            self._stop_pump(f"gateway shutdown: {reason}")
            self.s["state_before_loss"] = ChannelState.INFUSING.value
            self.s["lost_since_wall_s"] = self.clock.wall()
            self._journal("shutdown_stopped_pump", {"resume": "by the auto-resume rule or an ack"})
        self.driver.close()
        self._publish()

    def _publish(self) -> None:
        days = [
            {
                "day": d.day,
                "prescribed_ml": d.prescribed_ml,
                "delivered_ml": d.delivered_ml,
                "shortfall_ml": d.shortfall_ml if d.closed else None,
                "closed": d.closed,
                "awaiting_titer": bool(d.detail.get("awaiting_titer", False)),
            }
            for d in self.journal.days(self.id)
        ]
        status = self._last_status
        snapshot = {
            "id": self.id,
            "state": self.s["state"],
            "arm": self.s["arm"],
            "weight_kg": self.s["weight_kg"],
            "pump": self.config.pump,
            "ceiling_ml_per_h": self._ceiling() if self.s["weight_kg"] is not None else None,
            "day": self.s["day"],
            "days": days,
            "alarms": list(self.s["alarms"]),
            "commanded_rate_ml_per_h": self.s["commanded_rate_ml_per_h"],
            "max_commanded_rate_ml_per_h": self.s["max_commanded_rate_ml_per_h"],
            "vasopressors_withdrawn": self.s["vasopressors_withdrawn_wall_s"] is not None,
            "last_good_poll_wall_s": self.s["last_good_poll_wall_s"],
            "pump_status": status.to_dict() if status is not None else None,
        }
        with self._snapshot_lock:
            self._snapshot = snapshot

    def snapshot(self) -> dict[str, Any]:
        """The channel's status as JSON-ready data (thread-safe)."""
        with self._snapshot_lock:
            return dict(self._snapshot)
