"""Store-and-forward of outbound HL7 messages: journalled before sending, resent until the receiver
answers, in order per channel, bounded, surviving receiver outages and restarts, and never in the
control loop's way.

The hospital's interface engine is played by the third-party ``hl7`` library's MLLP server, on
an event loop of its own; the gateway side sends with its own MLLP code, so framing is checked
against an independent implementation.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hl7  # type: ignore[import-untyped, unused-ignore]
import hl7.mllp  # type: ignore[import-untyped, unused-ignore]
import pytest
import structlog

from gateway.journal import JOURNAL_FILENAME, SCHEMA_VERSION, Journal, JournalError
from gateway.outbox import Outbox, OutboxSender
from protocol.clock import ManualClock, SystemClock

RESEND_S = 10.0


def hl7_message(channel: str, n: int) -> tuple[str, str]:
    """A stand-in observation message (control id, text) with a unique MSH-10."""
    control_id = f"{channel}-{n:04d}"
    text = "\r".join(
        [
            "MSH|^~\\&|IGM-GATEWAY|ICU|HIS|HOSP|20260101000000||ORU^R01^ORU_R01|"
            f"{control_id}|P|2.6",
            f"PID|1||{channel}",
            f"OBX|1|NM|rate^Rate||{n}.5|mL/h",
        ]
    )
    return control_id, text


def channel_of(control_id: str) -> str:
    return control_id.rsplit("-", 1)[0]


def wait_until_sent(journal: Journal, timeout_s: float = 10.0) -> None:
    """Until the sender thread has settled everything (an answer arrives after the message)."""
    deadline = time.monotonic() + timeout_s
    while journal.outbox_backlog():
        assert time.monotonic() < deadline, journal.outbox_backlog()
        time.sleep(0.01)


class Receiver:
    """An MLLP receiver (``hl7.mllp.start_hl7_server``) on 127.0.0.1, on a thread of its own.

    ``mode``: ``"answer"`` (``AA``, or what :attr:`answers` says for a control id), ``"silent"``
    (reads, never answers), ``"close"`` (reads, then hangs up), ``"garbage"`` (answers with a
    block that is not HL7) or ``"other"`` (acknowledges another control id).  :meth:`down`
    closes the listener and every connection, so connecting is refused until :meth:`up`.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="test-receiver")
        self.thread.start()
        self.port = 0
        self.mode = "answer"
        self.answers: dict[str, tuple[str, str]] = {}
        #: Control ids in the order they arrived (duplicates included).
        self.received: list[str] = []
        self._changed = threading.Condition()
        self._server: asyncio.Server | None = None
        self._writers: set[Any] = set()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(10)

    def up(self) -> None:
        self._call(self._up())

    async def _up(self) -> None:
        self._server = await hl7.mllp.start_hl7_server(
            self._client, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    def down(self) -> None:
        self._call(self._down())

    async def _down(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    async def _client(self, reader: Any, writer: Any) -> None:
        self._writers.add(writer)
        try:
            while True:
                try:
                    message = await reader.readmessage()
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                control_id = str(message.segment("MSH")(10))
                with self._changed:
                    self.received.append(control_id)
                    self._changed.notify_all()
                if self.mode == "silent":
                    continue
                if self.mode == "close":
                    return
                if self.mode == "garbage":
                    writer.writeblock(b"this is not an acknowledgement")
                    await writer.drain()
                    continue
                if self.mode == "other":
                    message.segment("MSH").assign_field("SOMETHING-ELSE", 10)
                code, text = self.answers.get(control_id, ("AA", ""))
                ack = message.create_ack(code, message_id=f"ACK{len(self.received)}")
                if text:
                    ack.segment("MSA").assign_field(text, 3)
                writer.writemessage(ack)
                await writer.drain()
        finally:
            self._writers.discard(writer)
            writer.close()

    def wait_for(self, count: int, timeout_s: float = 10.0) -> None:
        with self._changed:
            assert self._changed.wait_for(lambda: len(self.received) >= count, timeout_s), (
                f"received {len(self.received)} of {count}"
            )

    def by_channel(self) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for control_id in self.received:
            found.setdefault(channel_of(control_id), []).append(control_id)
        return found

    def close(self) -> None:
        self.down()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    found.up()
    try:
        yield found
    finally:
        found.close()


@dataclass
class FakeMetrics:
    """Records what the outbox reports (the OutboxMetrics protocol)."""

    state: dict[str, tuple[int, float | None]] = field(default_factory=dict)
    dropped: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)

    def outbox_state(self, channel: str, backlog: int, last_ack_s: float | None) -> None:
        self.state[channel] = (backlog, last_ack_s)

    def outbox_dropped(self, channel: str, n: int) -> None:
        self.dropped[channel] += n

    def outbox_rejected(self, channel: str) -> None:
        self.rejected[channel] += 1


@dataclass
class Side:
    """The gateway's side: journal, outbox, sender, on a manual clock."""

    clock: ManualClock
    journal: Journal
    outbox: Outbox
    sender: OutboxSender
    metrics: FakeMetrics

    def put(self, channel: str, n: int) -> str:
        control_id, text = hl7_message(channel, n)
        self.outbox.put(channel, control_id, text)
        return control_id

    def statuses(self, channel: str | None = None) -> dict[str, str]:
        return {r.control_id: r.status for r in self.journal.outbox_rows(channel)}

    def close(self) -> None:
        self.sender.stop()
        self.journal.close()


@pytest.fixture
def make_side(tmp_path: Path, receiver: Receiver) -> Iterator[Callable[..., Side]]:
    sides: list[Side] = []

    def make(
        *, clock: ManualClock | None = None, max_messages: int = 10_000, **sender: Any
    ) -> Side:
        clock = clock or ManualClock()
        journal = Journal(tmp_path / "state")
        metrics = FakeMetrics()
        outbox = Outbox(journal, clock, max_messages=max_messages, metrics=metrics)
        settings: dict[str, Any] = {"resend_interval_s": RESEND_S, "answer_timeout_s": 2.0}
        settings.update(sender)
        side = Side(
            clock, journal, outbox, OutboxSender(outbox, receiver.address, **settings), metrics
        )
        sides.append(side)
        return side

    yield make
    for side in sides:
        side.close()


@pytest.mark.timeout(30)
def test_messages_arrive_in_order_once_with_aa(
    make_side: Callable[..., Side], receiver: Receiver
) -> None:
    side = make_side()
    sent = [side.put("bed1", n) for n in range(1, 6)]
    assert side.journal.outbox_backlog() == {"bed1": 5}  # journalled before anything is sent
    assert receiver.received == []

    assert side.sender.run_once() == 5
    assert receiver.received == sent
    rows = side.journal.outbox_rows("bed1")
    assert [r.status for r in rows] == ["acked"] * 5
    assert all(r.attempts == 1 for r in rows)
    assert all(f"MSA|AA|{r.control_id}" in (r.answer or "") for r in rows)
    assert side.metrics.state["bed1"] == (0, side.clock.wall())
    assert side.sender.run_once() == 0  # nothing is sent twice
    assert receiver.received == sent


@pytest.mark.timeout(60)
def test_a_receiver_down_for_an_hour_loses_nothing_and_keeps_the_order(
    make_side: Callable[..., Side], receiver: Receiver
) -> None:
    receiver.down()
    side = make_side()
    expected: dict[str, list[str]] = {"bed1": [], "bed2": []}
    with structlog.testing.capture_logs() as logs:
        for minute in range(60):  # an hour of virtual time, a message a minute per channel
            for channel in expected:
                expected[channel].append(side.put(channel, minute))
            assert side.sender.run_once() == 0  # refused: nothing ends
            side.clock.advance(60.0)
        assert side.journal.outbox_backlog() == {"bed1": 60, "bed2": 60}
        assert all(r.attempts == 0 for r in side.journal.outbox_rows())  # never written out
        receiver.up()
        side.clock.advance(RESEND_S)
        assert side.sender.run_once() == 120
    assert receiver.by_channel() == expected  # every message, once, in order per channel
    assert set(side.statuses().values()) == {"acked"}
    assert side.metrics.state == {
        "bed1": (0, side.clock.wall()),
        "bed2": (0, side.clock.wall()),
    }
    events = [e["event"] for e in logs]
    assert events.count("outbox_receiver_unreachable") == 1  # logged once per outage
    assert events.count("outbox_receiver_reachable") == 1


@pytest.mark.timeout(30)
def test_no_answer_leaves_the_message_pending_and_it_is_resent_after_the_interval(
    make_side: Callable[..., Side], receiver: Receiver
) -> None:
    side = make_side(answer_timeout_s=0.2)
    receiver.mode = "silent"
    first = side.put("bed1", 1)
    second = side.put("bed1", 2)
    assert side.sender.run_once() == 0
    assert receiver.received == [first]  # the next one waits for this one's answer
    side.clock.advance(RESEND_S / 2)
    assert side.sender.run_once() == 0
    assert receiver.received == [first]  # not before the resend interval

    receiver.mode = "close"  # hangs up without answering: still no answer
    side.clock.advance(RESEND_S / 2)
    assert side.sender.run_once() == 0
    assert receiver.received == [first, first]

    for mode in ("garbage", "other"):  # an answer, but not this message's acknowledgement
        receiver.mode = mode
        side.clock.advance(RESEND_S)
        assert side.sender.run_once() == 0
    assert receiver.received == [first] * 4
    assert side.statuses() == {first: "pending", second: "pending"}

    receiver.mode = "answer"
    side.clock.advance(RESEND_S)
    assert side.sender.run_once() == 2
    assert receiver.received == [first] * 5 + [second]  # duplicates only of the unanswered
    assert side.statuses() == {first: "acked", second: "acked"}
    assert [r.attempts for r in side.journal.outbox_rows()] == [5, 1]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("code", ["AE", "AR"])
def test_a_refusal_is_journalled_alarmed_once_and_not_retried(
    make_side: Callable[..., Side], receiver: Receiver, code: str
) -> None:
    side = make_side()
    ids = [side.put("bed1", n) for n in range(1, 4)]
    receiver.answers[ids[1]] = (code, "unknown patient")
    with structlog.testing.capture_logs() as logs:
        assert side.sender.run_once() == 3
        for _ in range(5):  # hours later: never sent again
            side.clock.advance(3600.0)
            assert side.sender.run_once() == 0
    assert receiver.received == ids  # the next message went after the refusal
    assert side.statuses() == {ids[0]: "acked", ids[1]: "rejected", ids[2]: "acked"}
    (event,) = side.journal.events("bed1", "outbox_rejected")
    assert event.payload["control_id"] == ids[1]
    assert event.payload["code"] == code
    assert event.payload["text"] == "unknown patient"
    assert f"MSA|{code}|{ids[1]}|unknown patient" in event.payload["answer"]
    errors = [e for e in logs if e["event"] == "outbox_rejected"]
    assert len(errors) == 1
    assert errors[0]["log_level"] == "error"
    assert errors[0]["control_id"] == ids[1]
    assert side.metrics.rejected == Counter({"bed1": 1})


@pytest.mark.timeout(30)
def test_the_backlog_is_bounded_by_dropping_the_oldest_unsent(
    make_side: Callable[..., Side], receiver: Receiver
) -> None:
    receiver.down()
    side = make_side(max_messages=100)
    ids = []
    with structlog.testing.capture_logs() as logs:
        for n in range(150):
            ids.append(side.put("bed1", n))
            side.sender.run_once()  # refused
            side.clock.advance(1.0)
    statuses = side.statuses()
    assert [statuses[i] for i in ids[:50]] == ["dropped"] * 50
    assert [statuses[i] for i in ids[50:]] == ["pending"] * 100
    assert side.journal.outbox_backlog() == {"bed1": 100}
    dropped_events = list(side.journal.events("bed1", "outbox_dropped"))
    assert sum(e.payload["dropped"] for e in dropped_events) == 50
    assert dropped_events[0].payload["first_control_id"] == ids[0]
    assert side.metrics.dropped == Counter({"bed1": 50})
    assert side.metrics.state["bed1"] == (100, None)
    assert sum(e["event"] == "outbox_dropped" for e in logs) == 50

    receiver.up()
    side.clock.advance(RESEND_S)
    assert side.sender.run_once() == 100
    assert receiver.received == ids[50:]


@pytest.mark.timeout(30)
def test_the_message_waiting_for_its_answer_is_never_the_one_dropped(
    make_side: Callable[..., Side], receiver: Receiver
) -> None:
    receiver.mode = "silent"
    side = make_side(max_messages=100, answer_timeout_s=0.2)
    ids = [side.put("bed1", 0)]
    side.sender.run_once()  # sent, no answer: it may have arrived
    ids += [side.put("bed1", n) for n in range(1, 101)]
    statuses = side.statuses()
    assert statuses[ids[0]] == "pending"
    assert statuses[ids[1]] == "dropped"  # the oldest never sent
    assert side.journal.outbox_backlog() == {"bed1": 100}


@pytest.mark.timeout(30)
def test_a_restart_resumes_the_backlog_and_resends_the_unanswered(
    make_side: Callable[..., Side], receiver: Receiver
) -> None:
    receiver.mode = "silent"
    first = make_side(answer_timeout_s=0.2)
    ids = [first.put("bed1", n) for n in range(1, 6)]
    first.sender.run_once()
    assert receiver.received == ids[:1]  # it arrived, but its answer was never recorded
    first.close()  # as SIGKILL would leave it: nothing marked since

    receiver.mode = "answer"
    clock = ManualClock(start_monotonic=0.0, start_wall=first.clock.wall() + 60.0)
    second = make_side(clock=clock)
    assert second.metrics.state == {"bed1": (5, None)}  # the backlog is known at once
    assert second.sender.run_once() == 5
    assert receiver.received == [ids[0], *ids]  # the receiver de-duplicates by control id
    assert set(second.statuses().values()) == {"acked"}
    assert [r.attempts for r in second.journal.outbox_rows()] == [2, 1, 1, 1, 1]


@pytest.mark.timeout(30)
def test_two_channels_interleaved_keep_their_order_on_the_sender_thread(
    make_side: Callable[..., Side], receiver: Receiver
) -> None:
    side = make_side(idle_wait_s=0.05)
    side.sender.start()
    expected: dict[str, list[str]] = {"bed1": [], "bed2": []}
    pattern = ["bed1", "bed2", "bed2", "bed1", "bed1", "bed1", "bed2"] * 6
    for n, channel in enumerate(pattern):
        expected[channel].append(side.put(channel, n))
        if n % 5 == 0:
            time.sleep(0.01)  # let some go while others are queued
    receiver.wait_for(len(pattern))
    wait_until_sent(side.journal)
    side.sender.stop()
    assert not side.sender.is_alive()
    assert receiver.by_channel() == expected
    assert len(receiver.received) == len(set(receiver.received))
    assert set(side.statuses().values()) == {"acked"}


class CountingSender(OutboxSender):
    """Counts connection attempts."""

    connects = 0

    def _connect(self) -> Any:
        if self._sock is None:
            self.connects += 1
        return super()._connect()


@pytest.mark.timeout(30)
def test_on_real_time_the_thread_resends_at_the_interval_without_spinning(
    tmp_path: Path, receiver: Receiver
) -> None:
    receiver.down()
    with Journal(tmp_path) as journal:
        outbox = Outbox(journal, SystemClock(), max_messages=100)
        sender = CountingSender(outbox, receiver.address, resend_interval_s=0.2)
        sender.start()
        try:
            control_id, text = hl7_message("bed1", 1)
            outbox.put("bed1", control_id, text)
            time.sleep(1.0)
            assert 2 <= sender.connects <= 8  # refused every 0.2 s, not in a busy loop
            receiver.up()
            wait_until_sent(journal)
        finally:
            sender.stop()
        assert not sender.is_alive()
        assert receiver.received == [control_id]
        assert [r.status for r in journal.outbox_rows()] == ["acked"]


#: What "never blocks" allows of the sender's answer wait: a tenth of it, far above a fsync.
ANSWER_WAIT_FRACTION = 0.1


@pytest.mark.timeout(30)
def test_a_slow_receiver_never_blocks_put_and_stop_is_prompt(
    make_side: Callable[..., Side], receiver: Receiver
) -> None:
    receiver.mode = "silent"
    side = make_side(answer_timeout_s=20.0, idle_wait_s=0.05)
    side.sender.start()
    first = side.put("bed1", 0)
    receiver.wait_for(1)  # the sender now waits (up to 20 s) for an answer that never comes
    durations = []
    for n in range(1, 21):
        started = time.monotonic()
        side.put("bed1" if n % 2 else "bed2", n)
        durations.append(time.monotonic() - started)
    # Blocked behind the sender, a put would wait out the 20-s answer timeout; each put is one
    # journal write, whose fsync alone can take tens of ms on a loaded machine.
    assert max(durations) < ANSWER_WAIT_FRACTION * 20.0, durations
    started = time.monotonic()
    side.sender.stop()
    assert time.monotonic() - started < ANSWER_WAIT_FRACTION * 20.0  # not the 20-s wait
    assert not side.sender.is_alive()
    assert receiver.received == [first]  # bed2 waits too: one receiver, one connection
    assert side.journal.outbox_backlog() == {"bed1": 11, "bed2": 10}


@pytest.mark.timeout(30)
def test_a_duplicate_control_id_is_refused_without_failing_the_caller(
    make_side: Callable[..., Side], receiver: Receiver
) -> None:
    side = make_side()
    control_id, text = hl7_message("bed1", 1)
    side.outbox.put("bed1", control_id, text)
    with structlog.testing.capture_logs() as logs:
        side.outbox.put("bed1", control_id, text)
    assert [e["event"] for e in logs] == ["outbox_duplicate"]
    assert side.journal.outbox_backlog() == {"bed1": 1}


def test_finished_messages_are_pruned_but_the_last_ack_is_kept(tmp_path: Path) -> None:
    with Journal(tmp_path) as journal:
        for n, status in enumerate(["acked", "acked", "rejected", "acked", "pending"]):
            journal.outbox_put("bed1", f"m{n}", "MSH|", wall_s=n, monotonic_s=n, max_messages=100)
            row = journal.outbox_next("bed1")
            assert row is not None
            if status != "pending":
                assert journal.outbox_attempt(row.seq, wall_s=n)
                journal.outbox_mark(row.seq, status, answer="MSA", wall_s=n, monotonic_s=n)
        assert journal.outbox_prune(before_wall_s=10.0) == 3
        assert [(r.control_id, r.status) for r in journal.outbox_rows()] == [
            ("m3", "acked"),
            ("m4", "pending"),
        ]
        assert journal.outbox_last_ack_wall_s() == {"bed1": 3.0}


def test_a_version_1_journal_gains_the_outbox_and_keeps_opening(tmp_path: Path) -> None:
    with Journal(tmp_path) as journal:
        journal.record("bed1", "before", {"x": 1}, wall_s=1.0, monotonic_s=1.0)
    path = tmp_path / JOURNAL_FILENAME
    with sqlite3.connect(path) as raw:  # as a version-1 gateway left it
        raw.execute("DROP TABLE outbox")
        raw.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    raw.close()
    for _ in range(2):
        with Journal(tmp_path) as journal:
            assert journal.get_meta("schema_version") == str(SCHEMA_VERSION) == "2"
            assert [e.kind for e in journal.events("bed1")] == ["before"]
            assert journal.outbox_backlog() == {}
    with Journal(tmp_path) as journal:
        journal.outbox_put("bed1", "m1", "MSH|", wall_s=2.0, monotonic_s=2.0, max_messages=100)
        assert journal.outbox_backlog() == {"bed1": 1}


def test_a_newer_journal_is_refused_untouched(tmp_path: Path) -> None:
    Journal(tmp_path).close()
    path = tmp_path / JOURNAL_FILENAME
    with sqlite3.connect(path) as raw:
        raw.execute("DROP TABLE outbox")
        raw.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    raw.close()
    with pytest.raises(JournalError, match="schema version 3, this gateway reads 2"):
        Journal(tmp_path)
    with sqlite3.connect(path) as raw:
        tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    raw.close()
    assert "outbox" not in tables


@pytest.mark.timeout(30)
def test_gateway_metrics_take_the_outbox_reports(tmp_path: Path, receiver: Receiver) -> None:
    from gateway.metrics import GatewayMetrics

    if not hasattr(GatewayMetrics, "outbox_state"):
        pytest.skip("GatewayMetrics has no outbox metrics yet")
    metrics = GatewayMetrics()
    clock = ManualClock()
    with Journal(tmp_path) as journal:
        outbox = Outbox(journal, clock, max_messages=100, metrics=metrics)
        sender = OutboxSender(outbox, receiver.address)
        control_id, text = hl7_message("bed1", 1)
        outbox.put("bed1", control_id, text)
        assert sender.run_once() == 1
        sender.stop()
    rendered = metrics.render().decode()
    assert 'infusion_gateway_outbox_backlog_messages{channel="bed1"} 0.0' in rendered
    assert "infusion_gateway_outbox_last_ack_timestamp_seconds" in rendered
