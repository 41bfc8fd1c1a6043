"""Numbers, rates and volumes in the NE-1000 number field.

A number field holds at most 4 digits plus one decimal point, at most 3 digits after the point.
Values are *truncated* to fit, never rounded up, so a rate or volume sent to a pump never exceeds
the one asked for.  All arithmetic is exact (:class:`fractions.Fraction` and
:class:`decimal.Decimal`); a ``float`` argument is taken at its shortest round-tripping decimal
(``repr``), so ``0.3`` means 0.3 and not 0.299999999999999988898.

Rates are in mL/h at the API (``rate_ml_per_h``), volumes in mL (``volume_ml``); parsers return
exact :class:`~decimal.Decimal` values (every unit converts to mL/h or mL by an exact decimal
factor).
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from fractions import Fraction
from typing import NamedTuple, TypeAlias

from protocol.newera.constants import (
    MAX_NUMBER_DECIMALS,
    MAX_NUMBER_DIGITS,
    VOLUME_UNIT_DIAMETER_THRESHOLD_MM,
    RateUnit,
    VolumeUnit,
)
from protocol.newera.errors import PayloadError, UnrepresentableNumberError

#: What the encoders accept as a number.
Number: TypeAlias = Decimal | Fraction | int | float

#: Largest value + 1 the field can hold (``9999``).
_FIELD_LIMIT = 10**MAX_NUMBER_DIGITS

_NUMBER_RE = re.compile(r"(?P<int>[0-9]*)(?:\.(?P<frac>[0-9]*))?")
_QUANTITY_RE = re.compile(r"(?P<number>[0-9.]+)(?P<unit>[A-Z]*)")

#: In a tie of resolution (which only happens when both units show the same digits, hence the
#: same value), prefer the µL unit, as nesp-lib does.
_RATE_UNIT_PREFERENCE = (
    RateUnit.UL_PER_MIN,
    RateUnit.UL_PER_H,
    RateUnit.ML_PER_MIN,
    RateUnit.ML_PER_H,
)


def exact_value(value: Number) -> Fraction:
    """``value`` as an exact fraction; a float is read at its shortest decimal ``repr``.

    :raises UnrepresentableNumberError: not a finite real number (NaN, infinite, bool, other type).
    """
    if isinstance(value, bool):
        raise UnrepresentableNumberError(f"a bool is not a number: {value!r}")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise UnrepresentableNumberError(f"not a finite number: {value!r}")
        return Fraction(Decimal(repr(value)))
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise UnrepresentableNumberError(f"not a finite number: {value!r}")
        return Fraction(value)
    if isinstance(value, int | Fraction):
        return Fraction(value)
    raise UnrepresentableNumberError(f"not a number: {value!r}")


def _truncate(value: Fraction) -> tuple[int, int]:
    """Truncate a non-negative ``value < 10000`` to the field.

    :returns: ``(scaled, decimals)`` with the kept value ``scaled / 10**decimals``.
    """
    integer_part = math.floor(value)
    integer_digits = len(str(integer_part))  # 0 counts as one digit: "0.999"
    decimals = min(MAX_NUMBER_DECIMALS, MAX_NUMBER_DIGITS - integer_digits)
    return math.floor(value * 10**decimals), decimals


def _checked_field_value(value: Number) -> Fraction:
    exact = exact_value(value)
    if exact < 0:
        raise UnrepresentableNumberError(f"negative: {value!r}")
    if exact >= _FIELD_LIMIT:
        raise UnrepresentableNumberError(f"more than {MAX_NUMBER_DIGITS} digits: {value!r}")
    return exact


def _digits(scaled: int, decimals: int) -> tuple[str, str]:
    if decimals == 0:
        return str(scaled), ""
    integer, fraction = divmod(scaled, 10**decimals)
    return str(integer), str(fraction).zfill(decimals)


def format_number(value: Number) -> str:
    """``value`` truncated to the number field, in the short form a host sends (``"28"``,
    ``"26.59"``, ``"466.6"``, ``"0.5"``).  Unitless; the caller knows the unit.

    :raises UnrepresentableNumberError: negative, NaN, infinite, ``>= 10000``, or positive but
        below 0.001 (truncation would make it ``0``, which some commands read as special, e.g.
        ``VOL0`` = continuous).
    """
    exact = _checked_field_value(value)
    scaled, decimals = _truncate(exact)
    if scaled == 0 and exact != 0:
        raise UnrepresentableNumberError(f"too small, would truncate to 0: {value!r}")
    integer, fraction = _digits(scaled, decimals)
    fraction = fraction.rstrip("0")
    return f"{integer}.{fraction}" if fraction else integer


def format_display_number(value: Number) -> str:
    """``value`` truncated to the number field, in the form a pump replies with: every digit the
    field holds at this magnitude and always a decimal point (``"28.00"``, ``"0.000"``,
    ``"1234."``), which is also what nesp-lib's reply parser requires.  A positive value below
    0.001 shows as ``"0.000"``, as on the pump's display.

    :raises UnrepresentableNumberError: negative, NaN, infinite or ``>= 10000``.
    """
    scaled, decimals = _truncate(_checked_field_value(value))
    integer, fraction = _digits(scaled, decimals)
    return f"{integer}.{fraction}"


def number_resolution(value: Number) -> Decimal:
    """The step of the last digit the field keeps for a number of this magnitude (unitless):
    ``0.001`` below 10, ``0.01`` below 100, ``0.1`` below 1000, ``1`` up to 9999.

    :raises UnrepresentableNumberError: as :func:`format_display_number`.
    """
    _, decimals = _truncate(_checked_field_value(value))
    return Decimal(1).scaleb(-decimals)


def parse_number(text: str) -> Decimal:
    """Parse a number field (``"466.6"``, ``"28"``, ``".5"``, ``"1234."``), unitless, exactly.

    :raises PayloadError: not digits with at most one point, no digit, more than 4 digits or
        more than 3 after the point.
    """
    match = _NUMBER_RE.fullmatch(text)
    if match is None:
        raise PayloadError(f"not a number: {text!r}", raw=_raw(text))
    integer = match["int"]
    fraction = match["frac"] or ""
    if not integer and not fraction:
        raise PayloadError(f"no digits: {text!r}", raw=_raw(text))
    if len(integer) + len(fraction) > MAX_NUMBER_DIGITS:
        raise PayloadError(f"more than {MAX_NUMBER_DIGITS} digits: {text!r}", raw=_raw(text))
    if len(fraction) > MAX_NUMBER_DECIMALS:
        raise PayloadError(
            f"more than {MAX_NUMBER_DECIMALS} digits after the point: {text!r}", raw=_raw(text)
        )
    return Decimal(text)


def _raw(text: str) -> bytes:
    return text.encode("ascii", "backslashreplace")


def _split_quantity(text: str, what: str) -> tuple[Decimal, str]:
    match = _QUANTITY_RE.fullmatch(text)
    if match is None:
        raise PayloadError(f"not a {what}: {text!r}", raw=_raw(text))
    return parse_number(match["number"]), match["unit"]


# --- rates ------------------------------------------------------------------------------------


class EncodedRate(NamedTuple):
    """A rate as it goes into ``RAT``: the number text and its unit."""

    number: str
    unit: RateUnit

    @property
    def argument(self) -> str:
        """The ``RAT`` argument, e.g. ``"466.6UM"``."""
        return f"{self.number}{self.unit.value}"

    @property
    def rate_ml_per_h(self) -> Decimal:
        """The rate the pump will run at, mL/h (exact)."""
        return parse_number(self.number) * self.unit.ml_per_h

    @property
    def resolution_ml_per_h(self) -> Decimal:
        """The step of the last digit of :attr:`number`, in mL/h."""
        return number_resolution(parse_number(self.number)) * self.unit.ml_per_h


def encode_rate(rate_ml_per_h: Number) -> EncodedRate:
    """The ``RAT`` argument for ``rate_ml_per_h`` (mL/h): the unit among µL/min, mL/min, µL/h and
    mL/h whose field keeps the finest resolution (smallest step in mL/h, i.e. most significant
    digits kept), and the value truncated down in it.  28 mL/h → ``("466.6", UM)``, which the
    pump runs at 27.996 mL/h.

    The result is never above the request and less than one step (:attr:`~EncodedRate.
    resolution_ml_per_h`) below it.

    :raises UnrepresentableNumberError: not a positive finite number (stop the pump with ``STP``
        rather than sending a zero rate), or out of the range any unit can hold
        (below 0.001 µL/h, or 10000 mL/min and above).
    """
    exact = exact_value(rate_ml_per_h)
    if exact <= 0:
        raise UnrepresentableNumberError(f"a rate must be positive: {rate_ml_per_h!r} mL/h")
    best: tuple[Fraction, RateUnit, int, int] | None = None
    for unit in _RATE_UNIT_PREFERENCE:
        unit_ml_per_h = Fraction(unit.ml_per_h)
        in_unit = exact / unit_ml_per_h
        if in_unit >= _FIELD_LIMIT:
            continue
        scaled, decimals = _truncate(in_unit)
        if scaled == 0:
            continue
        step_ml_per_h = unit_ml_per_h / 10**decimals
        if best is None or step_ml_per_h < best[0]:
            best = (step_ml_per_h, unit, scaled, decimals)
    if best is None:
        raise UnrepresentableNumberError(f"no rate unit can hold {rate_ml_per_h!r} mL/h")
    _, unit, scaled, decimals = best
    return EncodedRate(format_number(Fraction(scaled, 10**decimals)), unit)


def format_rate(rate_ml_per_h: Number, unit: RateUnit) -> str:
    """A rate as a pump reports it to a ``RAT`` query: display number in ``unit`` and the unit,
    e.g. ``format_rate(28, RateUnit.UL_PER_MIN) == "466.6UM"``.  ``rate_ml_per_h`` in mL/h.

    :raises UnrepresentableNumberError: the rate does not fit the field in ``unit``.
    """
    in_unit = exact_value(rate_ml_per_h) / Fraction(unit.ml_per_h)
    return f"{format_display_number(in_unit)}{unit.value}"


def split_rate_argument(text: str) -> tuple[Decimal, RateUnit | None]:
    """Split a ``RAT`` argument (``"466.6UM"``, ``"466.6"``) into its number (in the unit given,
    or in the pump's current unit when none is) and the unit.

    :raises PayloadError: malformed number or unknown unit.
    """
    number, unit_text = _split_quantity(text, "rate")
    if not unit_text:
        return number, None
    try:
        return number, RateUnit(unit_text)
    except ValueError:
        raise PayloadError(f"unknown rate unit: {text!r}", raw=_raw(text)) from None


def parse_rate(text: str) -> Decimal:
    """Parse a rate with its unit, as a pump reports it (``"466.6UM"``), into mL/h (exact):
    ``parse_rate("466.6UM") == Decimal("27.996")``.

    :raises PayloadError: malformed, or no unit.
    """
    number, unit = split_rate_argument(text)
    if unit is None:
        raise PayloadError(f"rate without unit: {text!r}", raw=_raw(text))
    return number * unit.ml_per_h


# --- volumes ----------------------------------------------------------------------------------


def volume_unit_for_diameter(diameter_mm: Number) -> VolumeUnit:
    """The volume unit a pump uses for a syringe of inside diameter ``diameter_mm`` (mm): µL at
    or below 14.00 mm, mL above."""
    threshold = Fraction(VOLUME_UNIT_DIAMETER_THRESHOLD_MM)
    return VolumeUnit.UL if exact_value(diameter_mm) <= threshold else VolumeUnit.ML


def encode_volume(volume_ml: Number, unit: VolumeUnit) -> str:
    """The ``VOL`` number text for ``volume_ml`` (mL) in the pump's current volume ``unit``,
    truncated down.  Zero is refused: ``VOL0`` means *continuous*, so a caller who wants that
    sends :data:`~protocol.newera.constants.CONTINUOUS_VOLUME_ARGUMENT` explicitly.

    :raises UnrepresentableNumberError: not positive, or does not fit the field in ``unit``.
    """
    exact = exact_value(volume_ml)
    if exact <= 0:
        raise UnrepresentableNumberError(f"a volume to dispense must be positive: {volume_ml!r}")
    return format_number(exact / Fraction(unit.ml))


def format_volume(volume_ml: Number, unit: VolumeUnit) -> str:
    """A volume as a pump reports it to a ``VOL`` query: display number in ``unit`` and the
    unit, e.g. ``format_volume(0.5, VolumeUnit.ML) == "0.500ML"``.  ``volume_ml`` in mL.

    :raises UnrepresentableNumberError: does not fit the field in ``unit``.
    """
    return f"{format_display_number(exact_value(volume_ml) / Fraction(unit.ml))}{unit.value}"


def parse_volume(text: str) -> Decimal:
    """Parse a volume with its unit (``"0.500ML"``, ``"250.0UL"``) into mL (exact).

    :raises PayloadError: malformed, or no unit.
    """
    number, unit_text = _split_quantity(text, "volume")
    try:
        unit = VolumeUnit(unit_text)
    except ValueError:
        raise PayloadError(f"volume without a known unit: {text!r}", raw=_raw(text)) from None
    return number * unit.ml


def parse_volume_argument(text: str) -> Decimal | VolumeUnit:
    """Parse a ``VOL`` argument: either a unit (``"UL"``, ``"ML"``: set the volume units) or a
    number in the pump's current volume unit (``"0"`` = continuous).

    :raises PayloadError: neither.
    """
    try:
        return VolumeUnit(text)
    except ValueError:
        return parse_number(text)
