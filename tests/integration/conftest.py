"""Integration fixtures: the in-process pipeline (real buffer, hub and store against the test database), the app
with LiveKit settings against the fake LiveKit, and a PostgreSQL of the module's own."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from chatapp.agents.inprocess import InProcessRuntime
from chatapp.agents.offline import OfflineResponder
from chatapp.conversations.buffer import TranscriptBuffer
from chatapp.conversations.hub import Hub, make_channels
from chatapp.conversations.pipeline import TranscriptPipeline
from chatapp.conversations.service import ConversationService
from chatapp.core.database import EmbeddedPostgres
from chatapp.core.faults import Faults
from chatapp.core.settings import Settings
from tests.fakes.livekit import API_KEY, API_SECRET, APP_TIMEOUT, FakeLiveKit
from tests.support import ROOT, SECRET_KEY, AppServer, free_port
from tests.support_postgres import OwnPostgres


@pytest_asyncio.fixture(loop_scope="session")
async def pipeline(db: str) -> AsyncIterator[TranscriptPipeline]:
    buffer = TranscriptBuffer()
    channels = make_channels("memory", db)
    hub = Hub(channels, buffer)
    async with channels:
        task = asyncio.create_task(hub.run())
        await asyncio.sleep(0)
        yield TranscriptPipeline(buffer, hub)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest_asyncio.fixture(loop_scope="session")
async def service(pipeline: TranscriptPipeline) -> AsyncIterator[ConversationService]:
    """The real conversation service with the in-process agent (offline model, instant, no greeting)."""
    settings = Settings.from_env({"CHATAPP_SECRET_KEY": SECRET_KEY, "CHATAPP_DATA_DIR": "/nonexistent"})
    runtime = InProcessRuntime(sink=pipeline, llm_factory=lambda: OfflineResponder(word_delay=0), greet=False)
    yield ConversationService(settings, pipeline, runtime, pipeline.hub, Faults())
    await runtime.aclose()


@pytest.fixture(scope="module")
def voice_app(db: str, fake: FakeLiveKit, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    server = AppServer.start(
        db,
        Path(tmp_path_factory.mktemp("voice-app")),
        LIVEKIT_URL=fake.url,
        LIVEKIT_API_KEY=API_KEY,
        LIVEKIT_API_SECRET=API_SECRET,
        CHATAPP_LIVEKIT_TIMEOUT=str(APP_TIMEOUT),
        CHATAPP_AGENT_NAME="test-agent",
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def own_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnPostgres]:
    embedded = EmbeddedPostgres(Path(tmp_path_factory.mktemp("outage-db")), delete_on_stop=True)
    embedded.start()  # initdb and a first start on its socket; then the same data on TCP
    server = OwnPostgres(embedded.pgdata, free_port())
    server.stop()
    server.start()
    try:
        migrate = subprocess.run(
            [sys.executable, "-m", "chatapp", "migrate"],
            cwd=ROOT,
            env={**os.environ, "DATABASE_URL": server.dsn, "CHATAPP_ENV_FILE": "/nonexistent"},
            capture_output=True,
            timeout=60,
        )
        assert migrate.returncode == 0, migrate.stderr.decode()
        yield server
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):  # already stopped
            server.stop()
        embedded.stop()
