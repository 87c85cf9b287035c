"""The agent worker's forwarding, driven by a real AgentSession (text mode, scripted LLM), into a real app."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import httpx
import pytest
from livekit.agents import AgentSession

from chatapp.agents.product import TravelAgent, greeting_instructions
from chatapp.conversations.agent_access import ingest_token
from chatapp.livekit.forwarder import TranscriptForwarder
from tests.factories import make_conversation
from tests.fakes.llm import ScriptedLLM
from tests.support import SECRET_KEY, AppServer, free_port, utterance_texts

GREETING = "Hi! Where would you like to go?"
TURNS = [
    ("Plan a trip to Lisbon", "Lisbon is lovely in May."),
    ("Three days", "Three days is perfect for Lisbon."),
    ("We love food", "Try the pastéis de nata in Belém."),
]


def expected_texts() -> list[tuple[str, str]]:
    said = [("agent", GREETING)]
    for user, agent in TURNS:
        said += [("user", user), ("agent", agent)]
    return said


class Conversation:
    """A conversation in the app's database with an agent session forwarding to the app at `base_url`."""

    def __init__(self, conversation_id: uuid.UUID, base_url: str, client: httpx.AsyncClient | None = None) -> None:
        self.id = conversation_id
        self.forwarder = TranscriptForwarder(
            f"{base_url}/api/conversations/{conversation_id}/events",
            ingest_token(SECRET_KEY, conversation_id),
            conversation_id=conversation_id,
            client=client,
            initial_backoff=0.05,
            max_backoff=0.3,
            request_timeout=2.0,
        )
        model = ScriptedLLM([GREETING, *(agent for _, agent in TURNS)])
        self.session: AgentSession[None] = AgentSession(llm=model)
        self.session.output.transcription = self.forwarder.text_output()
        self.forwarder.attach(self.session)

    async def start(self) -> None:
        self.forwarder.start()
        await self.session.start(TravelAgent(instructions="You plan trips."))
        await self.session.generate_reply(instructions=greeting_instructions("Ada"))

    async def talk(self, turns: list[tuple[str, str]]) -> None:
        for user, _ in turns:
            await self.session.run(user_input=user)

    async def close(self, timeout: float = 20.0) -> bool:
        history = list(self.session.history.items)
        await self.session.aclose()
        return await self.forwarder.aclose(history=history, timeout=timeout)


@pytest.fixture
async def conversation_id(db: str) -> uuid.UUID:
    return (await make_conversation()).id


async def test_every_utterance_arrives_once_and_in_order(app_server: AppServer, conversation_id: uuid.UUID) -> None:
    chat = Conversation(conversation_id, app_server.url)
    await chat.start()
    await chat.talk(TURNS)
    assert await chat.close()

    stored = await utterance_texts(conversation_id)
    assert [(role, text) for _, role, text in stored] == expected_texts()
    assert len({item_id for item_id, _, _ in stored}) == len(stored)
    assert chat.forwarder.dropped == 0


async def test_nothing_is_lost_while_the_app_is_down(db: str, tmp_path: Path, conversation_id: uuid.UUID) -> None:
    port = free_port()
    server = AppServer.start(db, tmp_path / "app", port=port)
    chat = Conversation(conversation_id, server.url)
    try:
        await chat.start()
        await chat.talk(TURNS[:1])
        assert await chat.forwarder.flush(10)
        server.stop()  # the app goes away mid-conversation ...

        await chat.talk(TURNS[1:])
        attempts = chat.forwarder.attempts
        await asyncio.sleep(0.7)
        assert chat.forwarder.attempts > attempts  # ... the forwarder keeps retrying with backoff
        assert chat.forwarder.pending + 1 >= 4  # (the batch in flight is not in the queue)
        assert len(await utterance_texts(conversation_id)) == 3

        server = AppServer.start(db, tmp_path / "app", port=port)  # ... and comes back on the same address
        assert await chat.forwarder.flush(20)
        assert await chat.close()
    finally:
        server.stop()

    stored = await utterance_texts(conversation_id)
    assert [(role, text) for _, role, text in stored] == expected_texts()
    assert chat.forwarder.dropped == 0


class LosesAcknowledgements(httpx.AsyncBaseTransport):
    """Delivers every request to the app, but the first `lose` responses never come back (a timeout, as
    when the connection drops after the app committed): the forwarder must retry what the app already has."""

    def __init__(self, lose: int) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.lose = lose
        self.delivered: list[bytes] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        await response.aread()
        self.delivered.append(request.content)
        if self.lose > 0 and response.status_code == 200:
            self.lose -= 1
            raise httpx.ReadTimeout("the acknowledgement was lost", request=request)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_duplicate_deliveries_from_retries_store_each_utterance_once(
    app_server: AppServer, conversation_id: uuid.UUID
) -> None:
    transport = LosesAcknowledgements(lose=3)
    async with httpx.AsyncClient(transport=transport) as client:
        chat = Conversation(conversation_id, app_server.url, client=client)
        await chat.start()
        await chat.talk(TURNS)
        assert await chat.close()

    finals = [b for b in transport.delivered if b'"final":true' in b]
    assert len(transport.delivered) > len(set(transport.delivered))  # the app really saw repeats
    assert finals
    stored = await utterance_texts(conversation_id)
    assert [(role, text) for _, role, text in stored] == expected_texts()


async def test_a_deleted_conversation_is_dropped_not_retried(app_server: AppServer, db: str) -> None:
    gone = uuid.uuid4()
    chat = Conversation(gone, app_server.url)
    await chat.start()
    began = time.monotonic()
    assert await chat.close(timeout=5)
    assert time.monotonic() - began < 2
    assert chat.forwarder.dropped >= 1  # the greeting's final got 404: dropped with a warning, not retried
    assert await utterance_texts(gone) == []
