"""The codec's fast paths give exactly what the plain definitions give, over the whole input
domain.

The number field is computed on ``(numerator, denominator)`` ints instead of
:class:`~fractions.Fraction` values, charset checks are compiled patterns instead of set
differences, mnemonics are looked up by prefix instead of tried one by one.  Each reference
below is the plain definition these replaced (as the codec had it before); hypothesis compares
results *and* refusals (error type and message) over every kind of input the functions take:
int, Fraction, Decimal and float of any sign and size, NaN, infinities, bools and other types,
any text and any bytes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from decimal import Decimal
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.newera import (
    Command,
    Mnemonic,
    NeAlarm,
    NeErrorCode,
    NeStatus,
    PayloadError,
    RateUnit,
    Reply,
    UnknownCommandError,
    UnrepresentableNumberError,
    VolumeUnit,
    encode_rate,
    encode_volume,
    format_dispensed,
    format_display_number,
    format_number,
    format_rate,
    format_volume,
    normalize_command_bytes,
    number_resolution,
    parse_command_text,
    parse_reply_payload,
    volume_unit_for_diameter,
)
from protocol.newera.constants import (
    MAX_NUMBER_DECIMALS,
    MAX_NUMBER_DIGITS,
    VOLUME_UNIT_DIAMETER_THRESHOLD_MM,
)
from protocol.newera.messages import (
    COMMAND_ARGUMENT_CHARS,
    REPLY_DATA_CHARS,
    _match_mnemonic,
)

# --- the plain definitions ----------------------------------------------------------------------

_FIELD_LIMIT = 10**MAX_NUMBER_DIGITS


def _ref_exact(value: object) -> Fraction:
    if isinstance(value, bool):
        raise UnrepresentableNumberError(f"a bool is not a number: {value!r}")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise UnrepresentableNumberError(f"not a finite number: {value!r}")
        return Fraction(Decimal(repr(value)))
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise UnrepresentableNumberError(f"not a finite number: {value!r}")
        return Fraction(value)
    if isinstance(value, int | Fraction):
        return Fraction(value)
    raise UnrepresentableNumberError(f"not a number: {value!r}")


def _ref_truncate(value: Fraction) -> tuple[int, int]:
    integer_digits = len(str(math.floor(value)))
    decimals = min(MAX_NUMBER_DECIMALS, MAX_NUMBER_DIGITS - integer_digits)
    return math.floor(value * 10**decimals), decimals


def _ref_checked(value: object) -> Fraction:
    exact = _ref_exact(value)
    if exact < 0:
        raise UnrepresentableNumberError(f"negative: {value!r}")
    if exact >= _FIELD_LIMIT:
        raise UnrepresentableNumberError(f"more than {MAX_NUMBER_DIGITS} digits: {value!r}")
    return exact


def _ref_digits(scaled: int, decimals: int) -> tuple[str, str]:
    if decimals == 0:
        return str(scaled), ""
    integer, fraction = divmod(scaled, 10**decimals)
    return str(integer), str(fraction).zfill(decimals)


def _ref_format_number(value: object) -> str:
    exact = _ref_checked(value)
    scaled, decimals = _ref_truncate(exact)
    if scaled == 0 and exact != 0:
        raise UnrepresentableNumberError(f"too small, would truncate to 0: {value!r}")
    integer, fraction = _ref_digits(scaled, decimals)
    fraction = fraction.rstrip("0")
    return f"{integer}.{fraction}" if fraction else integer


def _ref_format_display_number(value: object) -> str:
    integer, fraction = _ref_digits(*_ref_truncate(_ref_checked(value)))
    return f"{integer}.{fraction}"


def _ref_number_resolution(value: object) -> Decimal:
    _, decimals = _ref_truncate(_ref_checked(value))
    return Decimal(1).scaleb(-decimals)


_RATE_UNIT_PREFERENCE = (
    RateUnit.UL_PER_MIN,
    RateUnit.UL_PER_H,
    RateUnit.ML_PER_MIN,
    RateUnit.ML_PER_H,
)


def _ref_encode_rate(rate_ml_per_h: object) -> tuple[str, RateUnit]:
    exact = _ref_exact(rate_ml_per_h)
    if exact <= 0:
        raise UnrepresentableNumberError(f"a rate must be positive: {rate_ml_per_h!r} mL/h")
    best: tuple[Fraction, RateUnit, int, int] | None = None
    for unit in _RATE_UNIT_PREFERENCE:
        unit_ml_per_h = Fraction(unit.ml_per_h)
        in_unit = exact / unit_ml_per_h
        if in_unit >= _FIELD_LIMIT:
            continue
        scaled, decimals = _ref_truncate(in_unit)
        if scaled == 0:
            continue
        step_ml_per_h = unit_ml_per_h / 10**decimals
        if best is None or step_ml_per_h < best[0]:
            best = (step_ml_per_h, unit, scaled, decimals)
    if best is None:
        raise UnrepresentableNumberError(f"no rate unit can hold {rate_ml_per_h!r} mL/h")
    _, unit, scaled, decimals = best
    return _ref_format_number(Fraction(scaled, 10**decimals)), unit


def _ref_format_rate(rate_ml_per_h: object, unit: RateUnit) -> str:
    in_unit = _ref_exact(rate_ml_per_h) / Fraction(unit.ml_per_h)
    return f"{_ref_format_display_number(in_unit)}{unit.value}"


def _ref_volume_unit_for_diameter(diameter_mm: object) -> VolumeUnit:
    threshold = Fraction(VOLUME_UNIT_DIAMETER_THRESHOLD_MM)
    return VolumeUnit.UL if _ref_exact(diameter_mm) <= threshold else VolumeUnit.ML


def _ref_encode_volume(volume_ml: object, unit: VolumeUnit) -> str:
    exact = _ref_exact(volume_ml)
    if exact <= 0:
        raise UnrepresentableNumberError(f"a volume to dispense must be positive: {volume_ml!r}")
    return _ref_format_number(exact / Fraction(unit.ml))


def _ref_format_volume(volume_ml: object, unit: VolumeUnit) -> str:
    return f"{_ref_format_display_number(_ref_exact(volume_ml) / Fraction(unit.ml))}{unit.value}"


def _ref_format_dispensed(infused_ml: object, withdrawn_ml: object, unit: VolumeUnit) -> str:
    unit_ml = _ref_exact(unit.ml)
    infused = _ref_format_display_number(_ref_exact(infused_ml) / unit_ml)
    withdrawn = _ref_format_display_number(_ref_exact(withdrawn_ml) / unit_ml)
    return f"I{infused}W{withdrawn}{unit.value}"


_REF_MNEMONICS_LONGEST_FIRST = tuple(
    sorted((m for m in Mnemonic if m.value), key=lambda m: len(m.value), reverse=True)
)


def _ref_match_mnemonic(rest: str) -> Mnemonic | None:
    if not rest:
        return Mnemonic.STATUS
    for mnemonic in _REF_MNEMONICS_LONGEST_FIRST:
        if rest.startswith(mnemonic.value):
            return mnemonic
    return None


def _ref_normalize_command_bytes(data: bytes) -> bytes:
    return bytes(b for b in data if 0x20 < b != 0x7F).upper()


# --- comparing ----------------------------------------------------------------------------------


def _outcome(function: Callable[..., object], *args: object) -> tuple[str, object]:
    """What ``function(*args)`` gives: its result, or its error's type and message."""
    try:
        return "result", function(*args)
    except Exception as error:  # the comparison is the point: any error must match
        return type(error).__name__, str(error)


