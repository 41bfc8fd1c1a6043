"""HL7 v2 messages of the hospital interface: lab results and orders in, pump data out.

Pure functions, no I/O: text in, values out, and values in, text out.  The MLLP transport, the
outbox and what the gateway *does* with an order or a titer live elsewhere; this module only
reads and writes the messages, and refuses what it cannot read with :class:`Hl7MessageError`,
whose message names the segment-field (``OBX-6: unit 'mmol/L' for IgM ...``).

Messages
========

========  ==========================================  =============================
direction message                                     function
========  ==========================================  =============================
in        any: the MSH header                         :func:`parse_message`
in        ORU^R01 lab result (IgM, hematocrit)        :func:`parse_lab_result`
in        RGV^O15 infusion order (IHE PCD-03)         :func:`parse_order`
in        ACK, the receiver's answer to what we sent  :func:`parse_ack`
out       ACK to a message we received                :func:`build_ack`
out       RRG^O16 answer to an order, with the plan   :func:`build_order_response`
out       ORU^R01 one pump channel (IHE PCD-01)       :func:`build_observation`
========  ==========================================  =============================

Reading uses python-hl7 (``hl7.parse``) for the message and segment structure, after checking
the MSH header and every segment id ourselves (so that python-hl7 never sees input it would
trip on).  Field values are split and *unescaped here*, strictly: ``\\F\\ \\S\\ \\R\\ \\E\\
\\T\\``, ``\\Xhh..\\`` (UTF-8 bytes) and the highlight marks ``\\H\\ \\N\\`` (dropped); any
other escape sequence is refused rather than guessed; ``\\.br\\`` is a line feed and the HL7
null ``""`` reads as empty.  Segments may end in CR (the standard), LF or CR LF; MLLP's framing
bytes around a message are ignored; a message of more than 1,000,000 characters, a batch or a
second MSH is refused.  Times (DTM) are parsed here too, not with ``hl7.parse_datetime``, which
accepts trailing garbage and reads the offset ``-00MM`` as ``+00MM``.

Writing is careful string assembly: every value put in a field is escaped (``| ^ ~ \\ &`` as
``\\F\\ \\S\\ \\R\\ \\E\\ \\T\\``, control characters as ``\\Xhh\\``, a literal ``""`` as
``\\X2222\\`` so that it is not the HL7 null), segments end in CR, the
delimiters are always ``|^~\\&``, the version is always 2.6 and times are UTC with ``+0000``.
Numbers are written exactly (shortest repr, never rounded).

Units and conversions (explicit; anything else is refused)
==========================================================

* IgM (LOINC 2472-0): ``mg/dL`` as is; ``g/L`` x 100; ``mg/L`` / 10.
* Hematocrit (LOINC 4544-3), returned as a fraction: ``%`` / 100; ``1``, ``L/L`` or no unit
  only for a value <= 1.
* Weight (LOINC 29463-7 or MDC_ATTR_PT_WEIGHT): ``kg`` (UCUM, or MDC 263875) as is; ``g``
  (UCUM) / 1000.
* Ordered rate (RXG-15/16): ``mL/h`` (UCUM, or MDC 265266) only.

Unit ids are compared case-insensitively (``MG/DL`` is mg/dL); MDC units by their numeric code.
Ranges (a titer of 0-1000 mg/dL, a weight, a hematocrit of 0.10-0.70) are not checked here but
by :mod:`gateway.intake`, the one place that owns them.

Lab results (ORU^R01, and the baseline OBX of an order)
=======================================================

* Only OBX-11 result status ``F`` (final) or ``C`` (corrected) is used; ``P`` (preliminary)
  and every other status of an IgM or hematocrit result is refused.
* OBX-2 must be ``NM``: a censored value (``<25``) cannot make a dose.
* Each value says when the blood was drawn: OBX-14, else OBR-7 of the OBR above it (an order
  has no OBR: OBX-14).  A time must give at least the minute and its UTC offset (``+HHMM``):
  a time without one is refused, never read in an assumed zone.
* A lab result must carry both IgM and hematocrit (the titer needs both); exactly one of each.
* Codes match on OBX-3 CWE-1 with CWE-3 = ``LN`` (or the alternate CWE-4 with CWE-6 = ``LN``).

Field choices
=============

* Patient: PID-3, first repetition, CX-1.  Exactly one PID.
* Bed: PV1-3 (PL): point of care, room and bed joined with ``/`` after dropping empty trailing
  components (``ICU^12^A`` is ``ICU/12/A``, ``ICU`` is ``ICU``, ``ICU^^A`` is ``ICU//A``).
  Written back the same way (split at the first two ``/``).
* Order (RGV^O15): ORC-1 order control (returned, not judged), ORC-2 placer order number (EI-1,
  with EI-2 its namespace), RXG-4 give code (CWE-1: the product code, CWE-2 its name), RXG-15 /
  RXG-16 an ordered rate in mL/h (optional: the gateway compares it, never clamps it).
* The trial arm: an OBX ``IGMFAT-ARM^Trial arm^99IGM``, OBX-2 ``CWE``, OBX-5 CWE-1 the arm
  code (e.g. ``IGMFAT-TITER``), which the configuration maps to an arm (``arm_codes``).
* The randomisation time: an OBX ``IGMFAT-RAND^Randomisation time^99IGM``, OBX-2 ``DTM``.
* Weight: an OBX LOINC ``29463-7`` or MDC ``68063^MDC_ATTR_PT_WEIGHT`` (IHE PCD-03's code).
* Baseline IgM / hematocrit of the titer arm: OBX 2472-0 / 4544-3 as in a lab result (their
  presence per arm is checked by intake, which knows the arm).  IHE PCD-03 allows at most three
  OBX per give; this order carries up to six: an extension, documented here.
* Local codes are coding system ``99IGM``; OBX-11 of weight, arm and randomisation is not judged.

An ACK answers in original mode: MSA-1 ``AA``, ``AE`` or ``AR``, MSA-2 the control id answered,
MSA-3 the text; AE and AR add an ERR (ERR-3 ``207^Application internal error^HL70357``, ERR-4
``E``, ERR-8 the text).

The answer to an order (RRG^O16): MSA-1 ``AA`` (accepted) or ``AR`` (refused, with an ERR);
PID; ORC-1 ``OK`` or ``UA`` with the placer order number; when accepted, RXG with the day's
volume (RXG-5, mL), rate (RXG-15/16, mL/h) and the product (RXG-4), TQ1 a 24 h service
duration, RXR ``IV``, and an NTE (NTE-4 ``IGMFAT-PLAN^IgM-FAT plan^99IGM``) that says the day,
the dose in mg/kg, the volume, the rate and the rate ceiling in words and numbers.

Pump data (PCD-01 ORU^R01), one channel per message
===================================================

MSH-15/16 ``AL``/``NE`` (the receiver answers with a commit ACK, ``CA``), MSH-21 the IHE PCD-01
profile ``IHE_PCD_001``.  PID and PV1 when the channel is bound to a patient; HL7 v2.6 needs
PID-3 whenever a PID is sent, so an unbound channel sends neither, and its bed (if known) goes
in an MDS-level OBX ``IGMFAT-BED`` (never an invented patient id).  OBR-3 the message's control
id, OBR-7 the observation time; OBX-4 the IHE PCD containment (MDS 1.0.0.0, VMD 1.1.0.0,
channel 1.1.1.0, metrics 1.1.1.n with fixed n):

=======  ==================================================  ========  =======================
OBX-4    OBX-3                                               OBX-2     OBX-6
=======  ==================================================  ========  =======================
1.0.0.0  69985^MDC_DEV_PUMP_INFUS_MDS^MDC (OBX-18 channel)   (none)    (none), OBX-11 X
1.0.0.1  IGMFAT-BED^Bed^99IGM (unbound channel only)         ST
1.1.0.0  69986^MDC_DEV_PUMP_INFUS_VMD^MDC                    (none)    (none), OBX-11 X
1.1.1.0  126978^MDC_DEV_PUMP_INFUS_CHAN_DELIVERY^MDC         (none)    (none), OBX-11 X
1.1.1.1  IGMFAT-PUMP-STATE^Pump state^99IGM                  ST
1.1.1.2  IGMFAT-CHAN-STATE^Channel state^99IGM               ST
1.1.1.3  IGMFAT-RATE-CMD^Commanded rate^99IGM                NM        mL/h
1.1.1.4  157784^MDC_FLOW_FLUID_PUMP^MDC (pump's read-back)   NM        mL/h
1.1.1.5  157864^MDC_VOL_FLUID_DELIV^MDC (delivered today)    NM        mL
1.1.1.6  157884^MDC_VOL_FLUID_TBI^MDC (prescribed today)     NM        mL
1.1.1.7  157872^MDC_VOL_FLUID_TBI_REMAIN^MDC                 NM        mL
1.1.1.8  IGMFAT-RATE-CEIL^Rate ceiling^99IGM                 NM        mL/h
1.1.1.9+ IGMFAT-ALARM^Active alarm^99IGM, one per alarm      ST
=======  ==================================================  ========  =======================

A metric with no value (no order yet, no read-back) is left out; its number stays reserved.
Results are OBX-11 ``R`` (device data, not verified), OBX-14 the observation time.  Units are
written as ``265266^MDC_DIM_MILLI_L_PER_HR^MDC^mL/h^mL/h^UCUM`` and
``263762^MDC_DIM_MILLI_L^MDC^mL^mL^UCUM``.  Alarms are plain OBX rows with the gateway's alarm
code as text, not IHE ACM (PCD-04) alerts.

Codes
=====

==================================  ========  ===========================================
code                                number    source / status
==================================  ========  ===========================================
MDC_DEV_PUMP_INFUS_MDS              69985     [a] [b]
MDC_DEV_PUMP_INFUS_VMD              69986     [a] [b]
MDC_DEV_PUMP_INFUS_CHAN_DELIVERY    126978    [a] [b]; the brief's MDC_DEV_PUMP_INFUS_CHAN
                                              could not be confirmed and is not used
MDC_FLOW_FLUID_PUMP                 157784    [a] [b]
MDC_VOL_FLUID_DELIV                 157864    [a] [b]
MDC_VOL_FLUID_TBI                   157884    [a]
MDC_VOL_FLUID_TBI_REMAIN            157872    [a] [b]
MDC_ATTR_PT_WEIGHT                  68063     [a]; [c] term 2527 in partition 1
MDC_DIM_MILLI_L                     263762    [a] [b]; [c] 0x0652 in partition 4
MDC_DIM_MILLI_L_PER_HR              265266    [a] [b]; [c] 0x0C32 in partition 4
MDC_DIM_KILO_G                      263875    [a]; [c] 0x06C3 in partition 4
MDC_PUMP_STAT                       184508    [a] [b]; not used: its pump-status-* tokens
                                              were confirmed for infusing and paused only,
                                              so the pump state is the local IGMFAT-PUMP-STATE
MDC_PUMP_MODE                       184504    [a] [b]; not used (the gateway has one mode)
LOINC 2472-0                        IgM [Mass/volume] in Serum or Plasma
LOINC 4544-3                        Hematocrit [Volume Fraction] of Blood
LOINC 29463-7                       Body weight
99IGM IGMFAT-ARM, IGMFAT-RAND,      local codes of this gateway (no standard code
IGMFAT-PUMP-STATE, IGMFAT-CHAN-     exists or could be confirmed): arm, randomisation
STATE, IGMFAT-RATE-CMD, IGMFAT-     time, states, commanded rate, ceiling, alarms,
RATE-CEIL, IGMFAT-ALARM,            the bed of an unbound channel, the plan note
IGMFAT-BED, IGMFAT-PLAN
==================================  ========  ===========================================

[a] a device vendor's published HL7 infusion-pump specification (2013, built against the
Rosetta Terminology Mapping of 2011), as tabulated in public code; [b] an IHE PCD-01 infusion
pump sample (a Dopamine infusion, 2010) used as test data in public code; [c] the IEEE
11073-10101 code arithmetic, partition x 65536 + term code, checked against the 16-bit terms.
The Rosetta (RTM) tables are the authority: check every number against them before clinical
use.  The IHE PCD-01 profile id is ``IHE_PCD_001^IHE PCD^1.3.6.1.4.1.19376.1.6.1.1.1^ISO``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Final, Literal

import hl7

from gateway.errors import GatewayError

# --- errors ------------------------------------------------------------------------------------


class Hl7Error(GatewayError):
    """Root of the HL7 codec's errors; raised as such for a value a builder cannot write."""


