"""Fault injection for the software pump: timed fault scripts and line faults.

A **fault script** is a list of entries, each applied by :meth:`simulator.model.PumpModel.schedule`
at its exact simulated time (``at_s`` seconds after the model was created).  It is written in TOML
or JSON and validated strictly (unknown keys are refused); a bad script raises
:class:`~simulator.errors.FaultScriptError` naming the entry index, the field and what is allowed::

    description = "Occlusion one hour in, cleared ten minutes later"

    [[faults]]
    at_s = 3600
    fault = "occlusion"        # see FaultKind
    action = "inject"          # or "clear"; default "inject"

    [[faults]]
    at_s = 3700
    fault = "garbage"          # line fault with a value: probability 0..1
    value = 0.2

Fault kinds and what ``value`` means:

===========================================================  =====================  =======
fault                                                        actions                value
===========================================================  =====================  =======
``occlusion`` ``air_in_line`` ``door_open`` ``low_battery``  inject, clear          none
``reservoir_empty`` (inject empties it, clear refills it)    inject, clear          none
``program_error`` (latched until ``clear_alarms``)           inject                 none
``power_loss`` (an instantaneous power cycle)                inject                 none
``hang`` (the line goes dead both ways)                      inject, clear          none
``garbage`` / ``corrupt`` (probability per reply)            inject (value), clear  0..1
``duplicate`` (probability per reply: sent twice)            inject (value), clear  0..1
``slow`` (reply delay, simulated seconds)                    inject (value), clear  0..3600
``frozen_totalizer`` (reported volume stops advancing)       inject, clear          none
``totalizer_jump`` (reported volume off by value, mL)        inject (value), clear  -1e5..1e5
``watchdog_not_held`` (watchdog acknowledged, never held)    inject, clear          none
``stop_refused`` (STOP acknowledged, the pump keeps going)   inject, clear          none
``rate_echo_wrong`` (reported rate off by value, mL/h)       inject (value), clear  -1e4..1e4
``uptime_frozen`` (reported uptime stops advancing)          inject, clear          none
===========================================================  =====================  =======

**Lying-pump faults** (:data:`LYING_FAULTS`, the last six rows) change what the pump *reports* or
*obeys*, never the model's truth: :meth:`~simulator.model.PumpModel.snapshot` keeps the truth in
its plain fields and what the pump reports in its ``reported_*`` fields, which both wire protocols
serve.  Inject or clear them from a script, or with
:meth:`~simulator.model.PumpModel.inject_fault` / :meth:`~simulator.model.PumpModel.clear_fault`:

* ``frozen_totalizer``: the reported volume infused (NE-1000 ``DIS``, Modbus VOLUME_INFUSED) stays
  at the true value of the moment it was injected; the truth (``volume_infused_ml``, lifetime,
  reservoir, VTBI remaining) keeps counting.  A clear-totals command zeroes the frozen reading (it
  still does not advance).  Injecting it again while frozen changes nothing; clearing it reports
  the truth again.
* ``totalizer_jump``: the reported volume infused is the truth (or the frozen reading) plus
  ``value`` mL, never below 0, from now on; a new inject replaces the offset, clear removes it.
* ``watchdog_not_held``: the pump acknowledges every watchdog request but holds none: the
  reported timeout (NE-1000 ``SAF`` query, Modbus WATCHDOG_TIMEOUT and WATCHDOG_TIMEOUT_ECHO) is 0
  and the watchdog never expires.  An NE-1000 still switches to safe framing on ``SAF<n>``, n > 0
  (it answered normally).  Clear: the pump holds the last timeout requested again, timing from
  the clear.
* ``stop_refused``: stop and pause commands are acknowledged but the pump keeps infusing (NE-1000
  ``STP`` is answered with the prompt an obeying pump would give, ``P`` then ``S``; Modbus: the
  STOP write is acknowledged and counted).  Alarms (occlusion, VTBI, watchdog, power loss) still
  stop it.
* ``rate_echo_wrong``: the reported rate setpoint (NE-1000 ``RAT`` query, Modbus RATE_SETPOINT and
  RATE_SETPOINT_ECHO) is ``value`` mL/h away from the rate the pump runs (never below 0); the
  measured rate (Modbus MEASURED_RATE) stays true.
* ``uptime_frozen``: the reported uptime (Modbus UPTIME; the NE-1000 has none) stays at its value
  of the moment it was injected; clear reports the true uptime again.

**Line faults** (:class:`LineFaults`, at ``PumpModel.line``) are consulted by the wire transports:
they do not change the pump, only how its replies travel.

This module imports nothing from :mod:`simulator.model`, so the model can import it.
"""

