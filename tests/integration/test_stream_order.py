"""The live stream delivers every final exactly once, in sequence order, however many writers race."""

from __future__ import annotations

import asyncio
import re
import uuid

import httpx
from httpx_sse import ServerSentEvent, aconnect_sse

from chatapp.database import connection
from tests.integration.test_live_stream import event, ingest, open_conversation
from tests.support import signup

SENDERS = 8
PER_SENDER = 150
DOM_ID = re.compile(r'id="(m-[0-9a-f]+)"')


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


async def send_concurrently(base_url: str, conversation_id: uuid.UUID, senders: int, per_sender: int) -> None:
    """`senders` concurrent writers, one final per POST, as agent workers in several processes would."""
    limits = httpx.Limits(max_connections=senders, max_keepalive_connections=senders)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30.0) as http:

        async def sender(n: int) -> None:
            for k in range(per_sender):
                response = await ingest(http, conversation_id, [event(f"w{n}-{k}", f"probe-w{n}-{k}", role="agent")])
                assert response.status_code == 200, response.text

        await asyncio.gather(*(sender(n) for n in range(senders)))


def assert_exactly_once_in_order(seqs: list[int], stored: list[int]) -> None:
    missing = sorted(set(stored) - set(seqs))
    duplicated = len(seqs) - len(set(seqs))
    assert (missing[:10], len(missing), duplicated) == ([], 0, 0)
    assert seqs == stored


async def test_concurrent_writers_lose_no_final_on_an_open_stream(client: httpx.AsyncClient) -> None:
    await signup(client)
    cid = await open_conversation(client)
    assert (await ingest(client, cid, [event("w-start", "probe-start", role="agent")])).status_code == 200
    reader = StreamReader(client, f"/conversations/{cid}/stream")
    try:
        await asyncio.wait_for(reader.ready.wait(), 10)
        await send_concurrently(str(client.base_url), cid, SENDERS, PER_SENDER)
        stored = await stored_seqs(cid)
        await reader.wait_for(stored[-1])
        assert_exactly_once_in_order(reader.seqs, stored)
    finally:
        await reader.close()


async def test_a_late_final_replaces_its_interrupted_bubble(client: httpx.AsyncClient) -> None:
    await signup(client)
    cid = await open_conversation(client)
    cut = event("c-1", "probe-c Half a") | {"interrupted": True}
    assert (await ingest(client, cid, [cut, event("c-2", "probe-c2 next")])).status_code == 200
    reader = StreamReader(client, f"/conversations/{cid}/stream")
    try:
        last = (await stored_seqs(cid))[-1]
        await reader.wait_for(last)
        complete = event("c-1", "probe-c Half a sentence, finished late.")
        assert (await ingest(client, cid, [complete])).json() == {"stored": 1, "ignored": 0}

        async def completed() -> ServerSentEvent:
            while True:
                for sse in reader.events:
                    if "finished late" in sse.data:
                        return sse
                reader.changed.clear()
                await reader.changed.wait()

        late = await asyncio.wait_for(completed(), 10)
        first = next(sse for sse in reader.events if "probe-c Half a" in sse.data)
        assert DOM_ID.search(late.data).group(1) == DOM_ID.search(first.data).group(1)  # type: ignore[union-attr]
        assert 'data-final="true"' in late.data
        # The update carries no id of its own: the client's cursor (Last-Event-ID) must not move back.
        assert late.id == str(last)
    finally:
        await reader.close()
