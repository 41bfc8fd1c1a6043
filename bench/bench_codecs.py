"""Codec throughput: NE-1000 frames both ways and the Modbus status block.  Prints figures."""

from __future__ import annotations

import time
from collections.abc import Callable

from protocol.modbus import STATUS_SPAN, decode_status, encode_status
from protocol.modbus.status import StatusBlock
from protocol.newera import (
    Command,
    Framing,
    Mnemonic,
    Reply,
    decode_commands,
    decode_replies,
    encode_command,
    encode_rate,
    encode_reply,
)
from protocol.newera.constants import NeStatus


def rate(label: str, n: int, fn: Callable[[], object]) -> None:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    elapsed = time.perf_counter() - start
    print(f"{label:<44} {n / elapsed:>12,.0f} /s   ({elapsed * 1e6 / n:7.2f} us each)")


def main() -> None:
    n = 20_000
    cmd = Command(Mnemonic.RATE, "466.6UM", 0)
    safe_cmd = encode_command(cmd, Framing.SAFE)
    reply = encode_reply(Reply(0, status=NeStatus.INFUSING, data=""), Framing.SAFE)
    stream = (b"\x00garbage" + reply) * 10
    rate("newera encode_rate(15.48 mL/h)", n, lambda: encode_rate(15.48))
    rate("newera encode_command (safe)", n, lambda: encode_command(cmd, Framing.SAFE))
    rate("newera decode_commands (one safe packet)", n, lambda: decode_commands(safe_cmd))
    rate("newera decode_replies (10 frames + garbage)", n // 10, lambda: decode_replies(stream))
    block = decode_status(encode_status(_sample_status()))
    registers = encode_status(block)
    assert len(registers) == STATUS_SPAN.count
    rate("modbus decode_status (19 registers)", n, lambda: decode_status(registers))
    rate("modbus encode_status", n, lambda: encode_status(block))


def _sample_status() -> StatusBlock:
    from decimal import Decimal

    from protocol.modbus.codes import CommandCode
    from protocol.pump_state import PumpState

    return StatusBlock(
        state=PumpState.INFUSING,
        alarms=frozenset(),
        rate_setpoint_ml_per_h=Decimal("15.48"),
        measured_rate_ml_per_h=Decimal("15.48"),
        vtbi_ml=Decimal("371.583"),
        vtbi_remaining_ml=Decimal("200.5"),
        volume_infused_ml=Decimal("171.083"),
        watchdog_timeout_s=10,
        uptime_s=3600,
        heartbeat_echo=7,
        last_command=CommandCode.START,
        command_counter=3,
    )


if __name__ == "__main__":
    main()
