"""The journal: every order, titer, command, readback, alarm and acknowledgement, in SQLite.

Safety invariant 6 (crash-safe state): the gateway writes what it is about to do *before* it
does it.  The database runs in WAL mode with ``synchronous=FULL``, so a committed entry survives
``kill -9`` and power loss.  Each channel's durable state (course start, day, delivered volume,
last totalizer reading, alarms) is one JSON document updated in the same transaction as the
event that changed it, so the two never disagree.

Times: ``wall_s`` is the (possibly simulated) wall clock, for day windows and display;
``monotonic_s`` is the clock of the process that wrote the entry.

One owner: a :class:`Journal` holds an exclusive ``flock`` on ``state_dir/journal.lock`` for its
whole life, so two gateways (or a gateway and a second copy of itself) can never drive the same
course.  The lock file records its holder (pid, host, since when) for the refusal message; the
file itself may stay behind after a crash and means nothing: only the ``flock`` counts, and the
kernel releases it when the holder dies.

Integrity: at open, ``PRAGMA quick_check`` must answer ``ok`` and the schema version must be
this gateway's.  Every SQLite error, at open or later, is raised as a :class:`JournalError`
naming the file, never as a raw ``sqlite3`` exception.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.errors import GatewayError
from gateway.planner import shortfall_ml
from gateway.timestamps import format_instant

SCHEMA_VERSION = 1
JOURNAL_FILENAME = "journal.sqlite3"
LOCK_FILENAME = "journal.lock"

#: SQLite's primary result codes for a damaged file or one that is not a database at all.
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26
#: How long a refused opener waits for the holder to finish writing its name into the lock file.
_HOLDER_READ_WAIT_S = 0.5

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
    """The journal cannot be opened, read or written.  The gateway stops acting: it cannot
    record.  The message names the journal's path."""

    exit_code = 2


class JournalLockedError(JournalError):
    """Another process (or another :class:`Journal` in this one) holds the state directory."""

    exit_code = 2


