"""Reading the live SSE stream in tests: a reader that records every message, and exactly-once checks."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import httpx
from httpx_sse import ServerSentEvent, aconnect_sse

from chatapp.conversations.buffer import TranscriptBuffer
from chatapp.conversations.hub import Hub, make_channels
from chatapp.conversations.pipeline import TranscriptPipeline
from chatapp.core.database import connection


class StreamReader:
    """One open stream, recording every message event; `ready` is set once the first one arrived (so the
    subscription is registered: the stream listens before it replays)."""

    def __init__(self, client: httpx.AsyncClient, url: str) -> None:
        self.client = client
        self.url = url
        self.events: list[ServerSentEvent] = []
        self.ready = asyncio.Event()
        self.changed = asyncio.Event()
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async with aconnect_sse(self.client, "GET", self.url, timeout=httpx.Timeout(30.0)) as source:
            async for sse in source.aiter_sse():
                if sse.event == "message":
                    self.events.append(sse)
                    self.ready.set()
                    self.changed.set()

    @property
    def seqs(self) -> list[int]:
        """The sequence numbers of the finals received (httpx-sse repeats the last id on events without one,
        so interims are left out by their markup)."""
        return [int(sse.id) for sse in self.events if sse.id and 'data-final="true"' in sse.data]

    async def wait_for(self, seq: int, timeout: float = 15.0) -> None:
        async def until() -> None:
            while seq not in self.seqs:
                self.changed.clear()
                if self.task.done():
                    self.task.result()
                    raise AssertionError("the stream ended early")
                await self.changed.wait()

        await asyncio.wait_for(until(), timeout)

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def stored_seqs(conversation_id: uuid.UUID) -> list[int]:
    async with connection() as conn:
        rows = await conn.fetch("SELECT seq FROM utterance WHERE session = $1 ORDER BY seq", conversation_id)
    return [row["seq"] for row in rows]


def assert_exactly_once_in_order(seqs: list[int], stored: list[int]) -> None:
    missing = sorted(set(stored) - set(seqs))
    duplicated = len(seqs) - len(set(seqs))
    assert (missing[:10], len(missing), duplicated) == ([], 0, 0)
    assert seqs == stored


async def open_stream(client: httpx.AsyncClient, url: str) -> StreamReader:
    """A stream known to be registered: it listens before replaying, and the replay has arrived."""
    reader = StreamReader(client, url)
    await asyncio.wait_for(reader.ready.wait(), 10)
    return reader


@contextlib.asynccontextmanager
async def live_pipeline(kind: str, db: str, redis_url: str = "") -> AsyncIterator[TranscriptPipeline]:
    """A transcript pipeline in the test's own process over `kind` channels (postgres, redis), its hub running."""
    buffer = TranscriptBuffer()
    channels = make_channels(kind, db, redis_url)
    hub = Hub(channels, buffer)
    async with channels:
        task = asyncio.create_task(hub.run())
        try:
            yield TranscriptPipeline(buffer, hub)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
