"""What one NE-1000 command costs the model: every look at it steps the model's clock, and a
7-day demo course sends two commands a minute for a week.

The budget is what answering needs, no more: one watchdog feed, one look at the model before
the command (its new events: alarms to report; its state: alarms to clear), what the command
itself reads, and one look after it (alarms the command raised, the status it leaves and the
framing of the reply).  A look is one snapshot and one read of the event log.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.clock import ManualClock
from protocol.newera import Command, Framing, Mnemonic, ReplyFrame, decode_replies, encode_command
from protocol.newera.constants import NeStatus
from protocol.newera.framing import CommandStreamDecoder
from protocol.pump_state import PumpAlarm
from simulator.model import PumpModel
from simulator.newera_session import NE_ALARM_FOR, NeweraSession

pytestmark = pytest.mark.timeout(60)

_COUNTED = ("look", "snapshot", "events", "feed_watchdog", "newest_event_seq")


class _CountingModel(PumpModel):
    """A model that counts the calls a session makes of it."""

    def __init__(self, clock: ManualClock) -> None:
        super().__init__(clock)
        self.calls: Counter[str] = Counter()

    def __getattribute__(self, name: str) -> Any:
        attribute = super().__getattribute__(name)
        if name in _COUNTED:
            counter: Counter[str] = super().__getattribute__("calls")
            method: Callable[..., Any] = attribute

            def counted(*args: Any, **kwargs: Any) -> Any:
                counter[name] += 1
                return method(*args, **kwargs)

            return counted
        return attribute


def _safe(mnemonic: Mnemonic, argument: str = "") -> bytes:
    return encode_command(Command(mnemonic, argument, 0), Framing.SAFE)


def test_a_query_in_safe_mode_looks_at_the_model_once_per_need() -> None:
    clock = ManualClock()
    model = _CountingModel(clock)
    session = NeweraSession(model)
    for command in (_safe(Mnemonic.SAFE_MODE, "255"), _safe(Mnemonic.RATE, "10MH")):
        session.exchange(command)
    session.exchange(_safe(Mnemonic.RUN))
    clock.advance(60.0)
    for mnemonic in (Mnemonic.DISPENSED, Mnemonic.RATE):
        model.calls.clear()
        _, items = decode_replies(session.exchange(_safe(mnemonic)))
        (frame,) = items
        assert isinstance(frame, ReplyFrame)
        assert frame.framing is Framing.SAFE
        assert frame.reply.status is NeStatus.INFUSING
        # a look before the command, the command's own read, a look after it
        assert model.calls == Counter(look=2, snapshot=3, feed_watchdog=1), mnemonic
        data = frame.reply.data
    assert data == "10.00MH"


def test_polling_a_quiet_pump_reads_only_its_event_count_and_still_sends_its_alarms() -> None:
    """A transport polls for the pump's own alarm packets whenever the line is quiet (the
    in-process line: before every command).  With nothing logged since the last look, that is
    one read of the event count; an alarm logged since is still sent."""
    clock = ManualClock()
    model = _CountingModel(clock)
    session = NeweraSession(model)
    session.exchange(_safe(Mnemonic.SAFE_MODE, "255"))
    clock.advance(1.0)
    model.calls.clear()
    assert session.poll() == []
    assert model.calls == Counter(newest_event_seq=1)
    model.inject(PumpAlarm.OCCLUSION)
    (packet,) = session.poll()
    _, items = decode_replies(packet)
    (frame,) = items
    assert isinstance(frame, ReplyFrame)
    assert frame.reply.alarm is NE_ALARM_FOR[PumpAlarm.OCCLUSION]


_PACKETS = [
    _safe(Mnemonic.DISPENSED),
    _safe(Mnemonic.RATE),
    _safe(Mnemonic.RATE, "12.5MH"),
    encode_command(Command(Mnemonic.VERSION, "", 0), Framing.BASIC),
    b"\x02\x05garbage\x03",
    b"\x00\xff",
]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(_PACKETS), max_size=12), st.data())
def test_a_known_packet_is_not_decoded_again_and_decodes_the_same(
    packets: list[bytes], data: st.DataObject
) -> None:
    """The session keeps whole packets it decoded (a host polls with the same few): whatever
    the chunks the bytes come in, garbage and all, it yields what a fresh decoder yields."""
    stream = b"".join(packets)
    cuts = sorted(data.draw(st.sets(st.integers(0, len(stream)), max_size=6)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    chunks += packets  # and each packet again, whole, on a line left as the chunks left it
    session = NeweraSession(PumpModel(ManualClock()))
    reference = CommandStreamDecoder()
    for chunk in chunks:
        assert [repr(i) for i in session.feed(chunk)] == [repr(i) for i in reference.feed(chunk)]
        assert session.pending == reference.pending


def test_a_poll_packet_is_decoded_once() -> None:
    session = NeweraSession(PumpModel(ManualClock()))
    packet = _safe(Mnemonic.DISPENSED)
    first = session.feed(packet)
    again = session.feed(bytearray(packet))  # not a key: decoded, the same frame
    assert session.feed(packet)[0] is first[0]  # kept
    assert again == first