class Hl7MessageError(Hl7Error, ValueError):
    """A message the gateway rejects: ``field`` names the segment-field (``OBX-6``)."""

    def __init__(self, reason: str, field: str) -> None:
        self.reason = reason
        self.field = field
        super().__init__(f"{field}: {reason}")


# --- constants ---------------------------------------------------------------------------------

#: The version of every message the gateway writes.
VERSION: Final[str] = "2.6"
#: A message longer than this is refused before it is parsed.
MAX_MESSAGE_CHARS: Final[int] = 1_000_000
#: MSH-10 of what the gateway writes: 1-20 characters (the length most engines expect).
CONTROL_ID_MAX_CHARS: Final[int] = 20

LOINC: Final[str] = "LN"
LOCAL: Final[str] = "99IGM"
MDC: Final[str] = "MDC"

LOINC_IGM: Final[str] = "2472-0"
LOINC_HEMATOCRIT: Final[str] = "4544-3"
LOINC_BODY_WEIGHT: Final[str] = "29463-7"
MDC_ATTR_PT_WEIGHT: Final[str] = "68063"
CODE_ARM: Final[str] = "IGMFAT-ARM"
CODE_RANDOMISED: Final[str] = "IGMFAT-RAND"

#: IHE PCD-01's message profile (MSH-21).
PCD01_PROFILE: Final[str] = "IHE_PCD_001^IHE PCD^1.3.6.1.4.1.19376.1.6.1.1.1^ISO"

