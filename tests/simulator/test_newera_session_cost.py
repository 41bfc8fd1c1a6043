"""What one NE-1000 command costs the model: every look at it steps the model's clock, and a
7-day demo course sends two commands a minute for a week.

The budget is what answering needs, no more: one watchdog feed, one look at the model's new
events before the command (alarms to report) and one after it (alarms the command raised),
the alarm look before the command, what the command itself reads, and one look after it for
both the status it leaves and the framing of the reply.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from protocol.clock import ManualClock
from protocol.newera import Command, Framing, Mnemonic, ReplyFrame, decode_replies, encode_command
from protocol.newera.constants import NeStatus
from simulator.model import PumpModel
from simulator.newera_session import NeweraSession

pytestmark = pytest.mark.timeout(60)

_COUNTED = ("snapshot", "events", "feed_watchdog")


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
        # alarms before the command, the command's own read, status and framing after it
        assert model.calls == Counter(snapshot=3, events=2, feed_watchdog=1), mnemonic
        data = frame.reply.data
    assert data == "10.00MH"
