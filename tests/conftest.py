"""Session-wide real parts: an embedded PostgreSQL (or TEST_DATABASE_URL) and one app server process."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from chatapp.database import EmbeddedPostgres, configure_engine, get_engine, wait_for_database
from chatapp.migrations import apply_migrations
from tests.fakes.livekit import FakeLiveKit
from tests.support import AppServer, client_ip


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if url := os.environ.get("TEST_DATABASE_URL"):
        yield url
        return
    embedded = EmbeddedPostgres(Path(tmp_path_factory.mktemp("db")), delete_on_stop=True)
    try:
        yield embedded.start()
    finally:
        embedded.stop()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def db(database_url: str) -> AsyncIterator[str]:
    """The migrated test database with Piccolo's pool running in this process."""
    configure_engine(database_url)
    await wait_for_database(database_url)
    await apply_migrations()
    engine = get_engine()
    await engine.start_connection_pool(min_size=1, max_size=10)
    yield database_url
    await engine.close_connection_pool()


@pytest.fixture(scope="session")
def app_server(db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    server = AppServer.start(db, Path(tmp_path_factory.mktemp("app")), CHATAPP_AUTH_RATE_LIMIT="5")
    yield server
    server.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def client(app_server: AppServer) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client with its own cookie jar and its own client address."""
    async with httpx.AsyncClient(
        base_url=app_server.url, headers={"X-Forwarded-For": client_ip()}, timeout=10.0
    ) as http:
        yield http


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeLiveKit]:
    """A fake LiveKit server (Twirp over HTTP, real protobuf) for the module's voice tests."""
    server = FakeLiveKit().start()
    yield server
    server.stop()