_ML_PER_H: Final[str] = "265266^MDC_DIM_MILLI_L_PER_HR^MDC^mL/h^mL/h^UCUM"
_ML: Final[str] = "263762^MDC_DIM_MILLI_L^MDC^mL^mL^UCUM"

_ACK_CODES: Final[frozenset[str]] = frozenset({"AA", "AE", "AR", "CA", "CE", "CR"})
_SEGMENT_ID = re.compile(r"[A-Z][A-Z0-9]{2}")
_CODE = re.compile(r"[A-Z0-9]{1,3}")
_VERSION = re.compile(r"2\.\d{1,2}(?:\.\d{1,2})?")
_NM = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")
_DTM = re.compile(r"(\d{4,14})(?:\.(\d{1,4}))?(?:([+-])(\d{2})(\d{2}))?")
_HEX = re.compile(r"X((?:[0-9A-Fa-f]{2})+)")
#: Lines end in CR (the standard), LF or CR LF.
_LINE_END = re.compile(r"\r\n|\r|\n")
#: Stripped around a message: blanks, line ends and MLLP's start/end bytes.
_MESSAGE_PAD: Final[str] = " \t\r\n\x0b\x1c"


# --- values ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hl7Header:
    """A message's MSH segment: who sent what, under which control id."""

    #: MSH-9 message code and trigger event, e.g. ``("ORU", "R01")``.
    message_type: tuple[str, str]
    #: MSH-10, echoed in the answer's MSA-2.
    control_id: str
    #: MSH-3 / MSH-4 (HD-1, the namespace id).
    sending_application: str
    sending_facility: str
    #: MSH-5 / MSH-6 (HD-1).
    receiving_application: str = ""
    receiving_facility: str = ""
    #: MSH-12 (VID-1), e.g. ``2.6``.
    version: str = VERSION
    #: MSH-11 (PT-1): ``P`` production, ``T`` training, ``D`` debugging.
    processing_id: str = "P"
    #: MSH-9 MSG-3, the message structure (``ORU_R01``); may be empty.
    structure: str = ""
    #: MSH-7 as sent (not parsed: senders often give no offset there).
    timestamp: str = ""


@dataclass(frozen=True)
class LabValue:
    """One result the gateway uses, converted, with when the blood was drawn."""

    #: IgM in mg/dL; hematocrit as a fraction (0.35); weight in kg.
    value: float
    #: Unix seconds of OBX-14 (else OBR-7).
    measured_at_s: float
    #: OBX-11: ``F`` or ``C``.
    status: str
    #: The value and unit as sent (``0.3 g/L``), for the audit trail.
    given: str


@dataclass(frozen=True)
class LabResult:
    """An ORU^R01 from the lab: one patient's IgM and hematocrit."""

    header: Hl7Header
    patient_id: str
    igm: LabValue
    hematocrit: LabValue


@dataclass(frozen=True)
class PumpOrder:
    """An IHE PCD-03 RGV^O15 infusion order, as read (judged by intake, not here)."""

    header: Hl7Header
    patient_id: str
    #: PV1-3 as ``POC/ROOM/BED`` (see the module's field choices); None without a PV1-3.
    bed: str | None
    #: ORC-1, e.g. ``NW`` (new) or ``XO`` (change).
    order_control: str
    #: ORC-2 EI-1, and EI-2 its namespace.
    placer_order_number: str
    placer_namespace: str
    #: RXG-4 CWE-1 (the product code), CWE-2 its name and CWE-3 its coding system.
    product_code: str
    product_name: str
    product_coding_system: str
    #: OBX IGMFAT-ARM: the arm code, mapped to an arm by the configuration.
    arm_code: str
    weight_kg: float
    #: The weight as sent (``82500 g``).
    weight_given: str
    #: OBX IGMFAT-RAND, Unix seconds.
    randomised_at_s: float
    #: The baseline titer's values (titer arm), if present.
    baseline_igm: LabValue | None = None
    baseline_hematocrit: LabValue | None = None
    #: RXG-15 in mL/h, if the order gives a rate: compared by the gateway, never clamped.
    ordered_rate_ml_per_h: float | None = None


@dataclass(frozen=True)
class OrderPlan:
    """What the gateway will give on a course day, for the answer to an order."""

    day: int
    dose_mg_per_kg: float
    volume_ml: float
    rate_ml_per_h: float
    ceiling_ml_per_h: float


@dataclass(frozen=True)
class PumpObservation:
    """One pump channel's state, for a PCD-01 ORU^R01."""

    channel_id: str
    patient_id: str | None
    bed: str | None
    pump_state: str
    channel_state: str
    commanded_rate_ml_per_h: float | None
    readback_rate_ml_per_h: float | None
    delivered_today_ml: float
    prescribed_today_ml: float | None
    ceiling_ml_per_h: float | None
    alarms: tuple[str, ...]
    observed_at_s: float


@dataclass(frozen=True)
class AckResult:
    """The receiver's answer to a message the gateway sent."""

    #: MSA-1: AA/AE/AR (original mode) or CA/CE/CR (enhanced mode, commit).
    code: str
    #: MSA-2: the control id of the message answered.
    control_id: str
    #: MSA-3, else ERR-8, ERR-7 or ERR-3 CWE-2; may be empty.
    text: str

    @property
    def accepted(self) -> bool:
        return self.code in ("AA", "CA")


# --- reading: structure ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Delims:
    field: str
    component: str
    repetition: str
    escape: str
    subcomponent: str


@dataclass(frozen=True)
class _Seg:
    """One segment: its id and raw (still escaped) fields; ``fields[n]`` is field n."""

    id: str
    fields: tuple[str, ...]
    delims: _Delims

    def raw(self, n: int) -> str:
        return self.fields[n] if 0 < n < len(self.fields) else ""

    def repetitions(self, n: int) -> int:
        raw = self.raw(n)
        return len(raw.split(self.delims.repetition)) if raw else 0

    def value(self, n: int, component: int = 1, *, repetition: int = 1, sub: int = 1) -> str:
        """Field ``n``'s value at the given position, unescaped; "" if absent or null."""
        d = self.delims
        repetitions = self.raw(n).split(d.repetition)
        if repetition > len(repetitions):
            return ""
        components = repetitions[repetition - 1].split(d.component)
        if component > len(components):
            return ""
        subcomponents = components[component - 1].split(d.subcomponent)
        if sub > len(subcomponents):
            return ""
        value = subcomponents[sub - 1]
        if value == '""':  # HL7 null: present and empty
            return ""
        return _unescape(value, d, f"{self.id}-{n}")


