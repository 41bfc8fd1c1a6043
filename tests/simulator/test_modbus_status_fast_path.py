"""The software pump's status read gives exactly what it gave before its fast path, for every
input.

:class:`~simulator.modbus_datastore.PumpRegisters` used to answer a status read with
``encode_status`` of a :class:`~protocol.modbus.StatusBlock` of ``Decimal`` values; it now cuts
the counts from each float's ``repr`` (:func:`~protocol.modbus.scaling.count_truncator`),
remembers the steady ones and lays the words out directly
(:func:`~protocol.modbus.status.status_words`).  The reference is the old definition, which the
pump keeps as its refusal path (``PumpRegisters._status`` then ``encode_status``);
hypothesis holds the new one to its words *and* its refusals (error type and message) over
snapshots the model makes and ones it never would: zero and ``-0.0``, values at, just below and
just above a count boundary, floats whose ``repr`` uses an exponent, the largest values that fit
and the smallest that do not, negatives, NaN, infinities, ints, bools and Decimals.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from decimal import Decimal

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from protocol.clock import ManualClock
from protocol.modbus import (
    RATE_RESOLUTION_ML_PER_H,
    STATUS_SPAN,
    U16_MAX,
    U32_MAX,
    VOLUME_RESOLUTION_ML,
    CommandCode,
    Number,
    Reg,
    encode_status,
    to_counts,
    validate_read,
    validate_write,
)
from protocol.modbus.scaling import count_truncator
from protocol.pump_state import PumpAlarm, PumpState
from simulator.modbus_datastore import PumpRegisters
from simulator.model import PumpModel, PumpSnapshot

pytestmark = pytest.mark.timeout(60)

_ADDRESS = STATUS_SPAN.address
_COUNT = STATUS_SPAN.count
_VOLUME_MAX_ML = float(U32_MAX * VOLUME_RESOLUTION_ML)

# --- the plain definition -----------------------------------------------------------------------


def _reference_words(registers: PumpRegisters, snapshot: PumpSnapshot) -> list[int]:
    """The status block as the pump encoded it before the fast path: ``encode_status`` of the
    StatusBlock of Decimals that ``PumpRegisters._status`` builds (kept as the refusal path)."""
    return encode_status(registers._status(snapshot))


def _outcome(compute: Callable[..., object], *args: object) -> tuple[object, ...]:
    """What ``compute(*args)`` gives: its result, or its error's type and message."""
    try:
        return ("result", compute(*args))
    except Exception as exc:  # the refusal itself is what is compared
        return ("error", type(exc), str(exc))


# --- inputs -------------------------------------------------------------------------------------

#: Values at, just below and just above count boundaries, and the edges of the u32 range.
_EDGES = [
    0.0,
    -0.0,
    0.0015,
    0.001,
    0.01,
    1e-7,
    1e-5,
    1.5e-5,
    0.0001,
    15.48,  # just below 15.48 in binary
    2.5009,
    1.001,  # times 1000 in floats: 1000.9999999999999
    4.35,  # times 100 in floats: 434.99999999999994
    0.29,
    1e15,
    1e16,
    1.2345e17,
    float(U32_MAX * RATE_RESOLUTION_ML_PER_H),
    float((U32_MAX + 1) * RATE_RESOLUTION_ML_PER_H),
    float(U32_MAX * VOLUME_RESOLUTION_ML),
    float((U32_MAX + 1) * VOLUME_RESOLUTION_ML),
    -0.001,
    -1e-300,
    5e-324,
    math.nan,
    math.inf,
    -math.inf,
]


@st.composite
def _near_a_count(draw: st.DrawFn, max_counts: int = U32_MAX + 2) -> float:
    """A whole number of 0.01s or 0.001s (up to ``max_counts`` of them), or a float next to one."""
    counts = draw(st.integers(0, max_counts))
    value = counts / draw(st.sampled_from([100, 1000]))
    return draw(
        st.sampled_from([value, math.nextafter(value, 0.0), math.nextafter(value, math.inf)])
    )


