"""The journal: every order, titer, command, readback, alarm and acknowledgement, in SQLite.

Safety invariant 6 (crash-safe state): the gateway writes what it is about to do *before* it
does it.  The database runs in WAL mode with ``synchronous=FULL``, so a committed entry survives
``kill -9`` and power loss.  Each channel's durable state (course start, day, delivered volume,
last totalizer reading, alarms) is one JSON document updated in the same transaction as the
event that changed it, so the two never disagree.

Group commit: the channels of one process commit concurrently (one thread each, every tick), and
each commit waits for its own fsync.  So writes that arrive together share one transaction: the
first writer leads and commits everything queued at that moment in one ``BEGIN IMMEDIATE`` ...
``COMMIT`` (one fsync); writes that arrive while it does so queue, and the next leader commits
them together.  Nobody waits for a gathering window, and every writer still returns only once
the transaction holding its writes is durable, so "journal first, then act" holds for each
channel as before.  Each writer's statements run in a savepoint of their own: if they fail, that
writer alone gets the error and none of its writes stays; if the transaction itself fails (its
``BEGIN`` or ``COMMIT``, or an error after which SQLite rolled it back), every writer of the
group gets a :class:`JournalError` and none of their writes is in the file.

Times: ``wall_s`` is the (possibly simulated) wall clock, for day windows and display;
``monotonic_s`` is the clock of the process that wrote the entry.

One owner: a :class:`Journal` holds an exclusive ``flock`` on ``state_dir/journal.lock`` for its
whole life, so two gateways (or a gateway and a second copy of itself) can never drive the same
course.  The lock file records its holder (pid, host, since when) for the refusal message; the
file itself may stay behind after a crash and means nothing: only the ``flock`` counts, and the
kernel releases it when the holder dies.

Integrity: at open, ``PRAGMA quick_check`` must answer ``ok`` and the schema version must be
this gateway's, or an older one it upgrades in place (1 -> 2 adds the ``outbox`` table); any
other is refused before anything is written to the file.  Every SQLite error, at open or later,
is raised as a :class:`JournalError` naming the file, never as a raw ``sqlite3`` exception.
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
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

from gateway.errors import GatewayError
from gateway.planner import shortfall_ml
from gateway.timestamps import format_instant

SCHEMA_VERSION = 2
#: Older schema versions this gateway upgrades in place on open (1 -> 2: the ``outbox`` table).
_UPGRADES_FROM = frozenset({"1"})
JOURNAL_FILENAME = "journal.sqlite3"
#: A write that need not be durable at once (a checkpoint: nothing is acted on it) is fsynced
#: with the next durable one, and at the latest this many real seconds after the last fsync.
MAX_UNSYNCED_S = 60.0
LOCK_FILENAME = "journal.lock"
#: SQLite page size of a new journal (an existing one keeps its own).  A cycle rewrites a few
#: small rows (its readback event, the index entry, the day, the channel's state text of a few
#: kB); each changed page goes to the write-ahead log whole, so 1 kB pages write about half the
#: bytes of SQLite's default 4 kB and a cycle's commit costs about a quarter less.
PAGE_SIZE_BYTES = 1024
#: How much the write-ahead log holds before a commit copies it back into the journal file (a
#: checkpoint: both files fsynced, about a millisecond here).  SQLite's default, 1,000 pages,
#: came every few dozen cycles of one channel and every other tick of 64, and was about 40 % of
#: the commits' time; a checkpoint copies each page once however often it changed, so a longer
#: log costs little more per checkpoint.  It is replayed at the next open after a crash.
WAL_CHECKPOINT_BYTES = 8 * 1024 * 1024

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
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    channel TEXT NOT NULL,
    control_id TEXT NOT NULL UNIQUE,
    message TEXT NOT NULL,
    queued_wall_s REAL NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'acked', 'rejected', 'dropped')),
    attempts INTEGER NOT NULL DEFAULT 0,
    last_attempt_wall_s REAL,
    done_wall_s REAL,
    answer TEXT
);
CREATE INDEX IF NOT EXISTS outbox_by_channel ON outbox (channel, status, seq);
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


class OutboxDuplicateError(JournalError):
    """A message with this control id (MSH-10) is in the outbox already; nothing was written."""

    exit_code = 2


@dataclass(frozen=True)
class OutboxRow:
    """One outbound HL7 message in the outbox."""

    seq: int
    channel: str
    control_id: str
    message: str
    queued_wall_s: float
    #: ``pending`` (to send, or sent without an answer yet), ``acked``, ``rejected``, ``dropped``.
    status: str
    #: Times the message was written to the receiver (0: never sent).
    attempts: int
    last_attempt_wall_s: float | None
    done_wall_s: float | None
    #: The receiver's answer (the whole acknowledgement message), once there is one.
    answer: str | None


@dataclass(frozen=True)
class OutboxPut:
    """What :meth:`Journal.outbox_put` did: messages it dropped, and the channel's backlog."""

    dropped: int
    backlog: int


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
    """A state directory's journal.  Thread-safe; every write is durable when it returns (writes
    from several threads at once share a transaction: group commit)."""

    def __init__(self, state_dir: Path | str, *, group_commit: bool = True) -> None:
        """``group_commit=False``: every write is a transaction of its own (one fsync each), as
        before group commit; for comparison (``bench/bench_channels.py``)."""
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / JOURNAL_FILENAME
        self.lock_path = self.state_dir / LOCK_FILENAME
        self._lock = threading.RLock()
        self._group = _GroupCommit(self) if group_commit else None
        #: Write transactions committed since open, and how many of them were fsynced (the
        #: others were made durable by the next fsync of the WAL).
        self.transactions = 0
        self.syncs = 0
        self._last_sync_s = time.monotonic()
        #: The connection's ``synchronous`` setting: True for FULL (as opened), False for
        #: NORMAL, None when unknown (a PRAGMA failed).  Each transaction sets the one it needs
        #: only when it differs, so checkpoint after checkpoint runs no PRAGMA at all.
        self._synchronous_full: bool | None = True
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
                # Takes effect only on a new, empty file (before WAL mode and the first table).
                db.execute(f"PRAGMA page_size={PAGE_SIZE_BYTES}")
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=FULL")
                db.execute("PRAGMA foreign_keys=ON")
                page_size = int(db.execute("PRAGMA page_size").fetchone()[0])
                db.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_BYTES // page_size}")
                found = _stored_schema_version(db)
            except sqlite3.Error as exc:
                raise _as_journal_error(self.path, "cannot open the journal", exc) from exc
            # Another version is refused before anything is written to it.
            if found is not None and found != str(SCHEMA_VERSION) and found not in _UPGRADES_FROM:
                raise JournalError(
                    f"{self.path}: schema version {found}, this gateway reads {SCHEMA_VERSION}"
                )
            try:
                # New tables are CREATE ... IF NOT EXISTS: an older journal gains them here (an
                # upgrade interrupted before the version is recorded is simply done again).
                db.executescript(_SCHEMA)
                if found != str(SCHEMA_VERSION):
                    db.execute(
                        "INSERT INTO meta (key, value) VALUES ('schema_version', ?)"
                        " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                        (str(SCHEMA_VERSION),),
                    )
            except sqlite3.Error as exc:
                raise _as_journal_error(self.path, "cannot open the journal", exc) from exc
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

    def _transaction(self, *, durable: bool = True) -> _Transaction:
        """A transaction of its own, for writes that read and decide inside it."""
        return _Transaction(self, durable=durable)

    def _write(self, apply: Callable[[sqlite3.Connection], _T], *, durable: bool = True) -> _T:
        """``apply(db)`` in the group's next transaction (see the module's "Group commit"), or
        one of its own without group commit.  Returns once that transaction is committed, and
        fsynced unless ``durable`` is False (see :meth:`commit`); raises what ``apply`` raised,
        or JournalError, with none of its writes kept.  ``apply`` only executes statements: it
        may run on another thread."""
        if self._group is None:
            with self._transaction(durable=durable) as db:
                return apply(db)
        return self._group.write(apply, durable=durable)

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
        event = (channel, wall_s, monotonic_s, kind, json.dumps(dict(payload), sort_keys=True))
        state_row = (
            None if state is None else (channel, json.dumps(dict(state), sort_keys=True), wall_s)
        )

        def apply(db: sqlite3.Connection) -> int | None:
            cursor = db.execute(
                "INSERT INTO events (channel, wall_s, monotonic_s, kind, payload)"
                " VALUES (?, ?, ?, ?, ?)",
                event,
            )
            if state_row is not None:
                db.execute(_UPSERT_STATE, state_row)
            return cursor.lastrowid

        event_id = self._write(apply)
        assert event_id is not None
        return event_id

    def commit(
        self,
        channel: str,
        events: Sequence[tuple[str, Mapping[str, Any]]],
        *,
        state: Mapping[str, Any] | str,
        days: Sequence[DayRecord],
        wall_s: float,
        monotonic_s: float,
        durable: bool = True,
    ) -> None:
        """One decision: its events, the channel's new state (JSON-ready data, or its JSON text
        with sorted keys: :class:`gateway.course_state.StateText`) and changed days, in one
        transaction.  Either all of it is kept or none of it; it is durable when this returns
        (the transaction may hold other channels' decisions too: group commit).

        ``durable=False`` for a write nothing is acted on (a checkpoint): it is committed, so a
        killed process loses nothing, but fsynced only with the next durable write or within
        :data:`MAX_UNSYNCED_S`, so a power cut may lose the last minute of checkpoints (the
        restart then reconciles from an older state, as after any outage)."""
        # Encoded here, on the caller's thread: a payload that cannot be encoded fails its own
        # caller only, before anything joins a group.
        event_rows = [
            (channel, wall_s, monotonic_s, kind, json.dumps(dict(p), sort_keys=True))
            for kind, p in events
        ]
        state_text = state if isinstance(state, str) else json.dumps(dict(state), sort_keys=True)
        state_row = (channel, state_text, wall_s)
        day_rows = [_day_row(channel, day) for day in days]

        def apply(db: sqlite3.Connection) -> None:
            if event_rows:
                db.executemany(
                    "INSERT INTO events (channel, wall_s, monotonic_s, kind, payload)"
                    " VALUES (?, ?, ?, ?, ?)",
                    event_rows,
                )
            db.execute(_UPSERT_STATE, state_row)
            if day_rows:
                db.executemany(_UPSERT_DAY, day_rows)

        self._write(apply, durable=durable)

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
        row = _day_row(channel, record)
        self._write(lambda db: db.execute(_UPSERT_DAY, row).close())

    def set_meta(self, key: str, value: str) -> None:
        self._write(
            lambda db: db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?)"
                " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, value),
            ).close()
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

    # -- the HL7 outbox ----------------------------------------------------------------------
    # Outbound messages, written before they are sent and kept until the receiver answers.
    # Per channel they go strictly in ``seq`` order; only a channel's oldest pending message is
    # ever sent, so only it can have ``attempts > 0``.

    def outbox_put(
        self,
        channel: str,
        control_id: str,
        message: str,
        *,
        wall_s: float,
        monotonic_s: float,
        max_messages: int,
    ) -> OutboxPut:
        """Queue one message; if the channel then has more than ``max_messages`` pending, drop
        its oldest never-sent ones (an ``outbox_dropped`` event says how many), all in one
        transaction.  OutboxDuplicateError, with nothing written, for a control id queued
        before."""
        if max_messages < 1:
            raise ValueError(f"max_messages must be >= 1, got {max_messages!r}")
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM outbox WHERE control_id = ?", (control_id,)).fetchone():
                raise OutboxDuplicateError(
                    f"{self.path}: outbox: control id {control_id!r} is queued already"
                )
            db.execute(
                "INSERT INTO outbox (channel, control_id, message, queued_wall_s)"
                " VALUES (?, ?, ?, ?)",
                (channel, control_id, message, wall_s),
            )
            backlog = _outbox_pending(db, channel)
            dropped = 0
            if backlog > max_messages:
                victims = db.execute(
                    "SELECT seq, control_id FROM outbox WHERE channel = ? AND status = 'pending'"
                    " AND attempts = 0 ORDER BY seq LIMIT ?",
                    (channel, backlog - max_messages),
                ).fetchall()
                dropped = len(victims)
                db.executemany(
                    "UPDATE outbox SET status = 'dropped', done_wall_s = ? WHERE seq = ?",
                    [(wall_s, seq) for seq, _ in victims],
                )
                if dropped:
                    payload = {
                        "dropped": dropped,
                        "first_control_id": victims[0][1],
                        "last_control_id": victims[-1][1],
                        "max_messages": max_messages,
                    }
                    db.execute(
                        "INSERT INTO events (channel, wall_s, monotonic_s, kind, payload)"
                        " VALUES (?, ?, ?, 'outbox_dropped', ?)",
                        (channel, wall_s, monotonic_s, json.dumps(payload, sort_keys=True)),
                    )
                backlog -= dropped
        return OutboxPut(dropped, backlog)

    def outbox_attempt(self, seq: int, *, wall_s: float) -> bool:
        """Record that a pending message is about to be written to the receiver (before it is);
        False, with nothing written, if it is no longer pending (dropped meanwhile)."""
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_attempt_wall_s = ?"
                " WHERE seq = ? AND status = 'pending'",
                (wall_s, seq),
            )
            return cursor.rowcount == 1

    def outbox_mark(
        self,
        seq: int,
        status: str,
        *,
        answer: str | None,
        wall_s: float,
        monotonic_s: float,
        detail: Mapping[str, Any] | None = None,
    ) -> bool:
        """A pending message's end: ``acked`` or ``rejected`` (which also journals an
        ``outbox_rejected`` event: its control id, the answer and ``detail``), in one
        transaction.  False, with nothing written, if it was not pending."""
        if status not in ("acked", "rejected"):
            raise ValueError(f"status must be 'acked' or 'rejected', got {status!r}")
        with self._transaction() as db:
            row = db.execute(
                "SELECT channel, control_id FROM outbox WHERE seq = ? AND status = 'pending'",
                (seq,),
            ).fetchone()
            if row is None:
                return False
            db.execute(
                "UPDATE outbox SET status = ?, answer = ?, done_wall_s = ? WHERE seq = ?",
                (status, answer, wall_s, seq),
            )
            if status == "rejected":
                payload = {**dict(detail or {}), "control_id": row[1], "answer": answer}
                db.execute(
                    "INSERT INTO events (channel, wall_s, monotonic_s, kind, payload)"
                    " VALUES (?, ?, ?, 'outbox_rejected', ?)",
                    (row[0], wall_s, monotonic_s, json.dumps(payload, sort_keys=True)),
                )
        return True

    def outbox_next(self, channel: str) -> OutboxRow | None:
        """The channel's oldest pending message (the only one it may send now)."""
        with self._reading("the outbox"):
            row = self._connection.execute(
                f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE channel = ? AND status = 'pending'"
                " ORDER BY seq LIMIT 1",
                (channel,),
            ).fetchone()
        return None if row is None else _outbox_row(row)

    def outbox_channels_pending(self) -> list[str]:
        """Channels with pending messages, sorted."""
        with self._reading("the outbox"):
            rows = self._connection.execute(
                "SELECT DISTINCT channel FROM outbox WHERE status = 'pending' ORDER BY channel"
            ).fetchall()
        return [str(r[0]) for r in rows]

    def outbox_backlog(self) -> dict[str, int]:
        """Pending messages per channel (channels with none are absent)."""
        with self._reading("the outbox"):
            rows = self._connection.execute(
                "SELECT channel, COUNT(*) FROM outbox WHERE status = 'pending' GROUP BY channel"
            ).fetchall()
        return {str(r[0]): int(r[1]) for r in rows}

    def outbox_last_ack_wall_s(self) -> dict[str, float]:
        """When each channel's last acknowledged message was acknowledged (wall seconds)."""
        with self._reading("the outbox"):
            rows = self._connection.execute(
                "SELECT channel, MAX(done_wall_s) FROM outbox WHERE status = 'acked'"
                " GROUP BY channel"
            ).fetchall()
        return {str(r[0]): float(r[1]) for r in rows if r[1] is not None}

    def outbox_rows(self, channel: str | None = None) -> list[OutboxRow]:
        """Every message kept (any status), in order; optionally one channel's."""
        query = f"SELECT {_OUTBOX_COLUMNS} FROM outbox"
        args: list[Any] = []
        if channel is not None:
            query += " WHERE channel = ?"
            args.append(channel)
        with self._reading("the outbox"):
            rows = self._connection.execute(query + " ORDER BY seq", args).fetchall()
        return [_outbox_row(r) for r in rows]

    def outbox_prune(self, before_wall_s: float) -> int:
        """Forget finished messages (acked, rejected, dropped) finished before ``before_wall_s``,
        except each channel's last acknowledged one (its time is the "last ack" metric).  Pending
        messages are never pruned; rejections and drops stay in the events.  Returns how many
        rows went."""
        with self._transaction() as db:
            cursor = db.execute(
                "DELETE FROM outbox WHERE status != 'pending' AND done_wall_s < ?"
                " AND seq NOT IN (SELECT MAX(seq) FROM outbox WHERE status = 'acked'"
                " GROUP BY channel)",
                (before_wall_s,),
            )
            return cursor.rowcount


