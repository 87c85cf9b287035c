"""The worker's real `entrypoint` on a job with the app's dispatch metadata (no room): it greets through the
OpenAI-compatible model on the wire, answers, and its forwarder stores everything in the running app."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from livekit.agents import AgentSession
from livekit.agents.types import NOT_GIVEN

from chatapp.conversations.agent_access import ingest_token
from chatapp.core.settings import get_settings
from chatapp.livekit import worker
from chatapp.livekit.metadata import DispatchMetadata
from tests.factories import make_conversation
from tests.fakes.openai_chat import Reply, fake_openai
from tests.support import SECRET_KEY, AppServer, utterance_texts

PROMPT = "You plan trips."


class FakeJobContext:
    """What `entrypoint` uses of a LiveKit JobContext: the job's metadata and room name, the process's
    userdata, connect(), shutdown() and shutdown callbacks; no room, so the session runs in text only."""

    def __init__(self, metadata: str, room_name: str) -> None:
        self.job = _Job(metadata, room_name)
        self.proc = _Process()
        self.room = NOT_GIVEN
        self.connected = False
        self.shutdown_reasons: list[str] = []
        self.callbacks: list[Callable[[str], Awaitable[None]]] = []

    async def connect(self) -> None:
        self.connected = True

    def shutdown(self, reason: str = "") -> None:
        self.shutdown_reasons.append(reason)

    def add_shutdown_callback(self, callback: Callable[[str], Awaitable[None]]) -> None:
        self.callbacks.append(callback)

    async def run_shutdown(self, reason: str) -> None:
        """What LiveKit does when the room is deleted: run every shutdown callback."""
        for callback in self.callbacks:
            await callback(reason)


class _Job:
    def __init__(self, metadata: str, room_name: str) -> None:
        self.metadata = metadata
        self.room = _Room(room_name)


class _Room:
    def __init__(self, name: str) -> None:
        self.name = name
        self.sid = ""  # no server gave this room an id: the job cannot be told its room was made again


class _Process:
    def __init__(self) -> None:
        self.userdata: dict[str, Any] = {}


@pytest.fixture
def sessions(monkeypatch: pytest.MonkeyPatch) -> list[AgentSession[None]]:
    """The sessions `entrypoint` builds (the real ones, only recorded so the test can type into them)."""
    built: list[AgentSession[None]] = []
    real = worker.build_session

    def recording(*args: Any, **kwargs: Any) -> AgentSession[None]:
        built.append(real(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(worker, "build_session", recording)
    return built


async def wait_rows(conversation_id: uuid.UUID, count: int) -> list[tuple[str, str, str]]:
    async with asyncio.timeout(10):
        while len(found := await utterance_texts(conversation_id)) < count:
            await asyncio.sleep(0.02)
    return found


async def test_entrypoint_greets_answers_and_forwards_into_the_app(
    app_server: AppServer, monkeypatch: pytest.MonkeyPatch, sessions: list[AgentSession[None]]
) -> None:
    conversation = await make_conversation()
    cid = conversation.id
    metadata = DispatchMetadata(
        conversation_id=cid,
        ingest_url=f"{app_server.url}/api/conversations/{cid}/events",
        ingest_token=ingest_token(SECRET_KEY, cid),
        system_prompt=PROMPT,
        user_identity=str(conversation.owner),
        user_name="Ada",
    ).to_json()
    async with fake_openai() as model:
        model.script += [Reply("Hi Ada! Where would you like to go?"), Reply("Lisbon is lovely in May.")]
        monkeypatch.setenv("CHATAPP_SECRET_KEY", SECRET_KEY)
        monkeypatch.setenv("CHATAPP_LLM_BASE_URL", model.base_url)
        get_settings.cache_clear()
        ctx = FakeJobContext(metadata, conversation.room_name)
        try:
            await worker.entrypoint(ctx)  # type: ignore[arg-type]
            assert ctx.connected
            assert ctx.shutdown_reasons == []
            [session] = sessions

            greeting = await wait_rows(cid, 1)
            assert [(role, text) for _, role, text in greeting] == [("agent", "Hi Ada! Where would you like to go?")]
            await session.run(user_input="Plan a trip to Lisbon")
            await wait_rows(cid, 3)
        finally:
            await ctx.run_shutdown("room deleted")
            get_settings.cache_clear()

    stored = await utterance_texts(cid)
    assert [(role, text) for _, role, text in stored] == [
        ("agent", "Hi Ada! Where would you like to go?"),
        ("user", "Plan a trip to Lisbon"),
        ("agent", "Lisbon is lovely in May."),
    ]  # each exactly once, also after the shutdown's reconciliation
    [(role, instructions)] = model.messages(0)
    assert role == "system"
    assert instructions.startswith(PROMPT)
    assert "The person's name is Ada." in instructions
    assert model.messages(1)[1:] == [
        ("assistant", "Hi Ada! Where would you like to go?"),
        ("user", "Plan a trip to Lisbon"),
    ]