def _unescape(text: str, d: _Delims, field: str) -> str:
    if d.escape not in text:
        return text
    out: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c != d.escape:
            out.append(c)
            i += 1
            continue
        end = text.find(d.escape, i + 1)
        if end == -1:
            raise Hl7MessageError("an escape sequence is not closed", field)
        sequence = text[i + 1 : end]
        i = end + 1
        simple = {
            "F": d.field,
            "S": d.component,
            "R": d.repetition,
            "E": d.escape,
            "T": d.subcomponent,
            "H": "",
            "N": "",
            ".br": "\n",
        }
        if sequence in simple:
            out.append(simple[sequence])
            continue
        hexed = _HEX.fullmatch(sequence)
        if hexed is None:
            raise Hl7MessageError(f"unknown escape sequence {sequence[:20]!r}", field)
        try:
            out.append(bytes.fromhex(hexed.group(1)).decode("utf-8"))
        except UnicodeDecodeError:
            raise Hl7MessageError(
                f"escape sequence {sequence[:20]!r} is not UTF-8", field
            ) from None
    return "".join(out)


def _lines(text: object) -> list[str]:
    if not isinstance(text, str):
        raise Hl7MessageError(f"a message is text, not {type(text).__name__}", "MSH")
    if len(text) > MAX_MESSAGE_CHARS:
        raise Hl7MessageError(f"longer than {MAX_MESSAGE_CHARS} characters", "MSH")
    return [line for line in _LINE_END.split(text.strip(_MESSAGE_PAD)) if line.strip()]


def _delims(first: str) -> _Delims:
    if not first.startswith("MSH"):
        raise Hl7MessageError(
            f"not an HL7 v2 message: it must begin with an MSH segment (got {first[:10]!r})",
            "MSH",
        )
    fs = first[3:4]
    if not fs or fs.isalnum() or fs.isspace() or not fs.isprintable():
        raise Hl7MessageError(f"field separator {fs!r}: must be a printable symbol", "MSH-1")
    end = first.find(fs, 4)
    encoding = first[4:] if end == -1 else first[4:end]
    symbols = encoding + fs
    if (
        len(encoding) not in (4, 5)
        or len(set(symbols)) != len(symbols)
        or any(c.isalnum() or c.isspace() or not c.isprintable() for c in encoding)
    ):
        raise Hl7MessageError(
            f"encoding characters {encoding[:8]!r}: must be 4 distinct symbols such as ^~\\&",
            "MSH-2",
        )
    return _Delims(fs, encoding[0], encoding[1], encoding[2], encoding[3])


def _segments(text: object) -> list[_Seg]:
    """The message's segments, after checking its header and every segment id."""
    lines = _lines(text)
    if not lines:
        raise Hl7MessageError("empty: not an HL7 v2 message", "MSH")
    d = _delims(lines[0])
    for number, line in enumerate(lines[1:], start=2):
        sid = line[:3]
        if _SEGMENT_ID.fullmatch(sid) is None or line[3:4] not in ("", d.field):
            raise Hl7MessageError(
                f"segment {number} ({line[:12]!r}): must begin with a segment id such as OBX",
                "segment",
            )
        if sid in ("MSH", "BHS", "FHS", "BTS", "FTS"):
            raise Hl7MessageError(f"segment {number}: one message at a time, no {sid}", sid)
    try:
        tree = hl7.parse("\r".join(lines))
        raw = [tuple(str(field) for field in segment) for segment in tree]
    except Exception as error:  # python-hl7's own errors, on input checked above
        raise Hl7MessageError(f"cannot be parsed ({type(error).__name__})", "MSH") from None
    if not raw or raw[0][:1] != ("MSH",):
        raise Hl7MessageError("cannot be parsed: no MSH segment", "MSH")
    return [_Seg(fields[0], fields, d) for fields in raw]


def _header(segments: list[_Seg]) -> Hl7Header:
    msh = segments[0]
    code, trigger = msh.value(9, 1).strip(), msh.value(9, 2).strip()
    if _CODE.fullmatch(code) is None or _CODE.fullmatch(trigger) is None:
        shown = f"{code}^{trigger}" if trigger else code
        raise Hl7MessageError(
            f"message type {shown[:20]!r}: must be a message code and trigger event such as "
            "ORU^R01",
            "MSH-9",
        )
    control_id = msh.value(10).strip()
    if not control_id:
        raise Hl7MessageError("no message control id", "MSH-10")
    version = msh.value(12, 1).strip()
    if _VERSION.fullmatch(version) is None:
        raise Hl7MessageError(f"version {version[:20]!r}: must be an HL7 v2 version", "MSH-12")
    return Hl7Header(
        message_type=(code, trigger),
        control_id=control_id,
        sending_application=msh.value(3, 1),
        sending_facility=msh.value(4, 1),
        receiving_application=msh.value(5, 1),
        receiving_facility=msh.value(6, 1),
        version=version,
        processing_id=msh.value(11, 1).strip(),
        structure=msh.value(9, 3).strip(),
        timestamp=msh.value(7, 1).strip(),
    )


def _require_type(header: Hl7Header, code: str, trigger: str) -> None:
    if header.message_type != (code, trigger):
        got = "^".join(header.message_type)
        raise Hl7MessageError(f"message type {got!r}: must be {code}^{trigger}", "MSH-9")


def _at_most_one(segments: list[_Seg], sid: str) -> _Seg | None:
    found = [s for s in segments if s.id == sid]
    if len(found) > 1:
        raise Hl7MessageError(f"{len(found)} {sid} segments: one message, one {sid}", sid)
    return found[0] if found else None


def _one(segments: list[_Seg], sid: str) -> _Seg:
    found = _at_most_one(segments, sid)
    if found is None:
        raise Hl7MessageError(f"no {sid} segment", sid)
    return found


# --- reading: values ---------------------------------------------------------------------------


def _decimal(text: str, field: str, what: str) -> Decimal:
    stripped = text.strip()
    if _NM.fullmatch(stripped) is None:
        raise Hl7MessageError(f"{what} {stripped[:30]!r}: not a number", field)
    value = Decimal(stripped)
    if not math.isfinite(float(value)):
        raise Hl7MessageError(f"{what} {stripped[:30]!r}: out of range", field)
    return value