from __future__ import annotations

import json
import os
import random
import threading
import tomllib
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from protocol.clock import Clock
from simulator.errors import FaultScriptError, OutOfRangeError

#: Longest reply delay a line fault may ask for, in simulated seconds.
MAX_REPLY_DELAY_S: float = 3600.0

#: Most garbage bytes :meth:`LineFaults.mangle` prepends to one reply.
MAX_GARBAGE_BYTES: int = 8

#: Largest ``totalizer_jump`` offset either way, mL.
MAX_TOTALIZER_JUMP_ML: float = 100_000.0

#: Largest ``rate_echo_wrong`` offset either way, mL/h.
MAX_RATE_ECHO_OFFSET_ML_PER_H: float = 10_000.0


class FaultKind(StrEnum):
    """What a fault-script entry does.  See the module docstring for actions and values."""

    OCCLUSION = "occlusion"
    AIR_IN_LINE = "air_in_line"
    DOOR_OPEN = "door_open"
    LOW_BATTERY = "low_battery"
    RESERVOIR_EMPTY = "reservoir_empty"
    PROGRAM_ERROR = "program_error"
    POWER_LOSS = "power_loss"
    HANG = "hang"
    GARBAGE = "garbage"
    CORRUPT = "corrupt"
    DUPLICATE = "duplicate"
    SLOW = "slow"
    FROZEN_TOTALIZER = "frozen_totalizer"
    TOTALIZER_JUMP = "totalizer_jump"
    WATCHDOG_NOT_HELD = "watchdog_not_held"
    STOP_REFUSED = "stop_refused"
    RATE_ECHO_WRONG = "rate_echo_wrong"
    UPTIME_FROZEN = "uptime_frozen"


#: The lying-pump faults: what the pump reports or obeys differs from what it does.
LYING_FAULTS: frozenset[FaultKind] = frozenset(
    {
        FaultKind.FROZEN_TOTALIZER,
        FaultKind.TOTALIZER_JUMP,
        FaultKind.WATCHDOG_NOT_HELD,
        FaultKind.STOP_REFUSED,
        FaultKind.RATE_ECHO_WRONG,
        FaultKind.UPTIME_FROZEN,
    }
)


class FaultAction(StrEnum):
    """Whether an entry starts (``inject``) or ends (``clear``) its fault."""

    INJECT = "inject"
    CLEAR = "clear"


#: Kinds that have no ``clear`` action.
_INJECT_ONLY: frozenset[FaultKind] = frozenset({FaultKind.PROGRAM_ERROR, FaultKind.POWER_LOSS})

#: Kinds whose ``inject`` needs a ``value``, with its allowed closed range.
_VALUE_RANGE: dict[FaultKind, tuple[float, float]] = {
    FaultKind.GARBAGE: (0.0, 1.0),
    FaultKind.CORRUPT: (0.0, 1.0),
    FaultKind.DUPLICATE: (0.0, 1.0),
    FaultKind.SLOW: (0.0, MAX_REPLY_DELAY_S),
    FaultKind.TOTALIZER_JUMP: (-MAX_TOTALIZER_JUMP_ML, MAX_TOTALIZER_JUMP_ML),
    FaultKind.RATE_ECHO_WRONG: (-MAX_RATE_ECHO_OFFSET_ML_PER_H, MAX_RATE_ECHO_OFFSET_ML_PER_H),
}


