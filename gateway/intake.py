"""Intake: turning what a person, the lab or a config file sends into a typed input, or a refusal.

Every function here is pure: it checks a request against the hard ranges, the soft limits
(:mod:`gateway.soft_limits`), the clock and the channel's current state, and returns the typed
input the controller will apply, or raises :class:`~gateway.errors.InputError` naming the field
and what is allowed.  A refused request changes nothing; an accepted one is journalled as
received before the controller sees it.
"""

from __future__ import annotations

from typing import Final

from gateway.config import OrderConfig
from gateway.course_inputs import OrderInput, TiterInput, WeightInput
from gateway.course_state import CourseState, Order
from gateway.dosing import Arm, Product, validate_hematocrit, validate_titer_mg_per_dl
from gateway.errors import InputError
from gateway.planner import MAX_START_DELAY_H, SECONDS_PER_HOUR
from gateway.rules import CourseRules
from gateway.safety import validate_ceiling_ml_per_kg_per_h, validate_weight_kg
from gateway.soft_limits import check_titer, check_weight
from gateway.timestamps import CLOCK_SKEW_S, check_not_future, check_not_older, format_instant

#: A titer drawn longer ago than this is refused at intake: no course day could use it
#: (a day's titer is drawn at most ``titer_max_age_h`` before its window; a correction of the
#: running day's titer may be up to a day older).
TITER_INTAKE_MAX_AGE_S: Final[float] = 36.0 * SECONDS_PER_HOUR


def order_input(
    *,
    arm: Arm,
    weight_kg: float,
    igm_mg_dl: float | None,
    hematocrit: float | None,
    ceiling_ml_per_kg_per_h: float,
    product: Product,
    randomised_at_s: float | None,
    start_override_reason: str | None,
    titer_measured_at_s: float | None,
    confirm: bool,
    now_s: float,
    rules: CourseRules,
) -> OrderInput:
    """A new order, checked: ranges, soft limits, randomisation time and the 12-h rule."""
    weight = validate_weight_kg(weight_kg)
    ceiling = validate_ceiling_ml_per_kg_per_h(ceiling_ml_per_kg_per_h)
    notes: list[str] = []
    weight_note = check_weight(weight, previous_weight_kg=None, confirm=confirm)
    if weight_note:
        notes.append(weight_note)
    if arm is Arm.TITER:
        if igm_mg_dl is None:
            raise InputError("igm_mg_dl", "given for the titer arm (0-1000 mg/dL)", None)
        validate_titer_mg_per_dl(igm_mg_dl)
        validate_hematocrit(hematocrit)
        titer_note = check_titer(igm_mg_dl, confirm=confirm)
        if titer_note:
            notes.append(titer_note)
        if titer_measured_at_s is None:
            raise InputError(
                "titer_measured_at",
                "given for the titer arm: when the baseline titer's blood was drawn, ISO-8601 "
                "with a zone",
                None,
            )
        check_not_future("titer_measured_at", titer_measured_at_s, now_s, skew_s=CLOCK_SKEW_S)
        check_not_older(
            "titer_measured_at", titer_measured_at_s, now_s, max_age_s=rules.titer_max_age_s
        )
    elif igm_mg_dl is not None or hematocrit is not None:
        raise InputError("igm_mg_dl", "omitted for the flat arm", igm_mg_dl)
    reason = start_override_reason.strip() if start_override_reason else None
    if randomised_at_s is None:
        if rules.require_randomisation_time:
            raise InputError(
                "randomised_at",
                "given: when the patient was randomised, ISO-8601 with a zone (a site may "
                "allow orders without it: require_randomisation_time = false)",
                None,
            )
    else:
        check_not_future("randomised_at", randomised_at_s, now_s, skew_s=CLOCK_SKEW_S)
        delay_h = (now_s - randomised_at_s) / SECONDS_PER_HOUR
        if delay_h > MAX_START_DELAY_H and not reason:
            raise InputError(
                "randomised_at",
                f"within {MAX_START_DELAY_H:g} h before the start (it was {delay_h:.1f} h ago); "
                "give start_override_reason to start later",
                format_instant(randomised_at_s),
            )
    order = Order(
        arm=arm,
        weight_kg=weight,
        ceiling_ml_per_kg_per_h=ceiling,
        concentration_mg_per_ml=product.concentration_mg_per_ml,
        igm_content_mg_per_ml=product.igm_content_mg_per_ml,
        randomised_at_s=randomised_at_s,
        start_override_reason=reason,
        received_at_s=now_s,
    )
    return OrderInput(
        order=order,
        igm_mg_dl=igm_mg_dl,
        hematocrit=hematocrit,
        titer_measured_at_s=titer_measured_at_s,
        confirmed_notes=tuple(notes),
    )


