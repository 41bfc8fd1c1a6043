"""The journal: every order, titer, command, readback, alarm and acknowledgement, in SQLite.

Safety invariant 6 (crash-safe state): the gateway writes what it is about to do *before* it
does it.  The database runs in WAL mode with ``synchronous=FULL``, so a committed entry survives
``kill -9`` and power loss.  Each channel's durable state (course start, day, delivered volume,
last totalizer reading, alarms) is one JSON document updated in the same transaction as the
event that changed it, so the two never disagree.

Times: ``wall_s`` is the (possibly simulated) wall clock, for day windows and display;
``monotonic_s`` is the clock of the process that wrote the entry.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.errors import GatewayError
from gateway.planner import shortfall_ml

SCHEMA_VERSION = 1
JOURNAL_FILENAME = "journal.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    channel TEXT NOT NULL,
    wall_s REAL NOT NULL,
    monotonic_s REAL NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_channel ON events (channel, id);
CREATE TABLE IF NOT EXISTS channel_state (
    channel TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    wall_s REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS days (
    channel TEXT NOT NULL,
    day INTEGER NOT NULL,
    window_start_wall_s REAL NOT NULL,
    prescribed_ml REAL NOT NULL,
    delivered_ml REAL NOT NULL,
    closed INTEGER NOT NULL DEFAULT 0,
    detail TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (channel, day)
);
"""


class JournalError(GatewayError):
    """The journal cannot be opened or written.  The gateway stops acting: it cannot record."""


@dataclass(frozen=True)
class JournalEvent:
    """One journal entry."""

    id: int
    channel: str
    wall_s: float
    monotonic_s: float
    kind: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class DayRecord:
    """One day window of a channel's course."""

    day: int
    window_start_wall_s: float
    prescribed_ml: float
    delivered_ml: float
    closed: bool
    detail: dict[str, Any]

    @property
    def shortfall_ml(self) -> float:
        return shortfall_ml(self.prescribed_ml, self.delivered_ml)


