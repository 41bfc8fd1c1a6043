"""The course state is read back exactly, or not at all (safety invariant 6)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.cli.client import _one_problem
from gateway.cli.run import config_from_args
from gateway.course_state import (
    STATE_VERSION,
    CourseState,
    StateError,
    _ceiling_ml_per_h,
    dump_state,
    load_state,
)
from gateway.errors import InputError


@pytest.mark.hazard("H-JN-01")
def test_invariant_6_state_round_trips_through_json_exactly() -> None:
    state = CourseState(weight_kg=70.123456789012345, max_commanded_rate_ml_per_h=14.58)
    text = json.dumps(dump_state(state))
    assert load_state(text) == state


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(version=1), "version 1"),
        (lambda d: d.update(ack_clearing=True), "unknown keys: ack_clearing"),
        (lambda d: d.update(channel="dancing"), "malformed at channel"),
        (lambda d: d.update(weight_kg="seventy"), "malformed at weight_kg"),
    ],
)
@pytest.mark.hazard("H-JN-02")
def test_invariant_6_state_that_would_not_read_back_exactly_is_refused(
    mutate: object, message: str
) -> None:
    data = dump_state(CourseState(version=STATE_VERSION))
    mutate(data)  # type: ignore[operator]
    with pytest.raises(StateError, match=message):
        load_state(data)


@pytest.mark.hazard("H-JN-02")
def test_invariant_6_state_that_is_not_json_is_a_typed_error() -> None:
    with pytest.raises(StateError, match="not valid JSON"):
        load_state("{not json")


def test_api_refusals_name_each_field_once() -> None:
    mine = {"loc": ["body", "weight_kg"], "msg": "weight_kg: must be a number from 30 to 250 kg"}
    pydantic = {"loc": ["body", "hematocrit"], "msg": "Field required"}
    assert _one_problem(mine) == "weight_kg: must be a number from 30 to 250 kg"
    assert _one_problem(pydantic) == "hematocrit: Field required"


@pytest.mark.parametrize("flag", [["--igm-mg-dl", "30"], ["--confirm"], ["--hematocrit", "0.3"]])
def test_run_with_config_refuses_order_flags_it_would_ignore(
    tmp_path: Path, flag: list[str]
) -> None:
    from gateway.cli import build_parser

    config = tmp_path / "gateway.toml"
    config.write_text("")
    args = build_parser().parse_args(["run", "--config", str(config), *flag])
    with pytest.raises(InputError, match="--config: must be used alone"):
        config_from_args(args)


def test_the_ceiling_memo_refuses_a_bool_after_the_equal_number() -> None:
    """The ceiling is memoised per (weight, ceiling, concentration); ``True == 1.0`` and hashes
    alike, so the memo must tell them apart, or a bool would borrow the number's answer."""
    assert _ceiling_ml_per_h(70.0, 0.4, 1.0) == pytest.approx(28.0)  # 0.4 mL/kg/h x 70 kg
    with pytest.raises(InputError, match="concentration_mg_per_ml"):
        _ceiling_ml_per_h(70.0, 0.4, True)
