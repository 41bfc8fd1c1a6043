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

#: ``10**decimals`` for every number of decimals the field can keep.
_POWERS_OF_TEN = tuple(10**decimals for decimals in range(MAX_NUMBER_DECIMALS + 1))
#: :func:`number_resolution` for every number of decimals the field can keep.
_RESOLUTIONS = tuple(Decimal(1).scaleb(-decimals) for decimals in range(MAX_NUMBER_DECIMALS + 1))

#: In a tie of resolution (which only happens when both units show the same digits, hence the
#: same value), prefer the µL unit, as nesp-lib does.
_RATE_UNIT_PREFERENCE = (
    RateUnit.UL_PER_MIN,
    RateUnit.UL_PER_H,
    RateUnit.ML_PER_MIN,
    RateUnit.ML_PER_H,
)
#: The units of :data:`_RATE_UNIT_PREFERENCE`, each with one of it in mL/h as an exact ratio.
_RATE_UNIT_RATIOS = tuple(
    (unit, *unit.ml_per_h.as_integer_ratio()) for unit in _RATE_UNIT_PREFERENCE
)
_THRESHOLD_RATIO = VOLUME_UNIT_DIAMETER_THRESHOLD_MM.as_integer_ratio()


def exact_value(value: Number) -> Fraction:
    """``value`` as an exact fraction; a float is read at its shortest decimal ``repr``.

    :raises UnrepresentableNumberError: not a finite real number (NaN, infinite, bool, other type).
    """
    numerator, denominator = _ratio(value)
    return Fraction(numerator, denominator)


def _ratio(value: Number) -> tuple[int, int]:
    """:func:`exact_value` as ``(numerator, denominator)``, the denominator positive (not always
    in lowest terms).  The field arithmetic below works on these two ints: it is exactly the
    :class:`~fractions.Fraction` arithmetic, without building a fraction (and its gcd) per step.

    :raises UnrepresentableNumberError: as :func:`exact_value`.
    """
    if isinstance(value, bool):
        raise UnrepresentableNumberError(f"a bool is not a number: {value!r}")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise UnrepresentableNumberError(f"not a finite number: {value!r}")
        return Decimal(repr(value)).as_integer_ratio()
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise UnrepresentableNumberError(f"not a finite number: {value!r}")
        return value.as_integer_ratio()
    if isinstance(value, int):
        return int(value), 1
    if isinstance(value, Fraction):
        return value.numerator, value.denominator
    raise UnrepresentableNumberError(f"not a number: {value!r}")


def _in_unit(value: Number, unit_size: Decimal) -> tuple[int, int]:
    """``value / unit_size`` as ``(numerator, denominator)``: a quantity (mL/h, mL) expressed
    in a unit of ``unit_size`` (a positive exact decimal, one unit in mL/h or mL)."""
    numerator, denominator = _ratio(value)
    unit_numerator, unit_denominator = unit_size.as_integer_ratio()
    return numerator * unit_denominator, denominator * unit_numerator


