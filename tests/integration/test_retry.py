"""Retry on the agent's last reply: the replaced reply stays stored, marked superseded, and shows in exports;
message counts and the search document count only current messages; in LiveKit voice mode there is no Retry."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx

from chatapp.conversations import queries
from chatapp.core.database import connection
from chatapp.history.search import search
from tests.factories import make_saved
from tests.fakes.livekit import FakeLiveKit
from tests.support import (
    ITEM,
    AppServer,
    client_ip,
    csrf,
    event,
    greeted,
    htmx,
    ingest,
    open_conversation,
    person,
    signup,
    type_text,
    wait_for,
)


async def rows(cid: uuid.UUID) -> list[tuple[int, str, str, bool]]:
    async with connection() as conn:
        found = await conn.fetch(
            "SELECT seq, role, text, superseded_at IS NOT NULL AS superseded FROM utterance WHERE session = $1"
            " ORDER BY seq",
            cid,
        )
    return [(r["seq"], r["role"], r["text"], r["superseded"]) for r in found]


async def test_retry_keeps_the_replaced_reply_and_counts_only_current_messages(app_server: AppServer) -> None:
    async with person(app_server) as (client, user):
        cid = await open_conversation(client)
        await greeted(cid)
        await type_text(client, app_server, cid, "Plan a trip to Lisbon")

        async def answered() -> bool:
            return len(await rows(cid)) == 3

        await wait_for(answered)
        # A second part of the reply with a word of its own, as an agent worker would report it.
        assert (await ingest(client, cid, [event("agent-zanzibar", "Or Zanzibar in June", role="agent")])).is_success

        async def retry(seq: object) -> httpx.Response:
            return await client.post(f"/conversations/{cid}/retry", data={"seq": str(seq)}, headers=htmx(client))

        assert (await retry(3)).status_code == 409  # not the last reply
        assert (await retry("x")).status_code == 400
        assert (await retry(4)).status_code == 204

        async def answered_again() -> bool:
            return len(await rows(cid)) == 5

        await wait_for(answered_again)
        stored = await rows(cid)
        assert [(seq, role, superseded) for seq, role, _, superseded in stored] == [
            (1, "agent", False),
            (2, "user", False),
            (3, "agent", True),
            (4, "agent", True),
            (5, "agent", False),
        ]
        assert stored[3][2] == "Or Zanzibar in June"  # kept as it was said
        assert "Lisbon" in stored[4][2]  # the new reply answers the same message
        again = await retry(4)
        assert again.status_code == 409  # a second click: that reply is already replaced
        conversation = await queries.get_conversation(cid)
        assert conversation is not None
        assert (conversation.last_seq, conversation.superseded, conversation.message_count) == (5, 2, 3)

        saved = await client.post("/conversations/new", data={"conversation_id": str(cid)}, headers=htmx(client))
        assert saved.status_code == 200
        assert (await search(user.id, "zanzibar")).hits == []  # the search document has only current messages
        assert [h.item.id for h in (await search(user.id, "Lisbon")).hits] == [cid]
        listing = (await client.get("/history")).text
        assert ITEM.findall(listing) == [str(cid)]
        assert "3 messages" in listing
        detail = (await client.get(f"/history/{cid}")).text
        assert detail.count('data-superseded="true"') == 2
        assert 'data-testid="message-count">3</span>' in detail
        document = (await client.get(f"/history/{cid}/export/json")).json()
        assert document["version"] == 2
        assert document["message_count"] == 3
        assert [u["superseded"] for u in document["utterances"]] == [False, False, True, True, False]
        assert "[replaced by a retry]" in (await client.get(f"/history/{cid}/export/txt")).text


async def test_in_voice_mode_there_is_no_retry(voice_app: AppServer, fake: FakeLiveKit) -> None:
    async with httpx.AsyncClient(base_url=voice_app.url, headers={"X-Forwarded-For": client_ip()}, timeout=10) as c:
        await signup(c)
        cid = await open_conversation(c)
        lines = [event("u-1", "Plan a trip to Kyoto"), event("a-1", "Kyoto it is.", role="agent")]
        assert (await ingest(c, cid, lines)).is_success
        page = (await c.get("/")).text
        assert "Kyoto it is." in page
        assert 'data-testid="retry"' not in page
        refused = await c.post(f"/conversations/{cid}/retry", data={"seq": "2"}, headers=htmx(c))
        assert refused.status_code == 409
        assert "ask again by speaking" in refused.headers["hx-trigger"]
    assert [s for *_, s in await rows(cid)] == [False, False]


async def test_an_export_with_a_replaced_reply_imports_with_it_and_a_newer_format_is_refused(
    app_server: AppServer,
) -> None:
    started = datetime(2025, 3, 4, 10, 0, tzinfo=UTC)
    async with person(app_server) as (alice, alice_user), person(app_server) as (bob, bob_user):
        lines: list[tuple[Any, str]] = [("user", "Which tram?"), ("agent", "Tram 12."), ("agent", "Tram 28.")]
        original = await make_saved(alice_user, "Lisbon trams", started, lines)
        async with connection() as conn:
            await conn.execute("UPDATE utterance SET superseded_at = now() WHERE session = $1 AND seq = 2", original)
            await conn.execute("UPDATE chat_session SET superseded = 1 WHERE id = $1", original)
        exported = json.loads((await alice.get(f"/history/{original}/export/json")).content)
        assert exported["version"] == 2

        def upload(document: dict[str, Any]) -> Any:
            files = {"file": ("lisbon.json", json.dumps(document).encode(), "application/json")}
            return bob.post("/history/import", files=files, headers=csrf(bob))

        newer = await upload({**exported, "version": 99})
        assert newer.status_code == 422
        assert "export format version 99 is not one this app reads (1 to 2)" in newer.text
        assert (await upload(exported)).status_code == 200
        async with connection() as conn:
            row = await conn.fetchrow("SELECT id, last_seq, superseded FROM chat_session WHERE owner = $1", bob_user.id)
            flags = await conn.fetch(
                "SELECT superseded_at IS NOT NULL AS s FROM utterance WHERE session = $1 ORDER BY seq", row["id"]
            )
        assert (row["last_seq"], row["superseded"]) == (3, 1)
        assert [f["s"] for f in flags] == [False, True, False]
        assert [h.item.message_count for h in (await search(bob_user.id, "tram")).hits] == [2]
        assert (await search(bob_user.id, "12")).hits == []  # the replaced reply is not in the search document
