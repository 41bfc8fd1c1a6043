"""The API's bearer token, read from a file (never from the command line or the config).

The file must be a regular file owned by the user reading it, with no access for group or others
(mode 0600 or 0400), holding one token of 32-256 printable ASCII characters (0x21-0x7E, no
spaces) and at most one newline after it.  Anything else is refused with a
:class:`~gateway.errors.ConfigError` naming the file and what is allowed; no message ever contains
any of the file's content.

A symbolic link is followed (``/run/secrets``- and Kubernetes-style deployments link the token
file into place): what is checked is the file actually opened, by ``fstat`` on its descriptor.

:class:`TokenSource` is what the daemon holds: it re-reads the file when it changes, so a token
is rotated by replacing the file (``infusion-gateway token new FILE --force``), without a
restart.  While the file is unusable it has no token, and every authenticated request is refused.
"""

from __future__ import annotations

import errno
import hmac
import os
import pwd
import shlex
import stat
import threading
from pathlib import Path
from typing import NamedTuple

import structlog

from gateway.errors import ConfigError

log = structlog.get_logger("gateway.tokens")

TOKEN_MIN_LENGTH = 32
TOKEN_MAX_LENGTH = 256
#: The most the reader reads of a file; a token file is never near this.
READ_LIMIT_BYTES = 4096

ALLOWED = (
    f"one token of {TOKEN_MIN_LENGTH}-{TOKEN_MAX_LENGTH} printable ASCII characters "
    "(0x21-0x7E, no spaces), optionally followed by one newline"
)

_FILE_TYPES = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


class FileKey(NamedTuple):
    """What identifies one version of the token file: a change of any field means re-read."""

    dev: int
    ino: int
    mtime_ns: int
    size: int
    mode: int
    uid: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileKey:
        return cls(st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size, st.st_mode, st.st_uid)


def read_token_file(path: Path | str) -> str:
    """The bearer token held in ``path``; :class:`ConfigError` (one line) if it is unusable."""
    token, _ = _load(Path(path))
    return token


def _name(path: Path) -> str:
    return f"token_file {str(path)!r}"


def user_name(uid: int) -> str:
    """The name of user ``uid``, or the number if it has none."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _check_stat(path: Path, st: os.stat_result) -> None:
    """Refuse anything but a regular file of this user's, closed to group and others."""
    mode = st.st_mode
    if not stat.S_ISREG(mode):
        kind = next((what for test, what in _FILE_TYPES if test(mode)), "not a regular file")
        raise ConfigError(f"{_name(path)}: is {kind}: must be a regular file holding {ALLOWED}")
    euid = os.geteuid()
    if st.st_uid != euid:
        owner, me = user_name(st.st_uid), user_name(euid)
        raise ConfigError(
            f"{_name(path)}: owned by {owner}, not by the user reading it ({me}): "
            f"run chown {shlex.quote(me)} {shlex.quote(str(path))} "
            f"(or make a new one as {me} with infusion-gateway token new)"
        )
    open_bits = stat.S_IMODE(mode) & 0o077
    if open_bits:
        if open_bits & 0o044:
            how = "readable"
        elif open_bits & 0o022:
            how = "writable"
        else:
            how = "executable"
        raise ConfigError(
            f"{_name(path)}: {how} by group or others (mode {stat.S_IMODE(mode):04o}): "
            f"run chmod 600 {shlex.quote(str(path))}"
        )


def _stat(path: Path) -> os.stat_result:
    try:
        return os.stat(path)
    except OSError as exc:
        raise ConfigError(f"{_name(path)}: {_os_reason(exc)}") from None


def _os_reason(exc: OSError) -> str:
    if exc.errno == errno.ENOENT:
        return "does not exist (make one with: infusion-gateway token new FILE)"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "cannot be read: permission denied"
    return f"cannot be read: {exc.strerror or type(exc).__name__}"


