"""Who may see and change what through the console (docs/console.md#access).

- Every visitor carries a signed session cookie (HttpOnly, SameSite=Strict): a random
  session id, a role and an expiry, HMAC-signed with a key the process draws at
  start, so nothing is stored server-side and a restart signs everyone out.
- Roles: `operator` (may start, pause, resume, cancel, upload), `read_only` (sees
  everything, changes nothing) and `none` (signed out: only the sign-in page).
  With no secret configured the console is open (allowed on loopback only, the
  configuration refuses anything else) and every visitor is an operator.
- Every state-changing request (any method but GET/HEAD) carries a CSRF token
  derived from the session id: the `csrf_token` form field (the first part of a
  multipart form) or the `X-CSRF-Token` header. A foreign `Origin` is refused too.
- An open console answers only to loopback host names (or its public_url's), so a
  web page on another site that points its own name at 127.0.0.1 (DNS rebinding)
  cannot read it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final
from urllib.parse import urlsplit

import structlog
from aiohttp import MultipartReader, StreamReader, web

from dialer.config import ConsoleSettings, is_loopback
from dialer.console.passwords import verify_password

log = structlog.get_logger(__name__)

CSRF_FIELD: Final = "csrf_token"
CSRF_HEADER: Final = "X-CSRF-Token"
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
# Routes a read-only visitor may POST to: they change no row.
READ_ROUTES: Final = frozenset({"login", "logout", "filter"})
# Routes anyone may reach signed out.
PUBLIC_ROUTES: Final = frozenset({"login", "login_form", "static"})
# Live streams: a signed-out one gets 401 (an EventSource cannot follow a redirect to a form).
STREAM_ROUTES: Final = frozenset({"events", "events_campaign"})
SESSION_KEY: Final[web.RequestKey[Session]] = web.RequestKey("console_session")
MULTIPART_KEY: Final[web.RequestKey[MultipartReader]] = web.RequestKey("console_multipart")
SIGN_IN_FAILURES: Final = 10  # per client address per window; then 429 until the window passes
SIGN_IN_WINDOW: Final = 60.0  # seconds

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Role(StrEnum):
    """What a session may do."""

    NONE = "none"
    READ_ONLY = "read_only"
    OPERATOR = "operator"


@dataclass(frozen=True)
class Session:
    """A visitor's session, as carried in the signed cookie."""

    sid: str
    role: Role
    expires: int  # unix seconds


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class SessionCodec:
    """Issues, signs and checks session cookies and the CSRF tokens bound to them."""

    def __init__(
        self, key: bytes, lifetime_seconds: float, clock: Callable[[], float] = time.time
    ) -> None:
        self._key = key
        self._lifetime = lifetime_seconds
        self._clock = clock

    def issue(self, role: Role) -> Session:
        """A new session with a fresh random id (a sign-in never reuses the old id)."""
        return Session(secrets.token_urlsafe(18), role, int(self._clock() + self._lifetime))

    def _mac(self, message: str) -> str:
        return _b64(hmac.new(self._key, message.encode("ascii"), hashlib.sha256).digest())

    def encode(self, session: Session) -> str:
        """The cookie value: `sid.role.expires.mac`."""
        payload = f"{session.sid}.{session.role.value}.{session.expires}"
        return f"{payload}.{self._mac(payload)}"

    def decode(self, value: str | None) -> Session | None:
        """The session of a cookie value; None when missing, forged or expired."""
        if not value or not value.isascii():
            return None
        parts = value.split(".")
        if len(parts) != 4:
            return None
        sid, role, expires, mac = parts
        if not hmac.compare_digest(mac, self._mac(f"{sid}.{role}.{expires}")):
            return None
        try:
            session = Session(sid, Role(role), int(expires))
        except ValueError:
            return None
        return session if session.expires > self._clock() else None

    def csrf_token(self, session: Session) -> str:
        """The token every form of this session carries."""
        return self._mac(f"csrf:{session.sid}")

    def csrf_ok(self, session: Session, token: str | None) -> bool:
        """Whether `token` is this session's CSRF token."""
        if not token or not token.isascii():
            return False
        return hmac.compare_digest(token, self.csrf_token(session))


class Credentials:
    """The configured sign-in secrets, and which role each one grants."""

    def __init__(self, settings: ConsoleSettings) -> None:
        self._token = settings.token.get_secret_value().encode("utf-8")
        self._read_only = settings.read_only_token.get_secret_value().encode("utf-8")
        self._password_hash = settings.password_hash.get_secret_value()

    @property
    def required(self) -> bool:
        """Any secret configured: visitors must sign in."""
        return bool(self._token or self._read_only or self._password_hash)

    async def role_for(self, secret: str) -> Role | None:
        """The role `secret` signs in as, or None. Compared in constant time; the
        password hash is checked off the event loop (scrypt takes tens of ms)."""
        given = secret.encode("utf-8")
        if self._token and hmac.compare_digest(given, self._token):
            return Role.OPERATOR
        if self._read_only and hmac.compare_digest(given, self._read_only):
            return Role.READ_ONLY
        if self._password_hash and secret:
            matches: bool = await asyncio.to_thread(verify_password, secret, self._password_hash)
            if matches:
                return Role.OPERATOR
        return None


