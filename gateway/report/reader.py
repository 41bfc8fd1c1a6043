"""The journal, read-only: what the course report is drawn from, and nothing else.

The daemon's :class:`gateway.journal.Journal` takes an exclusive ``flock`` on the state
directory for its whole life, so the report never opens one: it opens the SQLite file itself with
``mode=ro`` (and ``PRAGMA query_only``), which works beside a running daemon (WAL mode lets a
reader see the last committed transaction without blocking the writer) and after it stopped.
SQLite may create the empty ``-wal``/``-shm`` companions a WAL reader needs; it never writes the
journal itself.

Both tables are read in one read transaction, so the days and the events agree with each other
even while the daemon commits.  The queries mirror :meth:`Journal.events` and
:meth:`Journal.days` and return the same row types (:class:`JournalEvent`, :class:`DayRecord`);
``tests/gateway/test_report_reader.py`` checks that they read back exactly what a
:class:`Journal` wrote.

A journal that is missing, damaged or of another schema version is refused with one line naming
the file (exit code 1: the flags were fine, the file is not).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import GatewayError, InputError
from gateway.journal import (
    JOURNAL_FILENAME,
    SCHEMA_VERSION,
    DayRecord,
    JournalCorruptError,
    JournalError,
    JournalEvent,
    _as_journal_error,
    _check_integrity,
)


class ReportError(GatewayError):
    """Root of the course report's errors."""

    exit_code = 1


class JournalUnreadableError(ReportError):
    """The journal cannot be read (an SQLite error other than damage); names the file."""


class JournalMissingError(JournalUnreadableError):
    """The state directory holds no journal."""


class JournalDamagedError(JournalUnreadableError):
    """The journal fails its integrity check, is not an SQLite file, or holds unreadable JSON.

    Keep the file for the investigation (docs/operations.md, "The journal").
    """


class JournalSchemaError(JournalUnreadableError):
    """The journal is of another schema version (or lacks the tables this report reads)."""


@dataclass(frozen=True)
class JournalRows:
    """One consistent read of a journal: its events in order and each channel's days."""

    path: Path
    #: Every channel of the journal, sorted (also those the read left out).
    channels: tuple[str, ...]
    #: The events read (all, or one channel's), in journal order.
    events: tuple[JournalEvent, ...]
    days: dict[str, tuple[DayRecord, ...]]


def journal_path(state_dir: Path | str) -> Path:
    """The journal file of ``state_dir``; InputError (exit 2) if it is not a directory."""
    directory = Path(state_dir)
    if not directory.is_dir():
        raise InputError("--state-dir", "an existing gateway state directory", str(state_dir))
    return directory / JOURNAL_FILENAME


def read_journal(state_dir: Path | str, channel: str | None = None) -> JournalRows:
    """Every event and day of ``state_dir``'s journal (or of one ``channel``), read-only."""
    path = journal_path(state_dir)
    if not path.is_file():
        raise JournalMissingError(
            f"{path}: no journal here: is {state_dir} a gateway's state directory?"
        )
    with _read_only(path) as db:
        _check(db, path)
        try:
            db.execute("BEGIN")  # one snapshot for every table
            channels = tuple(
                str(r[0])
                for r in db.execute(
                    "SELECT channel FROM events UNION SELECT channel FROM days ORDER BY channel"
                )
            )
            events = _events(db, channel)
            days = _days(db, channel)
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise _unreadable(path, "cannot read", exc) from exc
        except ValueError as exc:  # a stored JSON document that does not parse
            raise JournalDamagedError(
                f"{path}: cannot read: {exc}; keep the file for the investigation"
            ) from exc
    return JournalRows(path, channels, events, days)


@contextlib.contextmanager
def _read_only(path: Path) -> Iterator[sqlite3.Connection]:
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
        db.execute("PRAGMA query_only=ON")
    except sqlite3.Error as exc:
        raise _unreadable(path, "cannot open", exc) from exc
    try:
        yield db
    finally:
        db.close()


def _check(db: sqlite3.Connection, path: Path) -> None:
    """Integrity (``quick_check``, as the daemon checks it), then the schema version and tables."""
    try:
        _check_integrity(db, path)
    except JournalError as exc:
        raise _for_report(exc) from exc
    try:
        row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        found = None if row is None else str(row[0])
        if found == str(SCHEMA_VERSION):
            # The columns read below, so a journal without them is refused here, in one line.
            db.execute("SELECT id, channel, wall_s, monotonic_s, kind, payload FROM events LIMIT 0")
            db.execute(
                "SELECT channel, day, window_start_wall_s, prescribed_ml, delivered_ml, closed,"
                " detail FROM days LIMIT 0"
            )
    except sqlite3.Error as exc:
        error = _unreadable(path, "cannot read", exc)
        if isinstance(error, JournalDamagedError):
            raise error from exc
        raise JournalSchemaError(
            f"{path}: not a gateway journal of schema version {SCHEMA_VERSION} "
            f"({' '.join(str(exc).split())})"
        ) from exc
    if found != str(SCHEMA_VERSION):
        raise JournalSchemaError(
            f"{path}: schema version {found}, this report reads {SCHEMA_VERSION}"
        )


def _events(db: sqlite3.Connection, channel: str | None) -> tuple[JournalEvent, ...]:
    query = "SELECT id, channel, wall_s, monotonic_s, kind, payload FROM events"
    args: tuple[str, ...] = ()
    if channel is not None:
        query += " WHERE channel = ?"
        args = (channel,)
    return tuple(
        JournalEvent(int(r[0]), str(r[1]), float(r[2]), float(r[3]), str(r[4]), json.loads(r[5]))
        for r in db.execute(query + " ORDER BY id", args)
    )


def _days(db: sqlite3.Connection, channel: str | None) -> dict[str, tuple[DayRecord, ...]]:
    query = (
        "SELECT channel, day, window_start_wall_s, prescribed_ml, delivered_ml, closed, detail"
        " FROM days"
    )
    args: tuple[str, ...] = ()
    if channel is not None:
        query += " WHERE channel = ?"
        args = (channel,)
    found: dict[str, list[DayRecord]] = {}
    for r in db.execute(query + " ORDER BY channel, day", args):
        found.setdefault(str(r[0]), []).append(
            DayRecord(
                int(r[1]), float(r[2]), float(r[3]), float(r[4]), bool(r[5]), json.loads(r[6])
            )
        )
    return {name: tuple(days) for name, days in found.items()}


def _unreadable(path: Path, doing: str, exc: sqlite3.Error) -> JournalUnreadableError:
    """``exc`` in the daemon's words (gateway/journal.py), as the report's error type."""
    return _for_report(_as_journal_error(path, doing, exc))


def _for_report(error: JournalError) -> JournalUnreadableError:
    """The daemon's journal error as the report's: same message, the report's exit code."""
    if isinstance(error, JournalCorruptError):
        return JournalDamagedError(str(error))
    return JournalUnreadableError(str(error))
