"""New Chat over HTTP and the original design's JSON API, against the real server."""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from chatapp.conversations import queries
from chatapp.core.database import connection
from tests.support import AppServer, client_ip, csrf_from, event, greeted, ingest, open_conversation, signup


@contextlib.asynccontextmanager
async def logged_in(app_server: AppServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=app_server.url, headers={"X-Forwarded-For": client_ip()}, timeout=10) as c:
        await signup(c)
        yield c


def csrf_headers(client: httpx.AsyncClient) -> dict[str, str]:
    return {"x-csrftoken": str(client.cookies.get("csrftoken"))}


async def new_chat(client: httpx.AsyncClient, conversation_id: uuid.UUID | None) -> httpx.Response:
    data = {"conversation_id": str(conversation_id)} if conversation_id else {}
    return await client.post("/conversations/new", data=data, headers={"HX-Request": "true", **csrf_headers(client)})


async def test_new_chat_returns_a_fresh_panel_with_the_saved_conversation_in_the_sidebar(
    client: httpx.AsyncClient,
) -> None:
    await signup(client)
    cid = await open_conversation(client)
    await ingest(client, cid, [event("u-1", "Plan a food trip to Naples"), event("a-1", "Great idea!", role="agent")])

    response = await new_chat(client, cid)

    assert response.status_code == 200
    assert f'Saved · <a href="/history/{cid}' in response.text  # the sidebar's one line, no toast
    assert "hx-trigger" not in response.headers
    html = response.text
    assert html.lstrip().startswith('<div id="chat-panel"')
    panel, sidebar = html.split('<ul id="history-list"')
    assert f'data-conversation-id="{cid}"' not in panel
    assert 'id="empty-state"' in panel
    assert re.search(r'<h1 id="conversation-title"[^>]*>New Conversation</h1>', html)
    assert 'hx-swap-oob="true"' in sidebar
    assert re.search(
        rf'href="/history/{cid}" hx-post="/conversations/{cid}/reopen"[^>]*>Plan a food trip to Naples</a>', sidebar
    )
    assert "Plan a food trip" not in panel
    new_id = await open_conversation(client)
    assert new_id != cid
    saved = await queries.get_conversation(cid)
    assert saved is not None
    assert saved.ended_at is not None


async def test_new_chat_on_an_empty_conversation_saves_nothing_and_says_so(client: httpx.AsyncClient) -> None:
    await signup(client)
    cid = await open_conversation(client)
    response = await new_chat(client, cid)
    assert response.status_code == 200
    assert "Nothing to save · started fresh" in response.text
    assert "Saved ·" not in response.text
    assert await queries.get_conversation(cid) is None
    assert "Saved conversations appear here." in response.text


async def test_parallel_new_chat_requests_save_once(client: httpx.AsyncClient) -> None:
    await signup(client)
    cid = await open_conversation(client)
    await ingest(client, cid, [event("u-1", "Double click test")])
    responses = await asyncio.gather(*(new_chat(client, cid) for _ in range(10)))
    assert {r.status_code for r in responses} == {200}
    assert sum(1 for r in responses if 'Saved · <a href="/history/' in r.text) == 1
    async with connection() as conn:
        owner = await conn.fetchval("SELECT owner FROM chat_session WHERE id = $1", cid)
        counts = await conn.fetchrow(
            "SELECT count(*) FILTER (WHERE ended_at IS NULL) AS active,"
            " count(*) FILTER (WHERE ended_at IS NOT NULL) AS saved FROM chat_session WHERE owner = $1",
            owner,
        )
    assert (counts["active"], counts["saved"]) == (1, 1)


async def test_a_failed_save_answers_503_with_a_toast_and_changes_nothing(client: httpx.AsyncClient) -> None:
    await signup(client)
    cid = await open_conversation(client)
    await ingest(client, cid, [event("u-1", "Do not lose me")])
    assert (await client.post("/_test/faults", json={"name": "save"})).status_code == 204
    response = await new_chat(client, cid)
    assert response.status_code == 503
    assert "Failed to save conversation. Please try again." in response.headers["hx-trigger"]
    assert response.headers["hx-reswap"] == "none"
    conversation = await queries.get_conversation(cid)
    assert conversation is not None
    assert conversation.active
    assert await open_conversation(client) == cid
    retry = await new_chat(client, cid)
    assert retry.status_code == 200
    assert 'Saved · <a href="/history/' in retry.text


async def test_new_chat_needs_csrf_and_a_valid_id(client: httpx.AsyncClient) -> None:
    await signup(client)
    cid = await open_conversation(client)
    forged = await client.post("/conversations/new", data={"conversation_id": str(cid)}, headers={"HX-Request": "true"})
    assert forged.status_code == 403
    bad = await client.post(
        "/conversations/new", data={"conversation_id": "nope"}, headers={"HX-Request": "true", **csrf_headers(client)}
    )
    assert bad.status_code == 400
    assert await open_conversation(client) == cid


