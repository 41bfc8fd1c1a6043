"""Recording the wire: the ``record=FILE`` pump URL option writes every byte of a session.

``newera:///dev/ttyUSB0?record=/var/lib/infusion-gateway/bed-4.jsonl`` (or
``infusion-gateway pump status --url URL --record FILE``) writes each read and write on the link,
its direction and when, in the format of :mod:`protocol.recording`; ``infusion-gateway replay``
serves such a file as a pump that answers as the recorded one did (docs/record-replay.md).

**Where the bytes are taken.**  A :class:`WireTap` wraps the transport object itself, right after
the backend opens it: the pyserial port of an NE-1000 (serial or ``socket://``), and the
``socket`` attribute of a pymodbus sync client (its pyserial port on RTU, its TCP socket).  Every
``read``/``recv`` is recorded as ``rx`` and every ``write``/``send`` as ``tx``, so the file holds
what really crossed the wire, the driver's own input draining included.  The library hooks were
considered first: pyserial's ``spy://`` handler wraps only native serial ports (not
``socket://``) and writes a hexdump for people, not a versioned format; pymodbus 3.16's
``trace_packet`` sees its receive buffer again each time a chunk is added (so bytes would be
recorded twice) and never sees what the serial client discards before a send or what the driver
drains after a failed request.

**A recording never slows or breaks control.**  The driver's thread only stamps the bytes with
the clock and puts them on a bounded queue; a writer thread encodes and writes them (each line
flushed, no fsync).  If the file cannot be created or written, or the queue is full, that is
logged once (``recording_failed``) and recording stops for this driver; no error ever reaches a
command.  An existing file is never overwritten (a field recording is evidence): the recording
is then not made (logged once), and control goes on.  The file is open while the link is up;
after a reconnect the same driver appends to its own file.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import IO, Any, Final, cast

import structlog
from pydantic import BaseModel, Field, field_validator

from drivers.url import PumpUrl
from protocol.recording import (
    Direction,
    RecordedProtocol,
    RecordingHeader,
    WireRecord,
    encode_header,
    encode_record,
)

__all__ = ["RECORD_PATH_MAX_CHARS", "RecordingOption", "WireTap"]

log = structlog.get_logger("drivers.recording")

#: The longest ``record`` path accepted.
RECORD_PATH_MAX_CHARS: Final = 4096
#: Reads and writes the writer thread may fall behind by before recording gives up.
QUEUE_LIMIT: Final = 100_000
#: How long closing the link waits for the writer to finish, real seconds (twice at most).
DETACH_WAIT_S: Final = 2.0
#: Timestamps are written to the microsecond.
_T_DIGITS: Final = 6

_Item = tuple[float, Direction, bytes] | None  # None: stop


class RecordingOption(BaseModel):
    """The ``record`` option, mixed into each backend's options model."""

    #: Write every byte of the session to this file (it must not exist yet); off when absent.
    record: str | None = Field(default=None, min_length=1, max_length=RECORD_PATH_MAX_CHARS)

    @field_validator("record")
    @classmethod
    def _a_path(cls, value: str | None) -> str | None:
        if value is not None and ("\0" in value or value.endswith("/")):
            raise ValueError("must be a file path (no NUL byte, not a directory)")
        return value


def _open_new(path: str) -> IO[str]:
    """Create ``path`` for writing; FileExistsError if it exists (never overwrite)."""
    return open(path, "x", encoding="utf-8")


def _open_again(path: str) -> IO[str]:
    """Append to this tap's own file after a reconnect."""
    return open(path, "a", encoding="utf-8")


