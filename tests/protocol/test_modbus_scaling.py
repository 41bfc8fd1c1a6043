"""Scaled integers truncate toward zero exactly; u32 and ASCII helpers round-trip."""

from __future__ import annotations

from decimal import ROUND_DOWN, ROUND_UP, Context, Decimal, localcontext

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.errors import DecodeError, EncodeError, ProtocolError
from protocol.modbus import (
    RATE_RESOLUTION_ML_PER_H,
    REGISTERS,
    VOLUME_RESOLUTION_ML,
    AsciiDecodeError,
    RegisterEncodeError,
    WordRangeError,
    count_scaler,
    counts_to_rate_ml_per_h,
    counts_to_volume_ml,
    from_counts,
    join_u32,
    pack_ascii,
    rate_ml_per_h_to_counts,
    split_u32,
    to_counts,
    unpack_ascii,
    volume_ml_to_counts,
)
from protocol.modbus.words import U16_MAX, U32_MAX

RATE_MAX_ML_PER_H = U32_MAX * RATE_RESOLUTION_ML_PER_H
printable_ascii = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E))


@pytest.mark.parametrize(
    ("rate_ml_per_h", "counts"),
    [
        (15.48, 1548),  # binary float just below 15.48: must still be 1548
        (0.29, 29),
        (1.1, 110),
        (4.35, 435),
        (0.01, 1),
        (0.009, 0),
        (500, 50000),
        (Decimal("15.489"), 1548),
        (Decimal("15.4899999999999999999999999999999999999"), 1548),
        (Decimal("15.479999999999999999999999999999999999"), 1547),
        (Decimal("-0"), 0),
    ],
)
def test_rate_encoding_truncates_toward_zero_without_float_surprises(
    rate_ml_per_h: Decimal | float | int, counts: int
) -> None:
    assert rate_ml_per_h_to_counts(rate_ml_per_h) == counts


@pytest.mark.parametrize(
    ("volume_ml", "counts"),
    [(2.5009, 2500), (1.005, 1005), (0.001, 1), (0.0009, 0), (Decimal("100"), 100000)],
)
def test_volume_encoding_truncates_toward_zero(
    volume_ml: Decimal | float | int, counts: int
) -> None:
    assert volume_ml_to_counts(volume_ml) == counts


def test_decoding_counts_is_exact_decimal() -> None:
    assert counts_to_rate_ml_per_h(1548) == Decimal("15.48")
    assert counts_to_volume_ml(2500) == Decimal("2.5")
    assert isinstance(counts_to_rate_ml_per_h(1), Decimal)


@given(st.decimals(min_value=0, max_value=RATE_MAX_ML_PER_H, allow_nan=False, places=None))
def test_rate_decimal_never_rounds_up_and_loses_under_one_count(value: Decimal) -> None:
    counts = rate_ml_per_h_to_counts(value)
    encoded = counts_to_rate_ml_per_h(counts)
    assert encoded <= value
    assert value - encoded < RATE_RESOLUTION_ML_PER_H


@given(st.floats(min_value=0, max_value=4e7, allow_nan=False, allow_infinity=False))
def test_float_rate_never_exceeds_its_decimal_reading_and_loses_under_one_count(
    value: float,
) -> None:
    counts = rate_ml_per_h_to_counts(value)
    meant = Decimal(repr(value))
    assert counts_to_rate_ml_per_h(counts) <= meant
    assert meant - counts_to_rate_ml_per_h(counts) < RATE_RESOLUTION_ML_PER_H


@given(st.integers(min_value=0, max_value=U32_MAX))
def test_counts_round_trip_through_decimal_and_through_float(counts: int) -> None:
    rate = counts_to_rate_ml_per_h(counts)
    volume = counts_to_volume_ml(counts)
    assert rate_ml_per_h_to_counts(rate) == counts
    assert volume_ml_to_counts(volume) == counts
    # The float a user would type for that value encodes back to the same counts.
    assert rate_ml_per_h_to_counts(float(rate)) == counts
    assert volume_ml_to_counts(float(volume)) == counts


#: Every resolution the register table scales by.
RESOLUTIONS = sorted({register.scale for register in REGISTERS})


def _product_as_before(counts: int, resolution: Decimal) -> Decimal:
    """The arithmetic ``from_counts`` has always done: ``Decimal(counts) * resolution`` in a
    60-digit context (the reference the faster forms must match, exponent included)."""
    with localcontext(Context(prec=60, rounding=ROUND_DOWN)):
        return Decimal(counts) * resolution


@given(counts=st.integers(min_value=0, max_value=U32_MAX), resolution=st.sampled_from(RESOLUTIONS))
def test_from_counts_and_a_count_scaler_are_the_exact_product_exponent_and_all(
    counts: int, resolution: Decimal
) -> None:
    expected = _product_as_before(counts, resolution)
    with localcontext() as hostile:  # the application's context must not matter
        hostile.prec = 3
        hostile.rounding = ROUND_UP
        results = [from_counts(counts, resolution), count_scaler(resolution)(counts)]
    for result in results:
        assert result == expected
        assert result.as_tuple() == expected.as_tuple()  # 0.00 stays 0.00, 1.50 stays 1.50


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        (Decimal(0), ValueError),
        (Decimal("-0.01"), ValueError),
        (Decimal("NaN"), ValueError),
        (Decimal("Infinity"), ValueError),
        (0.01, TypeError),
        (1, TypeError),
    ],
)
def test_a_count_scaler_takes_only_a_positive_finite_decimal(
    bad: object, error: type[Exception]
) -> None:
    with pytest.raises(error, match="resolution"):
        count_scaler(bad)  # type: ignore[arg-type]


