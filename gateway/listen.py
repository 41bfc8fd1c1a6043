"""Where a server of ours may listen: an address resolved once, and whether it leaves the machine.

Used by the daemon's API (``api.listen``) and the simulator (``sim --listen``): a host that does
not resolve is one line (:class:`~gateway.errors.ConfigError`) naming the setting, and a
non-loopback address is told apart so the caller can refuse it unless asked for.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

from gateway.errors import ConfigError

AddrInfo = tuple[Any, ...]


def resolve_listen(setting: str, value: str, host: str, port: int) -> list[AddrInfo]:
    """``getaddrinfo`` for a listening socket; ConfigError naming ``setting`` if unresolvable."""
    try:
        return socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE | socket.AI_ADDRCONFIG
        )
    except (socket.gaierror, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, socket.gaierror) else "not a valid host name"
        raise ConfigError(f"{setting} {value!r}: cannot resolve {host!r}: {reason}") from None


def reaches_beyond_loopback(infos: list[AddrInfo]) -> bool:
    """True if any resolved address is not loopback (other machines could connect)."""
    return any(
        not ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]).is_loopback for info in infos
    )
