"""The control API served by uvicorn on a thread of its own, on a socket bound by the caller.

The caller binds (and checks) the listening socket, so a refused address is reported before
anything starts, and port 0 gives the port actually bound (:attr:`ControlServer.address`).
The server has its own event loop: no request can delay the pumps' own threads, and the main
thread stays free for signals.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

import uvicorn

__all__ = ["ControlServer"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Concurrent connections served; more get 503.
MAX_CONNECTIONS: Final = 32
#: Largest request head (request line and headers), bytes.
MAX_HEAD_BYTES: Final = 16 * 1024
#: Real seconds :meth:`ControlServer.start` waits for the server to listen.
_START_TIMEOUT_S: Final = 10.0
#: Real seconds open connections get to finish when the server stops.
_GRACEFUL_S: Final = 2
#: Real seconds between looks at whether the server has started.
_STARTED_POLL_S: Final = 0.01


class ControlServer:
    """Serves ``app`` on ``sock`` (bound, listening) until :meth:`close`.

    ``stopping`` is set first thing in :meth:`close`, so an app holding streams open can end
    them (see :func:`simulator.control_api.create_control_app`).
    """

    def __init__(
        self, app: ASGIApp, sock: socket.socket, *, stopping: threading.Event | None = None
    ) -> None:
        self._sock = sock
        self.stopping = stopping if stopping is not None else threading.Event()
        self._server = uvicorn.Server(
            uvicorn.Config(
                app,
                log_level="warning",
                lifespan="off",
                limit_concurrency=MAX_CONNECTIONS,
                timeout_keep_alive=5,
                h11_max_incomplete_event_size=MAX_HEAD_BYTES,
                server_header=False,
                timeout_graceful_shutdown=_GRACEFUL_S,
            )
        )
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="sim-control-api", daemon=True)

    @property
    def address(self) -> str:
        """``tcp://HOST:PORT`` with the port actually bound (IPv6 hosts in brackets)."""
        host, port = self._sock.getsockname()[:2]
        return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"

    def start(self) -> None:
        """Start serving; returns once requests are answered (RuntimeError if it cannot)."""
        self._thread.start()
        if not self._ready.wait(_START_TIMEOUT_S) and self._error is None:
            self._error = TimeoutError(f"did not start within {_START_TIMEOUT_S:g} s")
        if self._error is not None or not self._server.started:
            error = self._error
            self.close()
            raise RuntimeError(f"control API {self.address}: cannot serve: {error}")

    def close(self) -> None:
        """End event streams, stop the server, join its thread, close the socket.  Idempotent."""
        self.stopping.set()
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(_START_TIMEOUT_S + _GRACEFUL_S)
        self._sock.close()

    def __enter__(self) -> ControlServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported by start(); the thread must end quietly
            self._error = exc
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        task = asyncio.create_task(self._server.serve(sockets=[self._sock]))
        while not self._server.started and not task.done():
            await asyncio.sleep(_STARTED_POLL_S)
        self._ready.set()
        await task
