"""The app with LiveKit settings, against the fake LiveKit server: rooms, dispatches, tokens, the webhook,
and LiveKit outages that must never stop a conversation from being saved."""

from __future__ import annotations

import asyncio
import html
import re
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from livekit import api

from chatapp.conversations import queries
from chatapp.conversations.agent_access import ingest_token, room_name_for
from chatapp.core.database import connection
from chatapp.livekit.metadata import DispatchMetadata
from tests.fakes.livekit import API_KEY, API_SECRET, APP_TIMEOUT, FakeLiveKit, room_finished, signed_webhook
from tests.support import SECRET_KEY, AppServer, client_ip, csrf, open_conversation, signup

TIMEOUT = APP_TIMEOUT  # the voice_app server's LiveKit timeout
PANEL_TOKEN = re.compile(r'data-livekit-token="([^"]+)"')
PANEL_URL = re.compile(r'data-livekit-url="([^"]+)"')


@pytest_asyncio.fixture(loop_scope="session")
async def client(voice_app: AppServer, fake: FakeLiveKit) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=voice_app.url, headers={"X-Forwarded-For": client_ip()}, timeout=10.0
    ) as http:
        await signup(http)
        yield http


def room(conversation_id: uuid.UUID) -> str:
    return room_name_for(conversation_id)


async def new_chat(client: httpx.AsyncClient, conversation_id: uuid.UUID) -> httpx.Response:
    return await client.post(
        "/conversations/new",
        data={"conversation_id": str(conversation_id)},
        headers={"HX-Request": "true", **csrf(client)},
    )


def panel_id(response: httpx.Response) -> uuid.UUID:
    match = re.search(r'id="chat-panel"[^>]*data-conversation-id="([0-9a-f-]{36})"', response.text)
    assert match, response.text[:500]
    return uuid.UUID(match.group(1))


async def say(client: httpx.AsyncClient, conversation_id: uuid.UUID, text: str) -> httpx.Response:
    return await client.post(
        f"/conversations/{conversation_id}/messages",
        data={"text": text, "item_id": uuid.uuid4().hex},
        headers={"HX-Request": "true", **csrf(client)},
    )


async def conversation(conversation_id: uuid.UUID) -> queries.Conversation | None:
    return await queries.get_conversation(conversation_id)


async def test_opening_a_conversation_creates_its_room_and_dispatches_the_agent(
    client: httpx.AsyncClient, fake: FakeLiveKit, voice_app: AppServer
) -> None:
    page = await client.get("/")
    cid = await open_conversation(client)
    name = room(cid)

    [create] = fake.calls_to("CreateRoom", name)
    assert create.request.empty_timeout > 0
    assert create.request.departure_timeout > 0
    [dispatch] = fake.calls_to("CreateDispatch", name)
    assert dispatch.request.agent_name == "test-agent"
    meta = DispatchMetadata.from_json(dispatch.request.metadata)
    assert meta.conversation_id == cid
    assert meta.ingest_url == f"{voice_app.url}/api/conversations/{cid}/events"
    assert meta.ingest_token == ingest_token(SECRET_KEY, cid)
    assert not [r for r in fake.rejected if name in str(r)]

    # The browser gets a token for this room only, as this user.
    assert 'data-mode="voice"' in page.text
    match = PANEL_TOKEN.search(page.text)
    assert match
    claims = api.TokenVerifier(API_KEY, API_SECRET).verify(match.group(1))
    assert claims.video is not None
    assert claims.video.room == name
    assert claims.video.room_join
    owner = await conversation(cid)
    assert owner is not None
    assert claims.identity == str(owner.owner)
    url = PANEL_URL.search(page.text)
    assert url
    assert url.group(1) == fake.url.replace("http://", "ws://")
    assert "/static/vendor/livekit-client/livekit-client.umd.js" in page.text
    assert 'id="voice-button"' in page.text

    # The worker can report with what the dispatch carried.
    async with httpx.AsyncClient() as worker:
        event = {"item_id": "w-1", "role": "user", "text": "probe via metadata", "final": True}
        response = await worker.post(
            meta.ingest_url, json={"events": [event]}, headers={"Authorization": f"Bearer {meta.ingest_token}"}
        )
    assert response.json() == {"stored": 1, "ignored": 0}

    # Reloading the page neither creates a second room nor dispatches a second agent.
    await client.get("/")
    assert len(fake.calls_to("CreateDispatch", name)) == 1


async def test_new_chat_deletes_the_old_room_and_opens_the_next(client: httpx.AsyncClient, fake: FakeLiveKit) -> None:
    old = await open_conversation(client)
    assert (await say(client, old, "Plan a trip to Kyoto")).status_code == 204
    response = await new_chat(client, old)
    assert response.status_code == 200
    assert 'Saved · <a href="/history/' in response.text
    new = panel_id(response)
    assert new != old

    fake.wait_for(lambda: bool(fake.calls_to("DeleteRoom", room(old))))
    assert room(old) not in fake.rooms
    assert len(fake.calls_to("CreateRoom", room(new))) == 1
    assert len(fake.calls_to("CreateDispatch", room(new))) == 1
    # The fresh panel carries the new room's token.
    token = PANEL_TOKEN.search(response.text)
    assert token
    claims = api.TokenVerifier(API_KEY, API_SECRET).verify(html.unescape(token.group(1)))
    assert claims.video is not None
    assert claims.video.room == room(new)
    saved = await conversation(old)
    assert saved is not None
    assert saved.ended_at is not None