async def test_new_chat_works_without_javascript(client: httpx.AsyncClient) -> None:
    await signup(client)
    cid = await open_conversation(client)
    await ingest(client, cid, [event("u-1", "No JS here")])
    token = csrf_from((await client.get("/")).text)
    response = await client.post("/conversations/new", data={"_csrf_token": token})
    assert response.status_code == 303
    assert await open_conversation(client) != cid


# ---- JSON API ----


async def save(client: httpx.AsyncClient, body: object) -> httpx.Response:
    return await client.post("/api/users/sessions/save", json=body, headers=csrf_headers(client))


async def test_save_api_status_codes(app_server: AppServer) -> None:
    async with logged_in(app_server) as owner, logged_in(app_server) as other:
        cid = await open_conversation(owner)
        await ingest(owner, cid, [event("u-1", "Hello API")])
        assert (await save(owner, {})).status_code == 400
        assert "session_id is required" in (await save(owner, {})).json()["detail"]
        assert (await save(owner, {"session_id": "not-a-uuid"})).status_code == 400
        assert (await save(owner, {"session_id": str(uuid.uuid4())})).status_code == 404
        not_theirs = await save(other, {"session_id": str(cid)})
        assert not_theirs.status_code == 404  # like a missing one: it leaks nothing
        assert (await queries.get_conversation(cid)).active  # type: ignore[union-attr]
        anonymous = httpx.AsyncClient(base_url=app_server.url)
        async with anonymous:
            response = await anonymous.post("/api/users/sessions/save", json={"session_id": str(cid)})
            assert response.status_code == 401
            assert response.json()["detail"] == "Authentication required"
        ok = await save(owner, {"session_id": str(cid)})
        assert ok.status_code == 200
        body = ok.json()
        assert body["id"] == str(cid)
        assert body["title"] == "Hello API"
        async with connection() as conn:
            stored = await conn.fetchval("SELECT count(*) FROM utterance WHERE session = $1", cid)
        assert body["message_count"] == stored >= 1  # the user's line, and the agent's greeting if it came
        assert body["ended_at"] is not None
        assert body["saved"] is True
        # A retried save is harmless and answers the same.
        again = await save(owner, {"session_id": str(cid)})
        assert again.status_code == 200
        assert again.json() == body


async def test_save_api_adds_only_what_the_server_lacks(app_server: AppServer) -> None:
    async with logged_in(app_server) as client:
        cid = await open_conversation(client)
        await ingest(client, cid, [event("srv-1", "yes")])
        messages = [
            {"id": "srv-1", "role": "user", "text": "yes"},  # the server has it: matched by id
            {"role": "user", "text": "yes"},  # said again: a new utterance, though the same text
            {"id": "c-9", "role": "agent", "text": "Noted."},  # new, by id
        ]
        response = await save(client, {"session_id": str(cid), "messages": messages})
        assert response.status_code == 200
        retry = await save(client, {"session_id": str(cid), "messages": messages})
        assert retry.json() == response.json()
        detail = (await client.get(f"/api/users/sessions/{cid}")).json()
        assert response.json()["message_count"] == len(detail["utterances"])
        # The offline agent's greeting may be there too; everything else is exactly this:
        theirs = [u for u in detail["utterances"] if not u["id"].startswith("agent-")]
        assert [(u["role"], u["text"]) for u in theirs] == [
            ("user", "yes"),
            ("user", "yes"),
            ("agent", "Noted."),
        ]


async def server_transcript(cid: uuid.UUID) -> list[tuple[str, str, datetime]]:
    async with connection() as conn:
        rows = await conn.fetch("SELECT role, text, created_at FROM utterance WHERE session = $1 ORDER BY seq", cid)
    return [(r["role"], r["text"], r["created_at"]) for r in rows]


def client_copy(transcript: list[tuple[str, str, datetime]], clock: timedelta) -> list[dict[str, object]]:
    """The design doc's client: each message with the browser's Date.now() at the time, from a clock off by `clock`."""
    return [
        {"role": role, "text": text, "timestamp": int((at + clock).timestamp() * 1000)} for role, text, at in transcript
    ]


CLOCKS = [timedelta(minutes=-5), timedelta(seconds=-30), timedelta(seconds=30), timedelta(minutes=5)]


