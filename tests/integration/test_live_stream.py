"""The SSE stream and the ingest API against a real server process."""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from httpx_sse import ServerSentEvent, aconnect_sse

from chatapp.conversations.agent_access import ingest_token
from chatapp.core.database import connection
from tests.support import SECRET_KEY, AppServer, client_ip, event, ingest, open_conversation, signup


async def collect(
    client: httpx.AsyncClient,
    url: str,
    want: int,
    *,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
    connected: asyncio.Event | None = None,
) -> list[ServerSentEvent]:
    """The first `want` message events whose element is one of ours (the offline agent may speak too).

    `connected` is set on the first event of any kind: the stream subscribes before it replays anything,
    so from then on whatever is published reaches this reader live, not through the replay.
    """
    received: list[ServerSentEvent] = []

    async def read() -> None:
        async with aconnect_sse(client, "GET", url, headers=dict(headers or {})) as source:
            async for sse in source.aiter_sse():
                if connected is not None:
                    connected.set()
                if sse.event == "message" and "probe-" in sse.data:
                    received.append(sse)
                    if len(received) >= want:
                        return

    await asyncio.wait_for(read(), timeout)
    return received


async def live_reader(
    client: httpx.AsyncClient,
    cid: uuid.UUID,
    want: int,
    *,
    ingest_client: httpx.AsyncClient | None = None,
) -> asyncio.Task[list[ServerSentEvent]]:
    """A reader of the conversation's stream that is subscribed by the time this returns.

    A warm-up interim (not a probe) makes the stream send something whether it was published before the
    subscription (replayed from the buffer) or after (live); either way the reader is then listening.
    """
    connected = asyncio.Event()
    reader = asyncio.create_task(collect(client, f"/conversations/{cid}/stream", want, connected=connected))
    warm_up = event(f"w-{uuid.uuid4().hex[:12]}", "warming up", role="agent", final=False)
    while not connected.is_set():
        assert (await ingest(ingest_client or client, cid, [warm_up])).status_code == 200
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(connected.wait()), 0.2)
        assert not reader.done(), "the stream ended before it was connected"
    return reader


@pytest_asyncio.fixture(loop_scope="session")
async def chat(client: httpx.AsyncClient) -> AsyncIterator[tuple[httpx.AsyncClient, uuid.UUID]]:
    await signup(client)
    yield client, await open_conversation(client)


async def test_an_ingested_final_reaches_a_subscriber(chat: tuple[httpx.AsyncClient, uuid.UUID]) -> None:
    client, cid = chat
    reader = await live_reader(client, cid, 1)
    response = await ingest(client, cid, [event("i-1", "probe-1 Hello from the worker")])
    assert response.status_code == 200
    assert response.json() == {"stored": 1, "ignored": 0}
    [sse] = await reader
    assert 'data-role="user"' in sse.data
    assert 'data-final="true"' in sse.data
    assert "probe-1 Hello from the worker" in sse.data
    assert sse.id
    assert int(sse.id) >= 1


async def test_resume_replays_exactly_the_missed_finals(chat: tuple[httpx.AsyncClient, uuid.UUID]) -> None:
    client, cid = chat
    response = await ingest(client, cid, [event(f"r-{n}", f"probe-r{n}") for n in range(1, 6)])
    assert response.json()["stored"] == 5
    async with connection() as conn:
        seqs = [
            r["seq"]
            for r in await conn.fetch(
                "SELECT seq FROM utterance WHERE session=$1 AND item_id LIKE 'r-%' ORDER BY seq", cid
            )
        ]
    cursor = seqs[1]  # the client saw the first two
    replay = await collect(client, f"/conversations/{cid}/stream", 3, headers={"Last-Event-ID": str(cursor)})
    assert [int(s.id) for s in replay] == seqs[2:]
    assert ["probe-r3" in replay[0].data, "probe-r4" in replay[1].data, "probe-r5" in replay[2].data] == [True] * 3
    # The same cursor in the URL (what the page sends after htmx recreates its EventSource) works alike.
    replay = await collect(client, f"/conversations/{cid}/stream?after={cursor}", 3)
    assert [int(s.id) for s in replay] == seqs[2:]


async def test_interims_update_in_place(chat: tuple[httpx.AsyncClient, uuid.UUID]) -> None:
    client, cid = chat
    reader = await live_reader(client, cid, 3)
    await ingest(client, cid, [event("a-1", "probe-a Lis", role="agent", final=False)])
    await ingest(client, cid, [event("a-1", "probe-a Lisbon", role="agent", final=False)])
    await ingest(client, cid, [event("a-1", "probe-a Lisbon in May.", role="agent")])
    first, second, last = await reader
    ids = {re.search(r'id="(m-[0-9a-f]+)"', s.data).group(1) for s in (first, second, last)}  # type: ignore[union-attr]
    assert len(ids) == 1
    assert 'data-final="false"' in first.data
    assert not first.id  # interims carry no sequence
    assert 'data-final="true"' in last.data
    assert last.id


