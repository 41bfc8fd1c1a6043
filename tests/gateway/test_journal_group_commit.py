"""Group commit: the journal writes of concurrent channel cycles share one transaction,
and each writer still returns only once its own writes are durable (write-ahead, invariant 6).

Transactions are counted on the connection itself (its trace callback sees every ``COMMIT``);
durability is checked from a fresh read-only connection, as another process would see the file.
Grouping is made deterministic with a *blocker*: a write whose statements wait on an event, so
its leader holds the journal while the writers under test queue behind it.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from gateway.config import MAX_CHANNELS, build_config
from gateway.daemon import Gateway
from gateway.errors import ConfigError
from gateway.journal import JOURNAL_FILENAME, DayRecord, Journal, JournalError
from protocol.clock import ManualClock
from simulator.model import PumpModel
from tests.gateway.conftest import RANDOMISED_AT
from tests.gateway.model_driver import ModelDriver

WRITERS = 24


def _commit(journal: Journal, channel: str, n: int = 0, **overrides: Any) -> None:
    """One decision of ``channel``: two events, its state and a day row."""
    arguments: dict[str, Any] = {
        "events": [("reading", {"n": n}), ("command", {"command": "start"})],
        "state": {"channel": channel, "n": n},
        "days": [DayRecord(1, 0.0, 100.0, float(n), False, {"n": n})],
        "wall_s": 1.0,
        "monotonic_s": 1.0,
    }
    arguments.update(overrides)
    journal.commit(channel, arguments.pop("events"), **arguments)


def _durable_states(path: Path) -> dict[str, str]:
    """channel -> state, as a fresh read-only connection finds them in the file."""
    db = sqlite3.connect(f"file:{path / JOURNAL_FILENAME}?mode=ro", uri=True)
    try:
        return {str(c): str(s) for c, s in db.execute("SELECT channel, state FROM channel_state")}
    finally:
        db.close()


def _durable_events(path: Path, channel: str) -> list[str]:
    db = sqlite3.connect(f"file:{path / JOURNAL_FILENAME}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT kind FROM events WHERE channel = ? ORDER BY id", (channel,))
        return [str(r[0]) for r in rows]
    finally:
        db.close()


class _Statements:
    """Every statement the journal's connection runs (its trace callback)."""

    def __init__(self, journal: Journal) -> None:
        self.seen: list[str] = []
        journal._connection.set_trace_callback(self.seen.append)

    def commits(self) -> int:
        return self.seen.count("COMMIT")


@contextmanager
def _blocked(journal: Journal) -> Iterator[Callable[[int], None]]:
    """Hold the journal in a write of its own (its leader waits inside the transaction); yields
    ``queued(n)``, which waits until ``n`` writers queue behind it.  Leaving releases it."""
    gate = threading.Event()
    inside = threading.Event()

    def block(db: sqlite3.Connection) -> None:
        inside.set()
        gate.wait(10)
        db.execute("INSERT INTO meta (key, value) VALUES ('blocker', 'done')")

    blocker = threading.Thread(target=journal._write, args=(block,))
    blocker.start()
    assert inside.wait(10)
    group = journal._group
    assert group is not None

    def queued(n: int) -> None:
        deadline = time.monotonic() + 10
        while len(group._queue) < n:
            assert time.monotonic() < deadline, f"only {len(group._queue)} of {n} writers queued"
            time.sleep(0.001)

    try:
        yield queued
    finally:
        gate.set()
        blocker.join(10)


