"""What every HTTP request passes before any work is done for it: the token, then the size.

A pure ASGI middleware, outside the web framework, so that a request is refused *before* its
body is read or parsed:

1. ``/livez``, ``/readyz`` and ``/metrics`` are open (they hold no patient data), and so are
   the status page's login form, logout and style sheet.  Everything else needs
   ``Authorization: Bearer <token>``: a ``GET`` the read token or the write token, any other
   method the write token.  No token configured for that access: 403; a missing or wrong token:
   401.  Both without reading one byte of the body.  The one exception is the status page,
   ``GET /``: without an ``Authorization`` header it also takes the session cookie its login
   form set (:mod:`gateway.page_session`), and without either it sends the browser to the form
   (303).  The cookie opens nothing else.
2. A declared ``Content-Length`` above :data:`MAX_BODY_BYTES` is 413 at once; a body that turns
   out larger while it is read (chunked, or lying about its length) is cut off at the limit and
   answered 413; a body not received within :data:`BODY_READ_TIMEOUT_S` is 408.  So a request
   can never make the gateway hold more than a few KiB of it, and the app sees only whole,
   small bodies.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, MutableMapping
from enum import Enum
from typing import Any, Protocol

from gateway.page_session import (
    LOGIN_LOCATION,
    PAGE_OPEN_PATHS,
    PAGE_PATH,
    PageSessions,
    came_over_https,
)
from gateway.tokens import same_token

#: The largest request body the API reads (bytes).  Its largest real body, an order, is ~600.
MAX_BODY_BYTES = 4096
#: Real seconds a client has to send its (small) body.
BODY_READ_TIMEOUT_S = 10.0
#: Paths served without a token: liveness, readiness, metrics (no patient data in any).
OPEN_PATHS = frozenset({"/livez", "/readyz", "/metrics"})
_READ_METHODS = frozenset({"GET", "HEAD"})

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class TokenCheck(Protocol):
    """A token source: the current token (None while it is unusable), and whether ``given``
    equals it (in constant time)."""

    def current(self) -> str | None: ...

    def matches(self, given: str) -> bool: ...


class FixedToken:
    """A token held in memory (tests, embedding); :class:`gateway.tokens.TokenSource` reads a
    file and follows it when it is rotated."""

    def __init__(self, token: str) -> None:
        token.encode("ascii")  # a token is ASCII: refuse anything else here, not per request
        self._token = token

    def current(self) -> str:
        return self._token

    def matches(self, given: str) -> bool:
        return same_token(self._token, given)


class Access(Enum):
    READ = "read"
    WRITE = "write"


class Credentials:
    """The write token (reads and writes) and an optional read-only token."""

    def __init__(self, write: TokenCheck | None, read: TokenCheck | None = None) -> None:
        self.write = write
        self.read = read

    def refusal(self, authorization: str | None, access: Access) -> tuple[int, str] | None:
        """None if ``authorization`` grants ``access``; else (status, reason)."""
        usable = [self.write] if access is Access.WRITE else [self.write, self.read]
        checks = [check for check in usable if check is not None]
        if not checks:
            return 403, (
                f"{access.value}s are disabled: no token_file configured"
                if access is Access.WRITE or self.read is None
                else "writes need the write token"
            )
        scheme, _, given = (authorization or "").partition(" ")
        given = given.strip()
        if scheme.lower() == "bearer" and given and any(c.matches(given) for c in checks):
            return None
        if access is Access.WRITE and self.read is not None and self.read.matches(given):
            return 403, "this token may only read; writes need the write token"
        if any(check.current() is None for check in checks):
            # A token file turned unusable (rotated badly): the right token cannot be known.
            return 503, "the gateway's token file is unusable; see its log (token_file_invalid)"
        return 401, "a valid bearer token is required"


async def send_json(send: Send, status: int, body: dict[str, Any], **headers: str) -> None:
    """Answer with a JSON body and close the connection (the request body is left unread)."""
    payload = json.dumps(body).encode()
    raw_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        (b"connection", b"close"),
        *((k.lower().encode(), v.encode()) for k, v in headers.items()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": payload})


async def send_redirect(send: Send, location: str, **headers: str) -> None:
    """Answer 303 See Other to ``location`` (the request body is left unread)."""
    raw_headers = [
        (b"location", location.encode()),
        (b"content-length", b"0"),
        (b"cache-control", b"no-store"),
        (b"connection", b"close"),
        *((k.lower().encode(), v.encode()) for k, v in headers.items()),
    ]
    await send({"type": "http.response.start", "status": 303, "headers": raw_headers})
    await send({"type": "http.response.body", "body": b""})


class RequestGuard:
    """ASGI middleware: authenticate, then bound the body, before the app sees the request."""

    def __init__(
        self,
        app: ASGIApp,
        credentials: Credentials,
        max_body_bytes: int = MAX_BODY_BYTES,
        sessions: PageSessions | None = None,
    ) -> None:
        self.app = app
        self.credentials = credentials
        self.max_body_bytes = max_body_bytes
        self.sessions = sessions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        sessions = self._page_sessions(scope, headers)
        if sessions is not None:
            if not sessions.valid(headers.get("cookie")):
                # A stale or forged cookie is removed on the way to the login form.
                secure = came_over_https(scope.get("scheme", "http"), headers)
                clear = {"Set-Cookie": sessions.clear_cookie(secure=secure)}
                await send_redirect(send, LOGIN_LOCATION, **(clear if "cookie" in headers else {}))
                return
        elif scope["path"] not in OPEN_PATHS and scope["path"] not in PAGE_OPEN_PATHS:
            access = Access.READ if scope["method"] in _READ_METHODS else Access.WRITE
            refused = self.credentials.refusal(headers.get("authorization"), access)
            if refused is not None:
                status, reason = refused
                extra = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
                await send_json(send, status, {"detail": reason}, **extra)
                return
        declared = headers.get("content-length")
        if declared is not None and (
            not declared.strip().isdigit() or int(declared) > self.max_body_bytes
        ):
            await send_json(send, 413, {"detail": self._too_large()})
            return
        await self._bounded(scope, receive, send)

    def _page_sessions(self, scope: Scope, headers: dict[str, str]) -> PageSessions | None:
        """The sessions to check when this request is for the status page without a bearer
        token (a browser); None for every other request."""
        if (
            scope["path"] == PAGE_PATH
            and scope["method"] in _READ_METHODS
            and "authorization" not in headers
        ):
            return self.sessions
        return None

    def _too_large(self) -> str:
        return f"request body: must be at most {self.max_body_bytes} bytes of JSON"

    async def _bounded(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Read the whole body (at most the limit, within :data:`BODY_READ_TIMEOUT_S`), then hand
        the app the request with that body replayed."""
        try:
            body = await asyncio.wait_for(self._read_body(receive), BODY_READ_TIMEOUT_S)
        except TimeoutError:
            await send_json(send, 408, {"detail": "request body: not received in time"})
            return
        if body is None:
            await send_json(send, 413, {"detail": self._too_large()})
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _read_body(self, receive: Receive) -> bytes | None:
        """The body, or None as soon as it passes the limit (the rest is never read)."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return b"".join(chunks)
            chunk = bytes(message.get("body", b""))
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)
