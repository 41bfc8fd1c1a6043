"""The identification block: round trip, map-version and word-order checks, typed errors."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.errors import DecodeError, EncodeError, ProtocolError
from protocol.modbus import (
    IDENTIFICATION_SPAN,
    MAP_VERSION,
    AsciiDecodeError,
    FieldValueError,
    Identification,
    MapVersionError,
    Reg,
    Register,
    RegisterCountError,
    WordOrderError,
    counts_to_rate_ml_per_h,
    decode_identification,
    encode_identification,
)
from protocol.modbus.words import U16_MAX, U32_MAX

u16 = st.integers(min_value=0, max_value=U16_MAX)
ascii16 = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=16)

identifications = st.builds(
    Identification,
    vendor_id=u16,
    model_id=u16,
    firmware_major=u16,
    firmware_minor=u16,
    firmware_patch=u16,
    max_rate_ml_per_h=st.integers(min_value=1, max_value=U32_MAX).map(counts_to_rate_ml_per_h),
    model_name=ascii16,
    serial_number=ascii16,
)

SIMULATED = Identification(
    vendor_id=0x0001,
    model_id=0x0002,
    firmware_major=1,
    firmware_minor=4,
    firmware_patch=0,
    max_rate_ml_per_h=Decimal("999.99"),
    model_name="SIM-PUMP",
    serial_number="SN0001",
)


def _words_at(registers: list[int], register: Register) -> list[int]:
    offset = register.address - IDENTIFICATION_SPAN.address
    return registers[offset : offset + register.words]


def _with(register: Register, *words: int) -> list[int]:
    registers = encode_identification(SIMULATED)
    offset = register.address - IDENTIFICATION_SPAN.address
    registers[offset : offset + len(words)] = words
    return registers


@given(identifications)
def test_identification_round_trips_through_registers(identification: Identification) -> None:
    registers = encode_identification(identification)
    assert len(registers) == IDENTIFICATION_SPAN.count
    assert all(0 <= word <= U16_MAX for word in registers)
    assert decode_identification(registers) == identification


def test_encoded_block_carries_map_version_word_order_pattern_and_scaled_max_rate() -> None:
    registers = encode_identification(SIMULATED)
    assert _words_at(registers, Reg.MAP_VERSION) == [MAP_VERSION]
    assert _words_at(registers, Reg.WORD_ORDER_TEST) == [0x1234, 0x5678]
    assert _words_at(registers, Reg.MAX_RATE) == [0x0001, 0x869F]  # 99999 counts
    assert _words_at(registers, Reg.MODEL_NAME)[:4] == [0x5349, 0x4D2D, 0x5055, 0x4D50]
    assert decode_identification(registers).firmware_version == "1.4.0"


def test_swapped_word_order_is_reported_as_swapped() -> None:
    with pytest.raises(WordOrderError, match="swapped"):
        decode_identification(_with(Reg.WORD_ORDER_TEST, 0x5678, 0x1234))


def test_wrong_test_pattern_is_a_word_order_error() -> None:
    with pytest.raises(WordOrderError, match="not the expected map"):
        decode_identification(_with(Reg.WORD_ORDER_TEST, 0x0000, 0x0000))


def test_other_map_version_is_refused_and_reported() -> None:
    with pytest.raises(MapVersionError) as caught:
        decode_identification(_with(Reg.MAP_VERSION, MAP_VERSION + 1))
    assert caught.value.pump_map_version == MAP_VERSION + 1


def test_map_version_is_checked_before_the_rest_of_the_block() -> None:
    registers = [0] * IDENTIFICATION_SPAN.count
    registers[Reg.MAP_VERSION.address - IDENTIFICATION_SPAN.address] = 2
    with pytest.raises(MapVersionError):
        decode_identification(registers)


def test_zero_max_rate_is_refused_both_ways() -> None:
    with pytest.raises(FieldValueError):
        decode_identification(_with(Reg.MAX_RATE, 0, 0))
    with pytest.raises(EncodeError, match="MAX_RATE"):
        encode_identification(dataclasses.replace(SIMULATED, max_rate_ml_per_h=Decimal("0.009")))


def test_bad_ascii_in_model_name_is_a_decode_error() -> None:
    with pytest.raises(AsciiDecodeError):
        decode_identification(_with(Reg.MODEL_NAME, 0x41FF))


def test_wrong_block_length_is_a_count_error() -> None:
    with pytest.raises(RegisterCountError):
        decode_identification(encode_identification(SIMULATED)[:-1])


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("vendor_id", U16_MAX + 1),
        ("firmware_major", -1),
        ("model_name", "X" * 17),
        ("serial_number", "SN\u00e9"),
        ("max_rate_ml_per_h", Decimal("-1")),
        ("max_rate_ml_per_h", Decimal("42949672.96")),
        ("map_version", U16_MAX + 1),
    ],
)
def test_unrepresentable_identification_is_an_encode_error(field: str, value: Any) -> None:
    with pytest.raises(EncodeError):
        encode_identification(dataclasses.replace(SIMULATED, **{field: value}))


@given(st.lists(st.integers(min_value=-1, max_value=U16_MAX + 1), max_size=30))
def test_decode_identification_raises_only_decode_errors(registers: list[int]) -> None:
    outcome: Identification | ProtocolError
    try:
        outcome = decode_identification(registers)
    except ProtocolError as exc:
        outcome = exc
    if isinstance(outcome, Identification):
        assert encode_identification(outcome) == registers
    else:
        assert isinstance(outcome, DecodeError)


@given(
    st.lists(u16, min_size=IDENTIFICATION_SPAN.count, max_size=IDENTIFICATION_SPAN.count),
)
def test_decode_identification_of_blocks_with_valid_header_raises_only_decode_errors(
    registers: list[int],
) -> None:
    registers[0:4] = [MAP_VERSION, registers[1], 0x1234, 0x5678]
    outcome: Identification | ProtocolError
    try:
        outcome = decode_identification(registers)
    except ProtocolError as exc:
        outcome = exc
    if isinstance(outcome, Identification):
        assert encode_identification(outcome) == registers
    else:
        assert isinstance(outcome, DecodeError)
