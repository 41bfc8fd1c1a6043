"""The wire-recording format: every byte a driver sent to and received from a pump, as text.

Written by :mod:`drivers.recording` (the ``record=`` pump URL option), read by
:mod:`simulator.replay`; both sides meet here because ``drivers`` and ``simulator`` may not import
each other (docs/design.md).  Pure: it turns lines into models and back and does no I/O.

**Format** (``FORMAT_NAME``, version :data:`FORMAT_VERSION`; docs/record-replay.md), UTF-8 JSON
lines, each ending in ``\\n``:

* line 1, the header: ``{"format": "infusion-gateway/wire-recording", "version": 1,
  "protocol": "newera", "url": "newera:///dev/ttyUSB0", "gateway_version": "0.1.0",
  "started_at": "2025-01-01T08:00:00.000000Z"}``.  ``protocol`` is the pump URL scheme, which
  says how the bytes are framed (``newera``, ``newera+tcp``, ``modbus+tcp``, ``modbus+rtu``);
* every further line, one read or write on the link: ``{"t": 0.012345, "dir": "tx",
  "hex": "0208..."}``: ``t`` seconds since the recording started (monotonic, never going
  backwards, microseconds), ``dir`` ``tx`` (gateway to pump) or ``rx`` (pump to gateway),
  ``hex`` the bytes in lower-case hex (at least one byte).

A recording whose last line has no ``\\n`` was cut off while being written (a crash or a full
disk): it is refused as truncated rather than replayed short.  Every refusal is one
:class:`RecordingFormatError` naming the line and the field.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Final, Literal, TypeVar, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from protocol.errors import DecodeError

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "RECORDED_PROTOCOLS",
    "Direction",
    "Exchange",
    "Recording",
    "RecordingFormatError",
    "RecordingHeader",
    "WireRecord",
    "decode_recording",
    "encode_header",
    "encode_record",
    "exchanges",
]

FORMAT_NAME: Final = "infusion-gateway/wire-recording"
FORMAT_VERSION: Final = 1
#: The pump URL schemes a recording may come from (``drivers.url.SCHEMES``; a test keeps them
#: equal, as ``protocol`` may not import ``drivers``).
RecordedProtocol = Literal["newera", "newera+tcp", "modbus+rtu", "modbus+tcp"]
RECORDED_PROTOCOLS: Final = get_args(RecordedProtocol)

Direction = Literal["tx", "rx"]
ModelT = TypeVar("ModelT", bound=BaseModel)
_HEX: Final = re.compile(r"(?:[0-9a-f]{2})+")
_STRICT: Final = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class RecordingFormatError(DecodeError):
    """A recording that cannot be replayed: ``line`` (1-based) and ``field`` (None when the
    whole line is wrong) name where; the message says what is allowed."""

    def __init__(self, message: str, *, line: int, field: str | None = None) -> None:
        super().__init__(message)
        self.line = line
        self.field = field


class RecordingHeader(BaseModel):
    """Line 1 of a recording: what was recorded, from where, by which gateway."""

    model_config = _STRICT

    format: str
    version: int
    protocol: RecordedProtocol
    #: The pump URL as it may be logged (``PumpUrl.redacted()``), without the ``record`` option.
    url: str = Field(min_length=1, max_length=4096)
    gateway_version: str = Field(min_length=1, max_length=64)
    #: Wall-clock start of the recording, ISO 8601 UTC: to find it in the gateway's logs.
    started_at: str = Field(min_length=1, max_length=64)

    @classmethod
    def new(
        cls, *, protocol: RecordedProtocol, url: str, gateway_version: str, started_at: str
    ) -> RecordingHeader:
        """A header of this format and version."""
        return cls(
            format=FORMAT_NAME,
            version=FORMAT_VERSION,
            protocol=protocol,
            url=url,
            gateway_version=gateway_version,
            started_at=started_at,
        )

    @field_validator("format")
    @classmethod
    def _our_format(cls, value: str) -> str:
        if value != FORMAT_NAME:
            raise ValueError(f"must be {FORMAT_NAME!r} (not a wire recording of this gateway)")
        return value

    @field_validator("version")
    @classmethod
    def _known_version(cls, value: int) -> int:
        if value != FORMAT_VERSION:
            raise ValueError(f"must be {FORMAT_VERSION} (the version this gateway reads)")
        return value


class WireRecord(BaseModel):
    """One read or write on the link."""

    model_config = _STRICT

    #: Seconds since the recording started (monotonic; microsecond resolution when written).
    t: float = Field(ge=0)
    dir: Direction
    #: The bytes, lower-case hex.
    hex: str

    @field_validator("hex")
    @classmethod
    def _hex_bytes(cls, value: str) -> str:
        if not _HEX.fullmatch(value):
            raise ValueError("must be lower-case hex, two digits a byte, at least one byte")
        return value

    @classmethod
    def of(cls, t: float, direction: Direction, data: bytes) -> WireRecord:
        return cls(t=t, dir=direction, hex=data.hex())

    @property
    def data(self) -> bytes:
        return bytes.fromhex(self.hex)


@dataclass(frozen=True)
class Recording:
    """A decoded recording; ``records[i]`` is on line ``i + 2``."""

    header: RecordingHeader
    records: tuple[WireRecord, ...]


@dataclass(frozen=True)
class Exchange:
    """One request and everything the pump sent after it, until the next request.

    ``line`` is the recording line of the request (for messages).  ``reply`` may be empty (the
    pump did not answer) or hold more than one answer (a late one, an unsolicited alarm).
    """

    request: bytes
    reply: bytes
    line: int


def encode_header(header: RecordingHeader) -> str:
    """The header as its line (with ``\\n``)."""
    return json.dumps(header.model_dump(), separators=(",", ":")) + "\n"


def encode_record(record: WireRecord) -> str:
    """One record as its line (with ``\\n``)."""
    return json.dumps(record.model_dump(), separators=(",", ":")) + "\n"


def decode_recording(text: str) -> Recording:
    """Decode a whole recording; raise :class:`RecordingFormatError` for the first bad line."""
    if not text:
        raise RecordingFormatError("recording line 1: empty (no header)", line=1)
    lines = text.split("\n")
    if lines[-1]:
        raise RecordingFormatError(
            f"recording line {len(lines)}: truncated (no newline at the end: the recording was "
            "cut off while being written)",
            line=len(lines),
        )
    header = _decode_line(RecordingHeader, lines[0], 1)
    records: list[WireRecord] = []
    previous_t = 0.0
    for number, line in enumerate(lines[1:-1], start=2):
        record = _decode_line(WireRecord, line, number)
        if record.t < previous_t:
            raise RecordingFormatError(
                f"recording line {number}, field 't': must not go backwards "
                f"(got {record.t!r} after {previous_t!r})",
                line=number,
                field="t",
            )
        previous_t = record.t
        records.append(record)
    return Recording(header, tuple(records))


def _decode_line(model: type[ModelT], line: str, number: int) -> ModelT:
    where = f"recording line {number}"
    try:
        value = json.loads(line)
    except ValueError as exc:
        raise RecordingFormatError(f"{where}: not JSON ({exc})", line=number) from None
    if not isinstance(value, dict):
        raise RecordingFormatError(f"{where}: must be a JSON object", line=number)
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else None
        given = value.get(field, "missing") if field else value
        text = repr(given) if len(repr(given)) <= 40 else repr(given)[:37] + "..."
        reason = str(error["msg"]).removeprefix("Value error, ")
        message = f"{where}, field {field!r}: {reason} (got {text})"
        raise RecordingFormatError(message, line=number, field=field) from None


def exchanges(recording: Recording) -> tuple[bytes, tuple[Exchange, ...]]:
    """``(greeting, exchanges)``: what the pump sent before the first request, then each
    request (one write) with what it sent after it until the next write."""
    greeting = bytearray()
    found: list[tuple[bytes, bytearray, int]] = []
    for index, record in enumerate(recording.records):
        if record.dir == "tx":
            found.append((record.data, bytearray(), index + 2))
        elif found:
            found[-1][1].extend(record.data)
        else:
            greeting.extend(record.data)
    return bytes(greeting), tuple(Exchange(req, bytes(reply), line) for req, reply, line in found)
