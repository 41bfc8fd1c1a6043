"""Soft limits: the likely unit mix-up named in one line, confirm to proceed, bounds inside."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import GatewayError, InputError
from gateway.safety import WEIGHT_KG_MAX, WEIGHT_KG_MIN
from gateway.soft_limits import (
    CONFIRM_HOW,
    TITER_SOFT_MG_PER_DL,
    WEIGHT_CHANGE_SOFT_FRACTION,
    WEIGHT_SOFT_KG,
    SoftLimitError,
    check_titer,
    check_weight,
)


def test_constants_have_one_home() -> None:
    assert TITER_SOFT_MG_PER_DL == (5.0, 400.0)
    assert WEIGHT_SOFT_KG == (40.0, 150.0)
    assert WEIGHT_CHANGE_SOFT_FRACTION == 0.10
    assert issubclass(SoftLimitError, InputError)
    assert issubclass(SoftLimitError, GatewayError)


@pytest.mark.hazard("H-OV-07")
def test_titer_below_soft_limit_suggests_g_per_l() -> None:
    with pytest.raises(SoftLimitError) as info:
        check_titer(0.3, confirm=False)
    assert str(info.value) == (
        "igm_mg_dl: 0.3 mg/dL is below the soft limit of 5 mg/dL: did you mean g/L? "
        "0.3 g/L = 30 mg/dL. Check the unit; to use 0.3 mg/dL as it is, send it again with confirm"
    )
    assert info.value.field == "igm_mg_dl"
    assert info.value.value == 0.3
    assert info.value.hint == "did you mean g/L? 0.3 g/L = 30 mg/dL"
    assert "5 to 400 mg/dL" in info.value.allowed


@pytest.mark.hazard("H-OV-07")
def test_titer_above_soft_limit_suggests_mg_per_l() -> None:
    with pytest.raises(SoftLimitError) as info:
        check_titer(600.0, confirm=False)
    assert str(info.value) == (
        "igm_mg_dl: 600 mg/dL is above the soft limit of 400 mg/dL: did you mean mg/L? "
        "600 mg/L = 60 mg/dL. Check the unit; to use 600 mg/dL as it is, send it again with confirm"
    )
    assert info.value.hint == "did you mean mg/L? 600 mg/L = 60 mg/dL"


def test_titer_conversion_shown_to_one_decimal() -> None:
    with pytest.raises(SoftLimitError, match=r"0\.123 g/L = 12\.3 mg/dL"):
        check_titer(0.123, confirm=False)
    with pytest.raises(SoftLimitError, match=r"433 mg/L = 43\.3 mg/dL"):
        check_titer(433.0, confirm=False)


@pytest.mark.parametrize("titer", [0.0, 0.04])
def test_titer_without_a_plausible_unit_says_check_the_titer(titer: float) -> None:
    """0.04 g/L would be 4 mg/dL, itself below the soft limit: no unit is suggested."""
    with pytest.raises(SoftLimitError) as info:
        check_titer(titer, confirm=False)
    assert "did you mean" not in str(info.value)
    assert info.value.hint == "check the titer"
    assert str(info.value).endswith(f"as it is, {CONFIRM_HOW}")


@pytest.mark.hazard("H-OV-07", "H-OV-08")
def test_weight_above_soft_limit_suggests_pounds() -> None:
    with pytest.raises(SoftLimitError) as info:
        check_weight(154.0, previous_weight_kg=None, confirm=False)
    assert str(info.value) == (
        "weight_kg: 154 kg is above the soft limit of 150 kg: did you mean pounds? "
        "154 lb = 69.9 kg. Check the unit; to use 154 kg as it is, send it again with confirm"
    )
    assert info.value.field == "weight_kg"
    assert info.value.value == 154.0


def test_weight_below_soft_limit_has_no_unit_hint() -> None:
    with pytest.raises(SoftLimitError) as info:
        check_weight(35.0, previous_weight_kg=None, confirm=False)
    assert str(info.value) == (
        "weight_kg: 35 kg is below the soft limit of 40 kg: check the weight; "
        "to use 35 kg as it is, send it again with confirm"
    )
    assert info.value.hint == "check the weight"


@pytest.mark.hazard("H-OV-08")
def test_weight_change_more_than_10_percent() -> None:
    with pytest.raises(SoftLimitError) as info:
        check_weight(80.0, previous_weight_kg=70.0, confirm=False)
    assert str(info.value) == (
        "weight_kg: 80 kg is 14.3 % above the previous 70 kg (more than 10 %): check the weight; "
        "to use 80 kg as it is, send it again with confirm"
    )
    with pytest.raises(SoftLimitError, match=r"60 kg is 14\.3 % below the previous 70 kg"):
        check_weight(60.0, previous_weight_kg=70.0, confirm=False)


def test_weight_change_just_over_10_percent_shows_enough_decimals() -> None:
    with pytest.raises(SoftLimitError, match=r"77\.03 kg is 10\.04 % above the previous 70 kg"):
        check_weight(77.03, previous_weight_kg=70.0, confirm=False)


def test_weight_both_above_soft_limit_and_changed_names_both() -> None:
    with pytest.raises(SoftLimitError) as info:
        check_weight(154.0, previous_weight_kg=70.0, confirm=False)
    message = str(info.value)
    assert "154 kg is above the soft limit of 150 kg" in message
    assert "120 % above the previous 70 kg" in message
    assert "did you mean pounds? 154 lb = 69.9 kg" in message
    assert len(message.splitlines()) == 1


@pytest.mark.parametrize("titer", [5.0, 400.0, 100.0])
def test_titer_soft_bounds_are_inside(titer: float) -> None:
    assert check_titer(titer, confirm=False) is None


@pytest.mark.parametrize("titer", [4.999, 400.001])
def test_titer_just_outside_soft_bounds_refused(titer: float) -> None:
    with pytest.raises(SoftLimitError):
        check_titer(titer, confirm=False)


@pytest.mark.parametrize("weight", [40.0, 150.0, 70.0])
def test_weight_soft_bounds_are_inside(weight: float) -> None:
    assert check_weight(weight, previous_weight_kg=None, confirm=False) is None


@pytest.mark.parametrize("weight", [39.99, 150.01])
def test_weight_just_outside_soft_bounds_refused(weight: float) -> None:
    with pytest.raises(SoftLimitError):
        check_weight(weight, previous_weight_kg=None, confirm=False)


@pytest.mark.parametrize(
    ("weight", "previous"), [(77.0, 70.0), (63.0, 70.0), (71.5, 65.0), (88.0, 80.0), (45.1, 41.0)]
)
def test_weight_change_of_exactly_10_percent_is_inside(weight: float, previous: float) -> None:
    assert check_weight(weight, previous_weight_kg=previous, confirm=False) is None


def test_confirm_returns_a_note_to_journal() -> None:
    assert check_titer(0.3, confirm=True) == (
        "confirmed outside soft limit: igm_mg_dl 0.3 mg/dL is below the soft limit of 5 mg/dL"
    )
    assert check_weight(154.0, previous_weight_kg=None, confirm=True) == (
        "confirmed outside soft limit: weight_kg 154 kg is above the soft limit of 150 kg"
    )
    assert check_weight(80.0, previous_weight_kg=70.0, confirm=True) == (
        "confirmed outside soft limit: weight_kg 80 kg is 14.3 % above the previous 70 kg "
        "(more than 10 %)"
    )


def test_confirm_inside_returns_none() -> None:
    assert check_titer(30.0, confirm=True) is None
    assert check_weight(70.0, previous_weight_kg=72.0, confirm=True) is None


@pytest.mark.parametrize("titer", [-1.0, 1000.5, float("nan"), float("inf")])
@pytest.mark.hazard("H-OV-07")
def test_hard_range_not_passed_by_confirm(titer: float) -> None:
    message = "igm_mg_dl: must be a number from 0 to 1000 mg/dL"
    with pytest.raises(InputError, match=message) as info:
        check_titer(titer, confirm=True)
    assert not isinstance(info.value, SoftLimitError)


@pytest.mark.parametrize(
    ("weight", "previous", "field"),
    [
        (29.0, None, "weight_kg"),
        (float("nan"), None, "weight_kg"),
        (70.0, 300.0, "previous_weight_kg"),
        (70.0, float("nan"), "previous_weight_kg"),
    ],
)
@pytest.mark.hazard("H-OV-08")
def test_weight_hard_range_not_passed_by_confirm(
    weight: float, previous: float | None, field: str
) -> None:
    with pytest.raises(InputError, match=f"^{field}: must be a number from 30 to 250 kg") as info:
        check_weight(weight, previous_weight_kg=previous, confirm=True)
    assert not isinstance(info.value, SoftLimitError)


def test_reworded_keeps_everything_but_the_way_to_confirm() -> None:
    with pytest.raises(SoftLimitError) as info:
        check_titer(0.3, confirm=False)
    cli = info.value.reworded("run it again with --confirm")
    assert isinstance(cli, SoftLimitError)
    assert (cli.field, cli.value, cli.hint, cli.allowed) == (
        info.value.field,
        info.value.value,
        info.value.hint,
        info.value.allowed,
    )
    assert str(cli) == str(info.value).replace(CONFIRM_HOW, "run it again with --confirm")


hard_titers = st.floats(min_value=0.0, max_value=1000.0)
hard_weights = st.floats(min_value=WEIGHT_KG_MIN, max_value=WEIGHT_KG_MAX)


@given(titer=hard_titers, confirm=st.booleans())
def test_titer_property_inside_never_raises_outside_raises_unless_confirmed(
    titer: float, confirm: bool
) -> None:
    low, high = TITER_SOFT_MG_PER_DL
    if low <= titer <= high:
        assert check_titer(titer, confirm=confirm) is None
    elif confirm:
        note = check_titer(titer, confirm=True)
        assert note is not None
        assert note.startswith("confirmed outside soft limit: igm_mg_dl")
    else:
        with pytest.raises(SoftLimitError) as info:
            check_titer(titer, confirm=False)
        assert str(info.value).startswith("igm_mg_dl: ")
        assert len(str(info.value).splitlines()) == 1


@given(weight=hard_weights, confirm=st.booleans())
def test_weight_property_inside_never_raises_outside_raises_unless_confirmed(
    weight: float, confirm: bool
) -> None:
    low, high = WEIGHT_SOFT_KG
    if low <= weight <= high:
        assert check_weight(weight, previous_weight_kg=None, confirm=confirm) is None
    elif confirm:
        note = check_weight(weight, previous_weight_kg=None, confirm=True)
        assert note is not None
        assert note.startswith("confirmed outside soft limit: weight_kg")
    else:
        with pytest.raises(SoftLimitError) as info:
            check_weight(weight, previous_weight_kg=None, confirm=False)
        assert str(info.value).startswith("weight_kg: ")
        assert len(str(info.value).splitlines()) == 1


@given(
    previous=st.floats(min_value=50.0, max_value=130.0),
    fraction=st.one_of(
        st.floats(min_value=-0.0999, max_value=0.0999),
        st.floats(min_value=0.1001, max_value=0.15),
        st.floats(min_value=-0.15, max_value=-0.1001),
    ),
    confirm=st.booleans(),
)
def test_weight_change_property(previous: float, fraction: float, confirm: bool) -> None:
    """Within the absolute soft range: a change up to 10 % passes, above 10 % needs confirm."""
    weight = previous * (1.0 + fraction)
    inside = abs(fraction) < WEIGHT_CHANGE_SOFT_FRACTION
    if inside:
        assert check_weight(weight, previous_weight_kg=previous, confirm=confirm) is None
    elif confirm:
        note = check_weight(weight, previous_weight_kg=previous, confirm=True)
        assert note is not None
        assert "the previous" in note
    else:
        with pytest.raises(SoftLimitError, match="the previous"):
            check_weight(weight, previous_weight_kg=previous, confirm=False)
