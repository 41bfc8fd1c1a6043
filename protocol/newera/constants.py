"""Every fact of the New Era NE-1000 family serial protocol, in one place.

Control bytes, limits, command mnemonics, status characters, alarm and error strings, and the
units of the number fields.  Sources: NE-1000 user manual (1200-01, section 10.2), cross-checked
against the bytes ``nesp-lib`` 2.0.0 sends; described in docs/newera.md, which a test keeps true.
"""

from __future__ import annotations

from decimal import Decimal
from enum import Enum, StrEnum
from types import MappingProxyType
from typing import Final

from protocol.pump_state import PumpAlarm

# --- control bytes -------------------------------------------------------------------------

#: Start of a pump reply (both framings) and of a safe-mode packet (both directions).
STX: Final = 0x02
#: End of a pump reply (both framings) and of a safe-mode packet (both directions).
ETX: Final = 0x03
#: End of a basic-mode command line sent to the pump.
CR: Final = 0x0D

# --- line -------------------------------------------------------------------------------------

#: Baud rates the pump can be set to; 8N1.
BAUD_RATES: Final = (300, 1200, 2400, 9600, 19200)
#: Factory default baud rate.
DEFAULT_BAUD_RATE: Final = 19200

# --- addresses and safe mode ------------------------------------------------------------------

#: Lowest pump address.
ADDRESS_MIN: Final = 0
#: Highest pump address.
ADDRESS_MAX: Final = 99
#: Address a command without address digits goes to.
DEFAULT_ADDRESS: Final = 0
#: Most address digits a command may start with (one or two both occur on the wire).
MAX_ADDRESS_DIGITS: Final = 2
#: Number of address digits in a pump reply (always two, zero-padded).
REPLY_ADDRESS_DIGITS: Final = 2

#: Safe-mode timeout range in seconds (``SAF0`` = basic mode); nesp-lib allows 0-255.
SAFE_TIMEOUT_MAX_S: Final = 255
#: A gap this long (seconds) inside a safe-mode packet makes the pump discard it.  The codec has
#: no clock: the caller applies this rule by discarding its pending bytes.
SAFE_PACKET_GAP_S: Final = 0.5

#: In a safe-mode packet the length byte counts itself, the 2 CRC bytes and ETX besides the data.
SAFE_LENGTH_OVERHEAD: Final = 4
#: Largest value of the one-byte safe-mode length field.
SAFE_LENGTH_MAX: Final = 0xFF
#: Longest command text (address + mnemonic + argument) that fits a safe packet; also the
#: longest basic command line (before its CR) the pump-side decoder accepts.
MAX_COMMAND_TEXT_LENGTH: Final = SAFE_LENGTH_MAX - SAFE_LENGTH_OVERHEAD
#: Longest reply payload (address + status + data).  Chosen so that a safe-mode reply's length
#: byte (payload + 4 <= 0x2F) can never be an ASCII digit, which is what tells a basic reply
#: (``STX`` + address digit) from a safe one on the wire.  Real replies are under 20 characters.
MAX_REPLY_PAYLOAD_LENGTH: Final = 43
#: Shortest reply payload: two address digits and a status character.
MIN_REPLY_PAYLOAD_LENGTH: Final = 3

# --- numbers ----------------------------------------------------------------------------------

#: A number field holds at most this many digits (plus one decimal point).
MAX_NUMBER_DIGITS: Final = 4
#: ... of which at most this many after the decimal point.
MAX_NUMBER_DECIMALS: Final = 3
#: The volume to be dispensed that means "continuous" (``VOL0``).  Encoders never produce it
#: from a number; a caller who wants a continuous infusion must say so with this constant.
CONTINUOUS_VOLUME_ARGUMENT: Final = "0"
#: Volumes are in µL for syringe diameters at or below this (mm), in mL above.
VOLUME_UNIT_DIAMETER_THRESHOLD_MM: Final = Decimal("14.00")


class Framing(Enum):
    """The two framings of the protocol."""

    BASIC = "basic"
    """Commands ``[address]<command><data>\\r``; replies ``STX <addr><status>[data] ETX``."""
    SAFE = "safe"
    """``STX <len> <data> <crc_hi> <crc_lo> ETX`` with a CRC-16/XMODEM over ``data``."""


