"""A byte stream on a wire, for the pumps the simulator plays: a pty (a serial device path) or a
TCP port, one client at a time.

:class:`ByteServer` owns what the NE-1000 simulator (:mod:`simulator.newera_server`) and the
replay of a recording (:mod:`simulator.replay`) carry alike, so that it has one home: opening
the pty or the listening socket, the one thread that waits for bytes, accepting and dropping
clients, writing bytes back, and stopping.  A subclass says what the pump does with the bytes
(:meth:`ByteServer._received`) and, if it needs to, what happens when a client comes or goes and
on a regular tick.

Transports (``listen``):

* ``"pty"``: the client opens :attr:`ByteServer.listening` (``/dev/pts/N``); the server keeps
  its own slave fd open, so clients may come and go.  The line counts as connected from start.
* ``"tcp://HOST:PORT"``: port 0 picks a free port.  One client at a time: *a second client is
  disconnected at once* while the first is connected, like a serial port opened exclusively;
  after a disconnect the next one is accepted.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import socket
import threading
from abc import ABC, abstractmethod
from typing import Final, Self
from urllib.parse import urlsplit

from simulator.pty import PtyPair

__all__ = ["ByteServer"]

_log = logging.getLogger(__name__)

#: How long (real seconds) a TCP send may block before the client is considered gone.
_SEND_TIMEOUT_S: Final = 2.0
_READ_SIZE: Final = 4096
_WILDCARD_HOSTS: Final = frozenset({"", "0.0.0.0", "::"})


class ByteServer(ABC):
    """Serves a byte stream on ``listen``: ``"pty"`` or ``"tcp://HOST:PORT"`` (``ValueError``
    for anything else).  ``name`` names the thread: ``<name>-pty`` or ``<name>-tcp``.

    :meth:`start` opens the pty or socket and starts the thread (``with`` does it too);
    :meth:`close` stops and joins the thread and closes everything (safe to call twice).  A
    server is started once: make a new one to serve again.
    """

    def __init__(self, listen: str, *, name: str) -> None:
        self._tcp_address = _parse_listen(listen)
        self._name = name
        self._lock = threading.Lock()
        self._started = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self._stop_r = -1
        self._stop_w = -1
        self._pty: PtyPair | None = None
        self._listener: socket.socket | None = None
        self._client: socket.socket | None = None

    @property
    def listening(self) -> str:
        """Where a client connects: the pty slave path (``/dev/pts/N``) or
        ``tcp://HOST:PORT`` (a wildcard host as ``127.0.0.1``)."""
        if self._pty is not None:
            return self._pty.path
        if self._listener is not None:
            host, port = self._listener.getsockname()[:2]
            return f"tcp://{_url_host(host)}:{port}"
        raise RuntimeError(f"{type(self).__name__}: not started")

    # ------------------------------------------------------------------ what a subclass does

    @abstractmethod
    def _received(self, data: bytes) -> None:
        """Bytes from the client (server thread).  Answer with :meth:`_write`."""

    def _connected(self) -> None:
        """A client connected (server thread; a pty: once, in :meth:`start` before the thread
        runs)."""
        return None

    def _disconnected(self) -> None:
        """The TCP client hung up or could not be written to (server thread)."""
        return None

    def _tick_interval_s(self) -> float | None:
        """The longest the thread waits for bytes before :meth:`_tick` (real seconds; None:
        no limit).  Asked before each wait."""
        return None

    def _tick(self) -> None:
        """Called after each wake of the server thread, bytes or not."""
        return None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Open the pty or the listening socket and start serving."""
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{type(self).__name__}: closed; make a new one")
            if self._started:
                raise RuntimeError(f"{type(self).__name__}: already started")
            self._started = True
        try:
            self._stop_r, self._stop_w = os.pipe()
            if self._tcp_address is None:
                self._pty = PtyPair.open()
                os.set_blocking(self._pty.master_fd, False)
                self._connected()
                transport = "pty"
            else:
                self._listener = _open_listener(*self._tcp_address)
                transport = "tcp"
            self._thread = threading.Thread(
                target=self._run, name=f"{self._name}-{transport}", daemon=True
            )
            self._thread.start()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Stop the thread, join it, close the pty or sockets.  Safe to call more than once."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._thread is not None:
            with contextlib.suppress(OSError):
                os.write(self._stop_w, b"x")
            self._thread.join()
        for sock in (self._client, self._listener):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()
        self._client = None
        if self._pty is not None:
            self._pty.close()
        for fd in (self._stop_r, self._stop_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._stop_r = self._stop_w = -1

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ for the subclass

    def _write(self, data: bytes) -> None:
        """Send ``data`` to the client.  Lost when there is none, or when nobody reads the pty
        and its buffer is full (as on a line nobody listens to); a TCP client that cannot take
        it within 2 s is dropped."""
        if not data:
            return
        if self._pty is not None:
            view = memoryview(data)
            while view:
                try:
                    view = view[os.write(self._pty.master_fd, view) :]
                except OSError:  # EAGAIN: the buffer is full
                    return
        elif self._client is not None:
            try:
                self._client.sendall(data)
            except OSError:
                self._drop_client()

    def _wait_unless_closed(self, seconds: float) -> bool:
        """Wait ``seconds`` (real time) in the server thread; False at once when :meth:`close`
        is called meanwhile (the thread then ends without reading further)."""
        ready, _, _ = select.select([self._stop_r], [], [], seconds)
        return not ready

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        try:
            self._serve()
        except Exception:  # pragma: no cover - a bug: make it visible, do not hang silently
            _log.exception("%s thread failed", self._name)

    def _serve(self) -> None:
        while True:
            fds = [self._stop_r]
            if self._listener is not None:
                fds.append(self._listener.fileno())
            data_fd = self._data_fd()
            if data_fd is not None:
                fds.append(data_fd)
            ready, _, _ = select.select(fds, [], [], self._tick_interval_s())
            if self._stop_r in ready:
                return
            if data_fd is not None and data_fd in ready and (data := self._read()):
                self._received(data)
                if self._closed:
                    return
            if self._listener is not None and self._listener.fileno() in ready:
                self._accept()
            self._tick()

    def _data_fd(self) -> int | None:
        if self._pty is not None:
            return self._pty.master_fd
        return None if self._client is None else self._client.fileno()

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            sock, _ = self._listener.accept()
        except OSError:
            return
        if self._client is not None and self._client_alive():
            sock.close()  # busy: one host at a time, like an exclusively opened port
            return
        self._drop_client()
        sock.settimeout(_SEND_TIMEOUT_S)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._client = sock
        self._connected()

    def _client_alive(self) -> bool:
        """False when the connected client has hung up (its EOF not read yet)."""
        assert self._client is not None
        try:
            readable, _, _ = select.select([self._client], [], [], 0)
            if not readable:
                return True  # connected, nothing to read
            return self._client.recv(1, socket.MSG_PEEK) != b""
        except OSError:
            return False

    def _drop_client(self) -> None:
        if self._client is None:
            return
        with contextlib.suppress(OSError):
            self._client.close()
        self._client = None
        self._disconnected()

    def _read(self) -> bytes:
        if self._pty is not None:
            try:
                return os.read(self._pty.master_fd, _READ_SIZE)
            except BlockingIOError:
                return b""
            except OSError as exc:  # EIO: cannot happen while we hold the slave fd
                if exc.errno != errno.EIO:
                    raise
                return b""
        assert self._client is not None
        try:
            data = self._client.recv(_READ_SIZE)
        except (BlockingIOError, TimeoutError):
            return b""
        except OSError:
            data = b""
        if not data:
            self._drop_client()
        return data


def _parse_listen(listen: str) -> tuple[str, int] | None:
    """None for ``"pty"``; ``(host, port)`` for ``"tcp://HOST:PORT"``; ``ValueError`` naming
    the accepted forms for anything else."""
    if listen == "pty":
        return None
    parts = urlsplit(listen)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme != "tcp" or parts.hostname is None or port is None or parts.path:
        raise ValueError(f"listen must be 'pty' or 'tcp://HOST:PORT' (port 0: any), got {listen!r}")
    return parts.hostname, port


def _open_listener(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.create_server((host, port), family=family, backlog=4)
    listener.setblocking(False)
    return listener


def _url_host(host: str) -> str:
    if host in _WILDCARD_HOSTS:
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host