@dataclass
class SignInLimiter:
    """Failed sign-ins per client address in a sliding window."""

    limit: int = SIGN_IN_FAILURES
    window: float = SIGN_IN_WINDOW
    clock: Callable[[], float] = time.monotonic
    _failures: dict[str, deque[float]] = field(default_factory=dict)

    def _recent(self, client: str) -> deque[float]:
        now = self.clock()
        for key in list(self._failures):  # drop idle clients: the map stays small
            q = self._failures[key]
            while q and q[0] <= now - self.window:
                q.popleft()
            if not q:
                del self._failures[key]
        return self._failures.get(client, deque())

    def blocked(self, client: str) -> bool:
        """Too many recent failures from this client."""
        return len(self._recent(client)) >= self.limit

    def failed(self, client: str) -> None:
        """Record a failed sign-in."""
        self._failures.setdefault(client, deque()).append(self.clock())


def _host_name(host: str) -> str:
    """'127.0.0.1:8081' → '127.0.0.1'; '[::1]:8081' → '::1'."""
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


async def multipart_reader(request: web.Request) -> MultipartReader:
    """A reader over the request's multipart body, streamed when it is still unread.
    The process's HTTP guard reads small bodies whole before any handler runs (under
    its body deadline, `dialer/http_limits.py`), which leaves aiohttp's own
    `multipart()` an empty stream: such a body is read again from its cached bytes."""
    if not request.content.at_eof():
        return await request.multipart()
    body = await request.read()  # the cached copy; nothing more is read from the socket
    stream = StreamReader(request.protocol, limit=max(2**16, len(body)), loop=asyncio.get_running_loop())
    stream.feed_data(body)
    stream.feed_eof()
    return MultipartReader(request.headers, stream, client_max_size=request.client_max_size)


class Gate:
    """The console's access rules, as one aiohttp middleware."""

    def __init__(
        self,
        settings: ConsoleSettings,
        *,
        key: bytes,
        port: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.credentials = Credentials(settings)
        self.codec = SessionCodec(key, settings.session_hours * 3600, clock)
        self.limiter = SignInLimiter()
        self.open = not self.credentials.required
        public = urlsplit(settings.public_url) if settings.public_url else None
        self.secure = public is not None and public.scheme == "https"
        self.base_path = public.path if public is not None else ""
        self._public_host = public.hostname if public is not None else None
        # Cookies ignore ports: two consoles on one host must not overwrite each other's.
        self.cookie_name = f"dialer_console_{port}"
        self._lifetime = int(settings.session_hours * 3600)

    # ------------------------------------------------------------ helpers

    def session(self, request: web.Request) -> Session:
        """The session the middleware attached to this request."""
        return request[SESSION_KEY]

    def csrf(self, request: web.Request) -> str:
        """The CSRF token for forms rendered in answer to this request."""
        return self.codec.csrf_token(self.session(request))

    def set_cookie(self, response: web.StreamResponse, session: Session) -> None:
        """Attach the session cookie with the flags that keep it ours."""
        response.set_cookie(
            self.cookie_name,
            self.codec.encode(session),
            max_age=self._lifetime,
            path=self.base_path or "/",
            httponly=True,
            samesite="Strict",
            secure=self.secure,
        )

    def _host_allowed(self, request: web.Request) -> bool:
        name = _host_name(request.host or "").lower()
        return is_loopback(name) or (self._public_host is not None and name == self._public_host.lower())

    def _origin_allowed(self, request: web.Request) -> bool:
        origin = request.headers.get("Origin")
        if origin is None:
            return True  # not sent by every client; the CSRF token is the real check
        parts = urlsplit(origin)
        return parts.netloc == request.host or (
            self._public_host is not None and parts.hostname == self._public_host
        )

    async def _csrf_token_of(self, request: web.Request) -> str | None:
        header = request.headers.get(CSRF_HEADER)
        if header:
            return header
        if request.content_type == "multipart/form-data":
            # The token is the form's first part, read before any file is streamed;
            # the handler goes on reading the same reader.
            reader = await multipart_reader(request)
            request[MULTIPART_KEY] = reader
            part = await reader.next()
            if part is None or getattr(part, "name", None) != CSRF_FIELD:
                return None
            return str(await part.text())  # type: ignore[union-attr]
        value = (await request.post()).get(CSRF_FIELD)
        return value if isinstance(value, str) else None

    # ------------------------------------------------------------ middleware

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Attach the session; refuse what the session may not do."""
        if self.open and not self._host_allowed(request):
            # An open console on loopback answers only to loopback names (DNS rebinding).
            return web.Response(status=421, text="this console answers on its loopback address only\n")
        session = self.codec.decode(request.cookies.get(self.cookie_name))
        fresh = session is None
        if session is None:
            session = self.codec.issue(Role.OPERATOR if self.open else Role.NONE)
        request[SESSION_KEY] = session
        try:
            response = await self._admit(request, session, handler)
        except web.HTTPException as exc:
            if fresh:
                self.set_cookie(exc, session)
            raise
        if fresh and not response.prepared:
            self.set_cookie(response, session)
        return response

    async def _admit(self, request: web.Request, session: Session, handler: Handler) -> web.StreamResponse:
        route = request.match_info.route.name
        if session.role is Role.NONE and route not in PUBLIC_ROUTES:
            if request.method in SAFE_METHODS and route not in STREAM_ROUTES:
                raise web.HTTPSeeOther(f"{self.base_path}/login")
            status = 401 if route in STREAM_ROUTES else 403
            return web.Response(status=status, text="sign in first\n")
        if request.method not in SAFE_METHODS:
            if not self._origin_allowed(request):
                return web.Response(status=403, text="cross-site request refused\n")
            if not self.codec.csrf_ok(session, await self._csrf_token_of(request)):
                log.info("console_csrf_refused", path=request.path)
                return web.Response(status=403, text="missing or wrong CSRF token: reload the page\n")
            if session.role is not Role.OPERATOR and route not in READ_ROUTES:
                return web.Response(status=403, text="read-only session: sign in as an operator\n")
        return await handler(request)
