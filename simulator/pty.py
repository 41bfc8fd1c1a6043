"""Serial lines without hardware: pseudo-terminal pairs and a null-modem relay.

A client opens the pty *slave* path exactly as it would open ``/dev/ttyUSB0``; the simulator
reads and writes the *master* fd.  Facts verified with pyserial 3.5 (see docs/newera.md §10):

* ``tty.setraw()`` on the slave before any client opens it, or the line discipline will echo
  and translate bytes.
* Keep one slave fd open ourselves: once every slave fd is closed, reading the master raises
  ``EIO`` and a client that re-opens would find a dead line.
* Linux ptys do not pace bytes at the baud rate: line timing is the simulator's to emulate.

For Modbus RTU, where the server library also wants a device path, :class:`NullModem` joins two
pty pairs with a relay thread that copies bytes between the masters: what is written to one
slave path comes out of the other.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import tty
from dataclasses import dataclass, field


@dataclass
class PtyPair:
    """One pseudo-terminal: ``path`` is what a client opens; ``master_fd`` is the far end."""

    master_fd: int
    slave_fd: int
    path: str
    _closed: bool = field(default=False, repr=False)

    @classmethod
    def open(cls) -> PtyPair:
        master_fd, slave_fd = os.openpty()
        tty.setraw(slave_fd)
        tty.setraw(master_fd)
        return cls(master_fd=master_fd, slave_fd=slave_fd, path=os.ttyname(slave_fd))

    def close(self) -> None:
        """Close both ends.  Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        for fd in (self.master_fd, self.slave_fd):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> PtyPair:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class NullModem:
    """Two pty pairs joined by a relay thread: a serial cable between two device paths."""

    def __init__(self) -> None:
        self.a = PtyPair.open()
        self.b = PtyPair.open()
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._relay, name="null-modem-relay", daemon=True)
        self._thread.start()

    @property
    def paths(self) -> tuple[str, str]:
        """The two device paths: open one at each end."""
        return self.a.path, self.b.path

    def _relay(self) -> None:
        peers = {self.a.master_fd: self.b.master_fd, self.b.master_fd: self.a.master_fd}
        while True:
            try:
                ready, _, _ = select.select([*peers, self._stop_r], [], [])
            except (OSError, ValueError):
                return
            if self._stop_r in ready:
                return
            for fd in ready:
                try:
                    data = os.read(fd, 4096)
                    if data:
                        os.write(peers[fd], data)
                except OSError:
                    continue  # a client closed its end: the line stays up for the next one

    def close(self) -> None:
        """Stop the relay and close both pairs.  Safe to call twice."""
        if self._thread.is_alive():
            os.write(self._stop_w, b"x")
            self._thread.join(timeout=5.0)
        for fd in (self._stop_r, self._stop_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.a.close()
        self.b.close()

    def __enter__(self) -> NullModem:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