_OUTBOX_COLUMNS = (
    "seq, channel, control_id, message, queued_wall_s, status, attempts, last_attempt_wall_s,"
    " done_wall_s, answer"
)


def _outbox_row(r: Sequence[Any]) -> OutboxRow:
    return OutboxRow(
        seq=int(r[0]),
        channel=str(r[1]),
        control_id=str(r[2]),
        message=str(r[3]),
        queued_wall_s=float(r[4]),
        status=str(r[5]),
        attempts=int(r[6]),
        last_attempt_wall_s=None if r[7] is None else float(r[7]),
        done_wall_s=None if r[8] is None else float(r[8]),
        answer=None if r[9] is None else str(r[9]),
    )


def _outbox_pending(db: sqlite3.Connection, channel: str) -> int:
    row = db.execute(
        "SELECT COUNT(*) FROM outbox WHERE channel = ? AND status = 'pending'", (channel,)
    ).fetchone()
    return int(row[0])


def _stored_schema_version(db: sqlite3.Connection) -> str | None:
    """The journal's recorded schema version; None for a new (empty) file."""
    has_meta = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
    ).fetchone()
    if has_meta is None:
        return None
    row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return None if row is None else str(row[0])


_UPSERT_STATE = (
    "INSERT INTO channel_state (channel, state, wall_s) VALUES (?, ?, ?)"
    " ON CONFLICT(channel) DO UPDATE SET state = excluded.state, wall_s = excluded.wall_s"
)
_UPSERT_DAY = (
    "INSERT INTO days (channel, day, window_start_wall_s, prescribed_ml, delivered_ml,"
    " closed, detail) VALUES (?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT(channel, day) DO UPDATE SET window_start_wall_s ="
    " excluded.window_start_wall_s, prescribed_ml = excluded.prescribed_ml,"
    " delivered_ml = excluded.delivered_ml, closed = excluded.closed,"
    " detail = excluded.detail"
)


