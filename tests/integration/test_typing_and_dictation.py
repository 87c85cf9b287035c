"""Typed text and browser dictation reach the transcript through the same pipeline, idempotently."""

from __future__ import annotations

import asyncio
import uuid

import httpx
from httpx_sse import aconnect_sse

from chatapp.core.database import connection
from tests.support import htmx, open_conversation, signup


async def user_rows(conversation_id: uuid.UUID) -> list[tuple[str, str]]:
    async with connection() as conn:
        rows = await conn.fetch(
            "SELECT item_id, text FROM utterance WHERE session = $1 AND role = 'user' ORDER BY seq", conversation_id
        )
    return [(r["item_id"], r["text"]) for r in rows]


async def test_a_retried_message_post_is_stored_once(client: httpx.AsyncClient) -> None:
    await signup(client)
    cid = await open_conversation(client)
    item = str(uuid.uuid4())
    for _ in range(3):
        response = await client.post(
            f"/conversations/{cid}/messages", data={"text": "  Hello <there>  ", "item_id": item}, headers=htmx(client)
        )
        assert response.status_code == 204
    assert await user_rows(cid) == [(f"typed-{item}", "Hello <there>")]


async def test_bad_messages_are_refused_with_a_clear_error(client: httpx.AsyncClient) -> None:
    await signup(client)
    cid = await open_conversation(client)
    url = f"/conversations/{cid}/messages"
    empty = await client.post(url, data={"text": "   "}, headers=htmx(client))
    assert empty.status_code == 422
    assert "Type a message first." in empty.headers["hx-trigger"]
    too_long = await client.post(url, data={"text": "x" * 10_001}, headers=htmx(client))
    assert too_long.status_code == 413
    bad_id = await client.post(url, data={"text": "hi", "item_id": "../../etc"}, headers=htmx(client))
    assert bad_id.status_code == 400
    unknown = await client.post(f"/conversations/{uuid.uuid4()}/messages", data={"text": "hi"}, headers=htmx(client))
    assert unknown.status_code == 404
    assert await user_rows(cid) == []


async def test_dictation_interims_stream_and_the_final_is_stored_and_answered(client: httpx.AsyncClient) -> None:
    await signup(client)
    cid = await open_conversation(client)
    url = f"/conversations/{cid}/dictation"
    item = str(uuid.uuid4())

    async def watch() -> list[str]:
        events: list[str] = []

        async def read() -> None:
            async with aconnect_sse(client, "GET", f"/conversations/{cid}/stream") as source:
                async for sse in source.aiter_sse():
                    if sse.event == "message" and "probe-d" in sse.data:
                        events.append(sse.data)
                        if 'data-final="true"' in sse.data:
                            return

        await asyncio.wait_for(read(), 10)
        return events

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0.3)
    for text, final in [
        ("probe-d I want", False),
        ("probe-d I want to go", False),
        ("probe-d I want to go to Rome", True),
    ]:
        response = await client.post(url, json={"item_id": item, "text": text, "final": final}, headers=htmx(client))
        assert response.status_code == 204
    events = await watcher
    assert [('data-final="true"' in e) for e in events] == [False, False, True]
    assert await user_rows(cid) == [(f"dictation-{item}", "probe-d I want to go to Rome")]
    # The agent answers dictated text like typed text.
    for _ in range(50):
        async with connection() as conn:
            replies = await conn.fetchval(
                "SELECT count(*) FROM utterance WHERE session = $1 AND role = 'agent' AND text ILIKE '%rome%'", cid
            )
        if replies:
            break
        await asyncio.sleep(0.1)
    assert replies == 1
    bad = await client.post(url, json={"item_id": "no spaces allowed", "text": "x"}, headers=htmx(client))
    assert bad.status_code == 400
