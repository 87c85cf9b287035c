"""`create_app(settings)`: routes, plugins, templates and the lifespan, wired in one place."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal

import msgspec
from litestar import Litestar, get
from litestar.config.csrf import CSRFConfig
from litestar.datastructures import State
from litestar.exceptions import HTTPException, NotAuthorizedException, NotFoundException
from litestar.openapi import ResponseSpec
from litestar.plugins.htmx import HTMXPlugin
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Response
from litestar.stores.registry import StoreRegistry
from litestar.template.config import TemplateConfig

from chatapp.accounts import service as accounts
from chatapp.accounts import web
from chatapp.accounts.routes import AccountController
from chatapp.accounts.session_store import PostgresStore
from chatapp.accounts.sessions import session_auth
from chatapp.conversations.agent_runtime import AgentRuntime
from chatapp.conversations.buffer import TranscriptBuffer
from chatapp.conversations.hub import Hub, make_channels
from chatapp.conversations.ownership import CommandRouter, build_ownership, keep_leases
from chatapp.conversations.pipeline import TranscriptPipeline
from chatapp.conversations.rendering import markdown_filter
from chatapp.conversations.routes import ChatController, IngestController
from chatapp.conversations.service import ConversationService
from chatapp.conversations.titles import ModelTitles
from chatapp.conversations.views import STATUS_LABELS, Fragments
from chatapp.core import metrics, openapi
from chatapp.core.database import (
    OUTAGE_ERRORS,
    DatabaseUnavailable,
    configure_engine,
    connection,
    get_engine,
    wait_for_database,
)
from chatapp.core.faults import FaultController, Faults
from chatapp.core.paths import TEMPLATES_DIR
from chatapp.core.settings import Settings, get_settings
from chatapp.core.validation import StrictRequest
from chatapp.history.api import ConversationsApiController
from chatapp.history.deletion import Deletions
from chatapp.history.import_routes import ImportController
from chatapp.history.reaper import run_reaper
from chatapp.history.routes import HistoryController, SharedController
from chatapp.profile.routes import AccountSettingsController
from chatapp.server import assets
from chatapp.server.csrf import session_bound_csrf
from chatapp.server.readiness import readyz
from chatapp.server.security import security_headers

log = logging.getLogger("chatapp")


class Health(msgspec.Struct):
    status: Literal["ok", "database unavailable", "live events unavailable"]


@get(
    "/healthz",
    summary="Ready to serve: the database and live events work",
    security=[{}],
    responses={503: ResponseSpec(Health, description="Not ready: `status` says what is down.")},
)
async def healthz(state: State) -> Response[Health]:
    """Health as before (the process answers, reaches the database, receives live events); `/readyz` adds
    the schema check (chatapp.server.readiness). Kept as is: existing probes and the suite wait on it."""
    try:
        async with connection() as conn:
            await conn.fetchval("SELECT 1")
    except (OSError, DatabaseUnavailable, Exception):
        return Response(Health("database unavailable"), status_code=503)
    if not state.conversations.hub.live:  # the LISTEN connection is down: streams would get nothing
        return Response(Health("live events unavailable"), status_code=503)
    return Response(Health("ok"))


def create_app(settings: Settings | None = None, *, dsn: str | None = None) -> Litestar:
    """Build the app for the database at `dsn` (the CLI resolves it, starting the embedded one if needed)."""
    settings = settings or get_settings()
    database_url = dsn or settings.database_url
    if not database_url:
        raise DatabaseUnavailable("no database: run `chatapp serve`, or set DATABASE_URL")

    templates = template_engine(settings)
    buffer = TranscriptBuffer()
    accounts.hash_gate.configure(settings.hash_concurrency, settings.hash_wait_seconds)
    channels = make_channels(settings.channels, database_url, settings.redis_url)
    hub = Hub(channels, buffer)
    pipeline = TranscriptPipeline(buffer, hub)
    runtime = build_runtime(settings, pipeline)
    faults = Faults()
    sessions = PostgresStore("session")
    ownership = build_ownership(settings.channels, in_process_agent=not settings.livekit_configured)
    conversations = ConversationService(settings, pipeline, runtime, hub, faults, ownership)
    deletions = Deletions(settings.delete_undo_seconds, faults)
    titles = build_titles(settings, hub)
    if titles is not None:
        pipeline.on_stored = titles.stored
    if ownership.distributed:
        hub.on_command = CommandRouter(conversations.agents)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        configure_engine(
            database_url,
            connect_timeout=settings.db_connect_timeout,
            statement_timeout=settings.db_statement_timeout,
        )
        await wait_for_database(database_url, settings.db_wait_seconds)
        engine = get_engine()
        await engine.start_connection_pool(min_size=2, max_size=20, reset=keep_connection_state)
        try:
            async with channels:
                tasks = [
                    asyncio.create_task(hub.run(), name="chatapp-hub"),
                    asyncio.create_task(
                        run_reaper(conversations, settings.idle_minutes, settings.reaper_interval, sessions, deletions),
                        name="chatapp-idle-reaper",
                    ),
                    asyncio.create_task(conversations.stream_slots.keep(), name="chatapp-stream-slots"),
                    # The live streams' pings, and their end when the server is told to stop (one timer for all).
                    asyncio.create_task(hub.keep_streams(settings.sse_ping_seconds), name="chatapp-stream-pings"),
                ]
                leases = asyncio.create_task(keep_leases(conversations.agents), name="chatapp-agent-leases")
                try:
                    yield
                finally:
                    leases.cancel()  # adopt nothing more, then stop this process's agents and hand them over
                    with contextlib.suppress(asyncio.CancelledError):
                        await leases
                    await conversations.agents.wait_stopped()  # the agents of conversations that just ended
                    await runtime.aclose()
                    await deletions.aclose()
                    if titles is not None:
                        await titles.aclose()
                    await ownership.close()
                    for task in tasks:
                        task.cancel()
                    for task in tasks:
                        with contextlib.suppress(asyncio.CancelledError):
                            await task
        finally:
            await engine.close_connection_pool()
            metrics.worker_stopped()  # last: stopping agents and streams above still updates the gauges

    auth = session_auth(max_age=settings.session_max_age, secure=settings.secure_cookies)
    app = Litestar(
        route_handlers=[
            AccountController,
            ChatController,
            IngestController,
            ConversationsApiController,
            HistoryController,
            ImportController,
            AccountSettingsController,
            SharedController,
            healthz,
            readyz,
            *metrics.controllers(),
            assets.static_router(),
            assets.favicon,
        ],
        lifespan=[lifespan],
        middleware=[metrics.prometheus_config().middleware],
        before_send=[security_headers(settings)],
        on_app_init=[auth.on_app_init, session_bound_csrf(csrf_config(settings))],
        plugins=[HTMXPlugin(), openapi.StrictStructSchemaPlugin()],
        request_class=StrictRequest,
        stores=StoreRegistry(
            # Rate-limit counters (chatapp.accounts.limits guards on the routes), shared by every process.
            {"sessions": sessions, "rate_limit": PostgresStore("ratelimit")},
        ),
        template_config=TemplateConfig(instance=templates),
        compression_config=assets.compression(),
        request_max_body_size=1024 * 1024,
        exception_handlers={
            NotAuthorizedException: web.not_authorized,
            NotFoundException: web.not_found,
            HTTPException: web.http_error,
            Exception: web.server_error,
            **dict.fromkeys(OUTAGE_ERRORS, web.database_unavailable),
        },
        openapi_config=openapi.openapi_config(),
        debug=False,
        # `chatapp serve` configures logging once (level from CHATAPP_LOG_LEVEL); Litestar's default
        # config would replace it with its own format and level.
        logging_config=None,
    )
    if settings.test_faults:
        app.register(FaultController)
    if settings.livekit_configured:
        from chatapp.livekit.routes import LiveKitController

        app.register(LiveKitController)
    app.state.faults = faults
    app.state.settings = settings
    app.state.conversations = conversations
    app.state.deletions = deletions
    app.state.fragments = Fragments(templates.engine)
    return app


def template_engine(settings: Settings) -> JinjaTemplateEngine:
    """The pages' Jinja engine (also the bench's framework floor's, so both render with the same one)."""
    templates = JinjaTemplateEngine(directory=TEMPLATES_DIR)
    # Templates do not change under a running server; checking their mtimes cost a stat() per template per render.
    templates.engine.auto_reload = False
    templates.engine.globals["status_labels"] = STATUS_LABELS
    templates.engine.globals["voice_enabled"] = settings.livekit_configured
    # Retry asks the in-process agent again; in LiveKit voice mode one asks again by speaking.
    templates.engine.globals["retry_enabled"] = not settings.livekit_configured
    templates.engine.globals["sse_ping_seconds"] = settings.sse_ping_seconds  # the page's stream watchdog
    templates.engine.globals["static_url"] = assets.static_url
    templates.engine.globals["undo_seconds"] = settings.delete_undo_seconds
    templates.engine.filters["markdown"] = markdown_filter
    return templates