class Mnemonic(StrEnum):
    """Command mnemonics a host sends.  A mnemonic without argument is a query."""

    STATUS = ""
    """Empty command: status query."""
    DIAMETER = "DIA"
    """Syringe inside diameter, mm."""
    RATE = "RAT"
    """Pumping rate: value and optional :class:`RateUnit`."""
    VOLUME = "VOL"
    """Volume to dispense (value, or a :class:`VolumeUnit` to set units); ``VOL0`` continuous."""
    DIRECTION = "DIR"
    """Pumping direction, a :class:`Direction`."""
    RUN = "RUN"
    """Start the pumping program."""
    PURGE = "PUR"
    """Run at maximum rate until stopped (sent by nesp-lib's ``run_purge``)."""
    STOP = "STP"
    """Stop (pause); a second ``STP`` clears the pause."""
    DISPENSED = "DIS"
    """Query volumes dispensed: reply ``I<inf>W<wdr><UL|ML>``."""
    CLEAR_INFUSED = "CLDINF"
    """Clear the infused-volume total (on the wire: ``CLD`` + ``INF``)."""
    CLEAR_WITHDRAWN = "CLDWDR"
    """Clear the withdrawn-volume total (on the wire: ``CLD`` + ``WDR``)."""
    VERSION = "VER"
    """Query model and firmware, e.g. ``NE1000V3.928``."""
    SAFE_MODE = "SAF"
    """Safe-mode timeout in seconds; ``SAF0`` returns to basic mode."""
    POWER_FAIL = "PF"
    """Power-failure mode ``0`` or ``1``."""
    ADDRESS = "ADR"
    """Pump network address."""
    BUZZER = "BUZ"
    """Buzzer."""
    ALARM = "AL"
    """Alarm mode."""
    LOCK = "LOC"
    """Keypad lockout."""


class NeStatus(StrEnum):
    """The status character of a pump reply (the "prompt")."""

    INFUSING = "I"
    WITHDRAWING = "W"
    STOPPED = "S"
    PAUSED = "P"
    PAUSE_PHASE = "T"
    """Pumping program in a pause phase."""
    USER_WAIT = "U"
    """Waiting for a user trigger."""
    PURGING = "X"


#: The character in the status position that starts an alarm reply (``A?R`` ...).
ALARM_PREFIX: Final = "A?"
#: The first character of an error in the data field.
ERROR_PREFIX: Final = "?"


class NeAlarm(StrEnum):
    """Alarm replies, as sent in place of the status character and data (``00A?R``)."""

    RESET = "A?R"
    """Pump was reset: power was interrupted."""
    STALLED = "A?S"
    """Motor stalled (e.g. syringe end reached)."""
    SAFE_TIMEOUT = "A?T"
    """No valid packet within the safe-mode timeout: the pump stopped."""
    PROGRAM_ERROR = "A?E"
    """Pumping program error."""
    PHASE_OUT_OF_RANGE = "A?O"
    """Pumping program phase out of range."""

    @property
    def pump_alarm(self) -> PumpAlarm:
        """The protocol-neutral alarm this NE alarm reports."""
        return NE_ALARM_TO_PUMP_ALARM[self]


#: How NE alarms map onto the protocol-neutral :class:`PumpAlarm` names.
NE_ALARM_TO_PUMP_ALARM: Final = MappingProxyType(
    {
        NeAlarm.RESET: PumpAlarm.POWER_LOSS,
        NeAlarm.STALLED: PumpAlarm.RESERVOIR_EMPTY,
        NeAlarm.SAFE_TIMEOUT: PumpAlarm.COMM_TIMEOUT,
        NeAlarm.PROGRAM_ERROR: PumpAlarm.PROGRAM_ERROR,
        NeAlarm.PHASE_OUT_OF_RANGE: PumpAlarm.PROGRAM_ERROR,
    }
)


class NeErrorCode(StrEnum):
    """Errors a pump reports in the data field of a reply (``00S?OOR``)."""

    NOT_RECOGNISED = "?"
    """Command not recognised."""
    NOT_APPLICABLE = "?NA"
    """Command not applicable now."""
    OUT_OF_RANGE = "?OOR"
    """Argument out of range."""
    BAD_PACKET = "?COM"
    """Invalid safe-mode packet (bad length, ETX or CRC)."""
    IGNORED = "?IGN"
    """Command ignored (e.g. a simultaneous keypad entry)."""


class Direction(StrEnum):
    """Arguments of ``DIR``."""

    INFUSE = "INF"
    WITHDRAW = "WDR"
    REVERSE = "REV"


class RateUnit(StrEnum):
    """Rate units of ``RAT``."""

    UL_PER_MIN = "UM"
    ML_PER_MIN = "MM"
    UL_PER_H = "UH"
    ML_PER_H = "MH"

    @property
    def ml_per_h(self) -> Decimal:
        """One of this unit expressed in mL/h (exact)."""
        return RATE_UNIT_ML_PER_H[self]


#: One of each rate unit in mL/h.  Exact decimals, so unit→mL/h conversion never rounds.
RATE_UNIT_ML_PER_H: Final = MappingProxyType(
    {
        RateUnit.UL_PER_MIN: Decimal("0.06"),
        RateUnit.ML_PER_MIN: Decimal(60),
        RateUnit.UL_PER_H: Decimal("0.001"),
        RateUnit.ML_PER_H: Decimal(1),
    }
)


class VolumeUnit(StrEnum):
    """Volume units of ``VOL`` and ``DIS``."""

    UL = "UL"
    ML = "ML"

    @property
    def ml(self) -> Decimal:
        """One of this unit expressed in mL (exact)."""
        return VOLUME_UNIT_ML[self]


#: One of each volume unit in mL.
VOLUME_UNIT_ML: Final = MappingProxyType(
    {VolumeUnit.UL: Decimal("0.001"), VolumeUnit.ML: Decimal(1)}
)