def _seconds(text: str, field: str, what: str) -> float:
    """Unix seconds of an HL7 DTM that gives at least the minute and its UTC offset."""
    stripped = text.strip()
    match = _DTM.fullmatch(stripped)
    shown = stripped[:30]
    if match is None:
        raise Hl7MessageError(f"{what} {shown!r}: not an HL7 time (YYYYMMDDHHMM[SS]+HHMM)", field)
    digits, fraction, sign, offset_h, offset_m = match.groups()
    if len(digits) not in (12, 14):
        raise Hl7MessageError(
            f"{what} {shown!r}: must give the date and time to the minute (YYYYMMDDHHMM)", field
        )
    if sign is None:
        raise Hl7MessageError(
            f"{what} {shown!r}: no UTC offset (+HHMM): a time in an unknown zone is refused",
            field,
        )
    if int(offset_h) > 14 or int(offset_m) > 59:
        raise Hl7MessageError(f"{what} {shown!r}: UTC offset out of range", field)
    offset = timedelta(hours=int(offset_h), minutes=int(offset_m))
    try:
        moment = datetime(
            int(digits[0:4]),
            int(digits[4:6]),
            int(digits[6:8]),
            int(digits[8:10]),
            int(digits[10:12]),
            int(digits[12:14] or 0),
            tzinfo=timezone(-offset if sign == "-" else offset),
        )
    except ValueError:
        raise Hl7MessageError(f"{what} {shown!r}: not a valid date and time", field) from None
    return moment.timestamp() + (float(f"0.{fraction}") if fraction else 0.0)


def _units(seg: _Seg, n: int) -> tuple[str, str]:
    """A CWE unit as a lookup key (``mg/dl``, ``mdc:265266``) and as sent ("" if none)."""
    for identifier, system in ((1, 3), (4, 6)):
        unit = seg.value(n, identifier).strip()
        if unit:
            if seg.value(n, system).strip().upper() == MDC:
                return f"mdc:{unit}", seg.value(n, identifier + 1).strip() or unit
            return unit.lower(), unit
    return "", ""


def _is_code(seg: _Seg, code: str, system: str) -> bool:
    """Whether OBX-3 is ``code`` in ``system`` (CWE-1/3, or the alternate CWE-4/6)."""
    for identifier, coding in ((1, 3), (4, 6)):
        if (
            seg.value(3, identifier).strip() == code
            and seg.value(3, coding).strip().upper() == system
        ):
            return True
    return False


@dataclass(frozen=True)
class _Analyte:
    label: str
    #: unit key -> (multiplier, maximum value or None); "" is the empty unit.
    units: dict[str, tuple[Decimal, Decimal | None]]
    allowed: str


_IGM: Final = _Analyte(
    label=f"IgM (LOINC {LOINC_IGM})",
    units={
        "mg/dl": (Decimal(1), None),
        "g/l": (Decimal(100), None),
        "mg/l": (Decimal("0.1"), None),
    },
    allowed="mg/dL, g/L or mg/L",
)
_HCT: Final = _Analyte(
    label=f"hematocrit (LOINC {LOINC_HEMATOCRIT})",
    units={
        "%": (Decimal("0.01"), None),
        "1": (Decimal(1), Decimal(1)),
        "l/l": (Decimal(1), Decimal(1)),
        "": (Decimal(1), Decimal(1)),
    },
    allowed="% or, for a fraction of at most 1, 1, L/L or no unit",
)
_WEIGHT: Final = _Analyte(
    label="weight",
    units={
        "kg": (Decimal(1), None),
        "mdc:263875": (Decimal(1), None),
        "g": (Decimal("0.001"), None),
    },
    allowed="kg or g",
)


def _convert(seg: _Seg, analyte: _Analyte) -> tuple[float, str]:
    if seg.repetitions(5) > 1:
        raise Hl7MessageError(f"{analyte.label}: one value expected, not several", "OBX-5")
    raw = seg.value(5)
    number = _decimal(raw, "OBX-5", f"value for {analyte.label}")
    key, unit = _units(seg, 6)
    if key not in analyte.units:
        shown = f"unit {unit!r}" if unit else "no unit"
        raise Hl7MessageError(f"{shown} for {analyte.label}: must be {analyte.allowed}", "OBX-6")
    multiplier, maximum = analyte.units[key]
    if maximum is not None and number > maximum:
        shown = f"unit {unit!r}" if unit else "no unit"
        raise Hl7MessageError(
            f"{shown} for {analyte.label} of {raw.strip()[:30]}: a fraction must be at most "
            f"{maximum}; give a percentage with the unit %",
            "OBX-6",
        )
    return float(number * multiplier), f"{raw.strip()} {unit}".strip()


def _lab_value(seg: _Seg, analyte: _Analyte, obr_time: str) -> LabValue:
    status = seg.value(11).strip().upper()
    if status not in ("F", "C"):
        why = " (preliminary)" if status == "P" else ""
        raise Hl7MessageError(
            f"result status {status!r}{why} for {analyte.label}: only F (final) or C "
            "(corrected) results are used",
            "OBX-11",
        )
    value_type = seg.value(2).strip().upper()
    if value_type != "NM":
        raise Hl7MessageError(
            f"value type {value_type!r} for {analyte.label}: must be NM (a number)", "OBX-2"
        )
    value, given = _convert(seg, analyte)
    observed = seg.value(14, 1)
    if observed.strip():
        measured = _seconds(observed, "OBX-14", f"time for {analyte.label}")
    elif obr_time.strip():
        measured = _seconds(obr_time, "OBR-7", f"time for {analyte.label}")
    else:
        raise Hl7MessageError(
            f"no time for {analyte.label}: OBX-14 (or OBR-7) must say when the blood was drawn",
            "OBX-14",
        )
    return LabValue(value=value, measured_at_s=measured, status=status, given=given)


def _patient_id(segments: list[_Seg]) -> str:
    pid = _one(segments, "PID")
    patient_id = pid.value(3, 1).strip()
    if not patient_id:
        raise Hl7MessageError("no patient identifier (CX-1 of the first repetition)", "PID-3")
    return patient_id


def _bed(segments: list[_Seg]) -> str | None:
    pv1 = _at_most_one(segments, "PV1")
    if pv1 is None:
        return None
    parts = [pv1.value(3, c).strip() for c in (1, 2, 3)]
    while parts and not parts[-1]:
        parts.pop()
    return "/".join(parts) or None


class _Found:
    """At most one OBX per kind; a second one is refused."""

    def __init__(self) -> None:
        self.found: dict[str, tuple[_Seg, str]] = {}

    def add(self, kind: str, label: str, seg: _Seg, obr_time: str) -> None:
        if kind in self.found:
            raise Hl7MessageError(
                f"more than one {label} result in one message: exactly one is used", "OBX-3"
            )
        self.found[kind] = (seg, obr_time)

    def get(self, kind: str) -> tuple[_Seg, str] | None:
        return self.found.get(kind)


def _lab_observations(segments: list[_Seg], found: _Found) -> None:
    obr_time = ""
    for seg in segments:
        if seg.id == "OBR":
            obr_time = seg.value(7, 1)
        elif seg.id == "OBX":
            if _is_code(seg, LOINC_IGM, LOINC):
                found.add("igm", _IGM.label, seg, obr_time)
            elif _is_code(seg, LOINC_HEMATOCRIT, LOINC):
                found.add("hct", _HCT.label, seg, obr_time)


