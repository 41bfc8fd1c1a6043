"""The NE-1000 number field: truncation (never rounding up), rate units, volumes."""

from __future__ import annotations

import re
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.errors import EncodeError, ProtocolError
from protocol.newera import (
    PayloadError,
    RateUnit,
    UnrepresentableNumberError,
    VolumeUnit,
    encode_rate,
    encode_volume,
    exact_value,
    format_display_number,
    format_number,
    format_rate,
    format_volume,
    number_resolution,
    parse_number,
    parse_rate,
    parse_volume,
    parse_volume_argument,
    split_rate_argument,
    volume_unit_for_diameter,
)

#: What a number field may look like: at most 4 digits, one point, at most 3 after it.
_FIELD_SHAPE = re.compile(r"[0-9]{1,4}(\.[0-9]{0,3})?")

field_decimals = st.decimals(
    min_value=Decimal(0), max_value=Decimal("9999.999999"), places=6, allow_nan=False
)
field_floats = st.floats(min_value=0, max_value=9999.999999, allow_nan=False)
positive_rates_ml_per_h = st.decimals(
    min_value=Decimal("0.000001"), max_value=Decimal("599999.99"), places=6, allow_nan=False
)


def _digit_count(text: str) -> int:
    return sum(c.isdigit() for c in text)


# --- format_number ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (28, "28"),
        (26.59, "26.59"),
        (Decimal("466.666"), "466.6"),
        (Fraction(1400, 3), "466.6"),
        (0.5, "0.5"),
        (0.3, "0.3"),  # the float 0.29999999999999998890 is read as the 0.3 it stands for
        (9999.9, "9999"),
        (1234.5678, "1234"),
        (0.0015, "0.001"),
        (0, "0"),
        (Decimal("12.3456"), "12.34"),
    ],
)
def test_format_number_truncates_to_four_digits_in_short_form(value: float, expected: str) -> None:
    assert format_number(value) == expected


@pytest.mark.parametrize(
    "value",
    [-1, -0.001, float("nan"), float("inf"), Decimal("NaN"), 10000, 10000.0, 0.0009, True],
)
def test_format_number_refuses_what_the_field_cannot_hold(value: float) -> None:
    with pytest.raises(UnrepresentableNumberError):
        format_number(value)


def test_unrepresentable_number_is_an_encode_error() -> None:
    assert issubclass(UnrepresentableNumberError, EncodeError)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(28, "28.00"), (26.59, "26.59"), (0, "0.000"), (1234, "1234."), (0.0004, "0.000")],
)
def test_format_display_number_shows_every_digit_and_a_point(value: float, expected: str) -> None:
    assert format_display_number(value) == expected


@given(field_decimals)
def test_format_number_never_rounds_up_and_loses_less_than_one_step(value: Decimal) -> None:
    try:
        text = format_number(value)
    except UnrepresentableNumberError:
        assert 0 < value < Decimal("0.001")
        return
    kept = Decimal(text)
    assert _FIELD_SHAPE.fullmatch(text)
    assert _digit_count(text) <= 4
    assert kept <= value
    assert value - kept < number_resolution(value)


@given(field_floats)
def test_format_number_of_a_float_truncates_its_decimal_repr(value: float) -> None:
    intended = Decimal(repr(value))
    try:
        text = format_number(value)
    except UnrepresentableNumberError:
        assert 0 < intended < Decimal("0.001")
        return
    kept = Decimal(text)
    assert kept <= intended
    assert intended - kept < number_resolution(value)


@given(field_decimals)
def test_display_and_short_forms_hold_the_same_value(value: Decimal) -> None:
    display = format_display_number(value)
    assert _FIELD_SHAPE.fullmatch(display.rstrip("."))
    assert "." in display
    if value >= Decimal("0.001"):
        assert Decimal(display) == Decimal(format_number(value))


@given(field_decimals)
def test_parse_number_reads_back_what_format_number_wrote(value: Decimal) -> None:
    if 0 < value < Decimal("0.001"):
        return
    text = format_number(value)
    assert parse_number(text) == Decimal(text)
    assert parse_number(format_display_number(value)) == Decimal(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("466.6", "466.6"), ("28", "28"), (".5", "0.5"), ("1234.", "1234"), ("0.000", "0")],
)
def test_parse_number_accepts_field_forms(text: str, expected: str) -> None:
    assert parse_number(text) == Decimal(expected)


