"""The status page's login session: a cookie that proves its holder knew a token, without being one.

A browser cannot add ``Authorization: Bearer`` to a page it opens, so the page's login form
(``POST /login``) trades a valid token for a cookie.  The cookie holds when it was issued and an
HMAC-SHA256 of that time and the token, keyed with a random key made when the gateway starts:

* it never holds the token, so a leaked cookie gives no token (and nothing for ``/v1``: the
  guard accepts the cookie for ``GET /`` only, never for the API);
* it is checked against the tokens *now* in the token files, so rotating a token file
  (``infusion-gateway token new --force``) ends every session made with the old token;
* a restart of the gateway (a new key) ends every session, and a session ends after
  :data:`SESSION_MAX_AGE_S` in any case (a shift; a wall monitor behind a reverse proxy uses the
  header instead).

The cookie is ``HttpOnly`` (no script reads it), ``SameSite=Strict`` (no other site's page sends
it), ``Path=/`` and, when the request came over https, ``Secure``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from gateway.api_guard import Credentials

#: The status page; a session cookie or a bearer token opens it.
PAGE_PATH: Final = "/"
#: The login form (``GET``) and where it is sent (``POST``): no token needed.
LOGIN_PATH: Final = "/login"
#: Ends the browser's session (clears the cookie): no token needed.
LOGOUT_PATH: Final = "/logout"
#: The page's style sheet (no patient data): no token needed.
STYLE_PATH: Final = "/status.css"
#: The page's own paths that are served without a token.
PAGE_OPEN_PATHS: Final = frozenset({LOGIN_PATH, LOGOUT_PATH, STYLE_PATH})
#: Where a browser without a session is sent: relative, so a reverse proxy's path prefix stays.
LOGIN_LOCATION: Final = "login"

SESSION_COOKIE: Final = "igw_session"
#: How long a login lasts (s): one 12-hour shift.
SESSION_MAX_AGE_S: Final = 12 * 3600
#: How far in the future an issue time may lie (s): a host clock stepped back a little.
FUTURE_SLACK_S: Final = 60

_DOMAIN: Final = b"infusion-gateway status page session v1"
_VALUE = re.compile(r"^(\d{1,12})\.([A-Za-z0-9_-]{43})$")


def _cookie_values(cookie_header: str | None, name: str) -> Iterator[str]:
    """Every value of cookie ``name`` in a ``Cookie`` header (a browser may send one twice)."""
    for part in (cookie_header or "").split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            yield value.strip()


class PageSessions:
    """Issues and checks the status page's session cookies for one gateway process."""

    def __init__(
        self,
        credentials: Credentials,
        *,
        now: Callable[[], float] = time.time,
        max_age_s: int = SESSION_MAX_AGE_S,
    ) -> None:
        self._credentials = credentials
        self._key = secrets.token_bytes(32)
        #: Real time (unix s) by default: a session lasts real hours, whatever the time scale.
        self.now = now
        self.max_age_s = max_age_s

    def _mac(self, issued_s: int, token: str) -> str:
        message = b"\0".join((_DOMAIN, str(issued_s).encode(), token.encode("ascii")))
        digest = hmac.new(self._key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")

    def _tokens(self) -> list[str]:
        """The tokens now valid for reading: the write token and the read token."""
        checks = (self._credentials.write, self._credentials.read)
        return [t for t in (c.current() if c is not None else None for c in checks) if t]

    def issue(self, token: str) -> str:
        """The cookie value for a session opened with ``token`` (already checked by the caller:
        the value is only ever valid while ``token`` is one of the current tokens)."""
        issued_s = int(self.now())
        return f"{issued_s}.{self._mac(issued_s, token)}"

    def valid(self, cookie_header: str | None) -> bool:
        """Whether the ``Cookie`` header holds a session that is current: made by this process,
        not expired, with a token that is still in its file.  Never raises."""
        now_s = self.now()
        for value in _cookie_values(cookie_header, SESSION_COOKIE):
            match = _VALUE.match(value)
            if match is None:
                continue
            issued_s = int(match[1])
            if not (now_s - self.max_age_s <= issued_s <= now_s + FUTURE_SLACK_S):
                continue
            if any(hmac.compare_digest(self._mac(issued_s, t), match[2]) for t in self._tokens()):
                return True
        return False

    def set_cookie(self, value: str, *, secure: bool) -> str:
        """The ``Set-Cookie`` header value that stores a session."""
        return _cookie(value, self.max_age_s, secure=secure)

    @staticmethod
    def clear_cookie(*, secure: bool) -> str:
        """The ``Set-Cookie`` header value that removes the session cookie."""
        return _cookie("", 0, secure=secure)


def _cookie(value: str, max_age_s: int, *, secure: bool) -> str:
    attributes = [f"{SESSION_COOKIE}={value}", f"Max-Age={max_age_s}", "Path=/", "HttpOnly"]
    attributes.append("SameSite=Strict")
    if secure:
        attributes.append("Secure")
    return "; ".join(attributes)


def came_over_https(scheme: str, headers: dict[str, str]) -> bool:
    """Whether the browser reached us over https: directly, or through a TLS reverse proxy that
    says so in ``X-Forwarded-Proto`` (a client lying about it only makes its own cookie
    stricter)."""
    forwarded = headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return scheme == "https" or forwarded == "https"