# --- reading: the public functions -------------------------------------------------------------


def parse_message(text: str) -> Hl7Header:
    """The MSH header of any HL7 v2 message; refuses non-HL7 input with Hl7MessageError."""
    return _header(_segments(text))


def parse_lab_result(text: str) -> LabResult:
    """A lab's ORU^R01: the patient's IgM (mg/dL) and hematocrit (fraction), with times."""
    segments = _segments(text)
    header = _header(segments)
    _require_type(header, "ORU", "R01")
    patient_id = _patient_id(segments)
    found = _Found()
    _lab_observations(segments, found)
    both = f"the titer needs both IgM (LOINC {LOINC_IGM}) and hematocrit (LOINC {LOINC_HEMATOCRIT})"
    igm, hct = found.get("igm"), found.get("hct")
    if igm is None:
        raise Hl7MessageError(f"no IgM result (LOINC {LOINC_IGM}): {both}", "OBX-3")
    if hct is None:
        raise Hl7MessageError(f"no hematocrit result (LOINC {LOINC_HEMATOCRIT}): {both}", "OBX-3")
    return LabResult(
        header=header,
        patient_id=patient_id,
        igm=_lab_value(igm[0], _IGM, igm[1]),
        hematocrit=_lab_value(hct[0], _HCT, hct[1]),
    )


def _rate(rxg: _Seg) -> float | None:
    raw = rxg.value(15).strip()
    if not raw:
        return None
    rate = _decimal(raw, "RXG-15", "give rate")
    key, unit = _units(rxg, 16)
    if key not in ("ml/h", "mdc:265266"):
        shown = f"give rate units {unit!r}" if unit else "no give rate units"
        raise Hl7MessageError(f"{shown} for a rate of {raw[:30]}: must be mL/h", "RXG-16")
    return float(rate)


def parse_order(text: str) -> PumpOrder:
    """An IHE PCD-03 RGV^O15 infusion order (field choices: see the module docstring)."""
    segments = _segments(text)
    header = _header(segments)
    _require_type(header, "RGV", "O15")
    patient_id = _patient_id(segments)
    bed = _bed(segments)
    orc = _one(segments, "ORC")
    rxg = _one(segments, "RXG")
    placer = orc.value(2, 1).strip()
    if not placer:
        raise Hl7MessageError("no placer order number", "ORC-2")
    product_code = rxg.value(4, 1).strip()
    if not product_code:
        raise Hl7MessageError("no give code (the product)", "RXG-4")
    ordered_rate = _rate(rxg)

    found = _Found()
    _lab_observations(segments, found)
    for seg in segments:
        if seg.id != "OBX":
            continue
        if _is_code(seg, LOINC_BODY_WEIGHT, LOINC) or _is_code(seg, MDC_ATTR_PT_WEIGHT, MDC):
            found.add("weight", "weight", seg, "")
        elif _is_code(seg, CODE_ARM, LOCAL):
            found.add("arm", f"trial arm ({CODE_ARM})", seg, "")
        elif _is_code(seg, CODE_RANDOMISED, LOCAL):
            found.add("rand", f"randomisation time ({CODE_RANDOMISED})", seg, "")

    weight = found.get("weight")
    if weight is None:
        raise Hl7MessageError(
            f"no weight (an OBX LOINC {LOINC_BODY_WEIGHT} or MDC {MDC_ATTR_PT_WEIGHT})", "OBX-3"
        )
    if weight[0].value(2).strip().upper() != "NM":
        raise Hl7MessageError("value type of the weight: must be NM (a number)", "OBX-2")
    weight_kg, weight_given = _convert(weight[0], _WEIGHT)

    arm = found.get("arm")
    if arm is None:
        raise Hl7MessageError(f"no trial arm (an OBX {CODE_ARM}^...^{LOCAL})", "OBX-3")
    arm_code = arm[0].value(5, 1).strip()
    if not arm_code:
        raise Hl7MessageError(f"{CODE_ARM}: no arm code", "OBX-5")

    rand = found.get("rand")
    if rand is None:
        raise Hl7MessageError(
            f"no randomisation time (an OBX {CODE_RANDOMISED}^...^{LOCAL})", "OBX-3"
        )
    if rand[0].value(2).strip().upper() not in ("DTM", "TS"):
        raise Hl7MessageError(f"value type of {CODE_RANDOMISED}: must be DTM", "OBX-2")
    randomised_at_s = _seconds(rand[0].value(5, 1), "OBX-5", "randomisation time")

    igm, hct = found.get("igm"), found.get("hct")
    return PumpOrder(
        header=header,
        patient_id=patient_id,
        bed=bed,
        order_control=orc.value(1).strip(),
        placer_order_number=placer,
        placer_namespace=orc.value(2, 2).strip(),
        product_code=product_code,
        product_name=rxg.value(4, 2).strip(),
        product_coding_system=rxg.value(4, 3).strip(),
        arm_code=arm_code,
        weight_kg=weight_kg,
        weight_given=weight_given,
        randomised_at_s=randomised_at_s,
        baseline_igm=None if igm is None else _lab_value(igm[0], _IGM, ""),
        baseline_hematocrit=None if hct is None else _lab_value(hct[0], _HCT, ""),
        ordered_rate_ml_per_h=ordered_rate,
    )


def parse_ack(text: str) -> AckResult:
    """The receiver's answer to a message the gateway sent: the MSA of any message type."""
    segments = _segments(text)
    _header(segments)
    msa = _one(segments, "MSA")
    code = msa.value(1).strip().upper()
    if code not in _ACK_CODES:
        raise Hl7MessageError(
            f"acknowledgment code {code[:10]!r}: must be AA, AE, AR, CA, CE or CR", "MSA-1"
        )
    control_id = msa.value(2).strip()
    if not control_id:
        raise Hl7MessageError("no control id of the message answered", "MSA-2")
    text_out = msa.value(3)
    for err in (s for s in segments if s.id == "ERR"):
        if text_out:
            break
        text_out = err.value(8) or err.value(7) or err.value(3, 2)
    return AckResult(code=code, control_id=control_id, text=text_out)


# --- writing -----------------------------------------------------------------------------------


def _escape(value: str) -> str:
    """``value`` for a field: delimiters as escape sequences, control characters as hex."""
    if value == '""':  # a literal "" (two quotes), not the HL7 null
        return "\\X2222\\"
    out: list[str] = []
    for c in value:
        if c == "\\":
            out.append("\\E\\")
        elif c == "|":
            out.append("\\F\\")
        elif c == "^":
            out.append("\\S\\")
        elif c == "~":
            out.append("\\R\\")
        elif c == "&":
            out.append("\\T\\")
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\X{ord(c):02X}\\")
        else:
            out.append(c)
    return "".join(out)