class FaultEntry(BaseModel):
    """One timed fault: ``fault`` gets ``action`` at ``at_s`` simulated s after model start."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    at_s: float = Field(ge=0.0, allow_inf_nan=False, strict=True)
    """When, in simulated seconds since the model was created (>= 0)."""
    fault: FaultKind
    action: FaultAction = FaultAction.INJECT
    value: float | None = Field(
        default=None, allow_inf_nan=False, strict=True, validate_default=True
    )
    """Probability (``garbage``, ``corrupt``, ``duplicate``), delay in seconds (``slow``), offset
    in mL (``totalizer_jump``) or mL/h (``rate_echo_wrong``); only on inject."""
    note: str = Field(default="", strict=True)
    """Free text for the reader of the script; ignored by the model."""

    @field_validator("action")
    @classmethod
    def _action_allowed(cls, action: FaultAction, info: ValidationInfo) -> FaultAction:
        fault = info.data.get("fault")
        if fault in _INJECT_ONLY and action is not FaultAction.INJECT:
            raise ValueError(f"{fault.value!r} allows only action 'inject', got {action.value!r}")
        return action

    @field_validator("value")
    @classmethod
    def _value_allowed(cls, value: float | None, info: ValidationInfo) -> float | None:
        fault = info.data.get("fault")
        action = info.data.get("action")
        if fault is None or action is None:
            return value  # the fault or action itself failed; that error is reported instead
        allowed = _VALUE_RANGE.get(fault)
        if allowed is None or action is FaultAction.CLEAR:
            if value is not None:
                what = f"{fault.value!r} {action.value}"
                raise ValueError(f"{what} takes no value, got {value!r}")
            return value
        low, high = allowed
        if value is None:
            raise ValueError(f"{fault.value!r} inject needs a value within {low:g}..{high:g}")
        if not low <= value <= high:
            raise ValueError(
                f"{fault.value!r} value must be within {low:g}..{high:g}, got {value!r}"
            )
        return value


class FaultScript(BaseModel):
    """A timed list of faults; entries need not be in time order (they are applied in time order,
    entries with the same ``at_s`` in the order written)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = Field(default="", strict=True)
    faults: list[FaultEntry]

    def in_time_order(self) -> list[tuple[int, FaultEntry]]:
        """``(index in faults, entry)`` sorted by ``at_s``; ties keep the order written."""
        return sorted(enumerate(self.faults), key=lambda pair: pair[1].at_s)


def _describe_validation_error(error: ValidationError, source: str) -> FaultScriptError:
    """One :class:`FaultScriptError` naming every bad entry and field, in pydantic's order."""
    parts: list[str] = []
    first_index: int | None = None
    first_field: str | None = None
    for n, item in enumerate(error.errors()):
        loc = item["loc"]
        index: int | None = None
        field: str | None = None
        where = ""
        for element in loc:
            if isinstance(element, int):
                index = element
                where += f"[{element}]"
            else:
                field = str(element)
                where += f".{element}" if where else str(element)
        message = str(item["msg"]).removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            allowed_fields = (
                FaultEntry.model_fields if index is not None else FaultScript.model_fields
            )
            message += f"; allowed fields: {', '.join(allowed_fields)}"
        elif item["type"] == "missing":
            pass
        elif item["type"] != "value_error":
            message += f" (got {item['input']!r})"
        parts.append(f"{where or 'script'}: {message}")
        if n == 0:
            first_index, first_field = index, field
    return FaultScriptError(
        f"bad fault script {source}: " + "; ".join(parts),
        entry_index=first_index,
        field=first_field,
    )