def _same(new: Callable[..., object], old: Callable[..., object], *args: object) -> None:
    new_outcome = _outcome(new, *args)
    assert new_outcome == _outcome(old, *args)
    if new_outcome[0] == "result" and isinstance(new_outcome[1], Decimal):
        assert str(new_outcome[1]) == str(_outcome(old, *args)[1])  # same exponent too


_big = st.integers(min_value=-(10**30), max_value=10**30)
#: Where the field's behaviour changes (0, its last digit at each magnitude, the 4-digit limit)
#: in each unit's scale (mL/h, µL/min, mL/min, µL/h or mL), and the volume-unit threshold.
_EDGES = (
    *(
        Fraction(boundary) * Fraction(unit_size)
        for boundary in (0, Fraction(1, 1000), 10, 100, 1000, _FIELD_LIMIT)
        for unit_size in (1, Decimal("0.06"), 60, Decimal("0.001"))
    ),
    Fraction(VOLUME_UNIT_DIAMETER_THRESHOLD_MM),
)
#: Exact values within a few millionths of a unit of an edge, as Fraction, Decimal or float.
near_edges = st.builds(
    lambda edge, step, kind: kind(edge + Fraction(step, 10**6) * (edge or 1)),
    st.sampled_from(_EDGES),
    st.integers(min_value=-1500, max_value=1500),
    st.sampled_from([Fraction, lambda f: Decimal(f.numerator) / Decimal(f.denominator), float]),
)
numbers = st.one_of(
    near_edges,
    # Around the field's edges (0, 0.001, the 4-digit limit, each decimal boundary) ...
    st.fractions(min_value=-1, max_value=10001, max_denominator=10**7),
    st.decimals(
        min_value=Decimal("-0.01"), max_value=Decimal("10000.01"), places=7, allow_nan=False
    ),
    st.floats(min_value=-0.01, max_value=10000.01),
    st.integers(min_value=-2, max_value=10001),
    # ... and anywhere at all.
    st.fractions(),
    st.builds(Fraction, _big, st.integers(min_value=1, max_value=10**30)),
    st.decimals(),
    st.floats(),
    _big,
    st.booleans(),
    st.sampled_from([None, "1", b"1", 1j]),
)