def _on_threads(
    count: int, write: Callable[[int], None], after: Callable[[int], None] | None = None
) -> tuple[list[threading.Thread], dict[int, BaseException], dict[int, Any]]:
    """Start ``count`` threads running ``write(i)`` then ``after(i)``; errors and what ``after``
    returned are collected per thread."""
    errors: dict[int, BaseException] = {}
    seen: dict[int, Any] = {}

    def run(i: int) -> None:
        try:
            write(i)
        except BaseException as exc:
            errors[i] = exc
            return
        if after is not None:
            seen[i] = after(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    return threads, errors, seen


@pytest.mark.timeout(30)
@pytest.mark.hazard("H-JN-01")
def test_invariant_6_concurrent_commits_share_one_transaction_and_each_returns_durable(
    tmp_path: Path,
) -> None:
    with Journal(tmp_path) as journal:
        statements = _Statements(journal)
        assert journal._connection.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert journal._connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        with _blocked(journal) as queued:
            threads, errors, seen = _on_threads(
                WRITERS,
                lambda i: _commit(journal, f"bed{i}", i),
                # What a fresh connection finds the moment the writer's commit returns.
                lambda i: _durable_states(tmp_path).get(f"bed{i}"),
            )
            queued(WRITERS)
            assert not seen, "a writer returned before its group was written"
            assert not any(k.startswith("bed") for k in _durable_states(tmp_path))
            commits_before = statements.commits()
        for thread in threads:
            thread.join(10)
        assert errors == {}
        assert seen == {i: f'{{"channel": "bed{i}", "n": {i}}}' for i in range(WRITERS)}
        # The blocker's transaction, then one for all the writers queued behind it.
        assert statements.commits() - commits_before == 2
        assert journal.transactions == 2
        for i in range(WRITERS):
            assert _durable_events(tmp_path, f"bed{i}") == ["reading", "command"]
            assert journal.days(f"bed{i}")[0].delivered_ml == float(i)


@pytest.mark.timeout(30)
@pytest.mark.hazard("H-JN-01")
def test_a_failed_group_transaction_fails_every_writer_and_keeps_none_of_their_writes(
    tmp_path: Path,
) -> None:
    with Journal(tmp_path) as journal:
        real = journal._connection
        commits = 0

        class CommitFailsOnce:
            """The connection, whose second COMMIT from now (the group's) fails like a disk."""

            def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
                nonlocal commits
                if sql == "COMMIT":
                    commits += 1
                    if commits == 2:
                        raise sqlite3.OperationalError("disk I/O error")
                return real.execute(sql, *args)

            def __getattr__(self, name: str) -> Any:
                return getattr(real, name)

        journal._db = CommitFailsOnce()  # type: ignore[assignment]
        with _blocked(journal) as queued:
            threads, errors, _ = _on_threads(WRITERS, lambda i: _commit(journal, f"bed{i}"))
            queued(WRITERS)
        for thread in threads:
            thread.join(10)
        assert sorted(errors) == list(range(WRITERS))  # every writer of the group
        for error in errors.values():
            assert type(error) is JournalError
            assert "cannot commit: disk I/O error" in str(error)
            assert str(tmp_path / JOURNAL_FILENAME) in str(error)
        assert len({id(e) for e in errors.values()}) == WRITERS  # each raises its own
        # None of their writes is in the file; the blocker's (its own transaction) is.
        durable = _durable_states(tmp_path)
        assert not any(k.startswith("bed") for k in durable)
        for i in range(WRITERS):
            assert _durable_events(tmp_path, f"bed{i}") == []
        assert journal.get_meta("blocker") == "done"
        assert journal.transactions == 1
        # The journal writes again afterwards.
        _commit(journal, "bed0", 7)
        assert _durable_states(tmp_path)["bed0"] == '{"channel": "bed0", "n": 7}'


@pytest.mark.timeout(30)
def test_a_writer_whose_statements_fail_fails_alone_and_leaves_nothing(tmp_path: Path) -> None:
    with Journal(tmp_path) as journal:
        statements = _Statements(journal)
        bad = 5

        def write(i: int) -> None:
            if i == bad:  # its first event is inserted, its second violates NOT NULL
                _commit(journal, "bad", events=[("reading", {}), (None, {})])
            else:
                _commit(journal, f"bed{i}", i)

        with _blocked(journal) as queued:
            threads, errors, _ = _on_threads(WRITERS, write)
            queued(WRITERS)
            commits_before = statements.commits()
        for thread in threads:
            thread.join(10)
        assert list(errors) == [bad]
        assert type(errors[bad]) is JournalError
        assert "cannot write: NOT NULL constraint failed: events.kind" in str(errors[bad])
        assert isinstance(errors[bad].__cause__, sqlite3.IntegrityError)
        assert statements.commits() - commits_before == 2  # still one for the group
        assert _durable_events(tmp_path, "bad") == []  # its first event went with it
        assert "bad" not in _durable_states(tmp_path)
        for i in set(range(WRITERS)) - {bad}:
            assert _durable_events(tmp_path, f"bed{i}") == ["reading", "command"]


@pytest.mark.timeout(30)
def test_a_payload_that_cannot_be_encoded_fails_its_writer_before_any_group(
    tmp_path: Path,
) -> None:
    with Journal(tmp_path) as journal:
        statements = _Statements(journal)
        with pytest.raises(TypeError, match="not JSON serializable"):
            _commit(journal, "bed1", events=[("reading", {"x": object()})])
        assert statements.seen == []  # nothing reached the database
        _commit(journal, "bed2")
        assert _durable_events(tmp_path, "bed2") == ["reading", "command"]
        assert _durable_events(tmp_path, "bed1") == []


@pytest.mark.timeout(30)
def test_every_write_kind_goes_through_the_group_and_without_it_each_is_its_own(
    tmp_path: Path,
) -> None:
    for group_commit in (True, False):
        state_dir = tmp_path / str(group_commit)
        with Journal(state_dir, group_commit=group_commit) as journal:
            statements = _Statements(journal)
            event_id = journal.record("bed1", "order_received", {}, wall_s=0.0, monotonic_s=0.0)
            journal.upsert_day(
                "bed1", 1, window_start_wall_s=0.0, prescribed_ml=1.0, delivered_ml=0.0
            )
            journal.set_meta("k", "v")
            _commit(journal, "bed1")
            assert event_id == 1
            assert statements.commits() == journal.transactions == 4
            assert ("SAVEPOINT one_write" in statements.seen) is group_commit
            # Under the journal's own lock (a read of this thread), a write does not wait for
            # a leader that could never take the lock: it writes there and then.
            with journal._lock:
                journal.record("bed1", "under_lock", {}, wall_s=1.0, monotonic_s=1.0)
            assert _durable_events(state_dir, "bed1")[-1] == "under_lock"


@pytest.mark.timeout(30)
def test_many_writers_without_a_blocker_all_land_in_fewer_transactions(tmp_path: Path) -> None:
    with Journal(tmp_path) as journal:
        rounds = 5
        start = threading.Barrier(WRITERS)

        def write(i: int) -> None:
            for n in range(rounds):
                if n == 0:
                    start.wait(10)
                _commit(journal, f"bed{i}", n)

        threads, errors, _ = _on_threads(WRITERS, write)
        for thread in threads:
            thread.join(20)
        assert errors == {}
        assert journal.transactions < WRITERS * rounds
        states = _durable_states(tmp_path)
        assert {k: states[k] for k in states if k.startswith("bed")} == {
            f"bed{i}": f'{{"channel": "bed{i}", "n": {rounds - 1}}}' for i in range(WRITERS)
        }


# -- the daemon: 64 channels, stepped together, journal first ---------------------------------


def _channels(count: int) -> list[dict[str, Any]]:
    return [
        {
            "id": f"bed{i:02d}",
            "pump": f"modbus+tcp://127.0.0.1:{10000 + i}",
            "arm": "flat",
            "weight_kg": 70.0,
            "randomised_at": RANDOMISED_AT,
        }
        for i in range(count)
    ]


def test_a_config_takes_64_channels_and_refuses_65_naming_the_bound(tmp_path: Path) -> None:
    assert MAX_CHANNELS == 64
    config = build_config({"state_dir": str(tmp_path), "channels": _channels(64)})
    assert len(config.channels) == 64
    with pytest.raises(ConfigError, match=r"config channels: .*1 to 64 entries"):
        build_config({"state_dir": str(tmp_path), "channels": _channels(65)})


class _WriteAheadDriver(ModelDriver):
    """A model pump that checks, as each start or rate command reaches it, that the decision
    commanding it is durable in the journal already (a fresh read-only connection sees it)."""

    def __init__(self, model: PumpModel, state_dir: Path, channel: str) -> None:
        super().__init__(model)
        self.state_dir, self.channel = state_dir, channel
        self.performed: list[str] = []

    def _journalled(self, command: str) -> int:
        db = sqlite3.connect(f"file:{self.state_dir / JOURNAL_FILENAME}?mode=ro", uri=True)
        try:
            rows = db.execute(
                "SELECT count(*) FROM events WHERE channel = ? AND kind = 'command'"
                " AND json_extract(payload, '$.command') = ?",
                (self.channel, command),
            ).fetchone()
        finally:
            db.close()
        return int(rows[0])

    def _perform(self, command: str) -> None:
        self.performed.append(command)
        assert self._journalled(command) >= self.performed.count(command), (
            f"{self.channel}: {command} reached the pump before its decision was durable"
        )

    def _start(self) -> None:
        self._perform("start")
        super()._start()

    def _write_rate(self, rate_ml_per_h: float) -> float:
        self._perform("set_rate")
        return super()._write_rate(rate_ml_per_h)


@pytest.mark.timeout(60)
@pytest.mark.hazard("H-JN-01")
def test_invariant_6_64_channels_stepped_at_once_each_journal_before_it_acts(
    tmp_path: Path,
) -> None:
    count = MAX_CHANNELS
    clock = ManualClock()
    config = build_config(
        {
            "state_dir": str(tmp_path),
            "control": {"poll_interval_s": 60.0},
            "channels": _channels(count),
        }
    )
    drivers: dict[str, _WriteAheadDriver] = {}

    def factory(url: str) -> _WriteAheadDriver:
        channel = f"bed{int(url.rsplit(':', 1)[1]) - 10000:02d}"
        model = PumpModel(clock, max_rate_ml_per_h=200.0, reservoir_ml=5000.0)
        drivers[channel] = _WriteAheadDriver(model, tmp_path, channel)
        return drivers[channel]

    gateway = Gateway(config, clock=clock, driver_factory=factory)
    # Every cycle waits at a barrier of all the channels: only if all of them are stepped at
    # once (not in waves of a default executor's few threads) does any get past it.
    barrier = threading.Barrier(count, timeout=20)
    for channel in gateway.channels.values():
        step = channel.step

        def at_once(step: Callable[[], None] = step) -> None:
            barrier.wait()
            step()

        channel.step = at_once  # type: ignore[method-assign]

    async def ticks() -> tuple[list[bool], set[str]]:
        oks = []
        for _ in range(3):
            oks.append(await gateway.tick())
            clock.advance(gateway.poll_interval_s)
        states = {snap["state"] for snap in gateway.snapshots()}
        await gateway.shutdown("test over")
        return oks, states

    assert asyncio.run(ticks()) == ([True, True, True], {"infusing"})
    for driver in drivers.values():
        assert {"start", "set_rate"} <= set(driver.performed)


@pytest.mark.timeout(30)
def test_a_failed_cycle_stops_its_pump_and_fails_the_tick(tmp_path: Path) -> None:
    clock = ManualClock()
    config = build_config({"state_dir": str(tmp_path), "channels": _channels(4)})
    gateway = Gateway(
        config,
        clock=clock,
        driver_factory=lambda url: ModelDriver(PumpModel(clock, max_rate_ml_per_h=200.0)),
    )
    stopped: list[str] = []
    for name in ("bed01", "bed03"):
        channel = gateway.channels[name]

        def broken() -> None:
            raise RuntimeError("a bug")

        def stop(name: str = name) -> None:
            stopped.append(name)

        channel.step = broken  # type: ignore[method-assign]
        channel.driver.stop = stop  # type: ignore[method-assign]

    async def tick() -> bool:
        try:
            return await gateway.tick()
        finally:
            await gateway.shutdown("test over")

    assert asyncio.run(tick()) is False
    assert sorted(stopped[:2]) == ["bed01", "bed03"]  # then again by the shutdown
    assert gateway.last_cycle_ok is False
