"""Scaled integers: engineering values to register counts and back, exactly.

A register holds a whole number of *counts*; one count is the register's resolution, e.g.
0.01 mL/h for a rate.  Encoding **truncates toward zero and never rounds up**, so a host can never
command more than it meant; decoding is exact and returns :class:`~decimal.Decimal`.

A ``float`` is read as the shortest decimal that round-trips it (``repr``), so ``15.48`` encodes
as 1548 counts even though the binary float lies just below 15.48.  All arithmetic runs in a
private decimal context, so the application's decimal context cannot change a result.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from decimal import (
    ROUND_DOWN,
    Context,
    Decimal,
    DivisionByZero,
    InvalidOperation,
    Overflow,
    localcontext,
)
from typing import Final

from protocol.modbus.errors import RegisterDecodeError, RegisterEncodeError, show
from protocol.modbus.words import U32_MAX

#: One count of a rate register (RATE_SETPOINT, MEASURED_RATE, MAX_RATE, ...), in mL/h.
RATE_RESOLUTION_ML_PER_H: Final = Decimal("0.01")
#: One count of a volume register (VTBI, VTBI_REMAINING, VOLUME_INFUSED), in mL.
VOLUME_RESOLUTION_ML: Final = Decimal("0.001")

#: Engineering values accepted by the encoders.
Number = Decimal | int | float

# 60 digits hold every u32 count at every resolution used here exactly; traps make surprises errors.
_EXACT: Final = Context(
    prec=60, rounding=ROUND_DOWN, traps=[InvalidOperation, DivisionByZero, Overflow]
)


def as_decimal(value: Number) -> Decimal:
    """Return ``value`` as a finite :class:`Decimal` (a float via its shortest ``repr``).

    Raises :class:`RegisterEncodeError` for ``bool``, non-numbers, NaN and infinities.
    """
    if isinstance(value, bool):
        raise RegisterEncodeError(f"{show(value)} is a bool, not a number")
    if isinstance(value, Decimal):
        decimal = value
    elif isinstance(value, int):
        decimal = Decimal(value)
    elif isinstance(value, float):
        decimal = Decimal(repr(value))
    else:
        raise RegisterEncodeError(f"{show(value)} is not a number")
    if not decimal.is_finite():
        raise RegisterEncodeError(f"{show(value)} is not a finite number")
    return decimal


def _brief(decimal: Decimal) -> str:
    """``decimal`` for an error message, shortened when it has very many digits."""
    text = str(decimal)
    return text if len(text) <= 40 else f"{decimal:.6E}"


def to_counts(value: Number, resolution: Decimal, *, max_counts: int = U32_MAX) -> int:
    """Convert an engineering ``value`` to register counts of ``resolution``, truncating toward 0.

    The result ``n`` satisfies ``n * resolution <= value < (n + 1) * resolution``.  Raises
    :class:`RegisterEncodeError` when ``value`` is negative, not a finite number, or needs more
    than ``max_counts`` counts.
    """
    decimal = as_decimal(value)
    with localcontext(_EXACT):
        if decimal < 0:
            raise RegisterEncodeError(f"{_brief(decimal)} is negative")
        if decimal >= (max_counts + 1) * resolution:
            raise RegisterEncodeError(
                f"{_brief(decimal)} is too large: at most {max_counts * resolution} "
                f"({max_counts} counts of {resolution})"
            )
        return int(decimal // resolution)


def count_truncator(resolution: Decimal, *, max_counts: int = U32_MAX) -> Callable[[Number], int]:
    """:func:`to_counts` bound to one ``resolution``: the same counts and the same errors, with a
    fast path for a plain ``float`` when ``resolution`` is a power of ten (0.01, 0.001, 1, ...).

    Why: the software pump encodes five floats per status read, and building a ``Decimal`` from
    ``repr`` and dividing it cost most of the read (``docs/performance.md``).  The fast path
    uses the same digits: a ``repr`` written ``W.F`` (no sign, no exponent: every float from
    1e-4 to below 1e16) is the decimal ``W.F`` exactly, and truncating it to ``10**-k`` keeps
    ``W`` and the first ``k`` digits of ``F``.  Anything else (another type, a negative, ``-0.0``,
    exponent notation, NaN, infinities, more than ``max_counts`` counts) goes to
    :func:`to_counts` itself, which returns or raises as always.
    """
    if not isinstance(resolution, Decimal):
        raise TypeError(f"resolution {show(resolution)} is not a Decimal")
    if not resolution.is_finite() or resolution <= 0:
        raise ValueError(f"resolution {show(resolution)} is not positive and finite")
    general: Callable[[Number], int] = functools.partial(
        to_counts, resolution=resolution, max_counts=max_counts
    )
    _, digits, exponent = resolution.normalize(_EXACT).as_tuple()
    if digits != (1,) or not isinstance(exponent, int) or exponent > 0:
        return general  # not 10**-k: no digit cutting
    places = -exponent
    padding = "0" * places

    def truncate(value: Number) -> int:
        if type(value) is float:
            whole, _, fraction = repr(value).partition(".")
            if whole.isdigit() and fraction.isdigit():
                counts = int(whole + (fraction + padding)[:places])
                if counts <= max_counts:
                    return counts
        return general(value)

    return truncate


def from_counts(counts: int, resolution: Decimal) -> Decimal:
    """Convert register ``counts`` to the exact engineering value ``counts * resolution``.

    Raises :class:`RegisterDecodeError` when ``counts`` is not a non-negative ``int``.
    """
    if not isinstance(counts, int) or isinstance(counts, bool) or counts < 0:
        raise RegisterDecodeError(f"{show(counts)} is not a register count")
    return _EXACT.multiply(resolution, counts)  # the context passed, not entered: faster


def count_scaler(resolution: Decimal) -> Callable[[int], Decimal]:
    """:func:`from_counts` bound to one ``resolution``, for counts already known to be whole and
    non-negative (e.g. joined from two register words that were range-checked): the same exact
    product in the same private context, without checking ``counts`` again.

    Why: a poll scales five registers, and the call and the check cost several times the
    multiplication (``docs/performance.md``).  ``resolution`` is checked here, once.
    """
    if not isinstance(resolution, Decimal):
        raise TypeError(f"resolution {show(resolution)} is not a Decimal")
    if not resolution.is_finite() or resolution <= 0:
        raise ValueError(f"resolution {show(resolution)} is not positive and finite")
    return functools.partial(_EXACT.multiply, resolution)


def rate_ml_per_h_to_counts(rate_ml_per_h: Number) -> int:
    """Rate in mL/h to counts of 0.01 mL/h, truncated toward zero (15.489 -> 1548)."""
    return to_counts(rate_ml_per_h, RATE_RESOLUTION_ML_PER_H)


def counts_to_rate_ml_per_h(counts: int) -> Decimal:
    """Counts of 0.01 mL/h to the exact rate in mL/h (1548 -> 15.48)."""
    return from_counts(counts, RATE_RESOLUTION_ML_PER_H)


def volume_ml_to_counts(volume_ml: Number) -> int:
    """Volume in mL to counts of 0.001 mL, truncated toward zero (2.5009 -> 2500)."""
    return to_counts(volume_ml, VOLUME_RESOLUTION_ML)


def counts_to_volume_ml(counts: int) -> Decimal:
    """Counts of 0.001 mL to the exact volume in mL (2500 -> 2.500)."""
    return from_counts(counts, VOLUME_RESOLUTION_ML)