def _segment(*fields: str) -> str:
    """A segment from already-escaped fields, without trailing empty ones."""
    return "|".join(fields).rstrip("|")


def _components(*parts: str) -> str:
    return "^".join(parts).rstrip("^")


def _text(name: str, value: object, *, required: bool = True, max_chars: int = 10_000) -> str:
    if not isinstance(value, str):
        raise Hl7Error(f"{name}: must be text (got {type(value).__name__})")
    if required and not value.strip():
        raise Hl7Error(f"{name}: must not be empty")
    if len(value) > max_chars:
        raise Hl7Error(f"{name}: at most {max_chars} characters (got {len(value)})")
    return value


def _number(name: str, value: object) -> str:
    """A finite, non-negative number as an exact HL7 NM (no exponent, never rounded)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Hl7Error(f"{name}: must be a number (got {value!r})")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number) or number < 0:
        raise Hl7Error(f"{name}: must be a finite number >= 0 (got {value!r})")
    return format(Decimal(repr(number)), "f")


def _dtm(name: str, seconds: object) -> str:
    """Unix seconds as an HL7 DTM in UTC: ``YYYYMMDDHHMMSS[.SSS]+0000``."""
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise Hl7Error(f"{name}: must be Unix seconds (got {seconds!r})")
    try:
        moment = datetime.fromtimestamp(seconds, UTC)
    except (ValueError, OverflowError, OSError):
        raise Hl7Error(f"{name}: {seconds!r} is not a time") from None
    text = moment.strftime("%Y%m%d%H%M%S")
    millis = moment.microsecond // 1000
    return f"{text}.{millis:03d}+0000" if millis else f"{text}+0000"


def _msh(
    *,
    message_type: str,
    control_id: str,
    now_s: float,
    sending_application: str,
    sending_facility: str,
    receiving_application: str = "",
    receiving_facility: str = "",
    processing_id: str = "P",
    accept_ack: str = "",
    application_ack: str = "",
    charset: str = "",
    profile: str = "",
) -> str:
    control = _text("control_id", control_id, max_chars=CONTROL_ID_MAX_CHARS)
    if any(not c.isprintable() for c in control):
        raise Hl7Error("control_id: printable characters only")
    # An answer says P, T or D as the message it answers did; anything else is answered as P.
    processing = processing_id if processing_id in ("P", "T", "D") else "P"
    return _segment(
        "MSH",
        "^~\\&",
        _escape(_text("sending_application", sending_application, max_chars=200)),
        _escape(_text("sending_facility", sending_facility, max_chars=200)),
        _escape(receiving_application),
        _escape(receiving_facility),
        _dtm("now_s", now_s),
        "",
        message_type,
        _escape(control),
        processing,
        VERSION,
        "",
        "",
        accept_ack,
        application_ack,
        "",
        charset,
        "",
        "",
        profile,
    )


def _message(*segments: str) -> str:
    return "\r".join(segments) + "\r"


def _err(text: str) -> str:
    """ERR: HL7 error 207 (application error), severity E, the text as the user message."""
    return _segment(
        "ERR", "", "", "207^Application internal error^HL70357", "E", "", "", "", _escape(text)
    )


def build_ack(
    header: Hl7Header,
    code: Literal["AA", "AE", "AR"],
    text: str,
    *,
    control_id: str,
    now_s: float,
    sending_application: str,
    sending_facility: str,
) -> str:
    """An ACK (original mode) to the message ``header`` came from; AE/AR carry an ERR."""
    if code not in ("AA", "AE", "AR"):
        raise Hl7Error(f"code: must be AA, AE or AR (got {code!r})")
    body = _text("text", text, required=code != "AA")
    segments = [
        _msh(
            message_type=f"ACK^{_escape(header.message_type[1])}^ACK",
            control_id=control_id,
            now_s=now_s,
            sending_application=sending_application,
            sending_facility=sending_facility,
            receiving_application=header.sending_application,
            receiving_facility=header.sending_facility,
            processing_id=header.processing_id,
        ),
        _segment("MSA", code, _escape(header.control_id), _escape(body)),
    ]
    if code != "AA":
        segments.append(_err(body))
    return _message(*segments)


def _pl(bed: str) -> str:
    """A bed (``POC/ROOM/BED``) as a PL field."""
    return _components(*(_escape(part) for part in bed.split("/", 2)))


def _pid(patient_id: str) -> str:
    """PID with PID-3 and a name of unknown type (PID-5 is required in v2.6)."""
    return _segment("PID", "", "", _escape(patient_id), "", "^^^^^^U")


def _plan_note(plan: OrderPlan) -> str:
    if isinstance(plan.day, bool) or not isinstance(plan.day, int) or plan.day < 1:
        raise Hl7Error(f"plan.day: must be a course day >= 1 (got {plan.day!r})")
    dose = _number("plan.dose_mg_per_kg", plan.dose_mg_per_kg)
    volume = _number("plan.volume_ml", plan.volume_ml)
    rate = _number("plan.rate_ml_per_h", plan.rate_ml_per_h)
    ceiling = _number("plan.ceiling_ml_per_h", plan.ceiling_ml_per_h)
    return (
        f"day {plan.day}: daily dose {dose} mg/kg = {volume} mL at {rate} mL/h; "
        f"rate ceiling {ceiling} mL/h"
    )


def build_order_response(
    header: Hl7Header,
    order: PumpOrder,
    *,
    accepted: bool,
    text: str,
    plan: OrderPlan | None,
    control_id: str,
    now_s: float,
    sending_application: str,
    sending_facility: str,
) -> str:
    """RRG^O16: MSA AA with the gateway's plan (RXG, TQ1, RXR, NTE), or AR with an ERR."""
    if accepted and plan is None:
        raise Hl7Error("plan: an accepted order is answered with the gateway's plan")
    if not accepted and plan is not None:
        raise Hl7Error("plan: a refused order has no plan")
    body = _text("text", text, required=not accepted)
    segments = [
        _msh(
            message_type="RRG^O16^RRG_O16",
            control_id=control_id,
            now_s=now_s,
            sending_application=sending_application,
            sending_facility=sending_facility,
            receiving_application=header.sending_application,
            receiving_facility=header.sending_facility,
            processing_id=header.processing_id,
        ),
        _segment("MSA", "AA" if accepted else "AR", _escape(header.control_id), _escape(body)),
    ]
    if not accepted:
        segments.append(_err(body))
    if plan is not None:
        note = _plan_note(plan)
        segments.append(
            _segment("NTE", "1", "L", _escape(note), f"IGMFAT-PLAN^IgM-FAT plan^{LOCAL}")
        )
    placer = _components(_escape(order.placer_order_number), _escape(order.placer_namespace))
    segments.append(_pid(order.patient_id))
    segments.append(_segment("ORC", "OK" if accepted else "UA", placer))
    if plan is not None:
        product = _components(
            *(
                _escape(part)
                for part in (order.product_code, order.product_name, order.product_coding_system)
            )
        )
        rxg = ["RXG", "1", "", "", product, _number("plan.volume_ml", plan.volume_ml), "", _ML]
        rxg += [""] * 7 + [_number("plan.rate_ml_per_h", plan.rate_ml_per_h), _ML_PER_H]
        segments.append(_segment(*rxg))
        segments.append(_segment("TQ1", "1", "", "", "", "", "24^h&hour&UCUM"))
        segments.append(_segment("RXR", "IV^Intravenous^HL70162"))
    return _message(*segments)