def _decimals(numerator: int, denominator: int) -> int:
    """How many digits after the point the field keeps for the non-negative value
    ``numerator / denominator < 10000``: the integer part takes the rest of the 4 digits, 0
    counting as one digit (``"0.999"``)."""
    integer_digits = len(str(numerator // denominator))
    return min(MAX_NUMBER_DECIMALS, MAX_NUMBER_DIGITS - integer_digits)


def _truncate(numerator: int, denominator: int) -> tuple[int, int]:
    """Truncate the non-negative value ``numerator / denominator < 10000`` to the field.

    :returns: ``(scaled, decimals)`` with the kept value ``scaled / 10**decimals``.
    """
    decimals = _decimals(numerator, denominator)
    return numerator * _POWERS_OF_TEN[decimals] // denominator, decimals


def _checked_field_ratio(numerator: int, denominator: int, shown: object = None) -> tuple[int, int]:
    """``numerator / denominator`` if the field can hold it; ``shown`` is the value the error
    names (default: the fraction itself)."""
    if numerator < 0:
        raise UnrepresentableNumberError(f"negative: {_shown(numerator, denominator, shown)!r}")
    if numerator >= _FIELD_LIMIT * denominator:
        raise UnrepresentableNumberError(
            f"more than {MAX_NUMBER_DIGITS} digits: {_shown(numerator, denominator, shown)!r}"
        )
    return numerator, denominator


def _shown(numerator: int, denominator: int, shown: object) -> object:
    return Fraction(numerator, denominator) if shown is None else shown


def _digits(scaled: int, decimals: int) -> tuple[str, str]:
    if decimals == 0:
        return str(scaled), ""
    integer, fraction = divmod(scaled, _POWERS_OF_TEN[decimals])
    return str(integer), str(fraction).zfill(decimals)


def _short_text(scaled: int, decimals: int) -> str:
    integer, fraction = _digits(scaled, decimals)
    fraction = fraction.rstrip("0")
    return f"{integer}.{fraction}" if fraction else integer


def format_number(value: Number) -> str:
    """``value`` truncated to the number field, in the short form a host sends (``"28"``,
    ``"26.59"``, ``"466.6"``, ``"0.5"``).  Unitless; the caller knows the unit.

    :raises UnrepresentableNumberError: negative, NaN, infinite, ``>= 10000``, or positive but
        below 0.001 (truncation would make it ``0``, which some commands read as special, e.g.
        ``VOL0`` = continuous).
    """
    numerator, denominator = _checked_field_ratio(*_ratio(value), value)
    return _short_field_text(numerator, denominator, value)


def _short_field_text(numerator: int, denominator: int, shown: object = None) -> str:
    """:func:`format_number` of a checked ``numerator / denominator``."""
    scaled, decimals = _truncate(numerator, denominator)
    if scaled == 0 and numerator != 0:
        raise UnrepresentableNumberError(
            f"too small, would truncate to 0: {_shown(numerator, denominator, shown)!r}"
        )
    return _short_text(scaled, decimals)


def format_display_number(value: Number) -> str:
    """``value`` truncated to the number field, in the form a pump replies with: every digit the
    field holds at this magnitude and always a decimal point (``"28.00"``, ``"0.000"``,
    ``"1234."``), which is also what nesp-lib's reply parser requires.  A positive value below
    0.001 shows as ``"0.000"``, as on the pump's display.

    :raises UnrepresentableNumberError: negative, NaN, infinite or ``>= 10000``.
    """
    return _display_text(*_checked_field_ratio(*_ratio(value), value))


def format_display_number_in(value: Number, unit_size: Decimal) -> str:
    """:func:`format_display_number` of ``value / unit_size`` (exact): a quantity in mL/h or mL
    shown in a unit of ``unit_size`` (one of :data:`~protocol.newera.constants.
    RATE_UNIT_ML_PER_H` or :data:`~protocol.newera.constants.VOLUME_UNIT_ML`).

    :raises UnrepresentableNumberError: as :func:`format_display_number` (naming the value in
        the unit).
    """
    return _display_text(*_checked_field_ratio(*_in_unit(value, unit_size)))


def _display_text(numerator: int, denominator: int) -> str:
    integer, fraction = _digits(*_truncate(numerator, denominator))
    return f"{integer}.{fraction}"


def number_resolution(value: Number) -> Decimal:
    """The step of the last digit the field keeps for a number of this magnitude (unitless):
    ``0.001`` below 10, ``0.01`` below 100, ``0.1`` below 1000, ``1`` up to 9999.

    :raises UnrepresentableNumberError: as :func:`format_display_number`.
    """
    return _RESOLUTIONS[_decimals(*_checked_field_ratio(*_ratio(value), value))]


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
    numerator, denominator = _ratio(rate_ml_per_h)
    if numerator <= 0:
        raise UnrepresentableNumberError(f"a rate must be positive: {rate_ml_per_h!r} mL/h")
    # (step numerator, step denominator, unit, scaled, decimals) of the finest unit so far.
    best: tuple[int, int, RateUnit, int, int] | None = None
    for unit, unit_numerator, unit_denominator in _RATE_UNIT_RATIOS:
        in_numerator = numerator * unit_denominator
        in_denominator = denominator * unit_numerator
        if in_numerator >= _FIELD_LIMIT * in_denominator:
            continue
        scaled, decimals = _truncate(in_numerator, in_denominator)
        if scaled == 0:
            continue
        # The step in mL/h is unit / 10**decimals; compare the fractions cross-multiplied.
        step_denominator = unit_denominator * _POWERS_OF_TEN[decimals]
        if best is None or unit_numerator * best[1] < best[0] * step_denominator:
            best = (unit_numerator, step_denominator, unit, scaled, decimals)
    if best is None:
        raise UnrepresentableNumberError(f"no rate unit can hold {rate_ml_per_h!r} mL/h")
    _, _, unit, scaled, decimals = best
    return EncodedRate(_short_text(scaled, decimals), unit)


def format_rate(rate_ml_per_h: Number, unit: RateUnit) -> str:
    """A rate as a pump reports it to a ``RAT`` query: display number in ``unit`` and the unit,
    e.g. ``format_rate(28, RateUnit.UL_PER_MIN) == "466.6UM"``.  ``rate_ml_per_h`` in mL/h.

    :raises UnrepresentableNumberError: the rate does not fit the field in ``unit``.
    """
    return f"{format_display_number_in(rate_ml_per_h, unit.ml_per_h)}{unit.value}"


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
    numerator, denominator = _ratio(diameter_mm)
    threshold_numerator, threshold_denominator = _THRESHOLD_RATIO
    at_most = numerator * threshold_denominator <= threshold_numerator * denominator
    return VolumeUnit.UL if at_most else VolumeUnit.ML


def encode_volume(volume_ml: Number, unit: VolumeUnit) -> str:
    """The ``VOL`` number text for ``volume_ml`` (mL) in the pump's current volume ``unit``,
    truncated down.  Zero is refused: ``VOL0`` means *continuous*, so a caller who wants that
    sends :data:`~protocol.newera.constants.CONTINUOUS_VOLUME_ARGUMENT` explicitly.

    :raises UnrepresentableNumberError: not positive, or does not fit the field in ``unit``.
    """
    if _ratio(volume_ml)[0] <= 0:
        raise UnrepresentableNumberError(f"a volume to dispense must be positive: {volume_ml!r}")
    return _short_field_text(*_checked_field_ratio(*_in_unit(volume_ml, unit.ml)))


def format_volume(volume_ml: Number, unit: VolumeUnit) -> str:
    """A volume as a pump reports it to a ``VOL`` query: display number in ``unit`` and the
    unit, e.g. ``format_volume(0.5, VolumeUnit.ML) == "0.500ML"``.  ``volume_ml`` in mL.

    :raises UnrepresentableNumberError: does not fit the field in ``unit``.
    """
    return f"{format_display_number_in(volume_ml, unit.ml)}{unit.value}"


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