def test_application_decimal_context_cannot_change_a_conversion() -> None:
    with localcontext() as context:
        context.prec = 3
        assert rate_ml_per_h_to_counts(Decimal("12345.67")) == 1234567
        assert counts_to_volume_ml(1234567) == Decimal("1234.567")


@pytest.mark.parametrize(
    "bad",
    [-0.01, Decimal("-1"), float("nan"), float("inf"), Decimal("NaN"), True, "1.0", None],
)
def test_unencodable_rates_raise_encode_error(bad: object) -> None:
    with pytest.raises(RegisterEncodeError):
        rate_ml_per_h_to_counts(bad)  # type: ignore[arg-type]


def test_value_one_count_above_u32_is_refused_and_the_largest_is_accepted() -> None:
    largest = U32_MAX * VOLUME_RESOLUTION_ML
    assert volume_ml_to_counts(largest) == U32_MAX
    assert volume_ml_to_counts(largest + Decimal("0.0009")) == U32_MAX
    with pytest.raises(EncodeError):
        volume_ml_to_counts(largest + VOLUME_RESOLUTION_ML)


def test_to_counts_respects_a_smaller_maximum() -> None:
    assert to_counts(Decimal("655.35"), RATE_RESOLUTION_ML_PER_H, max_counts=U16_MAX) == U16_MAX
    with pytest.raises(RegisterEncodeError):
        to_counts(Decimal("655.36"), RATE_RESOLUTION_ML_PER_H, max_counts=U16_MAX)


def test_split_u32_puts_the_high_word_first() -> None:
    assert split_u32(0x1234_5678) == (0x1234, 0x5678)
    assert split_u32(100_000) == (0x0001, 0x86A0)
    assert join_u32(0x1234, 0x5678) == 0x1234_5678


@given(st.integers(min_value=0, max_value=U32_MAX))
def test_u32_split_join_round_trip(value: int) -> None:
    high, low = split_u32(value)
    assert 0 <= high <= U16_MAX
    assert 0 <= low <= U16_MAX
    assert join_u32(high, low) == value


@pytest.mark.parametrize("bad", [-1, U32_MAX + 1, True, 1.0])
def test_split_u32_refuses_values_outside_u32(bad: object) -> None:
    with pytest.raises(RegisterEncodeError):
        split_u32(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(("high", "low"), [(-1, 0), (0, U16_MAX + 1), (0, True), (0.5, 0)])
def test_join_u32_refuses_words_outside_u16_with_a_decode_error(high: object, low: object) -> None:
    with pytest.raises(WordRangeError):
        join_u32(high, low)  # type: ignore[arg-type]


def test_ascii_packs_first_character_high_and_pads_with_nul() -> None:
    assert pack_ascii("AB", 1) == [0x4142]
    assert pack_ascii("ABC", 3) == [0x4142, 0x4300, 0x0000]
    assert unpack_ascii([0x4142, 0x4300, 0x0000]) == "ABC"


@given(
    st.integers(min_value=1, max_value=16).flatmap(
        lambda words: st.tuples(
            st.just(words), printable_ascii.filter(lambda t: len(t) <= 2 * words)
        )
    )
)
def test_ascii_round_trip(words_and_text: tuple[int, str]) -> None:
    words, text = words_and_text
    registers = pack_ascii(text, words)
    assert len(registers) == words
    assert unpack_ascii(registers) == text


@pytest.mark.parametrize(("text", "words"), [("ABCDE", 2), ("é", 1), ("A\x00", 1), ("\n", 1)])
def test_pack_ascii_refuses_long_or_unprintable_text(text: str, words: int) -> None:
    with pytest.raises(RegisterEncodeError):
        pack_ascii(text, words)


@pytest.mark.parametrize(
    "registers",
    [[0x4100, 0x4200], [0x0A41], [0x41FF], [0x10000], [-1]],
    ids=["text-after-nul", "control-char", "high-byte", "above-u16", "negative"],
)
def test_unpack_ascii_refuses_bad_registers_with_a_decode_error(registers: list[int]) -> None:
    with pytest.raises(DecodeError):
        unpack_ascii(registers)


def test_unpack_ascii_names_the_bad_byte() -> None:
    with pytest.raises(AsciiDecodeError, match="0x0A"):
        unpack_ascii([0x0A41])


@given(st.lists(st.integers(min_value=-(2**20), max_value=2**20), max_size=10))
def test_unpack_ascii_raises_only_protocol_errors(registers: list[int]) -> None:
    outcome: str | ProtocolError
    try:
        outcome = unpack_ascii(registers)
    except ProtocolError as exc:
        outcome = exc
    if isinstance(outcome, str):
        assert pack_ascii(outcome, len(registers)) == registers
    else:
        assert isinstance(outcome, DecodeError)