@pytest.mark.parametrize(
    "text", ["", ".", "12345", "1.2345", "1e-05", "-1", "1.2.3", "١٢", " 12", "0x1"]
)
def test_parse_number_refuses_what_a_pump_would_not_take(text: str) -> None:
    with pytest.raises(PayloadError):
        parse_number(text)


def test_exact_value_reads_floats_at_their_shortest_repr() -> None:
    assert exact_value(0.1) == Fraction(1, 10)
    assert exact_value(Decimal("27.996")) == Fraction(27996, 1000)


# --- rates ------------------------------------------------------------------------------------


def test_encode_rate_28_ml_per_h_is_466_6_ul_per_min_as_nesp_lib_sends() -> None:
    encoded = encode_rate(28)
    assert encoded == ("466.6", RateUnit.UL_PER_MIN)
    assert encoded.argument == "466.6UM"
    assert encoded.rate_ml_per_h == Decimal("27.996")


@pytest.mark.parametrize(
    ("rate_ml_per_h", "expected"),
    [
        (Decimal("0.001"), ("1", RateUnit.UL_PER_H)),
        (Decimal("5"), ("83.33", RateUnit.UL_PER_MIN)),
        (Decimal("12"), ("200", RateUnit.UL_PER_MIN)),
        (Decimal("600"), ("600", RateUnit.ML_PER_H)),
        # ties (same digits, same value) go to the µL unit, as nesp-lib does
        (Decimal("7"), ("7000", RateUnit.UL_PER_H)),  # = 7.000 MH
        (Decimal("300"), ("5000", RateUnit.UL_PER_MIN)),  # = 5.000 MM
        (Decimal("599999"), ("9999", RateUnit.ML_PER_MIN)),
        (28.0, ("466.6", RateUnit.UL_PER_MIN)),
    ],
)
def test_encode_rate_picks_the_unit_with_the_finest_step(
    rate_ml_per_h: Decimal, expected: tuple[str, RateUnit]
) -> None:
    assert encode_rate(rate_ml_per_h) == expected


@pytest.mark.parametrize("rate_ml_per_h", [0, -1, Decimal("0.0000009"), 600000, float("nan")])
def test_encode_rate_refuses_zero_negative_and_out_of_range(rate_ml_per_h: float) -> None:
    with pytest.raises(UnrepresentableNumberError):
        encode_rate(rate_ml_per_h)


@given(positive_rates_ml_per_h)
def test_encode_rate_never_rounds_up_and_stays_within_one_step(rate_ml_per_h: Decimal) -> None:
    encoded = encode_rate(rate_ml_per_h)
    sent_ml_per_h = parse_rate(encoded.argument)
    assert _FIELD_SHAPE.fullmatch(encoded.number)
    assert sent_ml_per_h == encoded.rate_ml_per_h
    assert 0 < sent_ml_per_h <= rate_ml_per_h
    assert rate_ml_per_h - sent_ml_per_h < encoded.resolution_ml_per_h


@given(positive_rates_ml_per_h)
def test_encode_rate_no_other_unit_has_a_finer_step(rate_ml_per_h: Decimal) -> None:
    encoded = encode_rate(rate_ml_per_h)
    for unit in RateUnit:
        in_unit = rate_ml_per_h / unit.ml_per_h
        if not Decimal("0.001") <= in_unit < 10000:
            continue  # the field cannot hold the rate in this unit
        step_ml_per_h = number_resolution(in_unit) * unit.ml_per_h
        assert encoded.resolution_ml_per_h <= step_ml_per_h


@given(st.floats(min_value=1e-6, max_value=599999.0, allow_nan=False))
def test_encode_rate_of_a_float_never_exceeds_its_decimal_repr(rate_ml_per_h: float) -> None:
    encoded = encode_rate(rate_ml_per_h)
    assert encoded.rate_ml_per_h <= Decimal(repr(rate_ml_per_h))
    assert Decimal(repr(rate_ml_per_h)) - encoded.rate_ml_per_h < encoded.resolution_ml_per_h


