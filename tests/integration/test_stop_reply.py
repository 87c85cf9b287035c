"""The Stop button against real app processes: a slow model's reply is cut and stored as interrupted, also
when the agent runs on the other process (the `agent.interrupt` hub command), and bad requests change nothing."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from httpx_sse import aconnect_sse

from chatapp.core.database import connection
from tests.fakes.openai_chat import FakeOpenAI, Reply, fake_openai
from tests.support import (
    AppServer,
    app_pair,
    browser,
    greeted,
    htmx,
    open_conversation,
    signup,
    type_text,
    wait_for,
)

LONG = " ".join(f"word{i}" for i in range(300))


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def model() -> AsyncIterator[FakeOpenAI]:
    async with fake_openai() as fake:
        yield fake


@pytest.fixture(scope="module")
def pair(db: str, model: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AppServer, AppServer]]:
    """Two app processes on one database (postgres channels), both answering with the slow fake model."""
    root = Path(tmp_path_factory.mktemp("stop"))
    env = {
        "CHATAPP_CHANNELS": "postgres",
        "CHATAPP_LLM_BASE_URL": model.base_url,
        "CHATAPP_LLM_MODEL": "fake-model",
        "CHATAPP_LLM_API_KEY": "sk-test",
    }
    with app_pair(db, root, **env) as pair:
        yield pair


async def agent_rows(cid: uuid.UUID) -> list[tuple[str, bool]]:
    async with connection() as conn:
        found = await conn.fetch(
            "SELECT text, interrupted FROM utterance WHERE session = $1 AND role = 'agent' ORDER BY seq", cid
        )
    return [(r["text"], r["interrupted"]) for r in found]


async def reply_streaming(client: httpx.AsyncClient, server: AppServer, cid: uuid.UUID) -> None:
    """Returns once an interim of the long reply has reached the stream (the reply is under way)."""
    async with asyncio.timeout(15), aconnect_sse(client, "GET", f"{server.url}/conversations/{cid}/stream") as sse:
        async for event in sse.aiter_sse():
            if event.event == "message" and 'data-final="false"' in event.data and "word3" in event.data:
                return


async def interrupt_via(server_for_stop: int, pair: tuple[AppServer, AppServer], model: FakeOpenAI) -> None:
    a = pair[0]
    stopper = pair[server_for_stop]
    model.script[:] = [Reply("Hello! Where to?"), Reply(LONG, pieces=300, piece_delay=0.03)]
    async with browser() as client:
        client.base_url = httpx.URL(a.url)
        await signup(client)
        cid = await open_conversation(client)  # the agent starts on A
        await greeted(cid)
        watcher = asyncio.create_task(reply_streaming(client, a, cid))
        await asyncio.sleep(0)
        await type_text(client, a, cid, "Tell me everything about Lisbon")
        await watcher
        response = await client.post(f"{stopper.url}/conversations/{cid}/stop", headers=htmx(client))
        assert response.status_code == 204, response.text

        async def stored() -> bool:
            return len(await agent_rows(cid)) == 2

        await wait_for(stored, 10.0)
        greeting, (text, interrupted) = await agent_rows(cid)
        assert greeting == ("Hello! Where to?", False)
        assert interrupted
        assert text
        assert LONG.startswith(text)
        assert len(text) < len(LONG) / 2

        # The agent is still there: the next message gets a whole answer.
        model.script[:] = [Reply("Porto is close.")]
        await type_text(client, a, cid, "And Porto?")

        async def answered() -> bool:
            return len(await agent_rows(cid)) == 3

        await wait_for(answered, 10.0)
        assert (await agent_rows(cid))[2] == ("Porto is close.", False)


async def test_stop_cuts_the_reply_on_the_agents_process(pair: tuple[AppServer, AppServer], model: FakeOpenAI) -> None:
    await interrupt_via(0, pair, model)


async def test_stop_sent_to_another_process_reaches_the_agent(
    pair: tuple[AppServer, AppServer], model: FakeOpenAI
) -> None:
    await interrupt_via(1, pair, model)


async def test_stop_refuses_other_users_ended_conversations_and_wrong_bodies(
    pair: tuple[AppServer, AppServer], model: FakeOpenAI
) -> None:
    a = pair[0]
    model.script[:] = [Reply("Hello!"), Reply("Sure."), Reply("Hello again!")]
    async with browser() as owner, browser() as other:
        owner.base_url = other.base_url = httpx.URL(a.url)
        await signup(owner)
        await signup(other)
        cid = await open_conversation(owner)
        await greeted(cid)
        stop = f"/conversations/{cid}/stop"

        assert (await other.post(stop, headers=htmx(other))).status_code == 404
        assert (await owner.post(f"/conversations/{uuid.uuid4()}/stop", headers=htmx(owner))).status_code == 404
        json_body = await owner.post(stop, json={"x": 1}, headers=htmx(owner))
        assert json_body.status_code == 415
        assert (await owner.post(stop)).status_code == 403  # no CSRF token
        assert (await owner.post(stop, headers=htmx(owner))).status_code == 204  # nothing to stop: fine

        await type_text(owner, a, cid, "Plan Lisbon")  # spoken to, so New Chat saves (not deletes) it

        async def answered() -> bool:
            return len(await agent_rows(cid)) == 2

        await wait_for(answered, 10.0)
        ended = await owner.post("/conversations/new", data={"conversation_id": str(cid)}, headers=htmx(owner))
        assert ended.status_code == 200
        gone = await owner.post(stop, headers=htmx(owner))
        assert gone.status_code == 409
        assert "HX-Refresh" in gone.headers
        assert await agent_rows(cid) == [("Hello!", False), ("Sure.", False)]
