"""Cross-cutting web behaviour: who is asking, friendly errors, HTMX toasts and login redirects."""

from __future__ import annotations

import json
import logging
import time
from typing import Any
from urllib.parse import quote, urlsplit

from litestar import Request, Response
from litestar.exceptions import HTTPException, NotAuthorizedException, NotFoundException, ValidationException
from litestar.response import Redirect, Template
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR, HTTP_503_SERVICE_UNAVAILABLE

from chatapp.accounts.service import User
from chatapp.core.database import is_outage
from chatapp.core.logfilters import redact_path

log = logging.getLogger(__name__)


class BearerTokenRequired(NotAuthorizedException):
    """A machine client's token is missing or wrong; its message says which token is expected."""


def current_user(request: Request[Any, Any, Any]) -> User | None:
    user = request.scope.get("user")
    return user if isinstance(user, User) else None


JSON_PATHS = (
    "/api/",
    "/livekit/",
)  # the JSON routes (chatapp.core.openapi): their errors are JSON whatever Accept says


def wants_json(request: Request[Any, Any, Any]) -> bool:
    return request.url.path.startswith(JSON_PATHS) or "application/json" in request.headers.get("accept", "")


def is_htmx(request: Request[Any, Any, Any]) -> bool:
    return request.headers.get("hx-request") == "true"


def toast_header(message: str, level: str = "info", **extra: Any) -> dict[str, str]:
    """An HX-Trigger header that static/app.js turns into a toast.

    `target: body` makes htmx fire it on the body: the requesting element may be gone by the time the
    response lands (an SSE swap replaced it), and an event on a detached element reaches no listener.
    """
    return {"HX-Trigger": json.dumps({"toast": {"message": message, "level": level, "target": "body", **extra}})}


def toast(message: str, level: str = "info") -> dict[str, Any]:
    """The same toast as toast_header, as the trigger_event arguments of litestar-htmx's HTMXTemplate and
    TriggerEvent responses."""
    return {
        "trigger_event": "toast",
        "params": {"message": message, "level": level, "target": "body"},
        "after": "receive",
    }


def _error_detail(exc: HTTPException) -> str:
    if isinstance(exc, ValidationException) and isinstance(exc.extra, list) and exc.extra:
        first = exc.extra[0]
        if isinstance(first, dict):
            where = first.get("key") or first.get("source") or "request"
            return f"Invalid {where}: {first.get('message', exc.detail)}"
    return str(exc.detail)


def http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    """JSON for the API, a toast for HTMX, a small page for everyone else; never a stack trace."""
    detail = _error_detail(exc)
    headers = dict(exc.headers or {})
    if wants_json(request):
        return Response(
            {"detail": detail, "status_code": exc.status_code}, status_code=exc.status_code, headers=headers
        )
    if is_htmx(request):
        headers.update(toast_header(detail, "error"))
        headers["HX-Reswap"] = "none"
        return Response(detail, status_code=exc.status_code, headers=headers, media_type="text/plain")
    return Template(
        "error.html",
        context={"status_code": exc.status_code, "detail": detail, "user": current_user(request)},
        status_code=exc.status_code,
        headers=headers,
    )


def not_authorized(request: Request[Any, Any, Any], exc: NotAuthorizedException) -> Response[Any]:
    """Send people to the login page and back; APIs get a plain 401."""
    if wants_json(request):
        detail = exc.detail if isinstance(exc, BearerTokenRequired) else "Authentication required"
        return Response({"detail": detail, "status_code": 401}, status_code=401)
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if is_htmx(request):
        # Back to the page the person is on, not to the URL htmx posted to.
        current = urlsplit(request.headers.get("hx-current-url", ""))
        target = (current.path or "/") + (f"?{current.query}" if current.query else "")
    login_url = f"/login?next={quote(target, safe='')}"
    if is_htmx(request):
        # Say so and keep the page (and the text being typed); a redirect would drop both.
        headers = toast_header("You were logged out — log in again", "error", link=login_url, ttl=60_000)
        headers["HX-Reswap"] = "none"
        return Response("You were logged out.", status_code=401, headers=headers, media_type="text/plain")
    return Redirect(login_url, status_code=303)


def not_found(request: Request[Any, Any, Any], exc: NotFoundException) -> Response[Any]:
    return http_error(request, HTTPException(status_code=404, detail="Not found"))


def server_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    if is_outage(exc):  # e.g. asyncpg's InterfaceError when PostgreSQL closed the connection mid-transaction
        return database_unavailable(request, exc)
    # The type and route only: exception messages can quote transcript text or connection strings.
    chain = _causes(exc)
    log.error("unhandled %s%s on %s %s", type(exc).__name__, chain, request.method, redact_path(request.url.path))
    return http_error(
        request,
        HTTPException(status_code=HTTP_500_INTERNAL_SERVER_ERROR, detail="Something went wrong. Please try again."),
    )


def _causes(exc: BaseException) -> str:
    """The types of what led to `exc` (never the messages), e.g. " (from ConnectionResetError)"."""
    names: list[str] = []
    current = exc.__cause__ or exc.__context__
    while current is not None and len(names) < 5:
        names.append(type(current).__name__)
        current = current.__cause__ or current.__context__
    return f" (from {' <- '.join(names)})" if names else ""


DATABASE_DOWN = "The database is unavailable right now. Please try again in a moment."
RETRY_AFTER_SECONDS = 5
# One warning per this many seconds during an outage, not one per request.
_OUTAGE_LOG_INTERVAL = 30.0
_outage_log = {"last": 0.0, "suppressed": 0}


def database_unavailable(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """Every database outage error (see database.OUTAGE_ERRORS), wherever raised (session middleware, rate
    limit store, a route), answers 503 with Retry-After in the request's own format; logged briefly and rarely."""
    now = time.monotonic()
    if now - _outage_log["last"] >= _OUTAGE_LOG_INTERVAL:
        log.warning(
            "database unavailable (%s) on %s %s; %d similar since the last warning",
            type(exc).__name__,
            request.method,
            redact_path(request.url.path),  # as the access log writes it: no share token
            _outage_log["suppressed"],
        )
        _outage_log.update(last=now, suppressed=0)
    else:
        _outage_log["suppressed"] += 1
    return http_error(
        request,
        HTTPException(
            status_code=HTTP_503_SERVICE_UNAVAILABLE,
            detail=DATABASE_DOWN,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        ),
    )
