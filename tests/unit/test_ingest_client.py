"""The worker's ingest client on its own: it delivers whatever events it is given, with no session or assembly."""

from __future__ import annotations

import json

import httpx

from chatapp.livekit.ingest_client import IngestClient, WireEvent

URL = "http://app.test/api/conversations/c/events"


async def test_events_put_are_delivered_in_order_with_superseded_interims_left_out() -> None:
    posted: list[list[dict[str, object]]] = []
    tokens: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        tokens.append(request.headers["authorization"])
        posted.append(json.loads(request.content)["events"])
        return httpx.Response(200, json={"stored": len(posted[-1]), "ignored": 0})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as http:
        client = IngestClient(URL, "tok", conversation_id="c", client=http)
        for text in ["Lis", "Lisbon"]:
            client.put(WireEvent("agent-1", "agent", text, final=False))
        client.put(WireEvent("user-1", "user", "hi", final=True))
        assert client.pending == 2  # the newer interim replaced the one still waiting
        assert await client.aclose(timeout=5)
    assert [(e["item_id"], e["text"], e["final"]) for batch in posted for e in batch] == [
        ("agent-1", "Lisbon", False),
        ("user-1", "hi", True),
    ]
    assert tokens == ["Bearer tok"]
    assert (client.delivered, client.dropped, client.attempts) == (2, 0, 1)
    assert await client.aclose() is True  # closing twice is harmless


async def test_a_gone_conversation_drops_what_is_put_later() -> None:
    async with httpx.AsyncClient(transport=httpx.MockTransport(lambda _: httpx.Response(410))) as http:
        client = IngestClient(URL, "tok", conversation_id="c", client=http)
        client.start()
        client.put(WireEvent("user-1", "user", "hi", final=True))
        assert await client.flush(5)
        client.put(WireEvent("user-2", "user", "later", final=True))
        assert client.pending == 0
        assert client.dropped == 2
        await client.aclose(timeout=1)
