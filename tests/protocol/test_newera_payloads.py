"""``DIS`` and ``VER`` reply data: parsing on the host, formatting on a pump."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.errors import ProtocolError
from protocol.newera import (
    Dispensed,
    FirmwareVersion,
    MessageValueError,
    PayloadError,
    VolumeUnit,
    format_dispensed,
    format_version,
    parse_dispensed,
    parse_version,
)


def test_parse_dispensed_reads_both_totals_in_ml() -> None:
    assert parse_dispensed("I0.250W0.000ML") == Dispensed(
        infused_ml=Decimal("0.25"), withdrawn_ml=Decimal(0), unit=VolumeUnit.ML
    )


@pytest.mark.hazard("H-OV-07")
def test_parse_dispensed_converts_microlitres_to_ml() -> None:
    dispensed = parse_dispensed("I250.0W1.500UL")
    assert dispensed.infused_ml == Decimal("0.25")
    assert dispensed.withdrawn_ml == Decimal("0.0015")
    assert dispensed.unit is VolumeUnit.UL


@pytest.mark.parametrize("text", ["", "I0.250ML", "I0.250W0.000", "W0.000I0.250ML", "I1W2LITRE"])
def test_parse_dispensed_refuses_other_shapes(text: str) -> None:
    with pytest.raises(PayloadError):
        parse_dispensed(text)


def test_format_dispensed_writes_the_pump_form() -> None:
    assert format_dispensed(0.25, 0, VolumeUnit.ML) == "I0.250W0.000ML"
    assert format_dispensed(Decimal("0.25"), 0, VolumeUnit.UL) == "I250.0W0.000UL"


@given(
    st.decimals(min_value=0, max_value=Decimal("9999"), places=3),
    st.decimals(min_value=0, max_value=Decimal("9999"), places=3),
)
def test_dispensed_round_trip_never_reports_more_than_was_dispensed(
    infused_ml: Decimal, withdrawn_ml: Decimal
) -> None:
    parsed = parse_dispensed(format_dispensed(infused_ml, withdrawn_ml, VolumeUnit.ML))
    assert 0 <= infused_ml - parsed.infused_ml < 1
    assert 0 <= withdrawn_ml - parsed.withdrawn_ml < 1


def test_parse_version_reads_the_observed_ne1000_reply() -> None:
    version = parse_version("NE1000V3.928")
    assert version == FirmwareVersion(model=1000, firmware="3.928", upgrade=0)


@pytest.mark.parametrize(
    ("text", "upgrade"), [("NE1000X2V3.928", 2), ("NE500XV1.00", 1), ("NE4000V2.1", 0)]
)
def test_parse_version_reads_the_upgrade_as_nesp_lib_does(text: str, upgrade: int) -> None:
    assert parse_version(text).upgrade == upgrade


@pytest.mark.parametrize("text", ["", "NE1000", "1000V3.928", "NE1000V3", "ne1000v3.928"])
def test_parse_version_refuses_other_shapes(text: str) -> None:
    with pytest.raises(PayloadError):
        parse_version(text)


@given(
    st.integers(0, 99999),
    st.integers(0, 99),
    st.from_regex(r"[0-9]{1,2}\.[0-9]{1,3}", fullmatch=True),
)
def test_version_round_trips(model: int, upgrade: int, firmware: str) -> None:
    version = FirmwareVersion(model=model, firmware=firmware, upgrade=upgrade)
    assert parse_version(format_version(version)) == version


def test_firmware_version_refuses_a_malformed_firmware_string() -> None:
    with pytest.raises(MessageValueError):
        FirmwareVersion(model=1000, firmware="3")


@given(st.text(max_size=40))
def test_payload_parsers_raise_only_protocol_errors_on_any_text(text: str) -> None:
    for parse in (parse_dispensed, parse_version):
        try:
            result = parse(text)
        except ProtocolError:
            continue
        assert isinstance(result, Dispensed | FirmwareVersion)
