"""The framework floor: the least a Litestar app on this stack can do to serve the history pages chatapp serves.

Same Litestar, uvicorn (httptools, uvloop), worker count and one SO_REUSEPORT socket per worker as `chatapp
serve`; the same request SQL through the same pool (the login-session read, then the app's own `history_list` /
`api_page`, so the page statements are the app's by construction); the same Jinja engine and template, rendered
as the app renders it (`views.list_context`, `views.list_page`). What it leaves out is everything else a request
goes through in the app: no middleware (session, auth, CSRF, compression, metrics, security headers), no
dependency injection or parameter validation, no exception handlers, uvicorn's own HTTP protocol (without the
app's header limits and read timeouts), no access log. `python -m bench history` measures it beside the app.

Run as `python -m bench.history.floor_app --port N` with DATABASE_URL set (the bench does, `bench.history.floor`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from litestar import Litestar, Response, get
from litestar.plugins.htmx import HTMXRequest
from litestar.response import Template
from litestar.template.config import TemplateConfig
from litestar.utils.scope.state import ScopeState

from chatapp.accounts.service import User
from chatapp.accounts.session_store import PostgresStore
from chatapp.accounts.sessions import SESSION_COOKIE
from chatapp.app import keep_connection_state, template_engine
from chatapp.cli import serve_workers
from chatapp.core.database import configure_engine, get_engine
from chatapp.core.settings import env_values, get_settings
from chatapp.history import filters, views
from chatapp.history.api import ConversationList, ConversationSummary
from chatapp.history.grouping import user_zone
from chatapp.history.listing import history_list
from chatapp.history.service import api_page

# The app's pages carry a CSRF token in every form (its middleware makes one per session); the floor puts a token
# of the same length in the same places, so the template does the same work and the page has the same size.
CSRF_TOKEN = "f" * 128
SESSIONS = PostgresStore("session")


class NotLoggedIn(Exception):
    """No valid login session: the floor answers 401 (the bench always sends one)."""


async def _user(request: HTMXRequest) -> User:
    """The login session read, as the app's session middleware does it (one SELECT through the same store)."""
    raw = await SESSIONS.get(request.cookies.get(SESSION_COOKIE, ""))
    if raw is None:
        raise NotLoggedIn
    session = json.loads(raw)
    return User(id=uuid.UUID(session["user_id"]), email=session["email"], display_name=session["display_name"])


@get("/history")
async def history(request: HTMXRequest) -> Template:
    """The main list, a search, or the next rows: what GET /history answers in the app, for the same request."""
    user = await _user(request)
    params = request.query_params
    cursor = params.get("cursor") or None
    zone = user_zone(request.cookies.get("tz"))
    query = " ".join(params.get("q", "").split())
    applied = filters.apply(params, zone)
    listing = await history_list(user.id, "", query, applied, cursor)
    context = views.list_context(user, listing, zone, "", query, applied)
    ScopeState.from_scope(request.scope).csrf_token = CSRF_TOKEN
    return views.list_page(request, context | {"previous_group": params.get("group", ""), "deleted": False}, cursor)


@get("/api/users/sessions")
async def api_sessions(request: HTMXRequest) -> ConversationList:
    """The JSON API's list page (no filters), as the app's handler builds it."""
    user = await _user(request)
    page = await api_page(user.id, request.query_params.get("cursor"), int(request.query_params.get("limit", "20")))
    items = [
        ConversationSummary(i.id, i.title, i.started_at, i.ended_at, i.message_count, i.archived, i.pinned)
        for i in page.items
    ]
    return ConversationList(items=items, next_cursor=page.next_cursor)


@get("/healthz")
async def healthz() -> str:
    return "ok"


def _not_logged_in(request: Any, exc: NotLoggedIn) -> Response[str]:
    return Response("not logged in", status_code=401)


def create_floor_app() -> Litestar:
    """The floor app for the database in DATABASE_URL, with the app's pool settings."""
    settings = get_settings()
    dsn = settings.database_url
    if not dsn:
        raise SystemExit("the floor app needs DATABASE_URL")

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        configure_engine(
            dsn, connect_timeout=settings.db_connect_timeout, statement_timeout=settings.db_statement_timeout
        )
        engine = get_engine()
        await engine.start_connection_pool(min_size=2, max_size=20, reset=keep_connection_state)
        try:
            yield
        finally:
            await engine.close_connection_pool()

    return Litestar(
        route_handlers=[history, api_sessions, healthz],
        lifespan=[lifespan],
        request_class=HTMXRequest,
        template_config=TemplateConfig(instance=template_engine(settings)),
        exception_handlers={NotLoggedIn: _not_logged_in},
        logging_config=None,
        openapi_config=None,
        debug=False,
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.history.floor_app")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    workers, _ = serve_workers(None, env_values())  # as many as `chatapp serve` would run here
    config = uvicorn.Config(
        "bench.history.floor_app:create_floor_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=workers,
        log_level="warning",
        access_log=False,
        http="httptools",
        proxy_headers=False,  # as `chatapp serve` without CHATAPP_FORWARDED_ALLOW_IPS
        timeout_graceful_shutdown=5,
    )
    if workers > 1:
        from chatapp.server.workers import run_workers

        run_workers(config)  # one listening socket per worker, as `chatapp serve --workers N`
    else:
        uvicorn.Server(config).run()


if __name__ == "__main__":
    os.environ.setdefault("CHATAPP_LOG_LEVEL", "warning")
    main()
