"""Instants at the boundary: ISO-8601 with a zone in, UTC ``Z`` out, windows named in words."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import InputError
from gateway.timestamps import (
    CLOCK_SKEW_S,
    check_not_future,
    check_not_older,
    format_instant,
    parse_instant,
)

#: 2026-11-29T06:30:00Z
T0 = 1_795_933_800.0
ALLOWED = "an ISO-8601 date-time with a zone, e.g. 2026-11-29T07:30:00+01:00"


def test_clock_skew_constant() -> None:
    assert CLOCK_SKEW_S == 300.0


@pytest.mark.parametrize(
    ("text", "unix_s"),
    [
        ("2026-11-29T07:30:00+01:00", T0),
        ("2026-11-29T06:30:00Z", T0),
        ("2026-11-29T06:30:00+00:00", T0),
        ("2026-11-29T01:30:00-05:00", T0),
        ("2026-11-29T06:30:00.250Z", T0 + 0.25),
        ("1970-01-01T00:00:00Z", 0.0),
    ],
)
def test_parse_instant_with_zone(text: str, unix_s: float) -> None:
    assert parse_instant("measured_at", text) == unix_s


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-29T07:30:00",  # no zone
        "2026-11-29",  # no time, no zone
        "29/11/2026 07:30",
        "yesterday",
        "",
        "inf",
        "nan",
        "2026-13-01T00:00:00Z",
        "2026-11-29T25:00:00Z",
        "0001-01-01T00:00:00+01:00",  # before UTC year 1
        "9999-12-31T23:59:59-01:00",  # after UTC year 9999
    ],
)
def test_parse_instant_refuses_naming_field(text: str) -> None:
    with pytest.raises(InputError) as info:
        parse_instant("measured_at", text)
    assert info.value.field == "measured_at"
    assert info.value.allowed == ALLOWED
    assert str(info.value) == f"measured_at: must be {ALLOWED} (got {text!r})"


@pytest.mark.parametrize("value", [None, 1_795_933_800.0, b"2026-11-29T06:30:00Z"])
def test_parse_instant_refuses_non_strings(value: object) -> None:
    with pytest.raises(InputError, match=r"^taken_at: must be an ISO-8601 date-time with a zone"):
        parse_instant("taken_at", value)  # type: ignore[arg-type]


def test_format_instant_is_utc_with_seconds_and_z() -> None:
    assert format_instant(T0) == "2026-11-29T06:30:00Z"
    assert format_instant(0.0) == "1970-01-01T00:00:00Z"
    assert format_instant(T0 + 0.999) == "2026-11-29T06:30:00Z"  # rounded towards the past
    assert format_instant(-0.5) == "1969-12-31T23:59:59Z"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), 1e300, True])
def test_format_instant_refuses_non_instants(value: float) -> None:
    with pytest.raises(InputError, match=r"^unix_s: must be"):
        format_instant(value)


@given(st.floats(min_value=-62_135_596_800.0, max_value=253_402_300_799.0, allow_nan=False))
def test_format_then_parse_round_trip(unix_s: float) -> None:
    text = format_instant(unix_s)
    assert text.endswith("Z")
    assert parse_instant("at", text) == math.floor(unix_s)
    assert format_instant(parse_instant("at", text)) == text


@given(st.integers(min_value=-62_135_596_800, max_value=253_402_300_799))
def test_whole_seconds_round_trip_exactly(unix_s: int) -> None:
    assert parse_instant("at", format_instant(unix_s)) == unix_s


def test_check_not_future_allows_the_skew() -> None:
    assert check_not_future("measured_at", T0, T0, skew_s=CLOCK_SKEW_S) == T0
    assert check_not_future("measured_at", T0 + 300.0, T0, skew_s=CLOCK_SKEW_S) == T0 + 300.0
    assert check_not_future("measured_at", T0 - 86_400.0, T0, skew_s=CLOCK_SKEW_S) == T0 - 86_400


def test_check_not_future_refuses_beyond_the_skew() -> None:
    with pytest.raises(InputError) as info:
        check_not_future("measured_at", T0 + 300.5, T0, skew_s=CLOCK_SKEW_S)
    assert str(info.value) == (
        "measured_at: must be at most 300 s after now (2026-11-29T06:30:00Z) "
        "(got '2026-11-29T06:35:00Z')"
    )
    assert info.value.field == "measured_at"


def test_check_not_older_allows_up_to_max_age() -> None:
    max_age = 36 * 3600.0
    assert check_not_older("measured_at", T0 - max_age, T0, max_age_s=max_age) == T0 - max_age
    assert check_not_older("measured_at", T0 + 3600.0, T0, max_age_s=max_age) == T0 + 3600.0


def test_check_not_older_refuses_too_old() -> None:
    with pytest.raises(InputError) as info:
        check_not_older("measured_at", T0 - 40 * 3600.0, T0, max_age_s=36 * 3600.0)
    assert str(info.value) == (
        "measured_at: must be within 36 h before now (2026-11-29T06:30:00Z) "
        "(got '2026-11-27T14:30:00Z')"
    )


@pytest.mark.parametrize(
    ("max_age_s", "words"), [(5400.0, "1.5 h"), (3700.0, "3700 s"), (90.0, "90 s")]
)
def test_window_in_words(max_age_s: float, words: str) -> None:
    with pytest.raises(InputError, match=f"must be within {words} before now"):
        check_not_older("at", T0 - max_age_s - 1.0, T0, max_age_s=max_age_s)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_checks_refuse_non_finite_instants(bad: float) -> None:
    with pytest.raises(InputError, match=r"^measured_at: "):
        check_not_future("measured_at", bad, T0, skew_s=CLOCK_SKEW_S)
    with pytest.raises(InputError, match=r"^measured_at: "):
        check_not_older("measured_at", bad, T0, max_age_s=3600.0)
    with pytest.raises(InputError, match=r"^now_s: "):
        check_not_future("measured_at", T0, bad, skew_s=CLOCK_SKEW_S)


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_checks_refuse_bad_windows(bad: float) -> None:
    with pytest.raises(InputError, match=r"^skew_s: "):
        check_not_future("at", T0, T0, skew_s=bad)
    with pytest.raises(InputError, match=r"^max_age_s: "):
        check_not_older("at", T0, T0, max_age_s=bad)


@given(
    at_s=st.floats(min_value=T0 - 10 * 86_400, max_value=T0 + 10 * 86_400),
    skew_s=st.floats(min_value=0.0, max_value=3600.0),
    max_age_s=st.floats(min_value=0.0, max_value=7 * 86_400.0),
)
def test_checks_refuse_exactly_outside_the_window(
    at_s: float, skew_s: float, max_age_s: float
) -> None:
    if at_s <= T0 + skew_s:
        assert check_not_future("at", at_s, T0, skew_s=skew_s) == at_s
    else:
        with pytest.raises(InputError, match="after now"):
            check_not_future("at", at_s, T0, skew_s=skew_s)
    if at_s >= T0 - max_age_s:
        assert check_not_older("at", at_s, T0, max_age_s=max_age_s) == at_s
    else:
        with pytest.raises(InputError, match="before now"):
            check_not_older("at", at_s, T0, max_age_s=max_age_s)