def _same_number_field(value: object, other: object) -> None:
    _same(format_number, _ref_format_number, value)
    _same(format_display_number, _ref_format_display_number, value)
    _same(number_resolution, _ref_number_resolution, value)
    _same(volume_unit_for_diameter, _ref_volume_unit_for_diameter, value)
    _same(lambda v: tuple(encode_rate(v)), _ref_encode_rate, value)
    for rate_unit in RateUnit:
        _same(format_rate, _ref_format_rate, value, rate_unit)
    for volume_unit in VolumeUnit:
        _same(encode_volume, _ref_encode_volume, value, volume_unit)
        _same(format_volume, _ref_format_volume, value, volume_unit)
        _same(format_dispensed, _ref_format_dispensed, value, other, volume_unit)
        _same(format_dispensed, _ref_format_dispensed, other, value, volume_unit)


@given(numbers, numbers)
def test_number_field_functions_match_their_fraction_definitions(
    value: object, other: object
) -> None:
    _same_number_field(value, other)


@settings(max_examples=500)
@given(near_edges, near_edges)
def test_number_field_functions_match_their_definitions_at_every_edge(
    value: object, other: object
) -> None:
    _same_number_field(value, other)


# --- messages -----------------------------------------------------------------------------------

_mnemonic_texts = st.sampled_from([m.value for m in Mnemonic])
_ascii_text = st.text(st.characters(max_codepoint=0x80), max_size=4)
#: Text near commands: mnemonics and pieces of them, digits, argument and other characters.
command_like_text = st.lists(
    st.one_of(
        _mnemonic_texts,
        _mnemonic_texts.map(lambda t: t[:-1]),
        _ascii_text,
        st.text(max_size=3),
    ),
    max_size=4,
).map("".join)


@given(command_like_text)
def test_mnemonic_lookup_matches_trying_the_longest_first(rest: str) -> None:
    assert _match_mnemonic(rest) is _ref_match_mnemonic(rest)


def _ref_command_error(mnemonic: object, argument: object, address: object) -> str | None:
    """The first check a command fails, as the plain definition words it; None if it passes."""
    try:
        member = Mnemonic(mnemonic)  # type: ignore[arg-type]  # the test feeds it anything
    except ValueError:
        return f"unknown mnemonic: {mnemonic!r}"
    if address is not None and (
        isinstance(address, bool) or not isinstance(address, int) or not 0 <= address <= 99
    ):
        return f"address must be an int 0-99: {address!r}"
    if not isinstance(argument, str):
        return f"argument must be a str: {argument!r}"
    bad = set(argument) - COMMAND_ARGUMENT_CHARS
    if bad:
        return f"argument holds characters the pump would strip or change: {sorted(bad)!r}"
    if _ref_match_mnemonic(member.value + argument) is not member:
        return f"{member.value!r} + {argument!r} reads back as another command"
    text = ("" if address is None else str(address)) + member.value + argument
    return "command text longer than 251" if len(text) > 251 else None


@settings(max_examples=300)
@given(
    st.one_of(st.sampled_from(Mnemonic), _mnemonic_texts, st.text(max_size=4)),
    st.one_of(command_like_text, st.text(max_size=8), st.just(b"1")),
    st.one_of(st.none(), st.integers(min_value=-2, max_value=101), st.just(True)),
)
def test_command_checks_refuse_exactly_what_their_definitions_refuse(
    mnemonic: object, argument: object, address: object
) -> None:
    outcome = _outcome(Command, mnemonic, argument, address)
    expected = _ref_command_error(mnemonic, argument, address)
    if expected is None:
        assert outcome[0] == "result"
    else:
        assert outcome == ("MessageValueError", expected)


