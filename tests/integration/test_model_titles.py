"""Titles from the model against the real server and an OpenAI-compatible fake: asked after the first exchange, off
the reply's path, shown live; a rename wins whichever comes first; the offline model keeps the first message; a
failing model changes nothing and its error quotes nothing said."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from httpx_sse import aconnect_sse

from chatapp.agents.titles import INSTRUCTIONS
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

TITLE_DELAY = 3.0  # the fake model takes this long to start a title: longer than a reply takes, even on a busy machine


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def model() -> AsyncIterator[FakeOpenAI]:
    async with fake_openai() as fake:
        yield fake


@pytest.fixture(scope="module")
def pair(db: str, model: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AppServer, AppServer]]:
    """Two app processes on one database (LISTEN/NOTIFY between them), both with the fake model."""
    root = Path(tmp_path_factory.mktemp("titles"))
    env = {
        "CHATAPP_CHANNELS": "postgres",
        "CHATAPP_LLM_BASE_URL": model.base_url,
        "CHATAPP_LLM_MODEL": "fake-model",
        "CHATAPP_LLM_API_KEY": "sk-test",
    }
    with app_pair(db, root, **env) as pair:
        yield pair


@pytest.fixture(scope="module")
def server(pair: tuple[AppServer, AppServer]) -> AppServer:
    return pair[0]


async def title_of(cid: uuid.UUID) -> tuple[str | None, str | None]:
    async with connection() as conn:
        row = await conn.fetchrow("SELECT title, title_source FROM chat_session WHERE id = $1", cid)
    assert row is not None
    return row["title"], row["title_source"]


async def agent_replies(cid: uuid.UUID) -> list[str]:
    async with connection() as conn:
        rows = await conn.fetch("SELECT text FROM utterance WHERE session = $1 AND role = 'agent' ORDER BY seq", cid)
    return [r["text"] for r in rows]


async def first_exchange(client: httpx.AsyncClient, server: AppServer, text: str) -> tuple[uuid.UUID, float]:
    """Sign up, wait for the greeting, type `text`; returns the conversation and how long its reply took."""
    await signup(client)
    cid = await open_conversation(client)
    await greeted(cid)
    started = time.monotonic()
    await type_text(client, server, cid, text)

    async def answered() -> bool:
        return len(await agent_replies(cid)) >= 2

    await wait_for(answered, 15.0)
    return cid, time.monotonic() - started


async def new_chat(client: httpx.AsyncClient, server: AppServer, cid: uuid.UUID) -> None:
    response = await client.post(
        f"{server.url}/conversations/new", data={"conversation_id": str(cid)}, headers=htmx(client)
    )
    assert response.status_code == 200, response.text


def title_requests(model: FakeOpenAI) -> int:
    return sum(1 for r in model.requests if r["messages"][0]["content"] == INSTRUCTIONS)


def script(model: FakeOpenAI, title: Reply) -> None:
    """The agent (greeting and replies: the system prompt comes first) always says the same; the next title
    request, whenever it comes, gets `title`."""
    model.requests.clear()
    model.script.clear()
    model.scripts_by_system[INSTRUCTIONS] = [title]
    model.scripts_by_system["You are"] = [Reply("Lisbon is lovely in spring.")] * 50


async def test_the_model_titles_the_conversation_after_the_first_exchange_without_delaying_the_reply(
    pair: tuple[AppServer, AppServer], model: FakeOpenAI
) -> None:
    server, other = pair
    script(model, Reply('Title: "Spring in Lisbon."\nIt is about a trip.', first_token_delay=TITLE_DELAY))
    async with browser() as client:
        client.base_url = httpx.URL(server.url)
        await signup(client)
        cid = await open_conversation(client)
        await greeted(cid)
        seen: list[str] = []

        async def watch() -> None:
            # A tab served by the other process: the title crosses processes through LISTEN/NOTIFY.
            async with aconnect_sse(client, "GET", f"{other.url}/conversations/{cid}/stream") as sse:
                async for event in sse.aiter_sse():
                    if event.event == "control" and 'id="conversation-title"' in event.data:
                        seen.append(event.data)
                        return

        watcher = asyncio.create_task(watch())
        started = time.monotonic()
        await type_text(client, server, cid, "Plan three days in Lisbon")

        async def answered() -> bool:
            return len(await agent_replies(cid)) >= 2

        await wait_for(answered, 15.0)
        took = time.monotonic() - started
        assert took < TITLE_DELAY, f"the reply waited for the title ({took:.2f} s)"
        assert await title_of(cid) == (None, "first_message")  # claimed; the model is still thinking

        async def titled() -> bool:
            return (await title_of(cid))[1] == "model"

        await wait_for(titled, 15.0)
        assert await title_of(cid) == ("Spring in Lisbon", "model")
        async with asyncio.timeout(5):
            await watcher
        assert "Spring in Lisbon" in seen[0]  # pushed to the open tab's header, live, from the other process
        [asked] = [model.messages(i) for i in range(len(model.requests)) if model.messages(i)[0][1] == INSTRUCTIONS]
        assert "Plan three days in Lisbon" in asked[1][1]
        assert "Lisbon is lovely in spring." in asked[1][1]
        assert title_requests(model) == 1  # one title request, not one per reply

        # Ending keeps the model's title (not the first message), and it is searchable.
        await new_chat(client, server, cid)
        assert await title_of(cid) == ("Spring in Lisbon", "model")
        found = await client.get("/history", params={"q": "Spring in Lisbon"})
        assert str(cid) in found.text


async def test_a_rename_before_the_model_answers_wins(server: AppServer, model: FakeOpenAI) -> None:
    script(model, Reply("Spring in Lisbon", first_token_delay=TITLE_DELAY))
    async with browser() as client:
        client.base_url = httpx.URL(server.url)
        cid, _ = await first_exchange(client, server, "Plan three days in Lisbon")
        await new_chat(client, server, cid)  # saved under its first message while the model thinks
        assert await title_of(cid) == ("Plan three days in Lisbon", "first_message")
        renamed = await client.post(f"/history/{cid}/rename", data={"title": "My Lisbon"}, headers=htmx(client))
        assert renamed.status_code == 200
        await asyncio.sleep(TITLE_DELAY + 1.0)
        assert title_requests(model) == 1  # the model did answer...
        assert await title_of(cid) == ("My Lisbon", "user")  # ...and its title was dropped


async def test_a_rename_after_the_model_title_wins(server: AppServer, model: FakeOpenAI) -> None:
    script(model, Reply("Weekend getaway"))
    async with browser() as client:
        client.base_url = httpx.URL(server.url)
        cid, _ = await first_exchange(client, server, "Plan three days in Lisbon")

        async def titled() -> bool:
            return (await title_of(cid))[1] == "model"

        await wait_for(titled, 10.0)
        await new_chat(client, server, cid)
        assert str(cid) in (await client.get("/history", params={"q": "getaway"})).text
        renamed = await client.post(f"/history/{cid}/rename", data={"title": "Our trip"}, headers=htmx(client))
        assert renamed.status_code == 200
        assert await title_of(cid) == ("Our trip", "user")
        found = await client.get("/history", params={"q": "getaway"})
        assert str(cid) not in found.text  # the search document follows the rename


async def test_a_failing_model_leaves_the_first_message_title_and_logs_nothing_said(
    server: AppServer, model: FakeOpenAI
) -> None:
    script(model, Reply(status=500))
    async with browser() as client:
        client.base_url = httpx.URL(server.url)
        cid, _ = await first_exchange(client, server, "Secret plans for Lisbon")
        await wait_for(lambda: asyncio.sleep(0, result=title_requests(model) == 1), 10.0)
        await asyncio.sleep(0.5)
        assert await title_of(cid) == (None, "first_message")
        await new_chat(client, server, cid)
        assert await title_of(cid) == ("Secret plans for Lisbon", "first_message")
    log = server.log_path.read_text()
    assert f"no model title for conversation {cid}" in log
    assert "Secret plans" not in log
    assert "Lisbon is lovely" not in log


async def test_empty_model_output_keeps_the_first_message_title(server: AppServer, model: FakeOpenAI) -> None:
    script(model, Reply(' \n "" \n'))
    async with browser() as client:
        client.base_url = httpx.URL(server.url)
        cid, _ = await first_exchange(client, server, "Plan three days in Lisbon")
        await wait_for(lambda: asyncio.sleep(0, result=title_requests(model) == 1), 10.0)
        await asyncio.sleep(0.5)
        await new_chat(client, server, cid)
        assert await title_of(cid) == ("Plan three days in Lisbon", "first_message")


async def test_the_offline_model_keeps_the_first_message_title(app_server: AppServer) -> None:
    async with browser() as client:
        client.base_url = httpx.URL(app_server.url)
        cid, _ = await first_exchange(client, app_server, "Plan three days in Porto")
        await asyncio.sleep(0.5)
        assert await title_of(cid) == (None, None)  # nothing claimed: no model to ask
        await new_chat(client, app_server, cid)
        assert await title_of(cid) == ("Plan three days in Porto", "first_message")
