"""The live stream delivers every final exactly once, in sequence order, however many writers race."""

from __future__ import annotations

import asyncio
import re
import uuid

import httpx
from httpx_sse import ServerSentEvent

from tests.support import event, ingest, open_conversation, signup
from tests.support_stream import StreamReader, assert_exactly_once_in_order, stored_seqs

SENDERS = 8
PER_SENDER = 150
DOM_ID = re.compile(r'id="(m-[0-9a-f]+)"')


async def send_concurrently(base_url: str, conversation_id: uuid.UUID, senders: int, per_sender: int) -> None:
    """`senders` concurrent writers, one final per POST, as agent workers in several processes would."""
    limits = httpx.Limits(max_connections=senders, max_keepalive_connections=senders)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30.0) as http:

        async def sender(n: int) -> None:
            for k in range(per_sender):
                response = await ingest(http, conversation_id, [event(f"w{n}-{k}", f"probe-w{n}-{k}", role="agent")])
                assert response.status_code == 200, response.text

        await asyncio.gather(*(sender(n) for n in range(senders)))


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
