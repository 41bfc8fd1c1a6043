"""What people and the lab send a channel: small typed values, validated before they exist.

Each is built by :mod:`gateway.intake` (which refuses bad ones with an error naming the field)
and handed to the controller in the next control cycle, where a ``match`` applies it.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.course_state import Order


@dataclass(frozen=True)
class OrderInput:
    order: Order
    #: The order's baseline titer (titer arm), drawn at ``measured_at_s``.
    igm_mg_dl: float | None = None
    hematocrit: float | None = None
    titer_measured_at_s: float | None = None
    confirmed_notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class TiterInput:
    igm_mg_dl: float
    hematocrit: float
    measured_at_s: float
    received_at_s: float
    confirmed_note: str | None = None
    #: An explicit correction of the titer a day already used (that day's number).
    corrects_day: int | None = None


@dataclass(frozen=True)
class WeightInput:
    weight_kg: float
    reason: str = ""
    confirmed_note: str | None = None
    #: Adopted from a changed config at a restart (run --adopt-config-order).
    from_config: bool = False


@dataclass(frozen=True)
class AckInput:
    operator: str
    note: str = ""


@dataclass(frozen=True)
class StopInput:
    operator: str
    reason: str = ""


@dataclass(frozen=True)
class VasopressorsWithdrawnInput:
    at_s: float


@dataclass(frozen=True)
class ClockStepInput:
    """The executor saw the wall clock move ``step_s`` away from the monotonic clock."""

    step_s: float


@dataclass(frozen=True)
class ShutdownInput:
    """The gateway is stopping (SIGTERM): stop a running pump, remember it was running."""

    reason: str


Input = (
    OrderInput
    | TiterInput
    | WeightInput
    | AckInput
    | StopInput
    | VasopressorsWithdrawnInput
    | ClockStepInput
    | ShutdownInput
)
