"""systemd service notification (``Type=notify``): ``READY=1``, ``WATCHDOG=1``, ``STOPPING=1``.

The protocol is one datagram to the socket named by ``$NOTIFY_SOCKET`` (a leading ``@`` means the
abstract namespace).  Without the variable (not under systemd) every call does nothing.
"""

from __future__ import annotations

import os
import socket


class Notifier:
    """Sends notifications to systemd, if the process runs under it."""

    def __init__(self, socket_path: str | None = None) -> None:
        self.address = socket_path if socket_path is not None else os.environ.get("NOTIFY_SOCKET")
        self.ready_sent = False

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def notify(self, message: str) -> bool:
        """Send ``message``; True if it was sent."""
        if not self.address:
            return False
        address = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.connect(address)
                sock.sendall(message.encode())
        except OSError:
            return False
        return True

    def ready(self, status: str = "") -> None:
        """Once, after the first successful control cycle."""
        if not self.ready_sent:
            self.ready_sent = self.notify("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def watchdog(self) -> None:
        """After each successful control cycle only."""
        self.notify("WATCHDOG=1")

    def stopping(self) -> None:
        self.notify("STOPPING=1")