def parse_fault_script(data: Any, *, source: str = "<data>") -> FaultScript:
    """Validate already-parsed TOML/JSON data; raise :class:`FaultScriptError` if it is bad."""
    try:
        return FaultScript.model_validate(data)
    except ValidationError as error:
        raise _describe_validation_error(error, source) from error


def load_fault_script(path: str | os.PathLike[str]) -> FaultScript:
    """Read a fault script from a ``.toml`` or ``.json`` file.

    Raises :class:`FaultScriptError` if the file cannot be read, does not parse, or is invalid.
    """
    file = Path(path)
    suffix = file.suffix.lower()
    if suffix not in (".toml", ".json"):
        raise FaultScriptError(
            f"fault script {file}: unknown file type {suffix!r}; use .toml or .json"
        )
    try:
        raw = file.read_bytes()
    except OSError as error:
        raise FaultScriptError(f"fault script {file}: cannot read: {error}") from error
    try:
        if suffix == ".toml":
            data: Any = tomllib.loads(raw.decode("utf-8"))
        else:
            data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, json.JSONDecodeError) as error:
        raise FaultScriptError(f"fault script {file}: does not parse: {error}") from error
    return parse_fault_script(data, source=str(file))


def _no_sync() -> None:
    pass


def _checked_probability(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise OutOfRangeError(f"{name} must be a number within 0..1, got {value!r}")
    if not 0.0 <= value <= 1.0:  # also refuses NaN
        raise OutOfRangeError(f"{name} must be within 0..1, got {value!r}")
    return float(value)


class LineFaults:
    """Faults on the line between the pump and its host, consulted by the wire transports.

    - ``hang``: the line is dead both ways: the transport sends nothing and discards what it
      receives without passing it to the model (so nothing feeds the pump's watchdog).
    - ``reply_delay_s``: the transport waits this many *simulated* seconds before each reply.
    - ``garbage_probability`` / ``corrupt_probability``: chances per reply that :meth:`mangle`
      prepends random bytes / flips bits in one byte of the reply.
    - ``duplicate_probability``: chance per reply that :meth:`mangle` sends it twice, back to
      back (a repeater or converter that echoes a frame): the host must not take the copy for the
      reply to its next request.

    The transports that pass their replies through :meth:`mangle` (NE-1000 on a pty or TCP,
    Modbus RTU) honour the last three; Modbus TCP ignores them (TCP keeps a payload intact and
    its transaction ids tell copies apart).

    Values are validated on assignment (:class:`~simulator.errors.OutOfRangeError`).  Thread-safe:
    it shares the model's lock and seeded RNG, so the same seed and the same sequence of replies
    give the same bytes.  Every access first calls ``sync`` (the model's advance), so a fault
    script's line faults are in force from their exact time and a direct assignment comes after
    any script entry already due.
    """

    def __init__(
        self,
        lock: threading.RLock,
        rng: random.Random,
        sync: Callable[[], None] | None = None,
    ) -> None:
        self._lock = lock
        self._rng = rng
        self._sync = sync if sync is not None else _no_sync
        self._hang = False
        self._reply_delay_s = 0.0
        self._garbage_probability = 0.0
        self._corrupt_probability = 0.0
        self._duplicate_probability = 0.0

    @property
    def hang(self) -> bool:
        """True: the transport must not answer at all."""
        with self._lock:
            self._sync()
            return self._hang

    @hang.setter
    def hang(self, value: bool) -> None:
        if not isinstance(value, bool):
            raise OutOfRangeError(f"hang must be True or False, got {value!r}")
        with self._lock:
            self._sync()
            self._hang = value

    @property
    def reply_delay_s(self) -> float:
        """Delay before each reply, simulated seconds, 0..:data:`MAX_REPLY_DELAY_S`."""
        with self._lock:
            self._sync()
            return self._reply_delay_s

    @reply_delay_s.setter
    def reply_delay_s(self, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise OutOfRangeError(f"reply_delay_s must be a number of seconds, got {value!r}")
        if not 0.0 <= value <= MAX_REPLY_DELAY_S:
            raise OutOfRangeError(
                f"reply_delay_s must be within 0..{MAX_REPLY_DELAY_S:g} s, got {value!r}"
            )
        with self._lock:
            self._sync()
            self._reply_delay_s = float(value)

    @property
    def garbage_probability(self) -> float:
        """Chance (0..1) that a reply is preceded by 1..:data:`MAX_GARBAGE_BYTES` random bytes."""
        with self._lock:
            self._sync()
            return self._garbage_probability

    @garbage_probability.setter
    def garbage_probability(self, value: float) -> None:
        checked = _checked_probability("garbage_probability", value)
        with self._lock:
            self._sync()
            self._garbage_probability = checked

    @property
    def corrupt_probability(self) -> float:
        """Chance (0..1) that one byte of a reply has bits flipped."""
        with self._lock:
            self._sync()
            return self._corrupt_probability

    @corrupt_probability.setter
    def corrupt_probability(self, value: float) -> None:
        checked = _checked_probability("corrupt_probability", value)
        with self._lock:
            self._sync()
            self._corrupt_probability = checked

    @property
    def duplicate_probability(self) -> float:
        """Chance (0..1) that a reply is sent twice."""
        with self._lock:
            self._sync()
            return self._duplicate_probability

    @duplicate_probability.setter
    def duplicate_probability(self, value: float) -> None:
        checked = _checked_probability("duplicate_probability", value)
        with self._lock:
            self._sync()
            self._duplicate_probability = checked

    @property
    def clean(self) -> bool:
        """True while the line has no fault at all (what :meth:`reset` leaves): a transport
        then sends each reply at once and as it is, with one look at the line."""
        with self._lock:
            self._sync()
            return not (
                self._hang
                or self._reply_delay_s
                or self._garbage_probability
                or self._corrupt_probability
                or self._duplicate_probability
            )

    def reset(self) -> None:
        """A clean line: no hang, no delay, no garbage, no corruption, no copies."""
        with self._lock:
            self._sync()
            self._hang = False
            self._reply_delay_s = 0.0
            self._garbage_probability = 0.0
            self._corrupt_probability = 0.0
            self._duplicate_probability = 0.0

    def mangle(self, reply: bytes) -> bytes:
        """``reply`` as it arrives at the host: maybe garbage first, maybe one byte corrupted,
        maybe (garbage, reply and all) twice.

        Garbage is 1..:data:`MAX_GARBAGE_BYTES` bytes of any value (STX/ETX included: framers must
        resynchronise).  Corruption XORs one byte of the reply proper with a non-zero mask, so the
        reply always differs.  With all three probabilities 0 the reply is returned unchanged and
        the RNG is not used.  Deterministic for a given seed and sequence of calls.
        """
        with self._lock:
            self._sync()
            garbage = b""
            body = bytearray(reply)
            if self._garbage_probability > 0.0 and self._rng.random() < self._garbage_probability:
                garbage = self._rng.randbytes(self._rng.randint(1, MAX_GARBAGE_BYTES))
            if (
                body
                and self._corrupt_probability > 0.0
                and self._rng.random() < self._corrupt_probability
            ):
                body[self._rng.randrange(len(body))] ^= self._rng.randint(1, 255)
            sent = garbage + bytes(body)
            if (
                self._duplicate_probability > 0.0
                and self._rng.random() < self._duplicate_probability
            ):
                return sent + sent
            return sent


def reply_delay_real_s(line: LineFaults, clock: Clock) -> float:
    """How long (real seconds) a transport holds each reply back: the line's simulated
    ``reply_delay_s`` at the clock's time scale (a clock that only moves when told to, scale 0:
    as many real seconds)."""
    delay_s = line.reply_delay_s
    if delay_s <= 0:
        return 0.0
    scale = clock.time_scale
    return delay_s / scale if scale > 0 else delay_s
