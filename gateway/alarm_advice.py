"""What each alarm means and what a person does about it, in words for the bedside.

The one home of these words in code: the status page shows them beside every active alarm, and
any other screen should take them from here.  The alarm codes themselves are defined in
:class:`gateway.course_state.AlarmCode` (the gateway's) and :class:`protocol.pump_state.PumpAlarm`
(a pump's, reported as ``pump_<name>``); docs/operations.md ("Alarms and what to do") explains
the same for readers of the manual.  A test checks that every code has its advice here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from gateway.course_state import AlarmCode
from protocol.pump_state import PumpAlarm


@dataclass(frozen=True)
class AlarmAdvice:
    #: A few words, as a pump's own screen names the alarm.
    title: str
    #: What happened, in one sentence.
    meaning: str
    #: What to do now.
    action: str


def pump_alarm_code(alarm: PumpAlarm) -> str:
    """A pump alarm's code as the gateway reports it."""
    return f"pump_{alarm.value}"


#: Raised by :class:`gateway.channel.Channel` when its journal cannot be written.
JOURNAL_FAILED_CODE: Final = "journal_failed"

_FIX_AT_BEDSIDE = "Fix it at the pump, then acknowledge (infusion-gateway ack --operator NAME)."

_PUMP: Final[Mapping[PumpAlarm, AlarmAdvice]] = {
    PumpAlarm.OCCLUSION: AlarmAdvice(
        "Occlusion",
        "The pump detected a blocked line and stopped.",
        "Check the line for kinks, clamps and a closed stopcock. " + _FIX_AT_BEDSIDE,
    ),
    PumpAlarm.AIR_IN_LINE: AlarmAdvice(
        "Air in line",
        "The pump detected air in the line and stopped.",
        "Remove the air as the pump's manual says. " + _FIX_AT_BEDSIDE,
    ),
    PumpAlarm.DOOR_OPEN: AlarmAdvice(
        "Door open",
        "The pump's door or syringe holder is open; it stopped.",
        "Seat the syringe or set and close the door. " + _FIX_AT_BEDSIDE,
    ),
    PumpAlarm.RESERVOIR_EMPTY: AlarmAdvice(
        "Syringe or bag empty",
        "The pump ran out of product (or its motor stalled) and stopped.",
        "Hang a new syringe or bag of the trial product. " + _FIX_AT_BEDSIDE,
    ),
    PumpAlarm.POWER_LOSS: AlarmAdvice(
        "Power interrupted",
        "The pump lost power or reset and stopped.",
        "Check the mains lead and the battery. " + _FIX_AT_BEDSIDE,
    ),
    PumpAlarm.COMM_TIMEOUT: AlarmAdvice(
        "Watchdog stop",
        "The pump heard nothing from the gateway within its watchdog time and stopped itself.",
        "Check the cable or link to the pump. The channel may resume by itself; otherwise "
        "acknowledge.",
    ),
    PumpAlarm.PROGRAM_ERROR: AlarmAdvice(
        "Pump program error",
        "The pump reports an error in its program and stopped.",
        "Check the pump's settings. " + _FIX_AT_BEDSIDE,
    ),
}