def _load(path: Path) -> tuple[str, FileKey]:
    """The token and the key of the file version it came from, or ConfigError."""
    # Check the type before opening, so a FIFO or a device is never opened at all; then open
    # without blocking (a FIFO swapped in meanwhile cannot hang the open) and check again what
    # was actually opened.
    _check_stat(path, _stat(path))
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise ConfigError(f"{_name(path)}: {_os_reason(exc)}") from None
    try:
        st = os.fstat(fd)
        _check_stat(path, st)
        chunks: list[bytes] = []
        size = 0
        while size <= READ_LIMIT_BYTES:
            chunk = os.read(fd, READ_LIMIT_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise ConfigError(f"{_name(path)}: {_os_reason(exc)}") from None
    finally:
        os.close(fd)
    return _parse(path, b"".join(chunks)), FileKey.of(st)


def _parse(path: Path, data: bytes) -> str:
    """The token in ``data``; the refusal says what is wrong, never what the content is."""
    problem = _problem(data)
    if problem is not None:
        raise ConfigError(f"{_name(path)}: {problem}: must hold {ALLOWED}")
    return data.decode("ascii").removesuffix("\n")


def _problem(data: bytes) -> str | None:
    """What is wrong with the content of a token file, or ``None`` if it holds one token."""
    if len(data) > READ_LIMIT_BYTES:
        return f"larger than {READ_LIMIT_BYTES} bytes"
    if not data:
        return "is empty"
    if data.startswith(b"\xef\xbb\xbf"):
        return "starts with a byte-order mark"
    try:
        token = data.decode("utf-8").removesuffix("\n")
    except UnicodeDecodeError:
        return "is not UTF-8 text"
    if "\x00" in token:
        return "contains a NUL byte"
    if "\n" in token:
        return "has more than one line"
    if "\r" in token:
        return "contains a carriage return (a Windows line end?)"
    if any(c.isspace() for c in token):
        return "contains a space or other white space"
    if any(not ("\x21" <= c <= "\x7e") for c in token):
        return "contains a character outside printable ASCII"
    if len(token) < TOKEN_MIN_LENGTH:
        return f"the token is too short ({len(token)} characters)"
    if len(token) > TOKEN_MAX_LENGTH:
        return f"the token is too long ({len(token)} characters)"
    return None


class _State(NamedTuple):
    key: FileKey | str  # a FileKey, or the reason the file could not even be stat-ed
    token: str | None


def same_token(token: str, given: str) -> bool:
    """Whether ``given`` equals ``token`` (an ASCII token), in constant time; never raises:
    a ``given`` that is not ASCII is simply not the token."""
    try:
        given_bytes = given.encode("ascii")
    except UnicodeEncodeError:
        return False
    return hmac.compare_digest(given_bytes, token.encode("ascii"))


class TokenSource:
    """The token in a file, re-read whenever the file changes; ``None`` while it is unusable.

    Each :meth:`current` costs one ``os.stat``; the file is read again only when its device,
    inode, mtime, size, mode or owner changed.  Replacing the file (a new inode: what
    ``infusion-gateway token new FILE --force`` does) always takes effect at the next request.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        token, key = _load(self.path)  # ConfigError: the daemon refuses to start
        self._state = _State(key, token)
        self._lock = threading.Lock()

    def current(self) -> str | None:
        """The valid token now in the file, or ``None`` (fail closed) if the file is unusable."""
        key = self._key_now()
        state = self._state
        if state.key == key:
            return state.token
        with self._lock:
            if self._state.key == key:  # another thread re-read it meanwhile
                return self._state.token
            self._state = self._reload(key)
            return self._state.token

    def matches(self, given: str) -> bool:
        """Whether ``given`` is the current token (constant time); never raises."""
        token = self.current()
        return token is not None and same_token(token, given)

    def _key_now(self) -> FileKey | str:
        try:
            return FileKey.of(os.stat(self.path))
        except OSError as exc:
            return f"{_name(self.path)}: {_os_reason(exc)}"

    def _reload(self, key: FileKey | str) -> _State:
        try:
            if isinstance(key, str):
                raise ConfigError(key)
            token, loaded = _load(self.path)
        except ConfigError as exc:
            log.error(
                "token_file_invalid",
                path=str(self.path),
                reason=str(exc),
                effect="every authenticated request is refused until the file is fixed",
            )
            return _State(key, None)
        recovered = self._state.token is None
        log.info("token_file_loaded", path=str(self.path), recovered=recovered)
        return _State(loaded, token)
