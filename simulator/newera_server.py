"""The NE-1000 software pump on a real wire: a pty (a serial device path) or a TCP socket.

::

    with NeweraSimulatorServer(model) as server:      # a pty: server.listening is /dev/pts/N
        with open_pump(server.pump_url) as pump:      # newera:///dev/pts/N
            ...

    NeweraSimulatorServer(model, listen="tcp://127.0.0.1:0")  # newera+tcp://127.0.0.1:<port>

One thread per server reads what the host sends, hands it to a
:class:`~simulator.newera_session.NeweraSession` (which acts on the model and says what the pump
answers) and writes the answers back, applying on the way what a real line does:

* **Line faults** from ``model.line``: ``hang`` reads and drops everything and answers nothing
  (so nothing feeds the watchdog); ``reply_delay_s`` delays each reply (simulated seconds, waited
  as ``delay / clock.time_scale`` real seconds, or as real seconds on a manual clock); every byte
  sent passes through ``model.line.mangle()`` (garbage, corruption).
* **Gap rule**: a safe-mode packet with a gap of 0.5 s (real time) inside is discarded.
* **Unsolicited alarms**: every 20 ms the thread looks at the model (which also makes a watchdog
  expiry happen promptly on a scaled clock); in safe mode a new alarm is sent as an alarm packet.
* **One command at a time**: a delayed reply holds up the commands behind it, as on the pump
  ("it takes nothing new until it starts its reply").

Transports: ``"pty"`` (the client opens :attr:`NeweraSimulatorServer.listening`; the server keeps
its own slave fd open so clients may come and go) or ``"tcp://HOST:PORT"`` (port 0 picks a free
port; one client at a time: *a second client is disconnected at once* while the first is
connected, like a serial port opened exclusively; after a disconnect the next one is accepted).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import socket
import threading
import time
from decimal import Decimal
from types import TracebackType
from typing import Final
from urllib.parse import urlsplit

from protocol.newera import FirmwareVersion
from protocol.newera.constants import SAFE_PACKET_GAP_S
from simulator.model import PumpModel
from simulator.newera_session import DEFAULT_DIAMETER_MM, DEFAULT_VERSION, NeweraSession
from simulator.pty import PtyPair

__all__ = ["POLL_INTERVAL_S", "NeweraSimulatorServer"]

_log = logging.getLogger(__name__)

#: How often (real seconds) the server thread looks at the model for alarms to send on its own.
POLL_INTERVAL_S: Final = 0.02
#: How long (real seconds) a TCP send may block before the client is considered gone.
_SEND_TIMEOUT_S: Final = 2.0
_READ_SIZE: Final = 4096
_WILDCARD_HOSTS: Final = frozenset({"", "0.0.0.0", "::"})


class NeweraSimulatorServer:
    """Serves ``model`` as an NE-1000 at ``address`` (0-99) on ``listen``: ``"pty"`` or
    ``"tcp://HOST:PORT"``.

    ``version`` is what the pump answers to ``VER`` and ``diameter_mm`` its syringe diameter at
    power-up (mm).  :meth:`start` opens the pty or socket and starts the thread (``with`` does it
    too); :meth:`close` stops and joins the thread and closes everything (safe to call twice).
    """

    def __init__(
        self,
        model: PumpModel,
        *,
        listen: str = "pty",
        address: int = 0,
        version: FirmwareVersion = DEFAULT_VERSION,
        diameter_mm: Decimal = DEFAULT_DIAMETER_MM,
    ) -> None:
        self._model = model
        self._tcp_address = _parse_listen(listen)
        self._session = NeweraSession(
            model, address=address, version=version, diameter_mm=diameter_mm
        )
        self._lock = threading.Lock()
        self._started = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self._stop_r = -1
        self._stop_w = -1
        self._pty: PtyPair | None = None
        self._listener: socket.socket | None = None
        self._client: socket.socket | None = None
        self._last_rx = 0.0
        self._alarm_packets_sent = 0

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Open the pty or the listening socket and start serving."""
        with self._lock:
            if self._closed:
                raise RuntimeError("NeweraSimulatorServer: closed; make a new one")
            if self._started:
                raise RuntimeError("NeweraSimulatorServer: already started")
            self._started = True
        try:
            self._stop_r, self._stop_w = os.pipe()
            if self._tcp_address is None:
                self._pty = PtyPair.open()
                os.set_blocking(self._pty.master_fd, False)
                name = "newera-sim-pty"
            else:
                self._listener = _listen(*self._tcp_address)
                name = "newera-sim-tcp"
            self._thread = threading.Thread(target=self._run, name=name, daemon=True)
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
        thread = self._thread
        if thread is not None:
            with contextlib.suppress(OSError):
                os.write(self._stop_w, b"x")
            thread.join()
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

    def __enter__(self) -> NeweraSimulatorServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ facts

    @property
    def model(self) -> PumpModel:
        return self._model

    @property
    def session(self) -> NeweraSession:
        """The protocol session (for tests; it is driven by the server thread)."""
        return self._session

    @property
    def address(self) -> int:
        """The pump address, 0-99."""
        return self._session.address

    @property
    def alarm_packets_sent(self) -> int:
        """How many alarm packets the pump has sent on its own (safe mode), lost ones included
        (no client, or a hung line)."""
        return self._alarm_packets_sent

    @property
    def listening(self) -> str:
        """Where a client connects: the pty slave path (``/dev/pts/N``) or
        ``tcp://127.0.0.1:<port>``."""
        if self._pty is not None:
            return self._pty.path
        if self._listener is not None:
            host, port = self._listener.getsockname()[:2]
            return f"tcp://{_url_host(host)}:{port}"
        raise RuntimeError("NeweraSimulatorServer: not started")

    @property
    def pump_url(self) -> str:
        """The pump URL a driver opens: ``newera:///dev/pts/N`` or
        ``newera+tcp://127.0.0.1:<port>`` (with ``?address=N`` when the address is not 0)."""
        listening = self.listening
        prefix = "newera+" if listening.startswith("tcp://") else "newera://"
        url = prefix + listening
        return url if self.address == 0 else f"{url}?address={self.address}"

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        try:
            self._serve()
        except Exception:  # pragma: no cover - a bug: make it visible, do not hang silently
            _log.exception("NE-1000 simulator thread failed")

    def _serve(self) -> None:
        while True:
            fds = [self._stop_r]
            if self._listener is not None:
                fds.append(self._listener.fileno())
            data_fd = self._data_fd()
            if data_fd is not None:
                fds.append(data_fd)
            ready, _, _ = select.select(fds, [], [], self._select_timeout())
            if self._stop_r in ready:
                return
            if data_fd is not None and data_fd in ready:
                data = self._read()
                if data and not self._received(data):
                    return
            if self._listener is not None and self._listener.fileno() in ready:
                self._accept()
            self._tick()

    def _data_fd(self) -> int | None:
        if self._pty is not None:
            return self._pty.master_fd
        return None if self._client is None else self._client.fileno()

    def _select_timeout(self) -> float:
        timeout = POLL_INTERVAL_S
        if self._session.pending_is_safe_packet():
            gap_left = self._last_rx + SAFE_PACKET_GAP_S - time.monotonic()
            timeout = min(timeout, max(gap_left, 0.0))
        return timeout

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
        self._session.discard_pending()

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
        if self._client is not None:
            with contextlib.suppress(OSError):
                self._client.close()
            self._client = None
        self._session.discard_pending()

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

    def _received(self, data: bytes) -> bool:
        """Handle bytes from the host; False when the server is stopping."""
        if self._model.line.hang:
            self._session.discard_pending()  # the line is dead: nothing reaches the pump
            return True
        self._last_rx = time.monotonic()
        for item in self._session.feed(data):
            output = self._session.answer(item)
            for packet in output.unsolicited:
                self._alarm_packets_sent += 1
                self._send(packet)
            if output.reply is not None:
                if not self._wait_reply_delay():
                    return False
                self._send(output.reply)
        return True

    def _wait_reply_delay(self) -> bool:
        """Wait the line's reply delay (real seconds); False when told to stop meanwhile."""
        delay_s = self._model.line.reply_delay_s
        if delay_s <= 0:
            return True
        scale = self._model.clock.time_scale
        real_s = delay_s / scale if scale > 0 else delay_s
        ready, _, _ = select.select([self._stop_r], [], [], real_s)
        return not ready

    def _tick(self) -> None:
        if (
            self._session.pending_is_safe_packet()
            and time.monotonic() - self._last_rx >= SAFE_PACKET_GAP_S
        ):
            self._session.discard_pending()
        for packet in self._session.poll():
            self._alarm_packets_sent += 1
            self._send(packet)

    def _send(self, packet: bytes) -> None:
        line = self._model.line
        if line.hang:
            return
        data = line.mangle(packet)
        if self._pty is not None:
            self._write_pty(data)
        elif self._client is not None:
            try:
                self._client.sendall(data)
            except OSError:
                self._drop_client()

    def _write_pty(self, data: bytes) -> None:
        assert self._pty is not None
        view = memoryview(data)
        while view:
            try:
                written = os.write(self._pty.master_fd, view)
            except BlockingIOError:
                return  # nobody reads the line and its buffer is full: the bytes are lost
            except OSError:
                return
            view = view[written:]


def _parse_listen(listen: str) -> tuple[str, int] | None:
    """None for ``"pty"``; ``(host, port)`` for ``"tcp://HOST:PORT"``."""
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


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.create_server((host, port), family=family, backlog=4)
    listener.setblocking(False)
    return listener


def _url_host(host: str) -> str:
    if host in _WILDCARD_HOSTS:
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host
