"""The inbound MLLP listener: one HL7 v2 message in, one answer out, per block.

Framing is the ``hl7`` library's (``hl7.mllp``: a block is ``<VT> message <FS><CR>``); what a
message means is :class:`gateway.hl7_inbound.InboundHandler`'s business, run in a worker thread
so that a message that journals never holds this event loop.  A block larger than
:data:`MAX_MESSAGE_BYTES`, a block without its start character, or bytes that are not text close
that connection (logged), never the listener.  The control loop does not run here
(:mod:`gateway.service`), so nothing a sender does can delay a control cycle.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from typing import Any

import structlog
from hl7.mllp import InvalidBlockError, start_hl7_server

log = structlog.get_logger("gateway.hl7")

#: The largest inbound message (bytes); an order or a lab result is a few KiB at most.
MAX_MESSAGE_BYTES = 64 * 1024
#: Real seconds a connection may stay silent before it is closed.
IDLE_TIMEOUT_S = 300.0

Handler = Callable[[str], str]


def decode_message(block: bytes) -> str:
    """An HL7 block as text: UTF-8, else Latin-1 (HL7 v2's common default character set)."""
    try:
        return block.decode("utf-8")
    except UnicodeDecodeError:
        return block.decode("latin-1")


class MllpListener:
    """Serves ``handler`` on a bound socket until :meth:`close`."""

    def __init__(self, sock: socket.socket, handler: Handler) -> None:
        self.sock = sock
        self.handler = handler
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[asyncio.Task[Any]] = set()
        self.messages = 0

    @property
    def address(self) -> str:
        host, port = self.sock.getsockname()[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    async def start(self) -> None:
        self._server = await start_hl7_server(
            self._serve_connection, sock=self.sock, limit=MAX_MESSAGE_BYTES
        )

    async def _serve_connection(self, reader: Any, writer: Any) -> None:
        peer = writer.get_extra_info("peername")
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        try:
            while True:
                try:
                    block = await asyncio.wait_for(reader.readblock(), IDLE_TIMEOUT_S)
                except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
                    return  # the sender hung up, or went quiet
                except (ValueError, InvalidBlockError) as exc:
                    log.warning("hl7_connection_refused", peer=str(peer), reason=str(exc)[:200])
                    return
                try:
                    answer = await asyncio.to_thread(self.handler, decode_message(bytes(block)))
                except Exception as exc:  # the handler answers everything; this is a bug
                    log.error("hl7_handler_failed", peer=str(peer), error=repr(exc))
                    return
                self.messages += 1
                writer.writeblock(answer.encode("utf-8"))
                await writer.drain()
        finally:
            if task is not None:
                self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def close(self) -> None:
        """Stop listening, end every open connection, and wait for them."""
        if self._server is not None:
            self._server.close()
            self._server = None
        connections = list(self._connections)
        for task in connections:
            task.cancel()
        await asyncio.gather(*connections, return_exceptions=True)