@pytest.mark.parametrize(
    ("text", "expected_ml_per_h"),
    [
        ("466.6UM", Decimal("27.996")),
        ("1.000MM", Decimal("60")),
        ("250.0UH", Decimal("0.25")),
        ("28.00MH", Decimal("28")),
    ],
)
@pytest.mark.hazard("H-OV-07")
def test_parse_rate_converts_each_unit_to_ml_per_h_exactly(
    text: str, expected_ml_per_h: Decimal
) -> None:
    assert parse_rate(text) == expected_ml_per_h


@pytest.mark.parametrize("text", ["466.6", "466.6XX", "UM", "", "466.6um", "12345UM"])
def test_parse_rate_refuses_a_rate_without_a_known_unit_or_number(text: str) -> None:
    with pytest.raises(PayloadError):
        parse_rate(text)


def test_split_rate_argument_keeps_the_unit_optional() -> None:
    assert split_rate_argument("466.6UM") == (Decimal("466.6"), RateUnit.UL_PER_MIN)
    assert split_rate_argument("466.6") == (Decimal("466.6"), None)


def test_format_rate_shows_a_pump_style_rate_nesp_lib_can_parse() -> None:
    assert format_rate(28, RateUnit.UL_PER_MIN) == "466.6UM"
    assert format_rate(28, RateUnit.ML_PER_H) == "28.00MH"
    assert re.fullmatch(r"(\d+\.\d*)([A-Z]+)", format_rate(600, RateUnit.ML_PER_H))


# --- volumes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("diameter_mm", "unit"),
    [
        (Decimal("14.00"), VolumeUnit.UL),
        (14.01, VolumeUnit.ML),
        (4.78, VolumeUnit.UL),
        (26.59, VolumeUnit.ML),
    ],
)
def test_volume_unit_follows_the_diameter_threshold(diameter_mm: float, unit: VolumeUnit) -> None:
    assert volume_unit_for_diameter(diameter_mm) is unit


@pytest.mark.hazard("H-OV-07", "H-OV-05")
def test_encode_volume_truncates_in_the_pump_unit() -> None:
    assert encode_volume(0.25, VolumeUnit.UL) == "250"
    assert encode_volume(Decimal("12.3456"), VolumeUnit.ML) == "12.34"


@pytest.mark.parametrize("volume_ml", [0, -1, Decimal("0.0000001")])
def test_encode_volume_never_produces_the_continuous_zero(volume_ml: float) -> None:
    with pytest.raises(UnrepresentableNumberError):
        encode_volume(volume_ml, VolumeUnit.ML)


@given(st.decimals(min_value=Decimal("0.001"), max_value=Decimal("9999"), places=6))
def test_encode_volume_never_rounds_up(volume_ml: Decimal) -> None:
    for unit in VolumeUnit:
        try:
            text = encode_volume(volume_ml, unit)
        except UnrepresentableNumberError:
            assert volume_ml / unit.ml >= 10000
            continue
        assert Decimal(text) * unit.ml <= volume_ml


def test_format_and_parse_volume_round_trip_through_the_display_form() -> None:
    assert format_volume(0.5, VolumeUnit.ML) == "0.500ML"
    assert parse_volume("0.500ML") == Decimal("0.5")
    assert parse_volume("250.0UL") == Decimal("0.25")


def test_parse_volume_argument_tells_a_unit_from_a_number() -> None:
    assert parse_volume_argument("UL") is VolumeUnit.UL
    assert parse_volume_argument("0") == Decimal(0)
    with pytest.raises(PayloadError):
        parse_volume_argument("LITRE")


@given(st.text(max_size=30))
def test_quantity_parsers_raise_only_protocol_errors_on_any_text(text: str) -> None:
    for parse in (parse_number, parse_rate, parse_volume, parse_volume_argument):
        try:
            result = parse(text)
        except ProtocolError:
            continue
        assert isinstance(result, Decimal | VolumeUnit)
