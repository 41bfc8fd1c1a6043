"""Modbus poll: ``ModbusDriver.read_status()`` against bare pymodbus doing the same work.

All three contenders poll the same software pump (Modbus TCP, another process, infusing) over
their own connection, interleaved (:mod:`bench.timing`):

* **ours**: ``ModbusDriver.read_status()``, one function-23 request (HEARTBEAT written, the
  19-register status block read) that the driver frames itself (``protocol/modbus/frame.py``)
  and sends on its pymodbus client's connection (``drivers/modbus_poll.py``), the reply checked
  and the block decoded into a ``PumpStatus``, alarms latched;
* **bare pymodbus, two requests**: a pymodbus ``ModbusTcpClient`` writing HEARTBEAT (06) then
  reading the status block (03), the way the driver polled before function 23; registers only,
  nothing decoded.  The issue's target (ratio <= 0.6) is against this one;
* **bare pymodbus, one function-23 request**: the same client sending the same bytes as the
  driver's poll through pymodbus's own request machinery, registers only.  Its ratio is what the
  driver's own framing, checking and decoding cost against pymodbus doing the same wire work.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from urllib.parse import urlsplit

from pymodbus.client import ModbusTcpClient

from bench import targets
from bench.figures import Figure, Target
from bench.pumps import Pumps
from bench.timing import per_call_s
from drivers.modbus import ModbusDriver
from protocol.modbus import STATUS_SPAN, U16_MAX, Reg

UNIT = 1


def _bare_polls(client: ModbusTcpClient) -> tuple[Callable[[], object], Callable[[], object]]:
    """The two bare-pymodbus polls: (06 then 03, one 23); each writes a new HEARTBEAT value."""
    beats = itertools.count(1)

    def registers(reply: object) -> list[int]:
        if getattr(reply, "isError", lambda: True)():
            raise RuntimeError(f"bare pymodbus poll refused: {reply}")
        return list(reply.registers)  # type: ignore[attr-defined]

    def two_requests() -> list[int]:
        registers(
            client.write_register(Reg.HEARTBEAT.address, next(beats) & U16_MAX, device_id=UNIT)
        )
        return registers(
            client.read_holding_registers(
                STATUS_SPAN.address, count=STATUS_SPAN.count, device_id=UNIT
            )
        )

    def one_request() -> list[int]:
        return registers(
            client.readwrite_registers(
                read_address=STATUS_SPAN.address,
                read_count=STATUS_SPAN.count,
                write_address=Reg.HEARTBEAT.address,
                values=[next(beats) & U16_MAX],
                device_id=UNIT,
            )
        )

    return two_requests, one_request


def measure(pumps: Pumps, *, per_round: int, rounds: int) -> list[Figure]:
    """The two Modbus poll figures (µs per poll), against the first of ``pumps`` (modbus+tcp)."""
    pump = pumps.pumps[0]
    where = urlsplit(pump.listening)
    if where.hostname is None or where.port is None:
        raise ValueError(f"not a tcp://HOST:PORT pump: {pump.listening}")
    client = ModbusTcpClient(where.hostname, port=where.port, timeout=2.0, retries=0)
    driver = ModbusDriver(pump.url, timeout_s=2.0)
    try:
        if not client.connect():  # type: ignore[no-untyped-call]
            raise RuntimeError(f"bare pymodbus cannot connect to {pump.listening}")
        driver.open()
        two_requests, one_request = _bare_polls(client)
        seconds = per_call_s(
            {"ours": driver.read_status, "two": two_requests, "one": one_request},
            per_round=per_round,
            rounds=rounds,
            warmup=max(1, per_round // 10),
        )
    finally:
        driver.close()
        client.close()  # type: ignore[no-untyped-call]
    ours_us, two_us, one_us = (seconds[name] * 1e6 for name in ("ours", "two", "one"))
    ours = functools.partial(
        Figure,
        unit="µs",
        ours=ours_us,
        ours_does=(
            "ModbusDriver.read_status(): one function-23 request (HEARTBEAT written, 19 status "
            "registers read), framed by the driver on its pymodbus client's connection, decoded "
            "to a PumpStatus"
        ),
        method=(
            f"Modbus TCP on loopback to one software pump ({pumps.where}, infusing); median of "
            f"{rounds} interleaved rounds of {per_round} polls each"
        ),
    )
    return [
        ours(
            key="modbus_poll_vs_two_requests",
            name="Modbus poll vs bare pymodbus, 06 + 03",
            peer=two_us,
            peer_does=(
                "pymodbus 3.16.1 ModbusTcpClient: write HEARTBEAT (06), then read the 19 status "
                "registers (03), as the driver polled before; no decoding"
            ),
            target=Target("<=", targets.MODBUS_POLL_RATIO, on="ratio"),
        ),
        ours(
            key="modbus_poll_vs_read_write",
            name="Modbus poll vs bare pymodbus, one 23",
            peer=one_us,
            peer_does=(
                "the same client sending the driver's function-23 request through pymodbus's own "
                "request machinery; no decoding (the driver's framing and decoding against "
                "pymodbus doing the same wire work)"
            ),
        ),
    ]
