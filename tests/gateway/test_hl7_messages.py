"""The HL7 v2 codec: lab results, orders and ACKs in; ACKs, order answers and pump data out.

Every message the gateway builds is checked against HL7 v2.6 by a second, independent library
(hl7apy, strict) and read back with python-hl7.  Every refusal names its segment-field.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime

import hl7
import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message as hl7apy_parse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.errors import GatewayError
from gateway.hl7_messages import (
    AckResult,
    Hl7Error,
    Hl7Header,
    Hl7MessageError,
    OrderPlan,
    PumpObservation,
    build_ack,
    build_observation,
    build_order_response,
    parse_ack,
    parse_lab_result,
    parse_message,
    parse_order,
)

# --- example messages, as a lab and a CPOE would send them ------------------------------------

LAB_SEGMENTS = [
    "MSH|^~\\&|LAB|HOSP-LAB|IGM-GATEWAY|ICU|20260102063512+0100||ORU^R01^ORU_R01|LAB000123|P|"
    "2.6|||AL|NE",
    "PID|1||MRN4711^^^HOSP^MR||Doe^Jane^^^^^L||19580214|F",
    "PV1|1|I|ICU^12^A",
    "ORC|RE|ORD778^CPOE|LAB55^LAB",
    "OBR|1|ORD778^CPOE|LAB55^LAB|IGMHCT^IgM and hematocrit^L|||20260102060500+0100"
    + "|" * 15
    + "20260102063000+0100|||F",
    "OBX|1|NM|2472-0^IgM SerPl-mCnc^LN||0.30|g/L^g/L^UCUM|0.40-2.30|L|||F|||20260102061000+0100",
    "OBX|2|NM|4544-3^Hct VFr Bld Auto^LN||35.0|%^%^UCUM|36-46|L|||F",
]
#: 06:05 and 06:10 on 2 January 2026 at +01:00.
LAB_DRAWN_AT = datetime(2026, 1, 2, 5, 5, tzinfo=UTC).timestamp()
IGM_DRAWN_AT = datetime(2026, 1, 2, 5, 10, tzinfo=UTC).timestamp()

ORDER_SEGMENTS = [
    "MSH|^~\\&|CPOE|HOSP|IGM-GATEWAY|ICU|20260101233000+0100||RGV^O15^RGV_O15|CPOE0042|P|2.6|||"
    "AL|AL|||||IHE_PCD_RGV_O15^IHE PCD^1.3.6.1.4.1.19376.1.6.1.3.1^ISO",
    "PID|||MRN4711^^^HOSP^MR||Doe^Jane^^^^^L||19580214|F",
    "PV1||I|ICU^12^A",
    "ORC|NW|ORD778^CPOE||||||||20260101232500+0100",
    "RXG|1|||IGM-ENRICHED-IG-50^IgM-enriched immunoglobulin 50 mg/mL^99IGM|412.5||"
    "263762^MDC_DIM_MILLI_L^MDC||||||||17.18|265266^MDC_DIM_MILLI_L_PER_HR^MDC",
    "TQ1|1|||||24^h&hour&UCUM",
    "RXR|IV^Intravenous^HL70162",
    "OBX|1|NM|29463-7^Body weight^LN||82.5|kg^kg^UCUM|||||F|||20260101220000+0100",
    "OBX|2|CWE|IGMFAT-ARM^Trial arm^99IGM||IGMFAT-TITER^Titer arm^99IGM||||||F",
    "OBX|3|DTM|IGMFAT-RAND^Randomisation time^99IGM||20260101230000+0100||||||F",
    "OBX|4|NM|2472-0^IgM SerPl-mCnc^LN||30|mg/dL^mg/dL^UCUM|||||F|||20260101223000+0100",
    "OBX|5|NM|4544-3^Hct VFr Bld Auto^LN||0.35|L/L^L/L^UCUM|||||F|||20260101223000+0100",
]
RANDOMISED_AT = datetime(2026, 1, 1, 22, 0, tzinfo=UTC).timestamp()
BASELINE_DRAWN_AT = datetime(2026, 1, 1, 21, 30, tzinfo=UTC).timestamp()

NOW = datetime(2026, 1, 2, 6, 40, tzinfo=UTC).timestamp()
GW = {"sending_application": "IGM-GATEWAY", "sending_facility": "ICU"}
PLAN = OrderPlan(
    day=1, dose_mg_per_kg=250.0, volume_ml=412.5, rate_ml_per_h=17.1875, ceiling_ml_per_h=33.0
)


def message(segments: list[str], **replace: str) -> str:
    """The segments as one message (CR-separated); ``replace`` swaps whole segments by prefix."""
    out = []
    for segment in segments:
        for prefix, new in replace.items():
            if segment.startswith(prefix.replace("_", "|")):
                segment = new
        out.append(segment)
    return "\r".join(s for s in out if s) + "\r"


def obx(segments: list[str], number: int, new: str) -> list[str]:
    """The segments with ``OBX|number|...`` replaced by ``new`` ("" removes it)."""
    return [new if s.startswith(f"OBX|{number}|") else s for s in segments]


LAB = message(LAB_SEGMENTS)
ORDER = message(ORDER_SEGMENTS)

#: hl7apy's v2.6 table 0125 (value types) predates CWE and DTM, which v2.6 itself has.
HL7APY_STALE_0125 = ("Value CWE not in table HL70125", "Value DTM not in table HL70125")


def assert_valid_v26(text: str, tolerated: tuple[str, ...] = ()) -> None:
    """Strict HL7 v2.6 structure, datatypes and tables (hl7apy), with no warning left."""
    parsed = hl7apy_parse(text, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
    assert parsed.version == "2.6"
    fd, report = tempfile.mkstemp(suffix=".txt")
    os.close(fd)
    try:
        parsed.validate(report_file=report)
        with open(report, encoding="utf-8") as f:
            lines = [line for line in f.read().splitlines() if line.strip()]
    finally:
        os.unlink(report)
    assert [line for line in lines if not any(t in line for t in tolerated)] == []


def refused(text: str, parse: Callable[[str], object] = parse_lab_result) -> Hl7MessageError:
    with pytest.raises(Hl7MessageError) as caught:
        parse(text)
    return caught.value


# --- the example messages themselves ----------------------------------------------------------


def test_the_example_messages_are_valid_hl7_v26() -> None:
    assert_valid_v26(LAB)
    assert_valid_v26(ORDER, tolerated=HL7APY_STALE_0125)


def test_parse_message_reads_the_header() -> None:
    header = parse_message(LAB)
    assert header == Hl7Header(
        message_type=("ORU", "R01"),
        control_id="LAB000123",
        sending_application="LAB",
        sending_facility="HOSP-LAB",
        receiving_application="IGM-GATEWAY",
        receiving_facility="ICU",
        version="2.6",
        processing_id="P",
        structure="ORU_R01",
        timestamp="20260102063512+0100",
    )


def test_parse_message_takes_lf_and_crlf_line_ends_and_mllp_framing() -> None:
    for text in (LAB.replace("\r", "\n"), LAB.replace("\r", "\r\n"), f"\x0b{LAB}\x1c\r"):
        assert parse_message(text).control_id == "LAB000123"


# --- lab results --------------------------------------------------------------------------------


def test_lab_result_converts_and_times_both_values() -> None:
    result = parse_lab_result(LAB)
    assert result.patient_id == "MRN4711"
    assert result.header.control_id == "LAB000123"
    assert result.igm.value == 30.0  # 0.30 g/L x 100, exactly
    assert result.igm.given == "0.30 g/L"
    assert result.igm.measured_at_s == IGM_DRAWN_AT  # its own OBX-14
    assert result.igm.status == "F"
    assert result.hematocrit.value == 0.35  # 35.0 % / 100
    assert result.hematocrit.measured_at_s == LAB_DRAWN_AT  # no OBX-14: OBR-7


@pytest.mark.parametrize(
    ("value", "unit", "mg_dl"),
    [
        ("30", "mg/dL^mg/dL^UCUM", 30.0),
        ("0.3", "g/L^g/L^UCUM", 30.0),
        ("300", "mg/L^mg/L^UCUM", 30.0),
        ("45.5", "MG/DL", 45.5),
        ("1.25", "^^^g/L^gram per litre^UCUM", 125.0),  # the alternate identifier
    ],
)
@pytest.mark.hazard("H-OV-07")
def test_igm_units_are_converted_explicitly(value: str, unit: str, mg_dl: float) -> None:
    segments = obx(LAB_SEGMENTS, 1, f"OBX|1|NM|2472-0^IgM^LN||{value}|{unit}|||||F")
    assert parse_lab_result(message(segments)).igm.value == mg_dl


@pytest.mark.parametrize(
    ("value", "unit", "fraction"),
    [("35", "%", 0.35), ("0.35", "1", 0.35), ("0.41", "L/L", 0.41), ("0.28", "", 0.28)],
)
@pytest.mark.hazard("H-OV-07")
def test_hematocrit_is_a_fraction(value: str, unit: str, fraction: float) -> None:
    segments = obx(LAB_SEGMENTS, 2, f"OBX|2|NM|4544-3^Hct^LN||{value}|{unit}|||||F")
    assert parse_lab_result(message(segments)).hematocrit.value == fraction


@pytest.mark.hazard("H-OV-07")
def test_an_unknown_unit_is_refused_naming_the_field() -> None:
    segments = obx(LAB_SEGMENTS, 1, "OBX|1|NM|2472-0^IgM^LN||0.3|mmol/L^mmol/L^UCUM|||||F")
    error = refused(message(segments))
    assert str(error) == ("OBX-6: unit 'mmol/L' for IgM (LOINC 2472-0): must be mg/dL, g/L or mg/L")
    assert error.field == "OBX-6"
    assert isinstance(error, GatewayError)
    assert isinstance(error, Hl7Error)


@pytest.mark.parametrize("unit", ["", "1", "L/L"])
@pytest.mark.hazard("H-OV-07")
def test_a_hematocrit_above_1_without_the_percent_unit_is_refused(unit: str) -> None:
    segments = obx(LAB_SEGMENTS, 2, f"OBX|2|NM|4544-3^Hct^LN||35|{unit}|||||F")
    error = refused(message(segments))
    assert error.field == "OBX-6"
    assert "at most 1" in error.reason


def test_a_preliminary_result_is_refused() -> None:
    segments = obx(LAB_SEGMENTS, 1, "OBX|1|NM|2472-0^IgM^LN||30|mg/dL|||||P")
    error = refused(message(segments))
    assert error.field == "OBX-11"
    assert "'P' (preliminary)" in str(error)


def test_a_corrected_result_is_used() -> None:
    segments = obx(LAB_SEGMENTS, 1, "OBX|1|NM|2472-0^IgM^LN||31|mg/dL|||||C")
    igm = parse_lab_result(message(segments)).igm
    assert (igm.value, igm.status) == (31.0, "C")


def test_a_missing_time_is_refused() -> None:
    segments = [s.replace("|||20260102060500+0100|", "||||") for s in LAB_SEGMENTS]
    error = refused(message(segments))  # the hematocrit has no OBX-14 and now no OBR-7
    assert error.field == "OBX-14"
    assert "hematocrit" in error.reason


@pytest.mark.parametrize(
    ("time", "why"),
    [
        ("202601020605", "no UTC offset"),
        ("20260102+0100", "to the minute"),
        ("2026010206x5+0100", "not an HL7 time"),
        ("20261302060500+0100", "not a valid date"),
    ],
)
def test_a_time_without_a_zone_or_minute_is_refused(time: str, why: str) -> None:
    segments = obx(LAB_SEGMENTS, 1, f"OBX|1|NM|2472-0^IgM^LN||30|mg/dL|||||F|||{time}")
    error = refused(message(segments))
    assert error.field == "OBX-14"
    assert why in error.reason


def test_times_keep_their_offsets_and_fractions() -> None:
    time = "20260102010500.25-0400"  # 05:05:00.25 UTC
    segments = obx(LAB_SEGMENTS, 1, f"OBX|1|NM|2472-0^IgM^LN||30|mg/dL|||||F|||{time}")
    assert parse_lab_result(message(segments)).igm.measured_at_s == LAB_DRAWN_AT + 0.25


@pytest.mark.parametrize(("drop", "named"), [(1, "no IgM result"), (2, "no hematocrit result")])
def test_a_result_lacking_igm_or_hematocrit_is_refused(drop: int, named: str) -> None:
    error = refused(message(obx(LAB_SEGMENTS, drop, "")))
    assert error.field == "OBX-3"
    assert error.reason.startswith(named)
    assert "needs both" in error.reason


def test_a_censored_or_second_igm_is_refused() -> None:
    censored = obx(LAB_SEGMENTS, 1, "OBX|1|SN|2472-0^IgM^LN||<^25|mg/dL|||||F")
    assert refused(message(censored)).field == "OBX-2"
    twice = [*LAB_SEGMENTS, "OBX|3|NM|2472-0^IgM^LN||40|mg/dL|||||F"]
    assert "more than one IgM" in refused(message(twice)).reason


def test_only_loinc_coded_results_count() -> None:
    local = obx(LAB_SEGMENTS, 1, "OBX|1|NM|2472-0^IgM^99LAB||30|mg/dL|||||F")
    assert refused(message(local)).reason.startswith("no IgM result")


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("", "MSH"),
        ("hello", "MSH"),
        ("PID|||1", "MSH"),
        ("MSH", "MSH-1"),
        ("MSH|^~|x", "MSH-2"),
        ("MSH|^~\\&|A|B|||||ACK|1|P|2.6", "MSH-9"),
        ("MSH|^~\\&|A|B|||||ADT^A01|1|P|2.6\rPID|||1", "MSH-9"),
        ("MSH|^~\\&|A|B|||||ORU^R01||P|2.6", "MSH-10"),
        ("MSH|^~\\&|A|B|||||ORU^R01|1|P|", "MSH-12"),
        ("MSH|^~\\&|A|B|||||ORU^R01|1|P|2.6\rpid|||1", "segment"),
        ("MSH|^~\\&|A|B|||||ORU^R01|1|P|2.6\rMSH|^~\\&", "MSH"),
        ("MSH|^~\\&|A|B|||||ORU^R01|1|P|2.6\rOBX|1", "PID"),
        ("MSH|^~\\&|A|B|||||ORU^R01|1|P|2.6\rPID|||\\Q\\", "PID-3"),
        ("MSH|^~\\&|A|B|||||ORU^R01|1|P|2.6\rPID|||\\F", "PID-3"),
    ],
)
@pytest.mark.hazard("H-IN-01")
def test_garbage_is_refused_naming_the_field(text: str, field: str) -> None:
    assert refused(text).field == field


# --- orders -------------------------------------------------------------------------------------


def test_an_order_is_read() -> None:
    order = parse_order(ORDER)
    assert order.header.message_type == ("RGV", "O15")
    assert order.patient_id == "MRN4711"
    assert order.bed == "ICU/12/A"
    assert (order.order_control, order.placer_order_number) == ("NW", "ORD778")
    assert order.placer_namespace == "CPOE"
    assert order.product_code == "IGM-ENRICHED-IG-50"
    assert order.product_coding_system == "99IGM"
    assert order.arm_code == "IGMFAT-TITER"
    assert (order.weight_kg, order.weight_given) == (82.5, "82.5 kg")
    assert order.randomised_at_s == RANDOMISED_AT
    assert order.ordered_rate_ml_per_h == 17.18
    assert order.baseline_igm is not None
    assert (order.baseline_igm.value, order.baseline_igm.measured_at_s) == (30.0, BASELINE_DRAWN_AT)
    assert order.baseline_hematocrit is not None
    assert order.baseline_hematocrit.value == 0.35


def test_a_flat_order_without_a_rate_or_titer() -> None:
    segments = obx(obx(ORDER_SEGMENTS, 4, ""), 5, "")
    segments = obx(segments, 2, "OBX|2|CWE|IGMFAT-ARM^Trial arm^99IGM||IGMFAT-FLAT||||||F")
    segments = [s.replace("||17.18|265266^MDC_DIM_MILLI_L_PER_HR^MDC", "") for s in segments]
    order = parse_order(message(segments))
    assert order.arm_code == "IGMFAT-FLAT"
    assert (order.baseline_igm, order.baseline_hematocrit) == (None, None)
    assert order.ordered_rate_ml_per_h is None


@pytest.mark.parametrize(
    ("weight", "kg"),
    [
        ("OBX|1|NM|29463-7^Body weight^LN||82500|g^g^UCUM|||||F", 82.5),
        ("OBX|1|NM|68063^MDC_ATTR_PT_WEIGHT^MDC||70|263875^MDC_DIM_KILO_G^MDC|||||R", 70.0),
        ("OBX|1|NM|^^^29463-7^Body weight^LN||70.25|KG|||||F", 70.25),
    ],
)
@pytest.mark.hazard("H-OV-07")
def test_the_weight_in_grams_or_by_its_mdc_code(weight: str, kg: float) -> None:
    assert parse_order(message(obx(ORDER_SEGMENTS, 1, weight))).weight_kg == kg


@pytest.mark.parametrize(
    ("pv1", "bed"),
    [("PV1||I|ICU", "ICU"), ("PV1||I|ICU^^A", "ICU//A"), ("PV1||I", None), ("", None)],
)
def test_the_bed_is_pv1_3_joined(pv1: str, bed: str | None) -> None:
    assert parse_order(message(ORDER_SEGMENTS, PV1_=pv1)).bed == bed


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"OBX|1|": ""}, "OBX-3", "no weight"),
        ({"OBX|2|": ""}, "OBX-3", "no trial arm"),
        ({"OBX|3|": ""}, "OBX-3", "no randomisation time"),
        (
            {"OBX|3|": "OBX|3|DTM|IGMFAT-RAND^Randomisation time^99IGM||202601012300||||||F"},
            "OBX-5",
            "no UTC offset",
        ),
        ({"OBX|1|": "OBX|1|NM|29463-7^Body weight^LN||82.5|[lb_av]|||||F"}, "OBX-6", "kg or g"),
        ({"ORC|": "ORC|NW"}, "ORC-2", "placer order number"),
        ({"RXG|": "RXG|1|||^no code|1||mL"}, "RXG-4", "give code"),
        (
            {"RXG|": "RXG|1|||P^p^99IGM|1||mL||||||||0.5|mL/min^mL/min^UCUM"},
            "RXG-16",
            "must be mL/h",
        ),
        ({"RXG|": "RXG|1|||P^p^99IGM|1||mL||||||||fast|mL/h"}, "RXG-15", "not a number"),
        ({"OBX|4|": "OBX|4|NM|2472-0^IgM^LN||30|mg/dL|||||P|||202601012230+0100"}, "OBX-11", "P"),
        ({"OBX|4|": "OBX|4|NM|2472-0^IgM^LN||30|mg/dL|||||F"}, "OBX-14", "no time"),
        ({"MSH|": ORDER_SEGMENTS[0].replace("RGV^O15", "ORU^R01")}, "MSH-9", "RGV^O15"),
    ],
)
def test_an_order_it_cannot_read_is_refused(change: dict[str, str], field: str, words: str) -> None:
    segments = list(ORDER_SEGMENTS)
    for prefix, new in change.items():
        segments = [new if s.startswith(prefix) else s for s in segments]
    error = refused(message(segments), parse_order)
    assert error.field == field
    assert words in error.reason


# --- ACKs -----------------------------------------------------------------------------------


@pytest.mark.parametrize("code", ["AA", "AE", "AR"])
def test_build_ack_answers_the_message(code: str) -> None:
    header = parse_message(LAB)
    text = "" if code == "AA" else "OBX-6: unit 'mmol/L' for IgM (LOINC 2472-0): must be mg/dL"
    ack = build_ack(header, code, text, control_id="GW-1", now_s=NOW, **GW)  # type: ignore[arg-type]
    assert_valid_v26(ack)
    parsed = hl7.parse(ack)
    assert str(parsed.segment("MSH")(9)) == "ACK^R01^ACK"
    assert str(parsed.segment("MSH")(5)) == "LAB"  # back to the sender
    assert str(parsed.segment("MSH")(7)) == "20260102064000+0000"
    assert str(parsed.segment("MSA")(1)) == code
    assert str(parsed.segment("MSA")(2)) == "LAB000123"
    assert parse_ack(ack) == AckResult(code=code, control_id="LAB000123", text=text)
    assert (code == "AA") == ("ERR" not in ack)


def test_ack_text_with_delimiters_is_escaped() -> None:
    text = "rejected: A|B^C~D\\E&F"
    ack = build_ack(parse_message(LAB), "AR", text, control_id="GW-2", now_s=NOW, **GW)
    assert_valid_v26(ack)
    assert hl7.parse(ack)["MSA.F3"] == text
    assert parse_ack(ack).text == text
    assert ack.count("\r") == 3  # MSH, MSA, ERR: the text added no segment


def test_a_literal_pair_of_quotes_is_not_the_hl7_null() -> None:
    ack = build_ack(parse_message(LAB), "AE", '""', control_id="GW-2", now_s=NOW, **GW)
    assert_valid_v26(ack)
    assert parse_ack(ack).text == '""'
    # As the null, MSA-3 and ERR-8 read empty: the text falls back to ERR-3's.
    nulled = ack.replace("\\X2222\\", '""')
    assert parse_ack(nulled).text == "Application internal error"


@pytest.mark.parametrize(
    ("answer", "code", "accepted", "text"),
    [
        ("MSA|CA|GW-7", "CA", True, ""),
        ("MSA|AA|GW-7|ok", "AA", True, "ok"),
        ("MSA|CE|GW-7\rERR|||207^Application internal error^HL70357|E||||disk full", "CE", False,
         "disk full"),
        ("MSA|AR|GW-7\rERR|||200^Unsupported message type^HL70357|E", "AR", False,
         "Unsupported message type"),
    ],
)  # fmt: skip
def test_parse_ack_reads_the_answer(answer: str, code: str, accepted: bool, text: str) -> None:
    msh = "MSH|^~\\&|EHR|HOSP|IGM-GATEWAY|ICU|20260102064001+0000||ACK^R01^ACK|E-1|P|2.6"
    ack = parse_ack(f"{msh}\r{answer}\r")
    assert (ack.code, ack.control_id, ack.accepted, ack.text) == (code, "GW-7", accepted, text)


@pytest.mark.parametrize(
    ("answer", "field"), [("MSA|ZZ|GW-7", "MSA-1"), ("MSA|AA", "MSA-2"), ("NTE|1", "MSA")]
)
def test_parse_ack_refuses_what_it_cannot_read(answer: str, field: str) -> None:
    text = f"MSH|^~\\&|EHR|HOSP|||20260102064001+0000||ACK^R01^ACK|E-1|P|2.6\r{answer}\r"
    assert refused(text, parse_ack).field == field


# --- the answer to an order -----------------------------------------------------------------


def test_an_accepted_order_is_answered_with_the_plan() -> None:
    order = parse_order(ORDER)
    answer = build_order_response(
        order.header,
        order,
        accepted=True,
        text="accepted",
        plan=PLAN,
        control_id="GW-3",
        now_s=NOW,
        **GW,
    )
    assert_valid_v26(answer)
    parsed = hl7.parse(answer)
    assert str(parsed.segment("MSH")(9)) == "RRG^O16^RRG_O16"
    assert str(parsed.segment("MSA")(1)) == "AA"
    assert str(parsed.segment("MSA")(2)) == "CPOE0042"
    assert str(parsed.segment("ORC")(1)) == "OK"
    assert str(parsed.segment("ORC")(2)) == "ORD778^CPOE"
    rxg = parsed.segment("RXG")
    assert str(rxg(4)) == "IGM-ENRICHED-IG-50^IgM-enriched immunoglobulin 50 mg/mL^99IGM"
    assert (str(rxg(5)), str(rxg(15))) == ("412.5", "17.1875")  # exact: never rounded up
    assert str(rxg(16)).startswith("265266^MDC_DIM_MILLI_L_PER_HR^MDC")
    note = parsed["NTE.F3"]
    assert note == (
        "day 1: daily dose 250.0 mg/kg = 412.5 mL at 17.1875 mL/h; rate ceiling 33.0 mL/h"
    )
    assert "ERR" not in answer


def test_a_refused_order_is_answered_ar_without_a_plan() -> None:
    order = parse_order(ORDER)
    why = "OBX-6: weight 300 kg | out of range"
    answer = build_order_response(
        order.header, order, accepted=False, text=why, plan=None, control_id="GW-4", now_s=NOW, **GW
    )
    assert_valid_v26(answer)
    parsed = hl7.parse(answer)
    assert str(parsed.segment("MSA")(1)) == "AR"
    assert parsed["MSA.F3"] == why
    assert parsed["ERR.F8"] == why
    assert str(parsed.segment("ORC")(1)) == "UA"
    assert "RXG" not in answer


def test_an_order_answer_needs_a_plan_exactly_when_accepted() -> None:
    order = parse_order(ORDER)
    common = {"control_id": "GW-5", "now_s": NOW, **GW}
    with pytest.raises(Hl7Error, match="plan"):
        build_order_response(order.header, order, accepted=True, text="", plan=None, **common)  # type: ignore[arg-type]
    with pytest.raises(Hl7Error, match="plan"):
        build_order_response(order.header, order, accepted=False, text="x", plan=PLAN, **common)  # type: ignore[arg-type]


# --- pump data (PCD-01) -----------------------------------------------------------------------

OBSERVATION = PumpObservation(
    channel_id="ch1",
    patient_id="MRN4711",
    bed="ICU/12/A",
    pump_state="infusing",
    channel_state="infusing",
    commanded_rate_ml_per_h=17.18,
    readback_rate_ml_per_h=17.2,
    delivered_today_ml=100.25,
    prescribed_today_ml=412.5,
    ceiling_ml_per_h=33.0,
    alarms=("occlusion", "low_battery"),
    observed_at_s=NOW - 1.5,
)


def obx_rows(text: str) -> dict[str, tuple[str, str, str, str]]:
    """OBX-4 -> (OBX-3 CWE-1, OBX-2, OBX-5, OBX-6 CWE-1), read with python-hl7."""
    rows = {}
    for segment in hl7.parse(text).segments("OBX"):
        rows[str(segment(4))] = (
            segment.extract_field(field_num=3, component_num=1),
            str(segment(2)),
            segment.extract_field(field_num=5),
            segment.extract_field(field_num=6, component_num=1),
        )
    return rows


def test_an_observation_round_trips_through_python_hl7() -> None:
    text = build_observation(OBSERVATION, control_id="GW-6", now_s=NOW, **GW)
    assert_valid_v26(text)
    parsed = hl7.parse(text)
    msh = parsed.segment("MSH")
    assert str(msh(9)) == "ORU^R01^ORU_R01"
    assert (str(msh(15)), str(msh(16))) == ("AL", "NE")
    assert str(msh(21)) == "IHE_PCD_001^IHE PCD^1.3.6.1.4.1.19376.1.6.1.1.1^ISO"
    assert parsed["PID.F3"] == "MRN4711"
    assert str(parsed.segment("PV1")(3)) == "ICU^12^A"
    assert str(parsed.segment("OBR")(7)) == "20260102063958.500+0000"
    assert obx_rows(text) == {
        "1.0.0.0": ("69985", "", "", ""),
        "1.1.0.0": ("69986", "", "", ""),
        "1.1.1.0": ("126978", "", "", ""),
        "1.1.1.1": ("IGMFAT-PUMP-STATE", "ST", "infusing", ""),
        "1.1.1.2": ("IGMFAT-CHAN-STATE", "ST", "infusing", ""),
        "1.1.1.3": ("IGMFAT-RATE-CMD", "NM", "17.18", "265266"),
        "1.1.1.4": ("157784", "NM", "17.2", "265266"),
        "1.1.1.5": ("157864", "NM", "100.25", "263762"),
        "1.1.1.6": ("157884", "NM", "412.5", "263762"),
        "1.1.1.7": ("157872", "NM", "312.25", "263762"),
        "1.1.1.8": ("IGMFAT-RATE-CEIL", "NM", "33.0", "265266"),
        "1.1.1.9": ("IGMFAT-ALARM", "ST", "occlusion", ""),
        "1.1.1.10": ("IGMFAT-ALARM", "ST", "low_battery", ""),
    }
    containment = [s for s in parsed.segments("OBX") if str(s(11)) == "X"]
    assert len(containment) == 3
    assert str(parsed.segments("OBX")[0](18)) == "ch1^IGM-GATEWAY"


def test_an_unbound_channel_sends_no_patient_and_its_bed_in_an_obx() -> None:
    idle = PumpObservation(
        "ch2", None, "ICU/14", "stopped", "awaiting_order", None, None, 0.0, None, None, (), NOW
    )
    text = build_observation(idle, control_id="GW-7", now_s=NOW, **GW)
    assert_valid_v26(text)
    assert "PID" not in text
    assert "PV1" not in text
    rows = obx_rows(text)
    assert rows["1.0.0.1"] == ("IGMFAT-BED", "ST", "ICU/14", "")
    assert rows["1.1.1.5"] == ("157864", "NM", "0.0", "263762")
    assert {"1.1.1.3", "1.1.1.4", "1.1.1.6", "1.1.1.7", "1.1.1.8"}.isdisjoint(rows)


def test_values_with_delimiters_survive_a_round_trip() -> None:
    nasty = 'A|B^C~D\\E&F\r\n"'
    obs = PumpObservation(
        "ch|1", nasty, "ICU^1/2&3", "stopped", "alarm", None, None, 0.0, None, None, (nasty,), NOW
    )
    text = build_observation(obs, control_id="GW-8", now_s=NOW, **GW)
    assert_valid_v26(text)
    parsed = hl7.parse(text)
    assert parsed["PID.F3"] == nasty
    assert [parsed.extract_field("PV1", 1, 3, 1, c) for c in (1, 2, 3)] == ["ICU^1", "2&3", ""]
    assert obx_rows(text)["1.1.1.9"][2] == nasty
    assert parsed.segments("OBX")[0].extract_field(field_num=18) == "ch|1"
    assert text.count("\r") == 1 + 2 + 1 + 7  # MSH, PID, PV1, OBR and seven OBX: nothing split


@given(st.text(min_size=1, max_size=40).filter(str.strip))
@settings(max_examples=60, deadline=None)
def test_any_patient_id_and_text_survive_a_round_trip(value: str) -> None:
    obs = PumpObservation(
        "ch1", value, None, "stopped", "alarm", None, None, 0.0, None, None, (value,), NOW
    )
    parsed = hl7.parse(build_observation(obs, control_id="GW-9", now_s=NOW, **GW))
    assert parsed["PID.F3"] == value
    ack = build_ack(parse_message(LAB), "AE", value, control_id="GW-10", now_s=NOW, **GW)
    assert parse_ack(ack).text == value


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"delivered_today_ml": -1.0}, "delivered_today_ml"),
        ({"commanded_rate_ml_per_h": float("nan")}, "commanded_rate_ml_per_h"),
        ({"channel_id": ""}, "channel_id"),
        ({"alarms": ("",)}, "alarms"),
        ({"observed_at_s": float("inf")}, "observed_at_s"),
    ],
)
def test_a_bad_observation_is_refused_before_anything_is_written(
    change: dict[str, object], words: str
) -> None:
    values = {**OBSERVATION.__dict__, **change}
    with pytest.raises(Hl7Error, match=words):
        build_observation(PumpObservation(**values), control_id="GW-11", now_s=NOW, **GW)  # type: ignore[arg-type]
    with pytest.raises(Hl7Error, match="control_id"):
        build_observation(OBSERVATION, control_id="x" * 21, now_s=NOW, **GW)


# --- nothing but Hl7MessageError, whatever comes in -------------------------------------------

PARSERS = (parse_message, parse_lab_result, parse_order, parse_ack)


def only_refused(text: str) -> None:
    for parse in PARSERS:
        with contextlib.suppress(Hl7MessageError):
            parse(text)


@given(st.text(max_size=300))
@settings(max_examples=150, deadline=None)
@pytest.mark.hazard("H-IN-01")
def test_arbitrary_text_raises_only_hl7_message_error(text: str) -> None:
    only_refused(text)
    only_refused("MSH|^~\\&|" + text)


@given(
    st.sampled_from([LAB, ORDER]),
    st.lists(
        st.tuples(st.integers(0, 2000), st.integers(0, 3), st.sampled_from('|^~\\&\r\n+-.0A "#')),
        min_size=1,
        max_size=4,
    ),
)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_damaged_messages_raise_only_hl7_message_error(
    text: str, edits: list[tuple[int, int, str]]
) -> None:
    for position, length, char in edits:
        at = position % (len(text) + 1)
        text = text[:at] + char + text[at + length :]
    only_refused(text)
    try:
        header = parse_message(text)
    except Hl7MessageError:
        return
    # Whatever header was read can be answered, and the answer reads back.
    ack = build_ack(header, "AR", "refused", control_id="GW-12", now_s=NOW, **GW)
    assert parse_ack(ack).control_id == header.control_id.strip()