def _day_row(channel: str, day: DayRecord) -> tuple[Any, ...]:
    """A day's parameters for :data:`_UPSERT_DAY` (its detail JSON-encoded)."""
    return (
        channel,
        day.day,
        day.window_start_wall_s,
        day.prescribed_ml,
        day.delivered_ml,
        int(day.closed),
        json.dumps(dict(day.detail), sort_keys=True),
    )


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (fsynced), or ``ROLLBACK`` on error.

    Any SQLite error inside (the statements, the commit) leaves as a :class:`JournalError`.
    """

    def __init__(self, journal: Journal, *, durable: bool = True) -> None:
        self._journal = journal
        self._durable = durable
        self._sync = True

    def __enter__(self) -> sqlite3.Connection:
        journal = self._journal
        journal._lock.acquire()
        try:
            db = journal._connection
            self._sync = self._durable or time.monotonic() - journal._last_sync_s >= MAX_UNSYNCED_S
            if journal._synchronous_full is not self._sync:
                # WAL with synchronous=NORMAL: committed without an fsync; the next
                # synchronous=FULL commit fsyncs the WAL, these frames with it.
                journal._synchronous_full = None
                db.execute("PRAGMA synchronous=" + ("FULL" if self._sync else "NORMAL"))
                journal._synchronous_full = self._sync
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
                journal.transactions += 1
                if self._sync:
                    journal.syncs += 1
                    journal._last_sync_s = time.monotonic()
                return
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise _as_journal_error(journal.path, "cannot write", exc) from exc
        finally:
            journal._lock.release()


_T = TypeVar("_T")


class _Write(Generic[_T]):
    """One caller's writes, queued for a group; applied, and then woken, by its leader."""

    __slots__ = ("_asleep", "apply", "durable", "error", "lead", "result")

    def __init__(self, apply: Callable[[sqlite3.Connection], _T], durable: bool = True) -> None:
        self.apply = apply
        self.durable = durable
        #: Held while the writer sleeps: released (once) when the write is done or when its
        #: thread is to lead.  (A bare lock: an Event's condition costs several times more.)
        self._asleep = threading.Lock()
        self._asleep.acquire()
        #: This writer's thread leads the next group (set under the group's mutex).
        self.lead = False
        self.result: _T | None = None
        self.error: BaseException | None = None

    def sleep(self) -> None:
        self._asleep.acquire()

    def wake(self) -> None:
        self._asleep.release()

    def run(self, db: sqlite3.Connection, path: Path) -> None:
        """Apply in a savepoint of its own: on failure only this write is undone (and failed),
        unless SQLite rolled the whole transaction back, which fails the group (raises)."""
        db.execute("SAVEPOINT one_write")
        try:
            self.result = self.apply(db)
        except sqlite3.Error as exc:
            error = _as_journal_error(path, "cannot write", exc)
            if not db.in_transaction:  # SQLite ended the transaction itself (I/O, disk full)
                raise error from exc
            error.__cause__ = exc
            self._undo(db, error)
        except Exception as exc:
            self._undo(db, exc)
        else:
            db.execute("RELEASE one_write")

    def _undo(self, db: sqlite3.Connection, error: BaseException) -> None:
        db.execute("ROLLBACK TO one_write")
        db.execute("RELEASE one_write")
        self.result, self.error = None, error

    def outcome(self) -> _T:
        if self.error is not None:
            raise self.error
        return cast(_T, self.result)


