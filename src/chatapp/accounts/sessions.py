"""Server-side login sessions (Litestar's), with the session id rotated at login and logout."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from typing import Any

from litestar.connection import ASGIConnection
from litestar.middleware.session.server_side import ServerSideSessionBackend, ServerSideSessionConfig
from litestar.security.session_auth import SessionAuth

from chatapp.accounts.service import User, get_user

SESSION_COOKIE = "chatapp_session"
_ROTATE = "chatapp.rotate_session"
_LOADED = "chatapp.loaded_session"


def rotate_session(connection: ASGIConnection[Any, Any, Any, Any]) -> None:
    """Ask the backend to drop the current session id and issue a fresh one with this response.

    Litestar keeps the id from the cookie; a fixated id planted before login would otherwise survive it.
    """
    connection.scope[_ROTATE] = None  # type: ignore[literal-required]


class RotatingSessionBackend(ServerSideSessionBackend):
    def get_session_id(self, connection: ASGIConnection[Any, Any, Any, Any]) -> str:
        scope: dict[str, Any] = connection.scope  # type: ignore[assignment]
        if _ROTATE in scope:
            if scope[_ROTATE] is None:
                scope[_ROTATE] = _owner_prefix(scope.get("session")) + self.generate_session_id()
            return str(scope[_ROTATE])
        return super().get_session_id(connection)

    async def load_from_connection(self, connection: ASGIConnection[Any, Any, Any, Any]) -> dict[str, Any]:
        data = await super().load_from_connection(connection)
        connection.scope[_LOADED] = data  # type: ignore[literal-required]
        return data

    async def store_in_message(self, scope_session: Any, message: Any, connection: Any) -> None:
        old_id = connection.cookies.get(self.config.key)
        has_cookie = bool(old_id) and old_id != "null"
        if not scope_session and not has_cookie:
            # Nothing to remember for a visitor without a session (agent ingest, health checks, the login
            # page): Litestar would otherwise write an empty session row and set a cookie on every request.
            return
        if has_cookie and _ROTATE not in connection.scope and scope_session == connection.scope.get(_LOADED):
            # Unchanged: Litestar would write the same row again (and commit) on every page view.
            return
        if _ROTATE in connection.scope and has_cookie:
            await self.delete(old_id, store=self.config.get_store_from_app(connection.scope["app"]))
        await super().store_in_message(scope_session, message, connection)


def owner_prefix(user_id: uuid.UUID) -> str:
    """Session ids of a login start with the user's id, so a password change can find the user's other
    sessions (and account deletion all of them) with one prefix query on the store's primary key."""
    return f"{user_id.hex}."


def _owner_prefix(session: Any) -> str:
    try:
        return owner_prefix(uuid.UUID(str(session["user_id"]))) if isinstance(session, dict) else ""
    except (KeyError, ValueError):
        return ""


def current_session_id(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    return connection.cookies.get(SESSION_COOKIE, "")


@dataclass
class SessionConfig(ServerSideSessionConfig):
    _backend_class = RotatingSessionBackend


def session_tag(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    """Names this login session on the hub (logout ends its streams) without sending the credential itself."""
    session_id = connection.cookies.get(SESSION_COOKIE, "")
    return hashlib.sha256(session_id.encode()).hexdigest()[:32]


def session_for(user: User) -> dict[str, str]:
    """What a login session holds: enough to know the user without a query on every request (the session row
    itself is the credential, and deleting it at logout is what revokes it)."""
    return {"user_id": str(user.id), "email": user.email, "display_name": user.display_name}


async def retrieve_user(session: dict[str, Any], connection: ASGIConnection[Any, Any, Any, Any]) -> User | None:
    try:
        user_id = uuid.UUID(str(session.get("user_id")))
    except ValueError:
        return None
    email, display_name = session.get("email"), session.get("display_name")
    if isinstance(email, str) and isinstance(display_name, str):
        return User(id=user_id, email=email, display_name=display_name)
    return await get_user(user_id)  # a session written before sessions carried the user


# The agent worker's ingest API (conversations.routes.IngestController): a bearer token, no login session.
INGEST_PATH = "^/api/conversations/[^/]+/events"
PUBLIC_PATHS = [
    "^/login",
    "^/signup",
    "^/static/",
    "^/schema",
    "^/healthz",
    "^/readyz",
    "^/metrics",
    INGEST_PATH,
    "^/favicon.ico",
    "^/_test/",
    "^/livekit/webhook",
    "^/s/",
]


def session_auth(*, max_age: int, secure: bool) -> SessionAuth[User, ServerSideSessionBackend]:
    return SessionAuth[User, ServerSideSessionBackend](
        retrieve_user_handler=retrieve_user,
        session_backend_config=SessionConfig(
            key=SESSION_COOKIE,
            max_age=max_age,
            httponly=True,
            samesite="lax",
            secure=secure,
            # A fixed lifetime from login: renewing on every access would cost a write per request.
            renew_on_access=False,
            store="sessions",
            # Health checks must not read a session row: during an outage that read would fail first. The agent's
            # ingest API is bearer-token only (no cookie): the middleware has nothing to do there on every POST.
            exclude=["^/healthz", "^/readyz", "^/metrics", INGEST_PATH],
        ),
        exclude=PUBLIC_PATHS,
    )
