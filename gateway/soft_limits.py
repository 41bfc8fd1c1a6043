"""Soft limits (dose-error reduction): plausible titers and weights, below the hard limits.

The hard ranges (titer 0-1000 mg/dL, weight 30-250 kg) live in :mod:`gateway.dosing` and
:mod:`gateway.safety` and can never be passed.  A value inside the hard range but outside a
soft range is most often a unit mix-up (g/L typed as mg/dL, pounds typed as kilograms): it is
refused with :class:`SoftLimitError`, whose one line names the field, the value, the soft range
and the most likely mix-up, until the person sends it again with ``confirm``.  A confirmed value
is used as it is, and the check returns a note for the journal.

Soft limits:

* titer: 5-400 mg/dL (:data:`TITER_SOFT_MG_PER_DL`);
* weight: 40-150 kg (:data:`WEIGHT_SOFT_KG`), and at most 10 % from the previous weight
  (:data:`WEIGHT_CHANGE_SOFT_FRACTION`).

The bounds themselves are inside: exactly 5 or 400 mg/dL, 40 or 150 kg, or a change of exactly
10 % passes without ``confirm``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Final

from gateway.dosing import TITER_MG_PER_DL_RANGE
from gateway.errors import InputError
from gateway.safety import WEIGHT_KG_MAX, WEIGHT_KG_MIN
from gateway.validate import finite_in_range

#: Plausible serum IgM titers (mg/dL); outside needs ``confirm``.
TITER_SOFT_MG_PER_DL: Final[tuple[float, float]] = (5.0, 400.0)
#: Plausible adult weights (kg); outside needs ``confirm``.
WEIGHT_SOFT_KG: Final[tuple[float, float]] = (40.0, 150.0)
#: A weight more than this fraction away from the previous weight needs ``confirm``.
WEIGHT_CHANGE_SOFT_FRACTION: Final[float] = 0.10

#: How a refused value is accepted; a caller may reword it (``--confirm``, ``confirm: true``).
CONFIRM_HOW: Final[str] = "send it again with confirm"
#: The same, as the HTTP API says it, and as the command line says it.
API_CONFIRM_HOW: Final[str] = 'send it again with "confirm": true'
CLI_CONFIRM_HOW: Final[str] = "run it again with --confirm"
#: The start of the note a confirmed out-of-limit value returns, for the journal.
CONFIRMED_NOTE_PREFIX: Final[str] = "confirmed outside soft limit"

_MG_PER_DL_PER_G_PER_L: Final[float] = 100.0
_MG_PER_L_PER_MG_PER_DL: Final[float] = 10.0
_KG_PER_LB: Final[float] = 0.45359237  # exact, by definition


class SoftLimitError(InputError):
    """A value inside the hard range but outside a soft limit, not confirmed.  Nothing changed.

    ``field`` and ``value`` (also as the float ``number``) name the input; ``problem`` says how
    it is outside (``"0.3 mg/dL is below the soft limit of 5 mg/dL"``); ``hint`` is the most
    likely unit mix-up (``"did you mean g/L? 0.3 g/L = 30 mg/dL"``) or, when none is plausible,
    what to check; ``unit_hint`` says which; ``unit`` is the value's unit; ``how_to_confirm`` is
    how to use the value anyway.  ``allowed`` (from :class:`InputError`) is the soft range.
    """

    def __init__(
        self,
        field: str,
        value: float,
        *,
        allowed: str,
        problem: str,
        hint: str,
        unit_hint: bool,
        unit: str,
        how_to_confirm: str = CONFIRM_HOW,
    ) -> None:
        super().__init__(field, allowed, value)
        self.number = value
        self.problem = problem
        self.hint = hint
        self.unit_hint = unit_hint
        self.unit = unit
        self.how_to_confirm = how_to_confirm
        advice = f"{hint}. Check the unit" if unit_hint else hint
        self.args = (
            f"{field}: {problem}: {advice}; to use {_num(value)} {unit} as it is, {how_to_confirm}",
        )

    def reworded(self, how_to_confirm: str) -> SoftLimitError:
        """The same refusal, saying ``how_to_confirm`` (e.g. ``"run it again with --confirm"``)."""
        return SoftLimitError(
            self.field,
            self.number,
            allowed=self.allowed,
            problem=self.problem,
            hint=self.hint,
            unit_hint=self.unit_hint,
            unit=self.unit,
            how_to_confirm=how_to_confirm,
        )


def check_titer(igm_mg_dl: float, *, confirm: bool) -> str | None:
    """Soft-check a serum IgM titer (mg/dL) already within the hard range.

    Returns None inside 5-400 mg/dL; outside, raises :class:`SoftLimitError` unless ``confirm``,
    in which case it returns a short note for the journal.  A value outside the hard range
    raises :class:`InputError` whatever ``confirm`` says.
    """
    low, high = TITER_MG_PER_DL_RANGE
    titer = finite_in_range("igm_mg_dl", igm_mg_dl, low, high, "mg/dL")
    soft_low, soft_high = TITER_SOFT_MG_PER_DL
    if soft_low <= titer <= soft_high:
        return None
    if titer < soft_low:
        problem = f"{_num(titer)} mg/dL is below the soft limit of {soft_low:g} mg/dL"
        as_mg_dl = titer * _MG_PER_DL_PER_G_PER_L
        unit_hint = soft_low <= as_mg_dl <= soft_high
        hint = (
            f"did you mean g/L? {_num(titer)} g/L = {_one_decimal(as_mg_dl)} mg/dL"
            if unit_hint
            else "check the titer"
        )
    else:
        problem = f"{_num(titer)} mg/dL is above the soft limit of {soft_high:g} mg/dL"
        as_mg_dl = titer / _MG_PER_L_PER_MG_PER_DL
        unit_hint = soft_low <= as_mg_dl <= soft_high
        hint = (
            f"did you mean mg/L? {_num(titer)} mg/L = {_one_decimal(as_mg_dl)} mg/dL"
            if unit_hint
            else "check the titer"
        )
    if confirm:
        return f"{CONFIRMED_NOTE_PREFIX}: igm_mg_dl {problem}"
    raise SoftLimitError(
        "igm_mg_dl",
        titer,
        allowed=f"from {soft_low:g} to {soft_high:g} mg/dL (soft limit), or confirmed",
        problem=problem,
        hint=hint,
        unit_hint=unit_hint,
        unit="mg/dL",
    )


def check_weight(
    weight_kg: float, *, previous_weight_kg: float | None, confirm: bool
) -> str | None:
    """Soft-check a weight (kg) already within the hard range, against the previous weight.

    Outside 40-150 kg, or more than 10 % from ``previous_weight_kg`` (when given), raises
    :class:`SoftLimitError` unless ``confirm``, in which case it returns a short note for the
    journal; inside, returns None.  A weight outside the hard range raises :class:`InputError`
    whatever ``confirm`` says.
    """
    weight = finite_in_range("weight_kg", weight_kg, WEIGHT_KG_MIN, WEIGHT_KG_MAX, "kg")
    previous = (
        None
        if previous_weight_kg is None
        else finite_in_range(
            "previous_weight_kg", previous_weight_kg, WEIGHT_KG_MIN, WEIGHT_KG_MAX, "kg"
        )
    )
    soft_low, soft_high = WEIGHT_SOFT_KG
    problems: list[str] = []
    hint = "check the weight"
    unit_hint = False
    if weight < soft_low:
        problems.append(f"{_num(weight)} kg is below the soft limit of {soft_low:g} kg")
    elif weight > soft_high:
        problems.append(f"{_num(weight)} kg is above the soft limit of {soft_high:g} kg")
        as_kg = weight * _KG_PER_LB
        if soft_low <= as_kg <= soft_high:
            unit_hint = True
            hint = f"did you mean pounds? {_num(weight)} lb = {_one_decimal(as_kg)} kg"
    change = None if previous is None else _change_outside(weight, previous)
    if previous is not None and change is not None:
        direction = "above" if weight > previous else "below"
        percent = f"{_percent_above(change, WEIGHT_CHANGE_SOFT_FRACTION)} %"
        limit = f"{_one_decimal(WEIGHT_CHANGE_SOFT_FRACTION * 100.0)} %"
        if problems:
            problems.append(
                f"{percent} {direction} the previous {_num(previous)} kg (more than {limit})"
            )
        else:
            problems.append(
                f"{_num(weight)} kg is {percent} {direction} the previous {_num(previous)} kg "
                f"(more than {limit})"
            )
    if not problems:
        return None
    problem = "; and ".join(problems)
    if confirm:
        return f"{CONFIRMED_NOTE_PREFIX}: weight_kg {problem}"
    allowed = f"from {soft_low:g} to {soft_high:g} kg (soft limit)"
    if previous is not None:
        allowed += (
            f" and within {_one_decimal(WEIGHT_CHANGE_SOFT_FRACTION * 100.0)} % of the "
            f"previous {_num(previous)} kg"
        )
    raise SoftLimitError(
        "weight_kg",
        weight,
        allowed=f"{allowed}, or confirmed",
        problem=problem,
        hint=hint,
        unit_hint=unit_hint,
        unit="kg",
    )


def _change_outside(weight: float, previous: float) -> float | None:
    """The relative change from ``previous`` if it is more than the soft fraction, else None.

    Compared in decimal on the values as written, so exactly 10 % (77 kg after 70 kg) is inside.
    """
    new, old = Decimal(repr(weight)), Decimal(repr(previous))
    limit = Decimal(repr(WEIGHT_CHANGE_SOFT_FRACTION))
    if abs(new - old) <= limit * old:
        return None
    return abs(weight - previous) / previous


def _num(value: float) -> str:
    """``value`` as written: ``154``, ``0.3``, ``70.12345`` (never rounded to 6 digits)."""
    short = f"{value:g}"
    return short if float(short) == value else repr(value)


def _percent_above(fraction: float, limit: float) -> str:
    """``fraction`` in percent, with the fewest decimals (at least one) that show it is above
    ``limit`` (10.04 % is "10.04", not "10" beside "more than 10 %")."""
    percent = fraction * 100.0
    for decimals in range(1, 7):
        text = f"{percent:.{decimals}f}".rstrip("0").rstrip(".")
        if float(text) > limit * 100.0:
            return text
    return repr(percent)


def _one_decimal(value: float) -> str:
    """``value`` to at most one decimal, without a trailing ``.0`` (30, 69.9, 14.3)."""
    return f"{round(value, 1):g}"