class WireTap:
    """Records one driver's link to ``path``; :meth:`attach` when the link opens, :meth:`detach`
    when it closes.  ``clock`` gives the timestamps (seconds; default ``time.monotonic``)."""

    def __init__(
        self, path: str, *, url: PumpUrl, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.path = path
        self._url = url
        self._clock = clock
        self._started_at: float | None = None
        self._failed = False
        self._queue: queue.Queue[_Item] = queue.Queue(QUEUE_LIMIT)
        self._writer: threading.Thread | None = None

    @property
    def failed(self) -> bool:
        """Recording stopped after a failure (logged once)."""
        return self._failed

    def attach(self, transport: Any) -> Any:
        """Start (or resume, after a reconnect) recording and return ``transport`` wrapped so
        that its bytes are recorded.  Never raises, never touches the disk itself."""
        if self._failed:
            return transport
        if self._writer is None:
            first = self._started_at is None
            if first:
                self._started_at = self._clock()
            self._writer = threading.Thread(
                target=self._write_all, args=(first,), name="wire-recording", daemon=True
            )
            self._writer.start()
        return _TappedTransport(transport, self)

    def detach(self) -> None:
        """Write out what is queued and close the file (the link closed).  Never raises; waits
        at most about 2 x :data:`DETACH_WAIT_S` for a stalled disk, then gives up recording."""
        writer, self._writer = self._writer, None
        if writer is None:
            return
        try:
            self._queue.put(None, timeout=DETACH_WAIT_S)
        except queue.Full:
            self._fail("the writer fell behind (is the disk slow or stalled?)")
        writer.join(timeout=DETACH_WAIT_S)
        if writer.is_alive():
            self._fail("the writer is stalled (is the disk slow or stalled?)")

    def record(self, direction: Direction, data: bytes) -> None:
        """Note ``data`` as having gone ``direction`` now.  Cheap, never raises, never blocks."""
        if self._failed or not data or self._started_at is None:
            return
        try:
            self._queue.put_nowait((self._clock() - self._started_at, direction, bytes(data)))
        except queue.Full:
            self._fail("the writer fell behind (is the disk slow or stalled?)")

    def _write_all(self, first: bool) -> None:
        """The writer thread: open the file (a new one the first time), write the header, then
        one line per item until told to stop; close the file."""
        try:
            file = _open_new(self.path) if first else _open_again(self.path)
        except FileExistsError:
            self._fail("the file exists already (a recording is never overwritten)")
            return
        except OSError as exc:
            self._fail(f"cannot create the file ({exc.strerror or exc})")
            return
        try:
            if first:
                header = RecordingHeader.new(
                    protocol=cast(RecordedProtocol, self._url.scheme),
                    url=_without_record(self._url),
                    gateway_version=_gateway_version(),
                    started_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                )
                if self._write(file, encode_header(header)):
                    log.info("recording_started", path=self.path, url=self._url.redacted())
            while (item := self._queue.get()) is not None:
                if not self._failed:
                    t, direction, data = item
                    record = WireRecord.of(round(t, _T_DIGITS), direction, data)
                    self._write(file, encode_record(record))
        finally:
            with contextlib.suppress(OSError, ValueError):
                file.close()

    def _write(self, file: IO[str], line: str) -> bool:
        try:
            file.write(line)
            file.flush()
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            self._fail(f"cannot write the file ({reason})")
            return False
        return True

    def _fail(self, reason: str) -> None:
        if self._failed:
            return
        self._failed = True
        log.error(
            "recording_failed",
            path=self.path,
            url=self._url.redacted(),
            reason=reason,
            effect="recording stopped; pump control goes on",
        )


class _TappedTransport:
    """A pyserial port or a socket whose reads and writes are recorded; everything else (and
    every attribute set, e.g. a port's ``timeout``) goes to the wrapped object."""

    def __init__(self, inner: Any, tap: WireTap) -> None:
        object.__setattr__(self, "_inner", inner)
        object.__setattr__(self, "_tap", tap)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._inner, name, value)

    # pyserial
    def read(self, size: int = 1) -> bytes:
        data: bytes = self._inner.read(size)
        self._tap.record("rx", data)
        return data

    def write(self, data: bytes) -> int | None:
        written: int | None = self._inner.write(data)
        self._tap.record("tx", bytes(data)[:written] if written is not None else bytes(data))
        return written

    # socket
    def recv(self, size: int, *flags: int) -> bytes:
        data: bytes = self._inner.recv(size, *flags)
        if not (flags and flags[0] & socket.MSG_PEEK):  # a peek is read again later
            self._tap.record("rx", data)
        return data

    def send(self, data: bytes, *flags: int) -> int:
        sent: int = self._inner.send(data, *flags)
        self._tap.record("tx", bytes(data)[:sent])
        return sent

    def sendall(self, data: bytes, *flags: int) -> None:
        self._inner.sendall(data, *flags)
        self._tap.record("tx", bytes(data))


def _without_record(url: PumpUrl) -> str:
    """The URL as it may be logged, minus the ``record`` option (the file names itself)."""
    text = url.redacted()
    base, _, query = text.partition("?")
    kept = [part for part in query.split("&") if part and not part.startswith("record=")]
    return base + ("?" + "&".join(kept) if kept else "")


def _gateway_version() -> str:
    try:
        return importlib.metadata.version("infusion-gateway")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def tap_for(url: PumpUrl, record: str | None) -> WireTap | None:
    """The tap a backend keeps for its ``record`` option (None: not recording)."""
    return None if record is None else WireTap(os.fspath(record), url=url)