#: Floats every scaled register takes (at most U32_MAX counts of 0.001).
_fitting_floats = st.one_of(
    st.sampled_from([edge for edge in _EDGES if 0 <= edge <= _VOLUME_MAX_ML]),
    _near_a_count(U32_MAX // 10),
    st.floats(min_value=0.0, max_value=_VOLUME_MAX_ML),
)
_plain_floats = st.one_of(
    st.sampled_from(_EDGES),
    _near_a_count(),
    st.floats(min_value=0.0, max_value=5e7),
    st.floats(),  # any float: subnormal, huge, negative, NaN, infinities
)
_numbers = st.one_of(
    _plain_floats,
    st.integers(-5, 10**11),
    st.booleans(),
    st.decimals(allow_nan=True).map(Decimal),
)
_resolutions = st.sampled_from(
    [
        RATE_RESOLUTION_ML_PER_H,
        VOLUME_RESOLUTION_ML,
        Decimal(1),
        Decimal("0.010"),  # a power of ten written with a trailing zero
        Decimal("0.5"),  # not a power of ten: no fast path
        Decimal("1E+1"),
    ]
)
_max_counts = st.sampled_from([U32_MAX, 0, 1, 999, 10**20])


class _SnapshotModel(PumpModel):
    """A real model whose :meth:`snapshot` the test may replace with any snapshot at all."""

    def __init__(self) -> None:
        super().__init__(ManualClock())
        self.fixed: PumpSnapshot | None = None

    def snapshot(self) -> PumpSnapshot:
        return self.fixed if self.fixed is not None else super().snapshot()


_SCALED_FIELDS = (
    "reported_rate_setpoint_ml_per_h",
    "measured_rate_ml_per_h",
    "vtbi_ml",
    "vtbi_remaining_ml",
    "reported_volume_infused_ml",
)
_WILD = {
    **dict.fromkeys(_SCALED_FIELDS, _numbers),
    "watchdog_timeout_s": st.one_of(_plain_floats, st.integers(-5, 10**6)),
    "reported_uptime_s": st.one_of(_plain_floats, st.integers(-5, 2**40)),
    "state": st.just("INFUSING"),  # a str, not a PumpState
    "alarms": st.just(frozenset({7})),  # an int, not a PumpAlarm
}


@st.composite
def _snapshots(draw: st.DrawFn, base: PumpSnapshot) -> PumpSnapshot:
    """``base`` with every field the status block reads drawn: values that fit, with up to two
    fields drawn from anything at all (typed float, but not only)."""
    fields: dict[str, object] = {name: draw(_fitting_floats) for name in _SCALED_FIELDS}
    fields["watchdog_timeout_s"] = draw(st.floats(0.0, 70_000.0))
    fields["reported_uptime_s"] = draw(st.floats(0.0, 2.0**33))
    fields["state"] = draw(st.sampled_from(PumpState))
    fields["alarms"] = draw(st.frozensets(st.sampled_from(PumpAlarm)))
    for name in draw(st.lists(st.sampled_from(sorted(_WILD)), max_size=2, unique=True)):
        fields[name] = draw(_WILD[name])
    return dataclasses.replace(base, **fields)  # type: ignore[arg-type]


_BASE = _SnapshotModel().snapshot()

# --- the properties -----------------------------------------------------------------------------


@settings(max_examples=400)
@given(value=_numbers, resolution=_resolutions, max_counts=_max_counts)
def test_a_count_truncator_gives_what_to_counts_gives_and_refuses_what_it_refuses(
    value: Number, resolution: Decimal, max_counts: int
) -> None:
    truncate = count_truncator(resolution, max_counts=max_counts)
    expected = _outcome(lambda: to_counts(value, resolution, max_counts=max_counts))
    assert _outcome(truncate, value) == expected


@pytest.mark.parametrize("resolution", [RATE_RESOLUTION_ML_PER_H, VOLUME_RESOLUTION_ML])
def test_a_count_truncator_agrees_on_every_count_up_to_20000_and_its_neighbours(
    resolution: Decimal,
) -> None:
    truncate = count_truncator(resolution)
    per_unit = int(1 / resolution)
    for counts in range(20_001):
        value = counts / per_unit
        for near in (math.nextafter(value, -1.0), value, math.nextafter(value, 1e9)):
            assert _outcome(truncate, near) == _outcome(to_counts, near, resolution), near


@pytest.mark.parametrize("bad", [0.01, "0.01", Decimal(0), Decimal(-1), Decimal("NaN")])
def test_a_count_truncator_takes_only_a_positive_finite_decimal(bad: object) -> None:
    with pytest.raises((TypeError, ValueError), match="resolution"):
        count_truncator(bad)  # type: ignore[arg-type]


@settings(max_examples=200)
@example(  # 4.35 * 100 and 1.001 * 1000 in floats fall just below the counts these values are
    snapshots=[
        dataclasses.replace(
            _BASE,
            reported_rate_setpoint_ml_per_h=4.35,
            measured_rate_ml_per_h=15.48,
            vtbi_ml=1.001,
            vtbi_remaining_ml=0.29,
            reported_volume_infused_ml=1.001,
        )
    ],
    heartbeat=U16_MAX,
    commands=[CommandCode.CLEAR_ALARMS],
)
@given(
    snapshots=st.lists(_snapshots(_BASE), min_size=1, max_size=3),
    heartbeat=st.integers(0, U16_MAX),
    commands=st.lists(st.sampled_from([CommandCode.STOP, CommandCode.CLEAR_ALARMS]), max_size=3),
)
def test_the_status_read_gives_the_reference_words_or_its_error(
    snapshots: list[PumpSnapshot], heartbeat: int, commands: list[CommandCode]
) -> None:
    model = _SnapshotModel()
    registers = PumpRegisters(model)
    registers.write(Reg.HEARTBEAT.address, [heartbeat])
    for command in commands:
        registers.write(Reg.COMMAND.address, [int(command)])
    # Several snapshots in a row: a remembered value must not leak into a later read.
    for snapshot in snapshots:
        model.fixed = snapshot
        expected = _outcome(_reference_words, registers, snapshot)
        assert _outcome(registers.read, _ADDRESS, _COUNT) == expected
        # A read of part of the block (validated, then sliced) gives the same words.
        offset = Reg.VOLUME_INFUSED.address - _ADDRESS
        part = _outcome(registers.read, Reg.VOLUME_INFUSED.address, 2)
        if expected[0] == "result":
            words = expected[1]
            assert isinstance(words, list)
            assert part == ("result", words[offset : offset + 2])
            assert words[Reg.HEARTBEAT_ECHO.address - _ADDRESS] == heartbeat
            assert words[Reg.COMMAND_COUNTER.address - _ADDRESS] == len(commands)
            assert words[Reg.LAST_COMMAND.address - _ADDRESS] == (commands[-1] if commands else 0)
        else:
            assert part == expected


def test_an_infusing_pump_reads_the_reference_words_poll_after_poll() -> None:
    clock = ManualClock()
    model = PumpModel(clock, reservoir_ml=50.0)
    registers = PumpRegisters(model)
    registers.write(Reg.RATE_SETPOINT.address, [0, 1548])  # 15.48 mL/h
    registers.write(Reg.VTBI.address, [0, 2501])  # 2.501 mL
    registers.write(Reg.COMMAND.address, [int(CommandCode.START)])
    volume_offset = Reg.VOLUME_INFUSED.address - _ADDRESS
    volumes = set()
    for poll in range(1, 800):
        registers.write(Reg.HEARTBEAT.address, [poll])
        clock.advance(0.837)
        expected = _reference_words(registers, model.snapshot())
        assert registers.read(_ADDRESS, _COUNT) == expected
        assert expected[Reg.HEARTBEAT_ECHO.address - _ADDRESS] == poll
        volumes.add(tuple(expected[volume_offset : volume_offset + 2]))
    # The volume moved nearly every poll until the VTBI was delivered (at about poll 695): fresh
    # counts, not only remembered ones, matched the reference.
    assert len(volumes) > 600


@pytest.mark.parametrize(
    ("address", "count"),
    [
        (_ADDRESS, float(_COUNT)),
        (float(_ADDRESS), _COUNT),
        (_ADDRESS, _COUNT + 200),
        (_ADDRESS + 1, _COUNT),
    ],
)
def test_a_read_near_the_status_block_is_refused_as_validate_read_refuses_it(
    address: object, count: object
) -> None:
    registers = PumpRegisters(PumpModel(ManualClock()))
    refusal = _outcome(validate_read, address, count)
    assert refusal[0] == "error"
    assert _outcome(registers.read, address, count) == refusal


def test_a_read_of_true_registers_is_a_read_of_one_as_before() -> None:
    registers = PumpRegisters(PumpModel(ManualClock()))
    assert registers.read(_ADDRESS, True) == registers.read(_ADDRESS, 1) == [1]  # STATE: STOPPED


# --- the poll's write --------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.integers(-2, U16_MAX + 2),
        st.sampled_from([True, False, 1.0, 0.5, None, "1"]),
    ),
    st.sampled_from([Reg.HEARTBEAT.address - 1, Reg.HEARTBEAT.address, Reg.HEARTBEAT.address + 1]),
)
def test_a_heartbeat_write_does_what_validate_write_says_or_refuses_as_it_does(
    word: object, address: int
) -> None:
    registers = PumpRegisters(PumpModel(ManualClock()))
    max_rate = registers.model.max_rate_ml_per_h
    accepted = _outcome(
        functools.partial(validate_write, max_rate_ml_per_h=max_rate), address, [word]
    )
    outcome = _outcome(registers.write, address, [word])
    if accepted[0] == "error":
        assert outcome == accepted  # the same refusal, word for word
    else:
        assert outcome == ("result", None)
        if address == Reg.HEARTBEAT.address:
            echo = registers.read(Reg.HEARTBEAT_ECHO.address, 1)
            assert echo == [word]


def test_a_new_heartbeat_feeds_the_pumps_watchdog_and_the_same_one_does_not() -> None:
    clock = ManualClock()
    model = PumpModel(clock)
    registers = PumpRegisters(model)
    registers.write(Reg.WATCHDOG_TIMEOUT.address, [10])
    clock.advance(8.0)
    registers.write(Reg.HEARTBEAT.address, [1])  # fed: 10 s from now
    clock.advance(8.0)
    registers.write(Reg.HEARTBEAT.address, [1])  # the same value: not fed
    clock.advance(2.5)
    assert PumpAlarm.COMM_TIMEOUT in model.snapshot().alarms
