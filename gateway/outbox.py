"""Store-and-forward of outbound HL7 messages: the journal first, then the receiver, until it
answers.

Two halves, on two threads:

* :class:`Outbox` is the enqueue side, called from the control thread: :meth:`Outbox.put` is one
  small journal transaction (the message, and, past the bound, the oldest unsent ones of its
  channel dropped and an ``outbox_dropped`` event) and never touches the network.
* :class:`OutboxSender` is the ``hl7-sender`` thread: it sends each channel's oldest pending
  message over MLLP to ``send_to`` and waits for the answer.  ``AA`` (or ``CA``) marks it
  acknowledged; ``AE``/``AR``/``CE``/``CR`` marks it rejected (an ``outbox_rejected`` event, one
  error log line, one metric count; never resent), and the channel's next message goes.  No
  answer, a refused connection, a closed one or an answer that is not an acknowledgement leave
  it pending, to be sent again ``resend_interval_s`` later.

Guarantees: per channel, message n+1 is never sent before n is acknowledged, rejected or dropped.
Nothing queued is lost across a receiver outage or a restart: a new sender resumes from the
journal.  A message sent whose answer was not recorded before a crash (or did not come) is sent
again: delivery is *at least once*, and the receiver de-duplicates by control id (MSH-10).  The
backlog is bounded per channel (``hl7.outbox_max_messages``); a message already sent (a channel's
oldest, waiting for its answer) is never the one dropped.

Time: *when* to resend follows the injected clock, so a test can keep a receiver down for an
hour of virtual time (:meth:`OutboxSender.run_once` after ``clock.advance``); network waits
(connect, answer) are real seconds, short, and cut short by :meth:`OutboxSender.stop`.
The journal's lock is never held across a network wait.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import os
import selectors
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import structlog

from gateway.config import parse_host_port
from gateway.hl7_messages import AckResult, parse_ack
from gateway.journal import Journal, OutboxDuplicateError, OutboxRow
from protocol.clock import Clock

log = structlog.get_logger("gateway.outbox")

#: MLLP framing: <VT> message <FS><CR>.
START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c\x0d"
#: Acknowledgement codes (HL7 table 0008) that end a message's life as delivered ...
ACCEPTED_CODES = frozenset({"AA", "CA"})
#: ... and as refused (journalled, alarmed once, never resent).
REFUSED_CODES = frozenset({"AE", "AR", "CE", "CR"})
#: Finished messages are kept this long (clock seconds) in the journal's outbox table.
DEFAULT_RETENTION_S = 7 * 86_400.0
#: How often (clock seconds) the sender prunes finished messages.
PRUNE_EVERY_S = 3600.0
#: Largest answer the sender reads (bytes); a receiver sending more is not answering.
MAX_ANSWER_BYTES = 1 << 20
#: Real seconds between checks of ``stop`` while the sender waits on the network.
_SLICE_S = 0.05
#: Characters of a bad answer shown in the log.
_SHOWN_CHARS = 200


class OutboxMetrics(Protocol):
    """What the outbox reports (``gateway.metrics.GatewayMetrics`` has these)."""

    def outbox_state(self, channel: str, backlog: int, last_ack_s: float | None) -> None: ...

    def outbox_dropped(self, channel: str, n: int) -> None: ...

    def outbox_rejected(self, channel: str) -> None: ...


class _Answer(NamedTuple):
    """What came back for a message: the whole text, and its MSA if it is an acknowledgement
    (else why not)."""

    text: str
    ack: AckResult | None
    problem: str


class Outbox:
    """The enqueue side: thread-safe, one journal transaction per :meth:`put`, no network."""

    def __init__(
        self,
        journal: Journal,
        clock: Clock,
        *,
        max_messages: int,
        metrics: OutboxMetrics | None = None,
    ) -> None:
        if max_messages < 1:
            raise ValueError(f"max_messages must be >= 1, got {max_messages!r}")
        self.journal = journal
        self.clock = clock
        self.max_messages = max_messages
        self.metrics = metrics
        #: Called after every put (the sender sets it to wake itself up).
        self.on_put: Callable[[], None] | None = None
        self._lock = threading.Lock()
        self._last_ack_wall_s = journal.outbox_last_ack_wall_s()
        if metrics is not None:
            backlog = journal.outbox_backlog()
            for channel in sorted(set(backlog) | set(self._last_ack_wall_s)):
                metrics.outbox_state(channel, backlog.get(channel, 0), self.last_ack(channel))

    def put(self, channel: str, control_id: str, message: str) -> None:
        """Journal ``message`` (HL7 text whose MSH-10 is ``control_id``) for sending.

        Past ``max_messages`` pending on the channel, its oldest unsent messages are dropped
        (journalled, logged, counted).  A control id queued before is refused with an error log
        line and nothing written (the control loop is never failed for it); a journal that
        cannot write raises JournalError, as any other journal write of the control loop does.
        """
        try:
            put = self.journal.outbox_put(
                channel,
                control_id,
                message,
                wall_s=self.clock.wall(),
                monotonic_s=self.clock.monotonic(),
                max_messages=self.max_messages,
            )
        except OutboxDuplicateError as exc:
            log.error("outbox_duplicate", channel=channel, control_id=control_id, error=str(exc))
            return
        if put.dropped:
            log.warning(
                "outbox_dropped",
                channel=channel,
                dropped=put.dropped,
                backlog=put.backlog,
                max_messages=self.max_messages,
            )
            if self.metrics is not None:
                self.metrics.outbox_dropped(channel, put.dropped)
        self._report(channel, put.backlog)
        wake = self.on_put
        if wake is not None:
            wake()

    def backlog(self) -> dict[str, int]:
        """Pending messages per channel."""
        return self.journal.outbox_backlog()

    def last_ack(self, channel: str) -> float | None:
        """Wall time of the channel's last acknowledgement (None: none kept)."""
        with self._lock:
            return self._last_ack_wall_s.get(channel)

    def _acked(self, channel: str, wall_s: float) -> None:
        with self._lock:
            self._last_ack_wall_s[channel] = wall_s

    def _report(self, channel: str, backlog: int | None = None) -> None:
        if self.metrics is None:
            return
        if backlog is None:
            backlog = self.journal.outbox_backlog().get(channel, 0)
        self.metrics.outbox_state(channel, backlog, self.last_ack(channel))


