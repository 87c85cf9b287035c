"""In-process pipeline fixtures: the real buffer, hub and store against the test database."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest_asyncio

from chatapp.agents.inprocess import InProcessRuntime
from chatapp.agents.offline import OfflineResponder
from chatapp.conversations.buffer import TranscriptBuffer
from chatapp.conversations.hub import Hub, make_channels
from chatapp.conversations.pipeline import TranscriptPipeline
from chatapp.conversations.service import ConversationService
from chatapp.faults import Faults
from chatapp.settings import Settings
from tests.support import SECRET_KEY


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
