"""The wire under the NE-1000 simulator and the replay: :class:`simulator.byte_server.ByteServer`
with a plain echo pump, on TCP and on a pty.

The pump servers built on it have their own tests (``test_newera_server.py``,
``test_replay.py``); these pin the contract they share: which hooks run when, one TCP client at a
time, and a close that does not wait out a pump that is waiting.
"""

from __future__ import annotations

import os
import select
import socket
import threading
import time

import pytest

from simulator.byte_server import ByteServer

pytestmark = pytest.mark.timeout(20)

#: Real seconds a client waits for bytes that should come.
WAIT_S = 2.0


class EchoServer(ByteServer):
    """Sends back what it receives; counts clients coming and going."""

    def __init__(self, listen: str) -> None:
        super().__init__(listen, name="echo")
        self.connected = 0
        self.disconnected = 0

    def _received(self, data: bytes) -> None:
        self._write(data)

    def _connected(self) -> None:
        self.connected += 1

    def _disconnected(self) -> None:
        self.disconnected += 1


class WaitingServer(ByteServer):
    """Waits (up to a minute) before answering, as a pump with a long reply delay."""

    def __init__(self) -> None:
        super().__init__("tcp://127.0.0.1:0", name="waiting")
        self.waiting = threading.Event()
        self.wait_result: bool | None = None

    def _received(self, data: bytes) -> None:
        self.waiting.set()
        self.wait_result = self._wait_unless_closed(60.0)
        if self.wait_result:
            self._write(data)


def _connect(server: ByteServer) -> socket.socket:
    host, port = server.listening.removeprefix("tcp://").rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=WAIT_S)


def test_tcp_echoes_and_serves_one_client_at_a_time() -> None:
    with EchoServer("tcp://127.0.0.1:0") as server:
        assert "echo-tcp" in {t.name for t in threading.enumerate()}
        with _connect(server) as first:
            first.sendall(b"ping")
            assert first.recv(16) == b"ping"
            with _connect(server) as second:
                assert second.recv(16) == b""  # hung up on at once: the line is taken
            first.sendall(b"still mine")
            assert first.recv(16) == b"still mine"
        with _connect(server) as third:  # the first hung up: the next one is served
            third.sendall(b"next")
            assert third.recv(16) == b"next"
            # Counted while the third is on the line (its own hang-up races the assert after).
            assert (server.connected, server.disconnected) == (2, 1)
    assert "echo-tcp" not in {t.name for t in threading.enumerate()}


def test_a_pty_is_connected_from_start_and_echoes() -> None:
    with EchoServer("pty") as server:
        assert server.connected == 1
        assert server.listening.startswith("/dev/")
        fd = os.open(server.listening, os.O_RDWR | os.O_NOCTTY)
        try:
            os.write(fd, b"ping")
            ready, _, _ = select.select([fd], [], [], WAIT_S)
            assert ready, "no echo"
            assert os.read(fd, 16) == b"ping"
        finally:
            os.close(fd)
        assert server.disconnected == 0


def test_close_interrupts_a_wait_and_ends_the_thread() -> None:
    server = WaitingServer()
    server.start()
    try:
        with _connect(server) as client:
            client.sendall(b"x")
            assert server.waiting.wait(WAIT_S)
            began = time.monotonic()
            server.close()
            assert time.monotonic() - began < WAIT_S  # not the 60 s the pump meant to wait
            assert server.wait_result is False
            assert client.recv(16) == b""  # no answer, and the line is closed
    finally:
        server.close()
    assert "waiting-tcp" not in {t.name for t in threading.enumerate()}


@pytest.mark.parametrize("listen", ["serial", "tcp://127.0.0.1", "udp://127.0.0.1:0", ""])
def test_a_listen_that_is_neither_pty_nor_tcp_is_refused_naming_the_forms(listen: str) -> None:
    with pytest.raises(ValueError, match=r"listen must be 'pty' or 'tcp://HOST:PORT'"):
        EchoServer(listen)


def test_listening_before_start_and_a_second_start_are_refused() -> None:
    server = EchoServer("tcp://127.0.0.1:0")
    with pytest.raises(RuntimeError, match="EchoServer: not started"):
        _ = server.listening
    with server, pytest.raises(RuntimeError, match="EchoServer: already started"):
        server.start()
    with pytest.raises(RuntimeError, match="EchoServer: closed; make a new one"):
        server.start()
