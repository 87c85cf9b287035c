"""In-process pipeline fixtures: the real buffer, hub and store against the test database."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest_asyncio

from chatapp.conversations.buffer import TranscriptBuffer
from chatapp.conversations.hub import Hub, make_channels
from chatapp.conversations.pipeline import TranscriptPipeline


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