@pytest.mark.parametrize("clock", CLOCKS, ids=["-5min", "-30s", "+30s", "+5min"])
async def test_a_client_copy_from_a_browser_whose_clock_is_off_adds_nothing_the_server_has(
    app_server: AppServer, clock: timedelta
) -> None:
    async with logged_in(app_server) as client:
        cid = await open_conversation(client)
        await greeted(cid)
        lines = [
            ("user", "Plan a trip to Lisbon"),
            ("agent", "Sure, when?"),
            ("user", "yes"),
            ("agent", "Ok."),
            ("user", "yes"),
        ]
        for n, (role, text) in enumerate(lines):
            await ingest(client, cid, [event(f"srv-{n}", text, role=role)])
        before = await server_transcript(cid)
        response = await save(client, {"session_id": str(cid), "messages": client_copy(before, clock)})
        assert response.status_code == 200
        assert response.json()["message_count"] == len(before)
        assert await server_transcript(cid) == before  # nothing doubled, nothing moved


@pytest.mark.parametrize("clock", CLOCKS, ids=["-5min", "-30s", "+30s", "+5min"])
async def test_what_only_the_client_has_goes_between_its_neighbours_with_times_from_the_server(
    app_server: AppServer, clock: timedelta
) -> None:
    async with logged_in(app_server) as client:
        cid = await open_conversation(client)
        await greeted(cid)
        lines = [
            ("user", "Plan a trip to Lisbon"),
            ("agent", "Sure, when?"),
            ("user", "yes"),
            ("agent", "Ok."),
            ("user", "yes"),
        ]
        for n, (role, text) in enumerate(lines):
            await ingest(client, cid, [event(f"srv-{n}", text, role=role)])
            await asyncio.sleep(0.05)  # distinct server times
        server = await server_transcript(cid)
        copy = client_copy(server, clock)
        # The client also has a line the server lost (after "Sure, when?") and one more "yes" at the end.
        at = next(i for i, m in enumerate(copy) if m["text"] == "Sure, when?") + 1
        copy.insert(at, {"role": "user", "text": "In May", "timestamp": copy[at - 1]["timestamp"]})
        copy.append({"role": "user", "text": "yes", "timestamp": int((datetime.now(UTC) + clock).timestamp() * 1000)})
        response = await save(client, {"session_id": str(cid), "messages": copy})
        assert response.status_code == 200
        retry = await save(client, {"session_id": str(cid), "messages": copy})
        assert retry.json() == response.json()  # a retried save adds nothing
        stored = await server_transcript(cid)
        assert [(role, text) for role, text, _ in stored] == [(m["role"], m["text"]) for m in copy]
        assert response.json()["message_count"] == len(stored) == len(server) + 2
        times = [at for _, _, at in stored]
        assert times == sorted(times)  # the order of the transcript is the order of its times
        may = next(i for i, (_, text, _) in enumerate(stored) if text == "In May")
        assert stored[may - 1][2] <= stored[may][2] <= stored[may + 1][2]
        assert abs(stored[-1][2] - datetime.now(UTC)) < timedelta(seconds=10)  # the server's clock, not the browser's


@pytest.mark.parametrize(
    ("messages", "status", "detail"),
    [
        ([{"role": "user", "text": "x"}] * 1001, 413, "At most 1,000"),
        ([{"role": "user", "text": "x" * 10_001}], 422, "longer than 10,000"),
        ([{"role": "bot", "text": "x"}], 422, "role"),
        ("nope", 422, "must be a list"),
        ([{"role": "user", "text": "x", "timestamp": "yesterday"}], 422, "timestamp"),
    ],
)
async def test_save_api_limits(app_server: AppServer, messages: object, status: int, detail: str) -> None:
    async with logged_in(app_server) as client:
        cid = await open_conversation(client)
        response = await save(client, {"session_id": str(cid), "messages": messages})
        assert response.status_code == status
        assert detail in response.json()["detail"]
        conversation = await queries.get_conversation(cid)
        assert conversation is not None
        assert conversation.active
        assert conversation.message_count == 0


async def test_list_and_detail_api(app_server: AppServer) -> None:
    async with logged_in(app_server) as client, logged_in(app_server) as other:
        saved = []
        for n in range(3):
            cid = await open_conversation(client)
            await ingest(client, cid, [event(f"u-{n}", f"Trip number {n}")])
            assert (await new_chat(client, cid)).status_code == 200
            saved.append(cid)
        first = (await client.get("/api/users/sessions?limit=2")).json()
        assert [i["id"] for i in first["items"]] == [str(saved[2]), str(saved[1])]
        second = (await client.get("/api/users/sessions", params={"limit": 2, "cursor": first["next_cursor"]})).json()
        assert [i["id"] for i in second["items"]] == [str(saved[0])]
        assert second["next_cursor"] is None
        assert (await client.get("/api/users/sessions?cursor=garbage")).status_code == 400
        detail = (await client.get(f"/api/users/sessions/{saved[0]}")).json()
        assert detail["title"] == "Trip number 0"
        assert [u["text"] for u in detail["utterances"] if u["role"] == "user"] == ["Trip number 0"]
        assert (await other.get(f"/api/users/sessions/{saved[0]}")).status_code == 404
        assert (await other.get("/api/users/sessions")).json()["items"] == []