def titer_input(
    *,
    igm_mg_dl: float,
    hematocrit: float,
    measured_at_s: float,
    confirm: bool,
    corrects_day: int | None,
    state: CourseState,
    now_s: float,
) -> TiterInput:
    """A titer for a titer-arm channel, drawn at ``measured_at_s`` (required)."""
    igm = validate_titer_mg_per_dl(igm_mg_dl)
    hct = validate_hematocrit(hematocrit)
    if state.order is None or state.order.arm is not Arm.TITER:
        arm = None if state.order is None else state.order.arm.value
        raise InputError("arm", "titer for a titer to be used", arm)
    check_not_future("measured_at", measured_at_s, now_s, skew_s=CLOCK_SKEW_S)
    check_not_older("measured_at", measured_at_s, now_s, max_age_s=TITER_INTAKE_MAX_AGE_S)
    if corrects_day is not None:
        today = state.today
        if (
            today is None
            or today.day != corrects_day
            or today.closed
            or (today.prescription is None)
        ):
            running = "none" if today is None else str(today.day)
            raise InputError(
                "corrects_day",
                f"the running, prescribed day (now: {running})",
                corrects_day,
            )
    if corrects_day is None:
        for titer in state.titers:
            if (titer.measured_at_s, titer.igm_mg_dl, titer.hematocrit) == (
                measured_at_s,
                igm,
                hct,
            ):
                raise InputError(
                    "measured_at",
                    "a blood draw not yet recorded (this result is titer "
                    f"{titer.seq}, already received; to change its values use corrects_day)",
                    format_instant(measured_at_s),
                )
    note = check_titer(igm, confirm=confirm)
    return TiterInput(
        igm_mg_dl=igm,
        hematocrit=hct,
        measured_at_s=measured_at_s,
        received_at_s=now_s,
        confirmed_note=note,
        corrects_day=corrects_day,
    )


def weight_input(
    *, weight_kg: float, reason: str, confirm: bool, state: CourseState
) -> WeightInput:
    """A weight correction for a channel with an order."""
    weight = validate_weight_kg(weight_kg)
    if state.order is None:
        raise InputError("weight_kg", "sent to a channel that has an order (none yet)", weight)
    note = check_weight(weight, previous_weight_kg=state.weight_kg, confirm=confirm)
    return WeightInput(weight_kg=weight, reason=reason, confirmed_note=note)


def order_differences(
    config_order: OrderConfig, state: CourseState
) -> list[tuple[str, object, object]]:
    """(field, config value, journal value) for every field where they disagree.

    The weight differs only when the config changed it since the journal took it (from the
    order or an adoption): later corrections over the API are the journal's.
    """
    journal_order = state.order
    assert journal_order is not None
    differences: list[tuple[str, object, object]] = []
    if config_order.weight_kg != state.config_weight_kg:
        differences.append(("weight_kg", config_order.weight_kg, state.weight_kg))
    product = config_order.product
    pairs: list[tuple[str, object, object]] = [
        ("arm", config_order.arm.value, journal_order.arm.value),
        (
            "ceiling_ml_per_kg_per_h",
            config_order.ceiling_ml_per_kg_per_h,
            journal_order.ceiling_ml_per_kg_per_h,
        ),
        (
            "product.concentration_mg_per_ml",
            product.concentration_mg_per_ml,
            journal_order.concentration_mg_per_ml,
        ),
        (
            "product.igm_content_mg_per_ml",
            product.igm_content_mg_per_ml,
            journal_order.igm_content_mg_per_ml,
        ),
        ("randomised_at_s", config_order.randomised_at_s, journal_order.randomised_at_s),
    ]
    return differences + [(name, mine, theirs) for name, mine, theirs in pairs if mine != theirs]
