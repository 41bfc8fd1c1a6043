"""Line faults the transports consult: validated values, deterministic mangling."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.clock import ManualClock
from simulator.errors import OutOfRangeError
from simulator.faults import MAX_GARBAGE_BYTES, MAX_REPLY_DELAY_S
from simulator.model import PumpModel

REPLY = b"\x0200I\x03"


def noisy_model(seed: int, garbage: float = 0.5, corrupt: float = 0.5) -> PumpModel:
    model = PumpModel(ManualClock(), rng=random.Random(seed))
    model.line.garbage_probability = garbage
    model.line.corrupt_probability = corrupt
    return model


def test_mangle_gives_the_same_bytes_for_the_same_seed() -> None:
    first = noisy_model(1234)
    second = noisy_model(1234)
    replies = [bytes([0x02]) + f"00S{n}".encode() + bytes([0x03]) for n in range(300)]
    first_out = [first.line.mangle(reply) for reply in replies]
    second_out = [second.line.mangle(reply) for reply in replies]
    assert first_out == second_out
    assert first_out != replies  # with p=0.5 over 300 replies, some were mangled


def test_mangle_differs_for_a_different_seed() -> None:
    first = noisy_model(1)
    second = noisy_model(2)
    assert [first.line.mangle(REPLY) for _ in range(50)] != [
        second.line.mangle(REPLY) for _ in range(50)
    ]


def test_default_rng_is_seeded_so_runs_repeat() -> None:
    first = PumpModel(ManualClock())
    second = PumpModel(ManualClock())
    for model in (first, second):
        model.line.garbage_probability = 1.0
    assert [first.line.mangle(REPLY) for _ in range(20)] == [
        second.line.mangle(REPLY) for _ in range(20)
    ]


def test_clean_line_returns_reply_unchanged_and_leaves_rng_untouched() -> None:
    model = PumpModel(ManualClock(), rng=random.Random(7))
    state_before = model.rng.getstate()
    assert model.line.mangle(REPLY) == REPLY
    assert model.rng.getstate() == state_before


@given(seed=st.integers(0, 2**32), reply=st.binary(max_size=64))
def test_garbage_is_prepended_and_leaves_reply_intact(seed: int, reply: bytes) -> None:
    model = noisy_model(seed, garbage=1.0, corrupt=0.0)
    out = model.line.mangle(reply)
    assert out.endswith(reply)
    assert 1 <= len(out) - len(reply) <= MAX_GARBAGE_BYTES


@given(seed=st.integers(0, 2**32), reply=st.binary(min_size=1, max_size=64))
def test_corruption_changes_exactly_one_byte(seed: int, reply: bytes) -> None:
    model = noisy_model(seed, garbage=0.0, corrupt=1.0)
    out = model.line.mangle(reply)
    assert len(out) == len(reply)
    assert sum(a != b for a, b in zip(out, reply, strict=True)) == 1


def test_corrupting_an_empty_reply_gives_an_empty_reply() -> None:
    model = noisy_model(3, garbage=0.0, corrupt=1.0)
    assert model.line.mangle(b"") == b""


@pytest.mark.parametrize("name", ["garbage_probability", "corrupt_probability"])
@pytest.mark.parametrize("bad", [-0.01, 1.01, math.nan, math.inf, "0.5", True])
def test_probability_outside_0_to_1_is_refused_and_changes_nothing(name: str, bad: object) -> None:
    model = PumpModel(ManualClock())
    setattr(model.line, name, 0.25)
    with pytest.raises(OutOfRangeError, match=rf"{name} must be .*0\.\.1"):
        setattr(model.line, name, bad)
    assert getattr(model.line, name) == 0.25


@pytest.mark.parametrize("bad", [-1.0, MAX_REPLY_DELAY_S + 1.0, math.nan, math.inf, None])
def test_reply_delay_outside_range_is_refused_and_changes_nothing(bad: object) -> None:
    model = PumpModel(ManualClock())
    model.line.reply_delay_s = 0.5
    with pytest.raises(OutOfRangeError, match="reply_delay_s"):
        model.line.reply_delay_s = bad  # type: ignore[assignment]
    assert model.line.reply_delay_s == 0.5


def test_hang_accepts_only_a_bool() -> None:
    model = PumpModel(ManualClock())
    with pytest.raises(OutOfRangeError, match="True or False"):
        model.line.hang = 1  # type: ignore[assignment]
    model.line.hang = True
    assert model.line.hang is True


def test_reset_gives_a_clean_line() -> None:
    model = noisy_model(5)
    model.line.hang = True
    model.line.reply_delay_s = 2.0
    model.line.reset()
    line = model.line
    assert (line.hang, line.reply_delay_s, line.garbage_probability, line.corrupt_probability) == (
        False,
        0.0,
        0.0,
        0.0,
    )
    assert line.mangle(REPLY) == REPLY


@pytest.mark.parametrize(
    "fault",
    [
        ("hang", True),
        ("reply_delay_s", 0.5),
        ("garbage_probability", 0.1),
        ("corrupt_probability", 0.1),
        ("duplicate_probability", 0.1),
    ],
)
def test_a_line_is_clean_only_without_any_fault(fault: tuple[str, object]) -> None:
    """``clean`` lets a transport skip mangling and delaying: each fault alone makes it False."""
    model = PumpModel(ManualClock())
    assert model.line.clean
    name, value = fault
    setattr(model.line, name, value)
    assert not model.line.clean
    model.line.reset()
    assert model.line.clean
