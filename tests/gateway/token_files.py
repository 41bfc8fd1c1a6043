"""Token files for tests: what the gateway accepts (mode 0600, owned by the test's user)."""

from __future__ import annotations

import os
from pathlib import Path

#: A token the gateway accepts: 40 printable ASCII characters (at least 32 are required).
TEST_TOKEN = "test-token-0123456789-abcdefghijklmnopqr"


def write_token_file(path: Path, token: str = TEST_TOKEN) -> Path:
    """Write ``token`` and a newline to ``path`` with mode 0600 (replacing it); return ``path``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, f"{token}\n".encode())
    finally:
        os.close(fd)
    return path
