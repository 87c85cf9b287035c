"""A database outage in the middle of the in-process agent's replies: its finals wait and are stored when
PostgreSQL is back (in order, once each), and the log says once that the database went and once that it
came back, with no traceback per second and no share token or search words in it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
import pytest_asyncio

from tests.fakes.openai_chat import FakeOpenAI, Reply, fake_openai
from tests.support import READY, AppServer, browser, open_conversation, signup, type_text
from tests.support_postgres import OwnPostgres, wait_healthy

OUTAGE_SECONDS = 5.0
SHARE_TOKEN = "tok3nThatMustNeverBeLogged"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def model() -> AsyncIterator[FakeOpenAI]:
    async with fake_openai() as fake:
        yield fake


@pytest.fixture(scope="module")
def server(
    own_postgres: OwnPostgres, model: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AppServer]:
    """One app process on a PostgreSQL the test stops; postgres channels, so its agent lease loop runs too."""
    app = AppServer.start(
        own_postgres.dsn,
        Path(tmp_path_factory.mktemp("outage-agent")),
        ready_timeout=READY,
        CHATAPP_CHANNELS="postgres",
        CHATAPP_LOG_LEVEL="info",
        CHATAPP_DB_CONNECT_TIMEOUT="1",
        CHATAPP_DB_STATEMENT_TIMEOUT="2",
        CHATAPP_LLM_BASE_URL=model.base_url,
        CHATAPP_LLM_MODEL="fake-model",
        CHATAPP_LLM_API_KEY="sk-test",
    )
    yield app
    app.stop()


async def agent_texts(own_postgres: OwnPostgres, cid: uuid.UUID) -> list[str]:
    conn = await asyncpg.connect(own_postgres.dsn)
    try:
        rows = await conn.fetch("SELECT text FROM utterance WHERE session = $1 AND role = 'agent' ORDER BY seq", cid)
    finally:
        await conn.close()
    return [r["text"] for r in rows]


def words(prefix: str, count: int) -> str:
    return " ".join(f"{prefix}{i}" for i in range(count))


async def test_agent_finals_made_during_an_outage_are_stored_once_in_order_when_the_database_is_back(
    own_postgres: OwnPostgres, server: AppServer, model: FakeOpenAI
) -> None:
    first, second, third = words("alpha", 30), words("beta", 10), words("gamma", 10)
    model.script[:] = [
        Reply("Hello! Where to?"),
        Reply(first, pieces=30, piece_delay=0.1),  # 3 s: the outage starts in the middle of it
        Reply(second, pieces=10, piece_delay=0.1),
        Reply(third, pieces=10, piece_delay=0.1),
    ]
    async with browser() as client:
        client.base_url = httpx.URL(server.url)
        await signup(client)
        cid = await open_conversation(client)
        for text in ("Lisbon?", "Porto?", "Faro?"):
            await type_text(client, server, cid, text)
        async with asyncio.timeout(15):
            while len(model.conversation_requests()) < 2:  # the first answer is streaming
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)

        own_postgres.stop()
        try:
            # The share page and a search during the outage: answered 503, and logged without the secrets.
            shared = await client.get(f"/s/{SHARE_TOKEN}")
            assert shared.status_code == 503
            await asyncio.sleep(OUTAGE_SECONDS)
            assert len(model.conversation_requests()) == 4  # every reply was generated while the database was down
        finally:
            own_postgres.start()
        assert (await wait_healthy(client, 20.0)).status_code == 200

        async def all_stored() -> bool:
            return len(await agent_texts(own_postgres, cid)) >= 4

        async with asyncio.timeout(15):
            while not await all_stored():
                await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # a duplicate would be stored as quickly
        assert await agent_texts(own_postgres, cid) == ["Hello! Where to?", first, second, third]

    log = server.log_path.read_text()
    assert "Traceback" not in log
    assert "not stored" not in log
    assert SHARE_TOKEN not in log
    agent_lines = [line for line in log.splitlines() if "agent output" in line]
    assert sum("database unavailable" in line for line in agent_lines) == 1, agent_lines
    assert sum("database is back" in line for line in agent_lines) == 1, agent_lines
    lease_lines = [line for line in log.splitlines() if "agent leases" in line]
    assert sum("database unavailable" in line for line in lease_lines) == 1, lease_lines
    assert sum("database is back" in line for line in lease_lines) == 1, lease_lines