async def test_new_chat_when_the_room_is_already_gone(client: httpx.AsyncClient, fake: FakeLiveKit) -> None:
    old = await open_conversation(client)
    await say(client, old, "Somewhere warm")
    fake.forget_room(room(old))  # LiveKit already closed it (its empty timeout)
    response = await new_chat(client, old)
    assert response.status_code == 200
    fake.wait_for(lambda: bool(fake.calls_to("DeleteRoom", room(old))))
    assert panel_id(response) != old
    saved = await conversation(old)
    assert saved is not None
    assert saved.ended_at is not None


@pytest.mark.parametrize("failure", ["5xx", "timeout"])
async def test_a_livekit_outage_never_blocks_saving(client: httpx.AsyncClient, fake: FakeLiveKit, failure: str) -> None:
    old = await open_conversation(client)
    await say(client, old, "Save me whatever LiveKit does")
    if failure == "5xx":
        fake.fail("DeleteRoom", "internal")
        fake.fail("CreateRoom", "unavailable")
    else:
        fake.delay("DeleteRoom", TIMEOUT * 3)
        fake.delay("CreateRoom", TIMEOUT * 3)

    began = time.monotonic()
    response = await new_chat(client, old)
    elapsed = time.monotonic() - began

    assert response.status_code == 200
    assert elapsed < TIMEOUT + 1.5  # bounded by the LiveKit timeout, whatever LiveKit does
    assert 'Saved · <a href="/history/' in response.text
    saved = await conversation(old)
    assert saved is not None
    assert saved.ended_at is not None
    new = panel_id(response)
    # The panel says clearly what is wrong, and offers Retry; there is no token to join with.
    assert 'data-state="unavailable"' in response.text
    assert "LiveKit could not be reached" in response.text
    assert "Voice unavailable. You can still type." in response.text
    assert 'data-mode="text"' in response.text
    assert "data-livekit-token" not in response.text

    # Typing still works: the text is stored (the app's own route, as the page falls back to).
    assert (await say(client, new, "Typed while LiveKit is down")).status_code == 204
    async with connection() as conn:
        text = await conn.fetchval("SELECT text FROM utterance WHERE session = $1", new)
    assert text == "Typed while LiveKit is down"

    # LiveKit is back: Retry opens the room and dispatches the agent.
    retry = await client.post(f"/conversations/{new}/agent", headers={"HX-Request": "true", **csrf(client)})
    assert retry.status_code == 204
    assert len(fake.calls_to("CreateDispatch", room(new))) == 1
    page = await client.get("/")
    assert PANEL_TOKEN.search(page.text)


async def test_a_fresh_token_for_the_active_conversation(client: httpx.AsyncClient, fake: FakeLiveKit) -> None:
    cid = await open_conversation(client)
    response = await client.post("/livekit/token", json={"conversation_id": str(cid)}, headers=csrf(client))
    assert response.status_code == 200
    body = response.json()
    assert body["url"] == fake.url.replace("http://", "ws://")
    claims = api.TokenVerifier(API_KEY, API_SECRET).verify(body["token"])
    assert claims.video is not None
    assert claims.video.room == room(cid)
    assert (await client.post("/livekit/token", json={"conversation_id": str(cid)})).status_code == 403  # CSRF
    other = await client.post("/livekit/token", json={"conversation_id": str(uuid.uuid4())}, headers=csrf(client))
    assert other.status_code == 404


async def post_webhook(voice_app: AppServer, body: str, auth: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=voice_app.url) as livekit:  # no cookies, no CSRF token
        headers = {"Content-Type": "application/webhook+json"}
        if auth:
            headers["Authorization"] = auth
        return await livekit.post("/livekit/webhook", content=body, headers=headers)


async def test_room_finished_ends_the_conversation_like_the_idle_reaper(
    client: httpx.AsyncClient, voice_app: AppServer
) -> None:
    spoken = await open_conversation(client)
    await say(client, spoken, "Plan a trip to Oslo")
    response = await post_webhook(voice_app, *signed_webhook(room_finished(room(spoken))))
    assert response.status_code == 200
    assert response.json() == {"ok": True, "ended": True}
    saved = await conversation(spoken)
    assert saved is not None
    assert saved.ended_at is not None
    assert saved.end_reason == "room_finished"
    assert saved.title == "Plan a trip to Oslo"

    # A conversation in which the user never spoke is deleted, as the reaper would.
    silent = await open_conversation(client)
    assert silent != spoken
    response = await post_webhook(voice_app, *signed_webhook(room_finished(room(silent))))
    assert response.json()["ended"] is True
    assert await conversation(silent) is None

    # Repeats and rooms that are not ours change nothing.
    again = await post_webhook(voice_app, *signed_webhook(room_finished(room(spoken))))
    assert again.json() == {"ok": True, "ended": False}
    other = await post_webhook(voice_app, *signed_webhook(room_finished("someone-elses-room")))
    assert other.json() == {"ok": True, "ended": False}


@pytest.mark.parametrize("case", ["tampered body", "wrong key", "expired", "missing"])
async def test_a_webhook_with_a_bad_signature_is_refused_and_changes_nothing(
    client: httpx.AsyncClient, voice_app: AppServer, case: str
) -> None:
    from datetime import timedelta

    cid = await open_conversation(client)
    await say(client, cid, "Keep me")
    body, auth = signed_webhook(room_finished(room(cid)))
    if case == "tampered body":
        body, _ = signed_webhook(room_finished(room(cid)))
        body = body.replace('"room_finished"', '"room_finished" ')
    elif case == "wrong key":
        body, auth = signed_webhook(room_finished(room(cid)), api_secret="a-different-secret-long-enough-0123456789")
    elif case == "expired":
        body, auth = signed_webhook(room_finished(room(cid)), ttl=timedelta(minutes=-5))
    else:
        auth = ""
    response = await post_webhook(voice_app, body, auth)
    assert response.status_code == 401
    await asyncio.sleep(0.1)
    current = await conversation(cid)
    assert current is not None
    assert current.active