class _GroupCommit:
    """Leader/follower group commit (see the module's "Group commit").

    A writer queues its :class:`_Write`.  If no group is being written, it leads: it takes the
    whole queue (its own write included), applies it in one :class:`_Transaction`, wakes the
    group, and hands the lead to the oldest write queued meanwhile, if any.  Otherwise it waits
    to be woken, done or made the next leader.  No gathering window: the group is whatever
    queued while the previous one was being written.
    """

    def __init__(self, journal: Journal) -> None:
        self._journal = journal
        self._mutex = threading.Lock()
        self._queue: list[_Write[Any]] = []
        self._leading = False

    def write(self, apply: Callable[[sqlite3.Connection], _T], *, durable: bool = True) -> _T:
        journal = self._journal
        if journal._lock._is_owned():  # type: ignore[attr-defined]
            # Called under the journal's lock (inside a read or transaction of this thread):
            # no leader could take the lock, so write here, as without group commit.
            with journal._transaction(durable=durable) as db:
                return apply(db)
        mine = _Write(apply, durable)
        with self._mutex:
            self._queue.append(mine)
            if not self._leading:
                self._leading = mine.lead = True
        if not mine.lead:
            try:
                mine.sleep()
            except BaseException:
                self._abandon(mine)
                raise
        if mine.lead:
            self._lead(mine)
        return mine.outcome()

    def _abandon(self, mine: _Write[Any]) -> None:
        """A waiting writer interrupted: take its write back if no group has it yet; lead if
        it was handed the lead (so the queue never stalls); else its group finishes anyway."""
        with self._mutex:
            if not mine.lead and any(w is mine for w in self._queue):
                self._queue = [w for w in self._queue if w is not mine]
                return
        if mine.lead:
            self._lead(mine)

    def _lead(self, mine: _Write[Any]) -> None:
        """Write the queue (``mine`` included) as one group, wake it, pass the lead on."""
        with self._mutex:
            group, self._queue = self._queue, []
        try:
            self._apply(group)
        finally:
            with self._mutex:
                successor = self._queue[0] if self._queue else None
                self._leading = successor is not None
                if successor is not None:
                    successor.lead = True
            for write in group:
                if write is not mine:  # awake already
                    write.wake()
            if successor is not None:
                successor.wake()

    def _apply(self, group: list[_Write[Any]]) -> None:
        """One transaction for the group; on its failure every write of it fails."""
        path = self._journal.path
        try:
            # Durable if any write of the group must be: one fsync covers them all.
            with _Transaction(self._journal, durable=any(w.durable for w in group)) as db:
                for write in group:
                    write.run(db, path)
        except BaseException as exc:
            # The transaction failed (or never began): nothing of the group is in the file.
            if isinstance(exc, JournalError):
                error = exc
            elif isinstance(exc, Exception):
                error = JournalError(f"{path}: cannot commit: {type(exc).__name__}: {exc}")
            else:  # KeyboardInterrupt, SystemExit in the leader: the others fail, it raises
                error = JournalError(f"{path}: cannot commit: the writer was interrupted")
            for write in group:
                write.result, write.error = None, _copy_error(error)
            if not isinstance(exc, Exception):
                raise


def _copy_error(error: JournalError) -> JournalError:
    """A JournalError of the same type and message for each thread to raise as its own."""
    copy = type(error)(str(error))
    copy.__cause__ = error.__cause__ or error
    return copy


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