class _Outcome(enum.Enum):
    DONE = "done"  # acknowledged or rejected: the channel's next message may go
    NO_ANSWER = "no_answer"  # sent (or tried), no usable answer: the channel waits
    UNREACHABLE = "unreachable"  # no connection: every channel waits
    SKIPPED = "skipped"  # dropped while we were about to send it
    STOPPED = "stopped"


class _StoppedError(Exception):
    """stop() was called while the sender waited on the network."""


class _ConnectionEndedError(OSError):
    """The receiver closed the connection before answering."""

    def __init__(self, got_bytes: bool) -> None:
        super().__init__("the receiver closed the connection without answering")
        self.got_bytes = got_bytes


class OutboxSender:
    """The ``hl7-sender`` thread: MLLP to ``send_to`` (HOST:PORT), one connection kept open.

    :meth:`start` runs :meth:`run_once` in a loop with a short real wait between passes (woken
    at once by :meth:`Outbox.put`); tests may instead call :meth:`run_once` themselves.
    """

    def __init__(
        self,
        outbox: Outbox,
        send_to: str,
        *,
        resend_interval_s: float = 10.0,
        connect_timeout_s: float = 2.0,
        answer_timeout_s: float = 2.0,
        idle_wait_s: float = 0.2,
        retention_s: float = DEFAULT_RETENTION_S,
    ) -> None:
        self.outbox = outbox
        self.journal = outbox.journal
        self.clock = outbox.clock
        self.send_to = send_to
        self.host, self.port = parse_host_port(send_to, "hl7.send_to")
        self.resend_interval_s = resend_interval_s
        self.connect_timeout_s = connect_timeout_s
        self.answer_timeout_s = answer_timeout_s
        self.idle_wait_s = idle_wait_s
        self.retention_s = retention_s
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._run_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._buffer = bytearray()
        #: Clock time before which nothing is sent (the receiver could not be reached) ...
        self._down_until: float | None = None
        #: ... and since when (clock time) it could not, for the log.
        self._down_since: float | None = None
        #: Clock time before which a channel's head message is not sent again (no answer).
        self._retry_at: dict[str, float] = {}
        self._last_prune_wall_s: float | None = None

    # -- the thread --------------------------------------------------------------------------

    def start(self) -> None:
        """Start the ``hl7-sender`` thread."""
        if self._thread is not None:
            raise RuntimeError("the sender is started already")
        self._stop.clear()
        self.outbox.on_put = self.wake
        self._thread = threading.Thread(target=self._main, name="hl7-sender", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Look at the outbox now rather than after the idle wait."""
        self._wake.set()

    def stop(self, timeout_s: float | None = 5.0) -> None:
        """End the thread (within about 50 ms, whatever it waits on) and close the connection.
        Idempotent; what is pending stays in the journal for the next sender."""
        self._stop.set()
        self._wake.set()
        if self.outbox.on_put == self.wake:
            self.outbox.on_put = None
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)
        if thread is None or not thread.is_alive():
            self._close()

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _main(self) -> None:
        failing = False
        try:
            while not self._stop.is_set():
                self._wake.clear()
                wait_s = self.idle_wait_s
                try:
                    self.run_once()
                    failing = False
                except Exception as exc:  # the journal, most likely: keep trying, log once
                    if not failing:
                        log.error("outbox_sender_failed", error=repr(exc))
                    failing = True
                    self._close()
                    wait_s = max(wait_s, 1.0)
                self._wake.wait(min(wait_s, self._real_s_until_due()))
        finally:
            self._close()

    def _real_s_until_due(self) -> float:
        """Real seconds until the next resend is due (inf if none, or on a manual clock)."""
        scale = self.clock.time_scale
        now = self.clock.monotonic()
        if self._down_until is not None and self._down_until > now:
            due = self._down_until  # nothing goes before the receiver is tried again
        else:
            due = min((t for t in self._retry_at.values() if t > now), default=float("inf"))
        if scale <= 0.0 or due == float("inf"):
            return float("inf")
        return (due - now) / scale

    # -- one pass ----------------------------------------------------------------------------

    def run_once(self) -> int:
        """Send what is due, one message per channel per round, until nothing is due (all sent,
        or waiting to be resent).  Returns how many messages ended (acknowledged or rejected).
        """
        with self._run_lock:
            self._maybe_prune()
            ended = 0
            while not self._stop.is_set():
                now = self.clock.monotonic()
                if self._down_until is not None and now < self._down_until:
                    break
                due = [
                    c
                    for c in self.journal.outbox_channels_pending()
                    if self._retry_at.get(c, now) <= now
                ]
                if not due:
                    break
                for channel in due:
                    row = self.journal.outbox_next(channel)
                    if row is None:
                        continue
                    outcome = self._deliver(row)
                    if outcome is _Outcome.DONE:
                        ended += 1
                        self._retry_at.pop(channel, None)
                    elif outcome is _Outcome.NO_ANSWER:
                        self._retry_at[channel] = self.clock.monotonic() + self.resend_interval_s
                    elif outcome in (_Outcome.UNREACHABLE, _Outcome.STOPPED):
                        return ended
            return ended

    def _maybe_prune(self) -> None:
        wall = self.clock.wall()
        if self._last_prune_wall_s is not None and wall - self._last_prune_wall_s < PRUNE_EVERY_S:
            return
        self._last_prune_wall_s = wall
        pruned = self.journal.outbox_prune(wall - self.retention_s)
        if pruned:
            log.info("outbox_pruned", messages=pruned, retention_s=self.retention_s)

    def _deliver(self, row: OutboxRow) -> _Outcome:
        """Send one message and settle it by its answer."""
        frame = START_BLOCK + row.message.encode("utf-8") + END_BLOCK
        for last_try in (False, True):
            reused = self._sock is not None
            try:
                sock = self._connect()
            except _StoppedError:
                return _Outcome.STOPPED
            except OSError as exc:
                self._unreachable(exc)
                return _Outcome.UNREACHABLE
            # Journal first: the attempt is recorded before a byte goes out.
            if not self.journal.outbox_attempt(row.seq, wall_s=self.clock.wall()):
                return _Outcome.SKIPPED
            try:
                sock.settimeout(self.answer_timeout_s)
                sock.sendall(frame)
                answer = self._read_answer(sock, row)
            except _StoppedError:
                self._close()
                return _Outcome.STOPPED
            except OSError as exc:
                self._close()
                closed = isinstance(exc, ConnectionError | _ConnectionEndedError)
                if reused and not last_try and closed and not getattr(exc, "got_bytes", False):
                    continue  # the receiver closed an idle connection: once more, on a new one
                self._no_answer(row, repr(exc))
                return _Outcome.NO_ANSWER
            if answer is None:
                self._close()  # a late answer must not be read as the next message's
                self._no_answer(row, f"no answer within {self.answer_timeout_s:g} s")
                return _Outcome.NO_ANSWER
            return self._settle(row, answer)
        return _Outcome.NO_ANSWER  # pragma: no cover - the loop always returns

    def _settle(self, row: OutboxRow, found: _Answer) -> _Outcome:
        wall_s, monotonic_s = self.clock.wall(), self.clock.monotonic()
        answer, ack = found.text, found.ack
        if ack is None:
            why = f"not an acknowledgement ({found.problem}): {answer[:_SHOWN_CHARS]!r}"
            self._no_answer(row, why)
            return _Outcome.NO_ANSWER
        if ack.code in ACCEPTED_CODES:
            self.journal.outbox_mark(
                row.seq, "acked", answer=answer, wall_s=wall_s, monotonic_s=monotonic_s
            )
            self.outbox._acked(row.channel, wall_s)
            self.outbox._report(row.channel)
            return _Outcome.DONE
        if ack.code in REFUSED_CODES:
            self.journal.outbox_mark(
                row.seq,
                "rejected",
                answer=answer,
                wall_s=wall_s,
                monotonic_s=monotonic_s,
                detail={"code": ack.code, "text": ack.text, "attempts": row.attempts + 1},
            )
            log.error(
                "outbox_rejected",
                channel=row.channel,
                control_id=row.control_id,
                code=ack.code,
                text=ack.text,
                message="the receiver refused this message; it is not sent again",
            )
            if self.outbox.metrics is not None:
                self.outbox.metrics.outbox_rejected(row.channel)
            self.outbox._report(row.channel)
            return _Outcome.DONE
        self._no_answer(row, f"acknowledgement code {ack.code!r} is not one of HL7 table 0008")
        return _Outcome.NO_ANSWER

    def _no_answer(self, row: OutboxRow, why: str) -> None:
        log.warning(
            "outbox_no_answer",
            channel=row.channel,
            control_id=row.control_id,
            attempts=row.attempts + 1,
            reason=why,
            resend_in_s=self.resend_interval_s,
        )

    def _unreachable(self, exc: OSError) -> None:
        now = self.clock.monotonic()
        self._down_until = now + self.resend_interval_s
        if self._down_since is None:
            self._down_since = now
            log.warning(
                "outbox_receiver_unreachable",
                send_to=self.send_to,
                error=str(exc) or repr(exc),
                backlog=sum(self.journal.outbox_backlog().values()),
            )

    # -- the network -------------------------------------------------------------------------

    def _connect(self) -> socket.socket:
        """The open connection, or a new one (OSError when the receiver cannot be reached)."""
        if self._sock is not None:
            return self._sock
        deadline = time.monotonic() + self.connect_timeout_s
        error: OSError = OSError(f"cannot resolve {self.host!r}")
        infos = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        for family, kind, proto, _, address in infos:
            sock = socket.socket(family, kind, proto)
            try:
                self._connect_one(sock, address, deadline)
            except OSError as exc:
                sock.close()
                error = exc
                continue
            except BaseException:
                sock.close()
                raise
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sock = sock
            self._buffer.clear()
            if self._down_since is not None:
                log.info(
                    "outbox_receiver_reachable",
                    send_to=self.send_to,
                    down_s=round(self.clock.monotonic() - self._down_since, 3),
                )
            self._down_since = None
            self._down_until = None
            return sock
        raise error

    def _connect_one(self, sock: socket.socket, address: tuple[Any, ...], deadline: float) -> None:
        sock.setblocking(False)
        err = sock.connect_ex(address)
        if err == 0:
            return
        if err not in (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN):
            raise OSError(err, os.strerror(err))
        with selectors.DefaultSelector() as selector:
            selector.register(sock, selectors.EVENT_WRITE)
            while not selector.select(self._slice(deadline)):
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"connect timed out after {self.connect_timeout_s:g} s")
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise OSError(err, os.strerror(err))

    def _slice(self, deadline: float) -> float:
        """Real seconds to wait next: at most one slice, none past ``deadline``; raises
        _StoppedError once stop() was called."""
        if self._stop.is_set():
            raise _StoppedError
        return max(min(_SLICE_S, deadline - time.monotonic()), 0.0)

    def _read_answer(self, sock: socket.socket, row: OutboxRow) -> _Answer | None:
        """The answer to ``row``, or None if none came in time.

        An acknowledgement of another control id (MSA-2) is logged and skipped; an answer that
        is not an acknowledgement is this message's (and settles nothing).  OSError if the
        connection ends or the answer is too long.
        """
        deadline = time.monotonic() + self.answer_timeout_s
        got_bytes = False
        while True:
            frame = self._take_frame()
            if frame is not None:
                text = frame.decode("utf-8", errors="replace")
                try:
                    ack = parse_ack(text)
                except ValueError as exc:  # Hl7MessageError, naming the field
                    return _Answer(text, None, str(exc))
                if ack.control_id == row.control_id:
                    return _Answer(text, ack, "")
                log.warning(
                    "outbox_answer_for_another_message",
                    channel=row.channel,
                    control_id=row.control_id,
                    answered=ack.control_id,
                )
                continue
            if len(self._buffer) > MAX_ANSWER_BYTES:
                raise OSError(f"answer longer than {MAX_ANSWER_BYTES} bytes")
            wait_s = self._slice(deadline)
            if wait_s <= 0.0:
                return None
            sock.settimeout(wait_s)
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            if not data:
                raise _ConnectionEndedError(got_bytes)
            got_bytes = True
            self._buffer += data

    def _take_frame(self) -> bytes | None:
        """The next whole MLLP frame in the buffer (bytes before a start block are skipped)."""
        start = self._buffer.find(START_BLOCK)
        if start < 0:
            self._buffer.clear()
            return None
        end = self._buffer.find(END_BLOCK, start + 1)
        if end < 0:
            del self._buffer[:start]
            return None
        frame = bytes(self._buffer[start + 1 : end])
        del self._buffer[: end + len(END_BLOCK)]
        return frame

    def _close(self) -> None:
        sock, self._sock = self._sock, None
        self._buffer.clear()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()
