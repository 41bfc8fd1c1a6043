"""The hospital's messages in: lab results become titers, orders become orders.

Each message gets one answer, and a refused message changes nothing:

* **ORU^R01** (lab): the IgM and hematocrit of a patient become a titer for the channel bound to
  that patient (:meth:`Channel.submit_titer`, the same intake as the bedside's).  Unknown
  patient, unit, time, or a value the intake refuses: AR naming the reason.
* **RGV^O15** (IHE PCD-03): weight, product code and arm code (mapped by ``[hl7]`` in the
  config) become an order for the channel bound to the patient, else the one at the order's
  bed.  The answer (RRG^O16) is the gateway's own plan for day 1, or AR with the reason.  An
  ordered rate above the ceiling is refused, never clamped; the rate the gateway runs is always
  its own plan, through the one safety check.
* Patient identity is explicit: a channel is bound to one patient (``patient_id`` in the config,
  else the first accepted order, kept in the journal).  A message for another patient on that
  channel is refused.
* A message whose control id (MSH-10, per sending facility) was already answered gets the same
  answer again and changes nothing.

Messages are handled one at a time (a lock): a lab and an order arrive a few times a day.
"""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

import structlog
from pydantic import ValidationError

from gateway.channel import Channel
from gateway.config import ChannelConfig, Hl7Config, OrderConfig, format_validation_error
from gateway.daemon import Gateway
from gateway.errors import GatewayError
from gateway.hl7_messages import (
    Hl7Header,
    Hl7MessageError,
    OrderPlan,
    PumpOrder,
    build_ack,
    build_order_response,
    parse_lab_result,
    parse_message,
    parse_order,
)
from gateway.journal import Journal
from gateway.order_plan import plan_order
from gateway.safety import ceiling_ml_per_h

log = structlog.get_logger("gateway.hl7")

#: How an HL7 sender confirms a value outside a soft limit: it cannot; the bedside can.
HL7_CONFIRM_HOW = (
    "a value outside the soft limits is not taken from an interface: confirm it at the bedside "
    "(infusion-gateway titer/order ... --confirm)"
)
_PATIENT_KEY = "hl7_patient:"
_ANSWERED_KEY = "hl7_answered:"


class Hl7RefusedError(GatewayError):
    """A message the gateway refuses (AR): the reason is the message's text."""


def bound_patient(journal: Journal, channel: ChannelConfig) -> str | None:
    """The patient a channel infuses: the config's ``patient_id``, else the first accepted
    HL7 order's (kept in the journal), else None."""
    return channel.patient_id or journal.get_meta(_PATIENT_KEY + channel.id)


def new_control_id() -> str:
    """A message control id (MSH-10, at most 20 characters) no other message carries: 80
    random bits."""
    return uuid.uuid4().hex[:20]


