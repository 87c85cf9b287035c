"""Litestar's double-submit CSRF check, with each token valid only for the login session it was issued to.

Litestar's token is a random value and an HMAC of it under `CSRFConfig.secret`; a POST must carry it in the
`x-csrftoken` header (or the `_csrf_token` form field) and in the `csrftoken` cookie. Alone, that accepts any
token pair the server ever issued, so a pair planted in a victim's browser (a cookie set from a sibling
subdomain, say) works with the victim's session. Here the HMAC's key is derived from the secret key *and* the
login session cookie, so a token verifies only next to the session it was issued to. Everything else is
Litestar's own code: the same token format, cookie, header and form field.

The session changes at login, logout and a password change: the response that changes it also sets a token
of the new session, and a page (GET) whose cookie holds another session's token gets a fresh one. Visitors
without a session (the login and sign-up forms) get tokens bound to "no session", as before. It runs outside
the session middleware (to see the session a response sets); a request without a session to a page that needs
one is left to authentication, which refuses it with 401 before anything happens.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import hmac
import re
from http.cookies import CookieError, SimpleCookie
from typing import TYPE_CHECKING, Any

from litestar.config.app import AppConfig
from litestar.config.csrf import CSRFConfig
from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.middleware import DefineMiddleware
from litestar.middleware._utils import should_bypass_middleware
from litestar.middleware.csrf import CSRFMiddleware, generate_csrf_token
from litestar.utils.scope.state import ScopeState

from chatapp.accounts.sessions import PUBLIC_PATHS, SESSION_COOKIE

if TYPE_CHECKING:
    from litestar.types import ASGIApp, HTTPResponseStartEvent, Message, Receive, Scope, Send


_PUBLIC = re.compile("|".join(PUBLIC_PATHS))
BOUND_SESSIONS_KEPT = 4096  # sessions whose bound middleware is kept (then all are dropped and derived again)


def session_secret(secret: str, session_id: str) -> str:
    """The key that signs the CSRF tokens of one login session ("" for a visitor without one)."""
    return hmac.new(secret.encode(), f"csrf:{session_id}".encode(), hashlib.sha256).hexdigest()


def session_set_by(message: HTTPResponseStartEvent) -> str | None:
    """The login session a response sets (its cookie's value; "" when it ends the session), or None."""
    for name, value in message.get("headers", ()):
        if name.lower() == b"set-cookie" and value.startswith(f"{SESSION_COOKIE}=".encode()):
            try:
                cookie = SimpleCookie(value.decode("latin-1"))
            except CookieError:
                return None
            morsel = cookie.get(SESSION_COOKIE)
            if morsel is None:
                return None
            return "" if morsel.value == "null" else morsel.value  # Litestar ends a session with "null"
    return None


class SessionBoundCSRFMiddleware(CSRFMiddleware):
    """Litestar's CSRFMiddleware, run per request with the secret of the request's login session."""

    def __init__(self, app: ASGIApp, config: CSRFConfig) -> None:
        super().__init__(app, config)
        self._bound: dict[str, CSRFMiddleware] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or should_bypass_middleware(
            scope=scope,
            scopes=self.scopes,
            exclude_opt_key=self.config.exclude_from_csrf_key,
            exclude_path_pattern=self.exclude,
        ):
            await self.app(scope, receive, send)
            return
        cookies = ASGIConnection[Any, Any, Any, Any](scope).cookies
        session_id = cookies.get(SESSION_COOKIE, "")
        session_id = "" if session_id == "null" else session_id  # Litestar's "no session" cookie
        if not session_id and not _PUBLIC.match(scope["path"]):
            # No login, on a page that needs one: authentication answers 401 first, as it did before this
            # middleware moved outside it (a tab whose login ended says so, rather than "CSRF failed").
            await self.app(scope, receive, send)
            return
        bound = self._for_session(session_id)
        send = self._follow_session(send, session_id)
        token = cookies.get(self.config.cookie_name)
        if scope["method"] in self.config.safe_methods and token and bound._decode_csrf_token(token) is None:
            # Issued to another session (before this login, or one that ended): a fresh one for this one.
            fresh = ScopeState.from_scope(scope).csrf_token = generate_csrf_token(secret=bound.config.secret)
            await self.app(scope, receive, bound.create_send_wrapper(send=send, token=fresh, csrf_cookie=None))
            return
        await CSRFMiddleware.__call__(bound, scope, receive, send)

    def _for_session(self, session_id: str) -> CSRFMiddleware:
        """This middleware with the session's secret. Derived once per session and kept (a copy of the
        middleware, an HMAC and a dataclass copy of the config cost ~15 µs, on every request); the bound copy is
        a pure function of the secret key and the session id, so keeping it can never be stale."""
        bound = self._bound.get(session_id)
        if bound is None:
            if len(self._bound) >= BOUND_SESSIONS_KEPT:
                self._bound.clear()
            bound = copy.copy(self)
            bound.config = dataclasses.replace(self.config, secret=session_secret(self.config.secret, session_id))
            self._bound[session_id] = bound
        return bound

    def _follow_session(self, send: Send, session_id: str) -> Send:
        """When the response starts another session (login) or ends this one, it also sets a token for that."""

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                new_session = session_set_by(message)
                if new_session is not None and new_session != session_id:
                    bound = self._for_session(new_session)
                    bound._set_cookie_if_needed(message, generate_csrf_token(secret=bound.config.secret))
            await send(message)

        return send_wrapper


def session_bound_csrf(config: CSRFConfig) -> Any:
    """An `on_app_init` hook adding the middleware outside the session middleware (which SessionAuth's hook put
    first), so it sees the session cookie a response sets. Pass it after SessionAuth's hook."""

    def on_app_init(app_config: AppConfig) -> AppConfig:
        app_config.middleware.insert(0, DefineMiddleware(SessionBoundCSRFMiddleware, config=config))
        return app_config

    return on_app_init