class JournalCorruptError(JournalError):
    """The journal file fails its integrity check, or is not an SQLite database at all.

    Keep the file for the investigation; do not let a gateway write to it (see
    docs/operations.md, "The journal").
    """

    exit_code = 2


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
        self.path = self.state_dir / JOURNAL_FILENAME
        self.lock_path = self.state_dir / LOCK_FILENAME
        self._lock = threading.RLock()
        self._db: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise JournalError(
                f"state_dir {str(state_dir)!r}: cannot open the journal: {exc}"
            ) from exc
        self._lock_fd = _take_lock(self.state_dir, self.lock_path)
        try:
            self._db = self._open_database()
        except BaseException:
            self.close()
            raise

    def _open_database(self) -> sqlite3.Connection:
        """Connect, check integrity (before anything is written), then set up the schema."""
        try:
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        except sqlite3.Error as exc:
            raise _as_journal_error(self.path, "cannot open the journal", exc) from exc
        try:
            _check_integrity(db, self.path)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=FULL")
                db.execute("PRAGMA foreign_keys=ON")
                db.executescript(_SCHEMA)
                row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
                if row is None:
                    db.execute(
                        "INSERT INTO meta (key, value) VALUES ('schema_version', ?)",
                        (str(SCHEMA_VERSION),),
                    )
            except sqlite3.Error as exc:
                raise _as_journal_error(self.path, "cannot open the journal", exc) from exc
            if row is not None and str(row[0]) != str(SCHEMA_VERSION):
                raise JournalError(
                    f"{self.path}: schema version {row[0]}, this gateway reads {SCHEMA_VERSION}"
                )
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.close()
            raise
        return db

    @property
    def _connection(self) -> sqlite3.Connection:
        """The open connection (JournalError once closed)."""
        if self._db is None:
            raise JournalError(f"{self.path}: the journal is closed")
        return self._db

    def close(self) -> None:
        """Close the database, then release the state directory.  Safe to call twice."""
        with self._lock:
            if self._db is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._db.close()
                self._db = None
            if self._lock_fd is not None:
                with contextlib.suppress(OSError):
                    fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
                with contextlib.suppress(OSError):
                    os.close(self._lock_fd)
                self._lock_fd = None

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
        with self._reading("meta"):
            row = self._connection.execute(
                "SELECT value FROM meta WHERE key = ?", (key,)
            ).fetchone()
        return None if row is None else str(row[0])

    @contextlib.contextmanager
    def _reading(self, what: str) -> Iterator[None]:
        """Hold the lock for a read; any SQLite (or stored-JSON) error is a JournalError."""
        with self._lock:
            try:
                yield
            except sqlite3.Error as exc:
                raise _as_journal_error(self.path, f"cannot read {what}", exc) from exc
            except ValueError as exc:  # a stored JSON document that does not parse
                raise JournalCorruptError(f"{self.path}: cannot read {what}: {exc}") from exc

    def channel_state(self, channel: str) -> str | None:
        """The channel's last durable state (JSON text), or None for a channel never journalled."""
        with self._reading("channel state"):
            row = self._connection.execute(
                "SELECT state FROM channel_state WHERE channel = ?", (channel,)
            ).fetchone()
        return None if row is None else str(row[0])

    def days(self, channel: str) -> list[DayRecord]:
        with self._reading("days"):
            rows = self._connection.execute(
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
        with self._reading("events"):
            rows = self._connection.execute(query + " ORDER BY id", args).fetchall()
            found = [
                JournalEvent(
                    int(r[0]), str(r[1]), float(r[2]), float(r[3]), str(r[4]), json.loads(r[5])
                )
                for r in rows
            ]
        yield from found


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
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (fsynced), or ``ROLLBACK`` on error.

    Any SQLite error inside (the statements, the commit) leaves as a :class:`JournalError`.
    """

    def __init__(self, journal: Journal) -> None:
        self._journal = journal

    def __enter__(self) -> sqlite3.Connection:
        journal = self._journal
        journal._lock.acquire()
        try:
            db = journal._connection
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            journal._lock.release()
            raise _as_journal_error(journal.path, "cannot write", exc) from exc
        except BaseException:
            journal._lock.release()
            raise
        return db

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        journal = self._journal
        try:
            db = journal._connection
            if exc_type is None:
                try:
                    db.execute("COMMIT")
                except sqlite3.Error as error:
                    with contextlib.suppress(sqlite3.Error):
                        db.execute("ROLLBACK")
                    raise _as_journal_error(journal.path, "cannot commit", error) from error
                return
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise _as_journal_error(journal.path, "cannot write", exc) from exc
        finally:
            journal._lock.release()


def _as_journal_error(path: Path, doing: str, exc: sqlite3.Error) -> JournalError:
    """``exc`` as a one-line typed error naming ``path`` (JournalCorruptError for a bad file)."""
    text = " ".join(str(exc).split())
    if getattr(exc, "sqlite_errorcode", None) in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
        return JournalCorruptError(
            f"{path}: {doing}: the file is damaged or not a journal ({text}); keep the file for the"
            " investigation, see docs/operations.md"
        )
    return JournalError(f"{path}: {doing}: {text}")


def _check_integrity(db: sqlite3.Connection, path: Path) -> None:
    """``PRAGMA quick_check`` must answer ``ok``; JournalCorruptError (one line) otherwise."""
    try:
        rows = db.execute("PRAGMA quick_check").fetchall()
    except sqlite3.Error as exc:
        raise _as_journal_error(path, "integrity check failed", exc) from exc
    problems = [str(r[0]) for r in rows]
    if problems != ["ok"]:
        shown = "; ".join(" ".join(p.split()) for p in problems[:3])
        more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
        raise JournalCorruptError(
            f"{path}: integrity check failed: {shown}{more}; keep the file for the"
            " investigation, see docs/operations.md"
        )


def _take_lock(state_dir: Path, lock_path: Path) -> int:
    """An exclusive ``flock`` on ``lock_path``, its holder recorded in it; the open fd.

    JournalLockedError naming the holder when another process (or Journal) has it.
    """
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise JournalError(f"state_dir {state_dir}: cannot open {lock_path.name}: {exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_holder(fd)
        os.close(fd)
        raise JournalLockedError(
            f"state_dir {state_dir} is in use by {holder}: one gateway per state directory"
        ) from None
    except OSError as exc:
        os.close(fd)
        raise JournalError(f"state_dir {state_dir}: cannot lock {lock_path.name}: {exc}") from exc
    holder_record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": format_instant(time.time()),
    }
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder_record, sort_keys=True) + "\n").encode(), 0)
        os.fsync(fd)
    except OSError as exc:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        raise JournalError(f"state_dir {state_dir}: cannot write {lock_path.name}: {exc}") from exc
    return fd


def _read_holder(fd: int) -> str:
    """Who holds the lock, as "pid 123 on host h since 2026-...Z" (as well as it can tell)."""
    deadline = time.monotonic() + _HOLDER_READ_WAIT_S
    while True:
        try:
            data = json.loads(os.pread(fd, 4096, 0).decode())
            return f"pid {data['pid']} on host {data['host']} since {data['since']}"
        except (OSError, ValueError, KeyError, TypeError):
            # The holder may not have written its name yet (it does so just after locking).
            if time.monotonic() >= deadline:
                return "another process (its pid is not recorded in the lock file)"
            time.sleep(0.05)
