"""``gateway.service.serve`` on a thread of the test, as ``infusion-gateway run`` runs it, with
every pump a model pump on real time (no wire): for tests of the process's own wiring."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from gateway.config import GatewayConfig
from gateway.service import serve
from protocol.clock import SystemClock
from simulator.model import PumpModel
from tests.gateway.model_driver import ModelDriver


@contextmanager
def running_daemon(config: GatewayConfig) -> Iterator[dict[str, Any]]:
    """Yields the start-up facts (``api``, ``hl7`` addresses ...); stops and joins on exit."""
    model = PumpModel(SystemClock(), max_rate_ml_per_h=200.0, reservoir_ml=5000.0)
    started = threading.Event()
    info: dict[str, Any] = {}
    box: dict[str, Any] = {}

    def on_started(facts: dict[str, Any]) -> None:
        info.update(facts)
        started.set()

    async def main_loop() -> None:
        box["loop"] = asyncio.get_running_loop()
        box["stop"] = asyncio.Event()
        await serve(
            config,
            driver_factory=lambda url: ModelDriver(model),
            on_started=on_started,
            stop=box["stop"],
        )

    def target() -> None:
        try:
            asyncio.run(main_loop())
        except BaseException as exc:
            box["error"] = exc
            started.set()

    thread = threading.Thread(target=target, name="test-daemon")
    thread.start()
    try:
        assert started.wait(15), "the daemon did not start"
        assert "error" not in box, box.get("error")
        yield info
    finally:
        if "loop" in box and not box["loop"].is_closed():
            box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(15)
    assert not thread.is_alive()
    assert "error" not in box, box.get("error")