_GATEWAY: Final[Mapping[AlarmCode, AlarmAdvice]] = {
    AlarmCode.PUMP_SILENT: AlarmAdvice(
        "Pump not answering",
        "The gateway hears nothing from the pump; the pump stops itself within its watchdog time.",
        "Check the cable, the pump's power, its address and its model.",
    ),
    AlarmCode.RATE_ABOVE_CEILING: AlarmAdvice(
        "Rate above the ceiling",
        "The pump reports a rate above the patient's ceiling.",
        "Stop the pump by hand now and take it out of service.",
    ),
    AlarmCode.RATE_MISMATCH: AlarmAdvice(
        "Rate not as commanded",
        "The pump holds a rate other than the one the gateway commanded.",
        "Check the pump's settings, then acknowledge.",
    ),
    AlarmCode.STATE_MISMATCH: AlarmAdvice(
        "Pump state not as expected",
        "The pump is stopped or infusing when it should not be (e.g. changed at its keypad).",
        "Check at the bedside, then acknowledge.",
    ),
    AlarmCode.SAFETY_REFUSED: AlarmAdvice(
        "Rate refused by the safety check",
        "The gateway's safety check refused a planned rate (e.g. above the pump's maximum).",
        "Check the pump model and the order.",
    ),
    AlarmCode.PUMP_REFUSED: AlarmAdvice(
        "Command refused by the pump",
        "The pump refused a command (a rate, a start or its watchdog).",
        "Read the detail, fix the cause at the pump, then acknowledge.",
    ),
    AlarmCode.TOTALIZER_WENT_BACK: AlarmAdvice(
        "Volume total went back",
        "The pump's volume total decreased (cleared at the keypad, or the pump was swapped).",
        "The day's account from the pump cannot be trusted: check, then acknowledge.",
    ),
    AlarmCode.OVER_DELIVERY: AlarmAdvice(
        "Over-delivery",
        "More than the day's prescription (+0.5 %) was delivered; the pump is stopped.",
        "Tell the trial's clinician; acknowledge only after a clinician checked the patient.",
    ),
    AlarmCode.UNSUPPORTED_PUMP: AlarmAdvice(
        "Pump not supported",
        "The pump's model is not one the driver supports.",
        "Use a supported pump model.",
    ),
    AlarmCode.LOW_BATTERY: AlarmAdvice(
        "Low battery",
        "The pump reports a low battery; it keeps running for now.",
        "Plug the pump into the mains.",
    ),
    AlarmCode.START_WINDOW_EXCEEDED: AlarmAdvice(
        "Start window missed",
        "Day 1 would start more than 12 h after randomisation and the order has no override.",
        "The course cannot start on this channel: see 'start_window_exceeded' in the "
        "operations manual.",
    ),
    AlarmCode.TITER_LATE: AlarmAdvice(
        "Titer missing",
        "No titer was drawn in time for the day that should open; the pump waits, stopped.",
        "Post the day's IgM titer (infusion-gateway titer --measured-at ...).",
    ),
    AlarmCode.PROJECTED_SHORTFALL: AlarmAdvice(
        "Day's dose will fall short",
        "The day's remaining volume cannot be given by the window's end at the ceiling.",
        "Tell the clinician; check for a lowered ceiling, a slow pump or a long interruption.",
    ),
    AlarmCode.OUTAGE_NEEDS_ACK: AlarmAdvice(
        "Resume needs a person",
        "The pump answers again after a silence (or restart) too long to resume by itself.",
        "Check the patient and the pump, then acknowledge.",
    ),
    AlarmCode.INTERNAL_ERROR: AlarmAdvice(
        "Gateway error",
        "The gateway hit a state change it does not allow (a bug); the pump is stopped.",
        "Keep the pump stopped and report it with the journal and the logs.",
    ),
    AlarmCode.TOTALIZER_IMPLAUSIBLE: AlarmAdvice(
        "Volume total implausible",
        "The pump's volume total and its rate disagree (a frozen or jumping counter).",
        "Check the pump and the line; if it recurs, take the pump out of service.",
    ),
    AlarmCode.WATCHDOG_UNCONFIRMED: AlarmAdvice(
        "Pump watchdog not confirmed",
        "The pump does not confirm its communication watchdog, so it is never started.",
        "Put the pump in safe mode (fix its firmware setting), then acknowledge.",
    ),
    AlarmCode.STOP_FAILED: AlarmAdvice(
        "Pump would not stop",
        "A stop failed, or the pump kept infusing after it. Critical.",
        "Go to the pump and stop it by hand now; take it out of service; acknowledge when it "
        "is stopped.",
    ),
    AlarmCode.PUMP_HAS_HISTORY: AlarmAdvice(
        "Pump already used",
        "Before day 1 the pump already shows infused volume or is infusing.",
        "Check it is this patient's line and a fresh bag, then acknowledge to start day 1.",
    ),
    AlarmCode.CLOCK_STEP: AlarmAdvice(
        "Clock jumped",
        "The computer's clock jumped; day windows follow it.",
        "Fix the time source (NTP/chrony), then acknowledge.",
    ),
}

#: Every alarm code the gateway reports, with its advice.
ADVICE: Final[Mapping[str, AlarmAdvice]] = {
    **{pump_alarm_code(alarm): text for alarm, text in _PUMP.items()},
    **{code.value: text for code, text in _GATEWAY.items()},
    JOURNAL_FAILED_CODE: AlarmAdvice(
        "Journal cannot be written",
        "The gateway cannot record to its journal; it told the pump to stop.",
        "Check the disk and the state directory; restart the gateway.",
    ),
}


def advice(code: str) -> AlarmAdvice:
    """The advice for ``code``; an unknown code still gets a safe instruction."""
    return ADVICE.get(
        code,
        AlarmAdvice(
            code,
            "An alarm this screen has no words for.",
            "Check the pump and the operations manual, then acknowledge.",
        ),
    )