class InboundHandler:
    """Answers one inbound HL7 message (text) with one answer (text)."""

    def __init__(self, gateway: Gateway, hl7: Hl7Config) -> None:
        self.gateway = gateway
        self.hl7 = hl7
        self.journal = gateway.journal
        self._lock = threading.Lock()

    def handle(self, text: str) -> str:
        with self._lock:
            try:
                header = parse_message(text)
            except Hl7MessageError as exc:
                log.warning("hl7_unreadable", reason=str(exc))
                return self._ack(Hl7Header(("", ""), "", "", ""), "AR", f"not read: {exc}")
            key = f"{_ANSWERED_KEY}{header.sending_facility}:{header.control_id}"
            previous = self.journal.get_meta(key) if header.control_id else None
            if previous is not None:
                log.info("hl7_duplicate", control_id=header.control_id)
                return previous
            try:
                answer = self._answer(header, text)
            except Exception as exc:  # ours, not the sender's: AE, and the log says what
                log.error("hl7_internal_error", control_id=header.control_id, error=repr(exc))
                return self._ack(header, "AE", "internal error in the gateway; see its log")
            if header.control_id:
                self.journal.set_meta(key, answer)
            return answer

    # -- per message type -----------------------------------------------------------------

    def _answer(self, header: Hl7Header, text: str) -> str:
        kind = header.message_type
        if kind == ("ORU", "R01"):
            return self._lab_result(header, text)
        if kind == ("RGV", "O15"):
            return self._order(header, text)
        reason = (
            f"MSH-9: message type {'^'.join(kind)} is not taken here"
            " (ORU^R01 lab results, RGV^O15 orders)"
        )
        log.warning("hl7_refused", control_id=header.control_id, reason=reason)
        return self._ack(header, "AR", reason)

    def _lab_result(self, header: Hl7Header, text: str) -> str:
        try:
            result = parse_lab_result(text)
            channel = self._channel_of_patient(result.patient_id)
            note = channel.submit_titer(
                result.igm.value, result.hematocrit.value, result.igm.measured_at_s
            )
        except GatewayError as exc:  # Hl7MessageError, Hl7RefusedError, intake refusals
            reason = _reason(exc)
            log.warning("hl7_refused", control_id=header.control_id, kind="lab", reason=reason)
            return self._ack(header, "AR", reason)
        log.info(
            "hl7_titer",
            channel=channel.id,
            control_id=header.control_id,
            igm=result.igm.given,
            hematocrit=result.hematocrit.given,
        )
        return self._ack(header, "AA", note)

    def _order(self, header: Hl7Header, text: str) -> str:
        try:
            order = parse_order(text)
        except Hl7MessageError as exc:
            log.warning("hl7_refused", control_id=header.control_id, kind="order", reason=str(exc))
            return self._ack(header, "AR", str(exc))
        try:
            channel = self._channel_for_order(order)
            config = self._order_config(order)
            plan = plan_order(config, baseline=True, confirm_how=HL7_CONFIRM_HOW)
            self._check_ordered_rate(order, config)
            note = channel.submit_order(config)
        except GatewayError as exc:  # Hl7RefusedError, ChannelBusyError, intake refusals
            reason = _reason(exc)
            log.warning("hl7_refused", control_id=header.control_id, kind="order", reason=reason)
            return self._order_answer(header, order, False, reason, None)
        self.journal.set_meta(_PATIENT_KEY + channel.id, order.patient_id)
        log.info(
            "hl7_order", channel=channel.id, control_id=header.control_id, patient=order.patient_id
        )
        day1 = OrderPlan(
            day=1,
            dose_mg_per_kg=float(plan["daily_dose_mg_per_kg"]),
            volume_ml=float(plan["daily_volume_ml"]),
            rate_ml_per_h=float(plan["rate_ml_per_h"]),
            ceiling_ml_per_h=float(plan["max_rate_ml_per_h"]),
        )
        return self._order_answer(header, order, True, note, day1)

    # -- the rules ---------------------------------------------------------------------------

    def _channel_of_patient(self, patient_id: str) -> Channel:
        for channel in self.gateway.channels.values():
            if bound_patient(self.journal, channel.config) == patient_id:
                return channel
        raise Hl7RefusedError(f"PID-3: patient {patient_id!r} is on no channel of this gateway")

    def _channel_for_order(self, order: PumpOrder) -> Channel:
        try:
            return self._channel_of_patient(order.patient_id)
        except Hl7RefusedError:
            pass
        at_bed = [
            c for c in self.gateway.channels.values() if order.bed and c.config.bed == order.bed
        ]
        if not at_bed:
            raise Hl7RefusedError(
                f"PID-3/PV1-3: patient {order.patient_id!r} is on no channel, and no channel"
                f" stands at bed {order.bed!r}"
            )
        channel = at_bed[0]
        bound = bound_patient(self.journal, channel.config)
        if bound is not None and bound != order.patient_id:
            raise Hl7RefusedError(
                f"PID-3: the channel at bed {order.bed!r} infuses another patient; an order for"
                f" patient {order.patient_id!r} is not applied to it"
            )
        return channel

    def _order_config(self, order: PumpOrder) -> OrderConfig:
        arm = self.hl7.arm_codes.get(order.arm_code)
        if arm is None:
            known = ", ".join(sorted(self.hl7.arm_codes))
            raise Hl7RefusedError(f"OBX IGMFAT-ARM: arm code {order.arm_code!r} unknown ({known})")
        product = self.hl7.product_codes.get(order.product_code)
        if product is None:
            known = ", ".join(sorted(self.hl7.product_codes))
            raise Hl7RefusedError(f"RXG-4: product code {order.product_code!r} unknown ({known})")
        data: dict[str, Any] = {
            "arm": arm,
            "weight_kg": order.weight_kg,
            "product": product,
            "randomised_at": _instant(order.randomised_at_s),
        }
        if order.baseline_igm is not None:
            data["igm_mg_dl"] = order.baseline_igm.value
            data["titer_measured_at"] = _instant(order.baseline_igm.measured_at_s)
        if order.baseline_hematocrit is not None:
            data["hematocrit"] = order.baseline_hematocrit.value
        try:
            return OrderConfig.model_validate(data)
        except ValidationError as exc:  # an InputError of ours arrives inside it
            raise Hl7RefusedError(format_validation_error(exc, prefix="order")) from None

    def _check_ordered_rate(self, order: PumpOrder, config: OrderConfig) -> None:
        if order.ordered_rate_ml_per_h is None:
            return
        ceiling = ceiling_ml_per_h(
            config.weight_kg,
            config.ceiling_ml_per_kg_per_h,
            concentration_mg_per_ml=config.product.concentration_mg_per_ml,
        )
        if order.ordered_rate_ml_per_h > ceiling:
            raise Hl7RefusedError(
                f"RXG-15: ordered rate {order.ordered_rate_ml_per_h:g} mL/h is above this"
                f" patient's ceiling {ceiling:.2f} mL/h (0.4 mL/kg/h, 20 mg/kg/h): not clamped;"
                " correct the order"
            )

    # -- answers ---------------------------------------------------------------------------

    def _ids(self) -> dict[str, Any]:
        return {
            "control_id": new_control_id(),
            "now_s": self.gateway.clock.wall(),
            "sending_application": self.hl7.sending_application,
            "sending_facility": self.hl7.sending_facility,
        }

    def _ack(self, header: Hl7Header, code: Literal["AA", "AE", "AR"], text: str) -> str:
        return build_ack(header, code, text[:2000], **self._ids())

    def _order_answer(
        self,
        header: Hl7Header,
        order: PumpOrder,
        accepted: bool,
        text: str,
        plan: OrderPlan | None,
    ) -> str:
        return build_order_response(
            header, order, accepted=accepted, text=text[:2000], plan=plan, **self._ids()
        )


def _instant(unix_s: float) -> datetime:
    return datetime.fromtimestamp(unix_s, UTC)


def _reason(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