def _ref_parse_command_text(data: bytes) -> tuple[object, ...]:
    """The plain definition of reading a command: its fields, or its error and message."""
    text = _ref_normalize_command_bytes(data).decode("latin-1")
    address_digits = ""
    for char in text[:2]:
        if char not in "0123456789":
            break
        address_digits += char
    address = int(address_digits) if address_digits else 0
    rest = text[len(address_digits) :]
    mnemonic = _ref_match_mnemonic(rest) if rest.isascii() else None
    if mnemonic is None:
        return "UnknownCommandError", f"command not recognised: {text!r}", address
    argument = rest[len(mnemonic.value) :]
    error = _ref_command_error(mnemonic, argument, address)
    if error is not None:
        return "UnknownCommandError", error, address
    return mnemonic, argument, address


@given(st.one_of(st.binary(max_size=40), command_like_text.map(lambda t: t.encode("utf-8"))))
def test_command_reading_matches_its_definition(data: bytes) -> None:
    assert normalize_command_bytes(data) == _ref_normalize_command_bytes(data)
    try:
        command = parse_command_text(data)
    except UnknownCommandError as error:
        got: tuple[object, ...] = (type(error).__name__, str(error), error.address)
    else:
        got = (command.mnemonic, command.argument, command.address)
    assert got == _ref_parse_command_text(data)


@settings(max_examples=300)
@given(st.one_of(_ascii_text, st.text(max_size=12)), st.sampled_from(NeStatus))
def test_reply_data_check_refuses_exactly_the_non_printable(data: str, status: NeStatus) -> None:
    outcome = _outcome(Reply, 0, status, None, None, data)
    bad = set(data) - REPLY_DATA_CHARS
    if bad:
        expected = f"data holds non-printable characters: {sorted(bad)!r}"
        assert outcome == ("MessageValueError", expected)
    elif not data.startswith("?"):
        assert outcome[0] == "result"


def _ref_parse_reply_payload(payload: bytes) -> tuple[object, ...]:
    """The plain definition of reading a reply: its fields, or its error, message, address."""
    if not 3 <= len(payload) <= 43:
        return "PayloadError", f"reply payload of {len(payload)} bytes", None
    if any(not 0x20 <= b < 0x7F for b in payload):
        return "PayloadError", "reply payload holds a non-printable byte", None
    text = payload.decode("ascii")
    if not set(text[:2]) <= set("0123456789"):
        return "PayloadError", f"reply address is not two digits: {text[:2]!r}", None
    address = int(text[:2])
    rest = text[2:]
    refused = ("PayloadError", f"reply not understood: {text!r}", address)
    if rest.startswith("A?"):
        alarms = {a.value: a for a in NeAlarm}
        return (address, None, alarms[rest], None, "") if rest in alarms else refused
    statuses = {s.value: s for s in NeStatus}
    if rest[0] not in statuses:
        return refused
    data = rest[1:]
    if data.startswith("?"):
        errors = {e.value: e for e in NeErrorCode}
        return (address, statuses[rest[0]], None, errors[data], "") if data in errors else refused
    return address, statuses[rest[0]], None, None, data


def _read_reply(payload: bytes) -> tuple[object, ...]:
    """What :func:`parse_reply_payload` reads, in :func:`_ref_parse_reply_payload`'s terms."""
    try:
        reply = parse_reply_payload(payload)
    except PayloadError as error:
        return type(error).__name__, str(error), error.address
    return reply.address, reply.status, reply.alarm, reply.error, reply.data


_payload_pieces = st.sampled_from(
    [s.value for s in NeStatus] + [a.value for a in NeAlarm] + [e.value for e in NeErrorCode]
)


@settings(max_examples=300)
@given(
    st.one_of(
        st.binary(max_size=50),
        st.tuples(
            st.from_regex(r"[0-9]{2}", fullmatch=True), _payload_pieces, st.binary(max_size=6)
        ).map(lambda t: t[0].encode() + t[1].encode() + t[2]),
        st.tuples(st.one_of(_payload_pieces, _ascii_text), _ascii_text).map(
            lambda t: ("07" + t[0] + t[1]).encode("utf-8")
        ),
        st.tuples(_payload_pieces, st.text(max_size=45)).map(
            lambda t: ("07" + t[0] + t[1]).encode("utf-8")
        ),
    )
)
def test_reply_reading_matches_its_definition(payload: bytes) -> None:
    assert _read_reply(payload) == _ref_parse_reply_payload(payload)


def test_reply_reading_matches_its_definition_for_every_status_byte() -> None:
    for byte in range(0x100):
        for tail in (b"", b"1.000MH", b"?OOR", b"?X", b"R"):
            payload = b"07" + bytes([byte]) + tail
            assert _read_reply(payload) == _ref_parse_reply_payload(payload), payload