def _obx(
    set_id: int,
    value_type: str,
    identifier: str,
    sub_id: str,
    value: str = "",
    units: str = "",
    status: str = "R",
    observed: str = "",
    equipment: str = "",
) -> str:
    return _segment(
        "OBX",
        str(set_id),
        value_type,
        identifier,
        sub_id,
        value,
        units,
        "",
        "",
        "",
        "",
        status,
        "",
        "",
        observed,
        "",
        "",
        "",
        equipment,
    )


def build_observation(
    obs: PumpObservation,
    *,
    control_id: str,
    now_s: float,
    sending_application: str,
    sending_facility: str,
) -> str:
    """An IHE PCD-01 ORU^R01 for one pump channel (layout: see the module docstring)."""
    observed = _dtm("obs.observed_at_s", obs.observed_at_s)
    channel = _escape(_text("obs.channel_id", obs.channel_id, max_chars=200))
    app = _escape(_text("sending_application", sending_application, max_chars=200))
    segments = [
        _msh(
            message_type="ORU^R01^ORU_R01",
            control_id=control_id,
            now_s=now_s,
            sending_application=sending_application,
            sending_facility=sending_facility,
            accept_ack="AL",
            application_ack="NE",
            charset="UNICODE UTF-8",
            profile=PCD01_PROFILE,
        )
    ]
    bed = None if obs.bed is None else _text("obs.bed", obs.bed, max_chars=200)
    if obs.patient_id is not None:
        segments.append(_pid(_text("obs.patient_id", obs.patient_id, max_chars=200)))
        if bed is not None:
            segments.append(_segment("PV1", "", "I", _pl(bed)))
    segments.append(
        _segment(
            "OBR",
            "1",
            "",
            _components(_escape(control_id), app),
            f"69985^MDC_DEV_PUMP_INFUS_MDS^{MDC}",
            "",
            "",
            observed,
        )
    )
    rows: list[tuple[str, str, str, str, str, str]] = []

    def row(vt: str, ident: str, sub: str, value: str = "", units: str = "") -> None:
        rows.append((vt, ident, sub, value, units, "R" if vt else "X"))

    row("", f"69985^MDC_DEV_PUMP_INFUS_MDS^{MDC}", "1.0.0.0")
    if obs.patient_id is None and bed is not None:
        row("ST", f"IGMFAT-BED^Bed^{LOCAL}", "1.0.0.1", _escape(bed))
    row("", f"69986^MDC_DEV_PUMP_INFUS_VMD^{MDC}", "1.1.0.0")
    row("", f"126978^MDC_DEV_PUMP_INFUS_CHAN_DELIVERY^{MDC}", "1.1.1.0")
    pump_state = _escape(_text("obs.pump_state", obs.pump_state, max_chars=200))
    channel_state = _escape(_text("obs.channel_state", obs.channel_state, max_chars=200))
    row("ST", f"IGMFAT-PUMP-STATE^Pump state^{LOCAL}", "1.1.1.1", pump_state)
    row("ST", f"IGMFAT-CHAN-STATE^Channel state^{LOCAL}", "1.1.1.2", channel_state)
    numbers: tuple[tuple[str, str, str, float | None, str], ...] = (
        (
            "commanded_rate_ml_per_h",
            f"IGMFAT-RATE-CMD^Commanded rate^{LOCAL}",
            "1.1.1.3",
            obs.commanded_rate_ml_per_h,
            _ML_PER_H,
        ),
        (
            "readback_rate_ml_per_h",
            f"157784^MDC_FLOW_FLUID_PUMP^{MDC}",
            "1.1.1.4",
            obs.readback_rate_ml_per_h,
            _ML_PER_H,
        ),
        (
            "delivered_today_ml",
            f"157864^MDC_VOL_FLUID_DELIV^{MDC}",
            "1.1.1.5",
            obs.delivered_today_ml,
            _ML,
        ),
        (
            "prescribed_today_ml",
            f"157884^MDC_VOL_FLUID_TBI^{MDC}",
            "1.1.1.6",
            obs.prescribed_today_ml,
            _ML,
        ),
        (
            "remaining_today_ml",
            f"157872^MDC_VOL_FLUID_TBI_REMAIN^{MDC}",
            "1.1.1.7",
            _remaining(obs),
            _ML,
        ),
        (
            "ceiling_ml_per_h",
            f"IGMFAT-RATE-CEIL^Rate ceiling^{LOCAL}",
            "1.1.1.8",
            obs.ceiling_ml_per_h,
            _ML_PER_H,
        ),
    )
    for name, ident, sub, number, units in numbers:
        if number is not None or name == "delivered_today_ml":
            row("NM", ident, sub, _number(f"obs.{name}", number), units)
    if not isinstance(obs.alarms, tuple):
        raise Hl7Error("obs.alarms: must be a tuple of alarm codes")
    for index, alarm in enumerate(obs.alarms, start=9):
        text = _escape(_text("obs.alarms", alarm, max_chars=200))
        row("ST", f"IGMFAT-ALARM^Active alarm^{LOCAL}", f"1.1.1.{index}", text)
    for set_id, (vt, ident, sub, value, units, status) in enumerate(rows, start=1):
        equipment = _components(channel, app) if sub == "1.0.0.0" else ""
        segments.append(_obx(set_id, vt, ident, sub, value, units, status, observed, equipment))
    return _message(*segments)


def _remaining(obs: PumpObservation) -> float | None:
    """Prescribed minus delivered today, never below 0; None without a prescription."""
    prescribed, delivered = obs.prescribed_today_ml, obs.delivered_today_ml
    if prescribed is None:
        return None
    for name, value in (("prescribed_today_ml", prescribed), ("delivered_today_ml", delivered)):
        _number(f"obs.{name}", value)
    return max(0.0, float(prescribed) - float(delivered))


__all__ = [
    "MAX_MESSAGE_CHARS",
    "PCD01_PROFILE",
    "VERSION",
    "AckResult",
    "Hl7Error",
    "Hl7Header",
    "Hl7MessageError",
    "LabResult",
    "LabValue",
    "OrderPlan",
    "PumpObservation",
    "PumpOrder",
    "build_ack",
    "build_observation",
    "build_order_response",
    "parse_ack",
    "parse_lab_result",
    "parse_message",
    "parse_order",
]