async def test_transcript_text_is_escaped(chat: tuple[httpx.AsyncClient, uuid.UUID]) -> None:
    client, cid = chat
    reader = await live_reader(client, cid, 1)
    await ingest(client, cid, [event("x-1", "probe-x <script>alert(1)</script> & <b>bold</b>")])
    [sse] = await reader
    assert "<script>" not in sse.data
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in sse.data
    page = await client.get("/")
    assert "<script>alert(1)</script>" not in page.text


async def test_another_users_stream_is_not_found(
    chat: tuple[httpx.AsyncClient, uuid.UUID], app_server: AppServer
) -> None:
    _, cid = chat
    async with httpx.AsyncClient(base_url=app_server.url, headers={"X-Forwarded-For": client_ip()}) as other:
        await signup(other)
        response = await other.get(f"/conversations/{cid}/stream")
        assert response.status_code == 404
        assert (await other.get(f"/conversations/{uuid.uuid4()}/stream")).status_code == 404
        assert (await other.get("/conversations/not-a-uuid/stream")).status_code == 404


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"events": [event("ok", "x") | {"role": "robot"}]}, 400, "role"),
        ({"events": [event("ok", "x" * 10_001)]}, 422, "events[0].text is longer than 10,000 characters"),
        ({"events": [event("ok", "x")] * 101}, 400, "events"),
        ({"events": []}, 400, "events"),
        ({"events": [event("bad id!", "x")]}, 400, "item_id"),
        ({"events": [event("ok", "x") | {"final": "yes"}]}, 400, "final"),
        ({"nope": 1}, 400, ""),
    ],
)
async def test_ingest_validates_strictly(
    chat: tuple[httpx.AsyncClient, uuid.UUID], body: dict[str, object], status: int, message: str
) -> None:
    client, cid = chat
    response = await client.post(
        f"/api/conversations/{cid}/events",
        json=body,
        headers={"Authorization": f"Bearer {ingest_token(SECRET_KEY, cid)}"},
    )
    assert response.status_code == status
    assert message in response.json()["detail"]
    async with connection() as conn:
        assert await conn.fetchval("SELECT count(*) FROM utterance WHERE session = $1 AND item_id = 'ok'", cid) == 0


async def test_ingest_needs_the_conversations_own_token(chat: tuple[httpx.AsyncClient, uuid.UUID]) -> None:
    client, cid = chat
    body = {"events": [event("t-1", "hi")]}
    url = f"/api/conversations/{cid}/events"
    assert (await client.post(url, json=body)).status_code == 401
    other_token = ingest_token(SECRET_KEY, uuid.uuid4())
    response = await client.post(url, json=body, headers={"Authorization": f"Bearer {other_token}"})
    assert response.status_code == 401
    assert "bearer token" in response.json()["detail"]
    unknown = uuid.uuid4()
    response = await client.post(
        f"/api/conversations/{unknown}/events",
        json=body,
        headers={"Authorization": f"Bearer {ingest_token(SECRET_KEY, unknown)}"},
    )
    assert response.status_code == 404


async def test_ingest_is_in_the_openapi_schema(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/schema/openapi.json")).json()
    operation = schema["paths"]["/api/conversations/{conversation_id}/events"]["post"]
    assert "bearer token" in operation["description"]


async def test_two_processes_share_live_events_through_postgres(db: str, tmp_path: Path) -> None:
    servers = [AppServer.start(db, tmp_path / name, CHATAPP_CHANNELS="postgres") for name in ("a", "b")]
    try:
        a, b = servers
        async with httpx.AsyncClient(base_url=b.url, headers={"X-Forwarded-For": client_ip()}) as on_b:
            await signup(on_b)
            cid = await open_conversation(on_b)
            async with httpx.AsyncClient(base_url=a.url) as on_a:
                reader = await live_reader(on_b, cid, 2, ingest_client=on_a)
                long_text = "probe-long " + "wörd " * 1900  # > 8000 bytes of UTF-8: must arrive whole
                response = await ingest(on_a, cid, [event("p-1", "probe-p1 via A"), event("p-2", long_text)])
                assert response.status_code == 200
            first, second = await reader
        assert "probe-p1 via A" in first.data
        assert second.data.count("wörd") == 1900
    finally:
        for server in servers:
            server.stop()