def csrf_config(settings: Settings) -> CSRFConfig:
    """Litestar's CSRF settings; its middleware runs bound to the login session (chatapp.server.csrf)."""
    return CSRFConfig(
        secret=settings.secret_key,
        cookie_secure=settings.secure_cookies,
        cookie_httponly=False,
        cookie_samesite="lax",
        header_name="x-csrftoken",
        # Bearer-token APIs for the agent worker carry no cookies, so CSRF does not apply to them.
        exclude=["^/api/conversations/[^/]+/events", "^/_test/", "^/livekit/webhook"],
    )


async def keep_connection_state(connection: object) -> None:
    """asyncpg resets every connection it takes back (advisory locks, cursors, LISTEN, SET) with one more
    round trip. chatapp sets none of those on pooled connections; open transactions are still rolled back."""


def build_titles(settings: Settings, hub: Hub) -> ModelTitles | None:
    """Titles from the configured model after each conversation's first exchange; None with the offline demo."""
    from chatapp.agents.titles import model_titles

    model = model_titles(settings)
    return ModelTitles(hub, model) if model is not None else None


def build_runtime(settings: Settings, pipeline: TranscriptPipeline) -> AgentRuntime:
    """LiveKit rooms and the `chatapp agent` worker when LIVEKIT_* are set; else the in-process agent (text)."""
    if settings.livekit_configured:
        from chatapp.livekit.runtime import LiveKitRuntime

        return LiveKitRuntime(settings)
    from chatapp.agents.inprocess import InProcessRuntime
    from chatapp.agents.models import build_llm

    return InProcessRuntime(sink=pipeline, llm_factory=lambda: build_llm(settings, page_says_offline=True))
