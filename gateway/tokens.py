"""The API's bearer token, read from a file (never from the command line or the config)."""

from __future__ import annotations

from pathlib import Path

from gateway.errors import ConfigError

TOKEN_MIN_LENGTH = 16


def read_token_file(path: Path | str) -> str:
    """The bearer token from ``path`` (first line, stripped); ConfigError if unusable."""
    file = Path(path)
    try:
        token = file.read_text(encoding="utf-8").strip().splitlines()[0].strip()
    except (OSError, IndexError) as exc:
        raise ConfigError(f"token_file {str(file)!r}: cannot read a token: {exc}") from exc
    if len(token) < TOKEN_MIN_LENGTH:
        raise ConfigError(
            f"token_file {str(file)!r}: token must be at least {TOKEN_MIN_LENGTH} characters"
        )
    return token
