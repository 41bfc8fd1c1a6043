"""The data of the structured query replies: ``DIS`` (volumes dispensed) and ``VER`` (model and
firmware).  Each has a parser for the host and a formatter for a pump."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

from protocol.newera.constants import VolumeUnit
from protocol.newera.errors import MessageValueError, PayloadError
from protocol.newera.quantities import Number, format_display_number_in, parse_number

_DISPENSED_RE = re.compile(r"I(?P<inf>[0-9.]+)W(?P<wdr>[0-9.]+)(?P<unit>UL|ML)")
_FIRMWARE_RE = re.compile(r"[0-9]+\.[0-9]+")
_VERSION_RE = re.compile(
    r"NE(?P<model>[0-9]{1,9})(?:X(?P<upgrade>[0-9]{0,9}))?V(?P<firmware>[0-9]+\.[0-9]+)"
)


@dataclass(frozen=True)
class Dispensed:
    """Volumes dispensed since they were last cleared, from a ``DIS`` reply."""

    infused_ml: Decimal
    """Volume infused, mL (exact)."""
    withdrawn_ml: Decimal
    """Volume withdrawn, mL (exact)."""
    unit: VolumeUnit
    """The unit the pump reported them in (its current volume unit)."""


def parse_dispensed(text: str) -> Dispensed:
    """Parse the data of a ``DIS`` reply, ``I<infused>W<withdrawn><UL|ML>``, into mL:
    ``parse_dispensed("I0.250W0.000ML").infused_ml == Decimal("0.250")``.

    :raises PayloadError: not in that form, or a number does not parse.
    """
    match = _DISPENSED_RE.fullmatch(text)
    if match is None:
        raise PayloadError(f"not a DIS reply: {text!r}", raw=text.encode("ascii", "replace"))
    unit = VolumeUnit(match["unit"])
    return Dispensed(
        infused_ml=parse_number(match["inf"]) * unit.ml,
        withdrawn_ml=parse_number(match["wdr"]) * unit.ml,
        unit=unit,
    )


def format_dispensed(infused_ml: Number, withdrawn_ml: Number, unit: VolumeUnit) -> str:
    """The data of a ``DIS`` reply for volumes in mL, shown in ``unit`` and truncated:
    ``format_dispensed(0.25, 0, VolumeUnit.ML) == "I0.250W0.000ML"``.

    :raises UnrepresentableNumberError: a volume does not fit the field in ``unit``.
    """
    infused = format_display_number_in(infused_ml, unit.ml)
    withdrawn = format_display_number_in(withdrawn_ml, unit.ml)
    return f"I{infused}W{withdrawn}{unit.value}"


@dataclass(frozen=True)
class FirmwareVersion:
    """Model and firmware from a ``VER`` reply, ``NE<model>[X[<upgrade>]]V<major>.<minor>``."""

    model: int
    """Model number, e.g. ``1000`` for an NE-1000."""
    firmware: str
    """Firmware version as sent, e.g. ``"3.928"``."""
    upgrade: int = 0
    """Firmware upgrade number; 0 when none (a bare ``X`` reads as 1, as in nesp-lib)."""

    def __post_init__(self) -> None:
        if self.model < 0 or self.upgrade < 0:
            raise MessageValueError(f"negative model or upgrade: {self!r}")
        if _FIRMWARE_RE.fullmatch(self.firmware) is None:
            raise MessageValueError(f"firmware must be <digits>.<digits>: {self.firmware!r}")


def parse_version(text: str) -> FirmwareVersion:
    """Parse the data of a ``VER`` reply: ``parse_version("NE1000V3.928")`` is model 1000,
    firmware ``"3.928"``.

    :raises PayloadError: not in that form.
    """
    match = _VERSION_RE.fullmatch(text)
    if match is None:
        raise PayloadError(f"not a VER reply: {text!r}", raw=text.encode("ascii", "replace"))
    upgrade_text = match["upgrade"]
    upgrade = 0 if upgrade_text is None else int(upgrade_text) if upgrade_text else 1
    return FirmwareVersion(model=int(match["model"]), firmware=match["firmware"], upgrade=upgrade)


def format_version(version: FirmwareVersion) -> str:
    """The data of a ``VER`` reply: ``NE1000V3.928``, or ``NE1000X2V3.928`` with an upgrade."""
    upgrade = f"X{version.upgrade}" if version.upgrade else ""
    return f"NE{version.model}{upgrade}V{version.firmware}"
