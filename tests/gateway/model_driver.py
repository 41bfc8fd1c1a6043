"""A test-only PumpDriver that calls a PumpModel directly: channel logic without a wire.

The product never uses this: the gateway reaches the simulator over the real protocols (see the
end-to-end tests).  Here it lets control-logic tests run a week of virtual time in a second and
make the "pump" misbehave in ways a real wire would only show slowly.
"""

from __future__ import annotations

import math
from decimal import Decimal

from drivers.base import PumpDriver
from drivers.errors import LinkLostError, PumpAlarmError, PumpRefusedError, PumpTimeoutError
from drivers.status import PumpIdentity, PumpStatus
from simulator.errors import NotApplicableError, SimulatorError
from simulator.model import PumpModel

RESOLUTION_ML_PER_H = 0.01
#: The step of this "pump's" totalizer display (mL): the model's exact volume is truncated to it,
#: so gateway tests see a reading up to one step below the truth, as from a real pump.
VOLUME_RESOLUTION_ML = 0.001


def displayed_volume_ml(volume_ml: float) -> float:
    """``volume_ml`` truncated down to :data:`VOLUME_RESOLUTION_ML`, as a pump display shows it.

    Floored on the float's shortest decimal (as the protocol codecs read floats), not on
    ``volume_ml * 1000``: that product can round up to the next whole number (1677.7259999999999
    would show 1677.726, above the truth).  The result is never above ``volume_ml`` and less than
    one step below it.
    """
    steps = math.floor(Decimal(repr(volume_ml)) / Decimal(repr(VOLUME_RESOLUTION_ML)))
    return float(steps * Decimal(repr(VOLUME_RESOLUTION_ML)))


class ModelDriver(PumpDriver):
    def __init__(self, model: PumpModel, **options: object) -> None:
        super().__init__("modbus+tcp://127.0.0.1:1", **options)
        self.model = model
        self.silent = False  # the link is cut: every request times out
        self.lie_rate_ml_per_h: float | None = None  # the pump reports this rate instead
        # Lying-pump knobs (never trust one signal): each lies about one thing only.
        self.frozen_volume_ml: float | None = None  # the totalizer reports this, unmoving
        self.volume_offset_ml = 0.0  # the totalizer reports this much more than the truth
        self.stop_ignored = False  # STOP is acknowledged; the pump keeps infusing
        self.watchdog_reported_s: float | None = None  # what the pump says it holds
        self.uptime_frozen_s: float | None = None  # the pump's uptime stands still here
        self.sent: list[float] = []

    def _check_link(self) -> None:
        if self.silent:
            raise PumpTimeoutError("no reply (test: link cut)")
        if self.model.line.hang:
            raise PumpTimeoutError("no reply (model: hang)")
        self.model.feed_watchdog()

    def _connect(self) -> None:
        if self.silent:
            raise LinkLostError("test: link cut")

    def _disconnect(self) -> None:
        pass

    def _identify(self) -> PumpIdentity:
        self._check_link()
        return PumpIdentity(
            "sim",
            "model",
            "1",
            max_rate_ml_per_h=self.model.max_rate_ml_per_h,
            rate_resolution_ml_per_h=RESOLUTION_ML_PER_H,
        )

    def _read_status(self) -> PumpStatus:
        self._check_link()
        snap = self.model.snapshot()
        rate = (
            snap.rate_setpoint_ml_per_h
            if self.lie_rate_ml_per_h is None
            else self.lie_rate_ml_per_h
        )
        volume_ml = displayed_volume_ml(snap.volume_infused_ml) + self.volume_offset_ml
        return PumpStatus(
            state=snap.state,
            rate_ml_per_h=rate,
            volume_infused_ml=volume_ml if self.frozen_volume_ml is None else self.frozen_volume_ml,
            uptime_s=snap.monotonic_s if self.uptime_frozen_s is None else self.uptime_frozen_s,
            volume_resolution_ml=VOLUME_RESOLUTION_ML,
            vtbi_remaining_ml=snap.vtbi_remaining_ml if snap.vtbi_ml else None,
            alarms=snap.alarms,
            measured_rate_ml_per_h=snap.measured_rate_ml_per_h,
            max_rate_ml_per_h=snap.max_rate_ml_per_h,
        )

    def _write_rate(self, rate_ml_per_h: float) -> float:
        self._check_link()
        sent = math.floor(rate_ml_per_h / RESOLUTION_ML_PER_H + 1e-9) * RESOLUTION_ML_PER_H
        sent = min(sent, rate_ml_per_h)
        try:
            self.model.set_rate(sent)
        except SimulatorError as exc:
            raise PumpRefusedError(str(exc)) from exc
        self.sent.append(sent)
        return sent

    def _read_rate(self) -> float:
        self._check_link()
        snap = self.model.snapshot()
        return (
            snap.rate_setpoint_ml_per_h
            if self.lie_rate_ml_per_h is None
            else self.lie_rate_ml_per_h
        )

    def _write_vtbi(self, volume_ml: float) -> float:
        self._check_link()
        held = math.floor(volume_ml * 1000) / 1000
        self.model.set_vtbi(held)
        return held

    def _start(self) -> None:
        self._check_link()
        try:
            self.model.start()
        except NotApplicableError as exc:
            raise PumpAlarmError(str(exc)) from exc

    def _stop(self) -> None:
        self._check_link()
        if not self.stop_ignored:
            self.model.stop()

    def _clear_alarms(self) -> None:
        self._check_link()
        self.model.clear_alarms()

    def _clear_totals(self) -> None:
        self._check_link()
        self.model.clear_totals()

    def _arm_watchdog(self, timeout_s: float) -> float:
        self._check_link()
        if self.watchdog_reported_s is not None:
            # A pump that does not hold what it is asked: it runs on without a watchdog.
            self.model.set_watchdog(0.0)
            return self.watchdog_reported_s
        self.model.set_watchdog(timeout_s)
        return timeout_s