class Journal:
    """A state directory's journal.  Thread-safe; every write is one durable transaction."""

    def __init__(self, state_dir: Path | str) -> None:
        self.state_dir = Path(state_dir)
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            self.path = self.state_dir / JOURNAL_FILENAME
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise JournalError(
                f"state_dir {str(state_dir)!r}: cannot open the journal: {exc}"
            ) from exc
        self._lock = threading.RLock()
        version = self.get_meta("schema_version")
        if version is None:
            self.set_meta("schema_version", str(SCHEMA_VERSION))
        elif version != str(SCHEMA_VERSION):
            raise JournalError(
                f"{self.path}: schema version {version}, this gateway reads {SCHEMA_VERSION}"
            )

    def close(self) -> None:
        """Close the database.  Safe to call twice."""
        with self._lock, contextlib.suppress(sqlite3.Error):
            self._db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing ---------------------------------------------------------------------------

    def _transaction(self) -> _Transaction:
        return _Transaction(self)

    def record(
        self,
        channel: str,
        kind: str,
        payload: Mapping[str, Any],
        *,
        wall_s: float,
        monotonic_s: float,
        state: Mapping[str, Any] | None = None,
    ) -> int:
        """Append one event (and, in the same transaction, the channel's new durable state)."""
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO events (channel, wall_s, monotonic_s, kind, payload)"
                " VALUES (?, ?, ?, ?, ?)",
                (channel, wall_s, monotonic_s, kind, json.dumps(dict(payload), sort_keys=True)),
            )
            if state is not None:
                db.execute(
                    "INSERT INTO channel_state (channel, state, wall_s) VALUES (?, ?, ?)"
                    " ON CONFLICT(channel) DO UPDATE SET state = excluded.state,"
                    " wall_s = excluded.wall_s",
                    (channel, json.dumps(dict(state), sort_keys=True), wall_s),
                )
            event_id = cursor.lastrowid
        assert event_id is not None
        return event_id

    def commit(
        self,
        channel: str,
        events: Sequence[tuple[str, Mapping[str, Any]]],
        *,
        state: Mapping[str, Any],
        days: Sequence[DayRecord],
        wall_s: float,
        monotonic_s: float,
    ) -> None:
        """One decision: its events, the channel's new state and changed days, in one
        transaction.  Either all of it is durable or none of it."""
        with self._transaction() as db:
            db.executemany(
                "INSERT INTO events (channel, wall_s, monotonic_s, kind, payload)"
                " VALUES (?, ?, ?, ?, ?)",
                [
                    (channel, wall_s, monotonic_s, kind, json.dumps(dict(p), sort_keys=True))
                    for kind, p in events
                ],
            )
            db.execute(
                "INSERT INTO channel_state (channel, state, wall_s) VALUES (?, ?, ?)"
                " ON CONFLICT(channel) DO UPDATE SET state = excluded.state,"
                " wall_s = excluded.wall_s",
                (channel, json.dumps(dict(state), sort_keys=True), wall_s),
            )
            for day in days:
                _upsert_day(db, channel, day)

    def upsert_day(
        self,
        channel: str,
        day: int,
        *,
        window_start_wall_s: float,
        prescribed_ml: float,
        delivered_ml: float,
        closed: bool = False,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        """Create or update a day window's record."""
        record = DayRecord(
            day, window_start_wall_s, prescribed_ml, delivered_ml, closed, dict(detail or {})
        )
        with self._transaction() as db:
            _upsert_day(db, channel, record)

    def set_meta(self, key: str, value: str) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?)"
                " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    # -- reading ---------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def channel_state(self, channel: str) -> str | None:
        """The channel's last durable state (JSON text), or None for a channel never journalled."""
        try:
            with self._lock:
                row = self._db.execute(
                    "SELECT state FROM channel_state WHERE channel = ?", (channel,)
                ).fetchone()
        except sqlite3.Error as exc:
            raise JournalError(f"{self.path}: cannot read channel state: {exc}") from exc
        return None if row is None else str(row[0])

    def days(self, channel: str) -> list[DayRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT day, window_start_wall_s, prescribed_ml, delivered_ml, closed, detail"
                " FROM days WHERE channel = ? ORDER BY day",
                (channel,),
            ).fetchall()
        return [
            DayRecord(
                int(r[0]), float(r[1]), float(r[2]), float(r[3]), bool(r[4]), json.loads(r[5])
            )
            for r in rows
        ]

    def events(
        self, channel: str | None = None, kind: str | None = None, *, after_id: int = 0
    ) -> Iterator[JournalEvent]:
        """Events in order, optionally for one channel and/or one kind."""
        query = "SELECT id, channel, wall_s, monotonic_s, kind, payload FROM events WHERE id > ?"
        args: list[Any] = [after_id]
        if channel is not None:
            query += " AND channel = ?"
            args.append(channel)
        if kind is not None:
            query += " AND kind = ?"
            args.append(kind)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY id", args).fetchall()
        for r in rows:
            yield JournalEvent(
                int(r[0]), str(r[1]), float(r[2]), float(r[3]), str(r[4]), json.loads(r[5])
            )


def _upsert_day(db: sqlite3.Connection, channel: str, day: DayRecord) -> None:
    db.execute(
        "INSERT INTO days (channel, day, window_start_wall_s, prescribed_ml, delivered_ml,"
        " closed, detail) VALUES (?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT(channel, day) DO UPDATE SET window_start_wall_s ="
        " excluded.window_start_wall_s, prescribed_ml = excluded.prescribed_ml,"
        " delivered_ml = excluded.delivered_ml, closed = excluded.closed,"
        " detail = excluded.detail",
        (
            channel,
            day.day,
            day.window_start_wall_s,
            day.prescribed_ml,
            day.delivered_ml,
            int(day.closed),
            json.dumps(dict(day.detail), sort_keys=True),
        ),
    )


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (fsynced), or ``ROLLBACK`` on error."""

    def __init__(self, journal: Journal) -> None:
        self._journal = journal

    def __enter__(self) -> sqlite3.Connection:
        self._journal._lock.acquire()
        try:
            self._journal._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            self._journal._lock.release()
            raise JournalError(f"{self._journal.path}: cannot write: {exc}") from exc
        return self._journal._db

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        db = self._journal._db
        try:
            if exc_type is None:
                db.execute("COMMIT")
            else:
                db.execute("ROLLBACK")
        except sqlite3.Error as error:
            raise JournalError(f"{self._journal.path}: cannot commit: {error}") from error
        finally:
            self._journal._lock.release()
