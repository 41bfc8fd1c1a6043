"""``infusion-gateway token new FILE [--force]``: make (or rotate) the API's token file.

Writes a new random token (``secrets.token_urlsafe(32)``: 43 characters) and a newline, mode
0600, atomically: a temporary file created beside FILE (``O_CREAT|O_EXCL``, mode 0600), synced,
then renamed into place.  A running gateway notices the new file at its next request; no restart
(a restart stops the pumps).  The token itself is never printed.

Run it as the user the gateway runs as (``sudo -u infusion-gateway ...``): the gateway accepts
only a token file owned by its own user.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import secrets
import stat
from pathlib import Path

from gateway.errors import ConfigError
from gateway.tokens import read_token_file, user_name

#: ``secrets.token_urlsafe(32)``: 32 random bytes, 43 URL-safe base64 characters.
TOKEN_BYTES = 32


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="token_action", metavar="new", required=True)
    new = actions.add_parser(
        "new",
        help="write a new random token to FILE (mode 0600)",
        description=(
            "Write a new random token to FILE (mode 0600, atomically). With --force, replace an "
            "existing FILE: a running gateway uses the new token from its next request, without "
            "a restart. The token is never printed."
        ),
    )
    new.add_argument("file", type=Path, metavar="FILE", help="the token file to write")
    new.add_argument(
        "--force",
        action="store_true",
        help="replace FILE if it exists (rotates the token of a running gateway)",
    )


def run(args: argparse.Namespace) -> int:
    # "new" is the only action; argparse has refused any other.
    path: Path = args.file
    write_new_token_file(path, force=args.force)
    print(
        f"wrote a new API token to {path} (mode 0600); a running gateway uses it from its next "
        "request (no restart needed)"
    )
    return 0


def write_new_token_file(path: Path, *, force: bool = False) -> None:
    """Write a new random token to ``path``; ConfigError (one line) if it cannot or must not."""
    name = f"token_file {str(path)!r}"
    directory = path.parent
    if not directory.is_dir():
        raise ConfigError(f"{name}: directory {str(directory)!r} does not exist: create it first")
    existing = _lstat(path)
    if existing is not None:
        if stat.S_ISDIR(existing.st_mode):
            raise ConfigError(f"{name}: is a directory: name a file in it")
        if not force:
            raise ConfigError(
                f"{name}: already exists: use --force to replace it (a running gateway then "
                "uses the new token from its next request)"
            )
        if existing.st_uid != os.geteuid():
            # Replacing it would leave a file the gateway (running as its owner) refuses.
            raise ConfigError(
                f"{name}: owned by {user_name(existing.st_uid)}, not by you "
                f"({user_name(os.geteuid())}): run this as the user the gateway runs as "
                f"(sudo -u {user_name(existing.st_uid)} infusion-gateway token new --force FILE)"
            )
    token = secrets.token_urlsafe(TOKEN_BYTES)
    temporary = directory / f".{path.name}.{secrets.token_hex(8)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(temporary, flags, 0o600)
    except OSError as exc:
        raise ConfigError(
            f"{name}: cannot create a file in {str(directory)!r}: {exc.strerror}"
        ) from None
    try:
        try:
            os.fchmod(fd, 0o600)  # whatever the umask
            os.write(fd, f"{token}\n".encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        if force:
            os.replace(temporary, path)
        else:
            _link_new(temporary, path, name)
    except OSError as exc:
        raise ConfigError(f"{name}: cannot write it: {exc.strerror}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    _fsync_directory(directory)
    read_token_file(path)  # what the gateway will do with it


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"token_file {str(path)!r}: cannot be checked: {exc.strerror}") from None


def _link_new(temporary: Path, path: Path, name: str) -> None:
    """Put ``temporary`` in place as ``path`` only if ``path`` still does not exist."""
    try:
        os.link(temporary, path)  # atomic: fails if path appeared meanwhile
    except FileExistsError:
        raise ConfigError(f"{name}: already exists: use --force to replace it") from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        # A file system without hard links: check, then rename.
        if _lstat(path) is not None:
            raise ConfigError(f"{name}: already exists: use --force to replace it") from None
        os.replace(temporary, path)


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable; a file system that cannot sync a directory is left as it is."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)
