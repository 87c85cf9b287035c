"""An in-process agent still talking into a conversation that New Chat deleted is expected: one info line."""

from __future__ import annotations

import asyncio
import logging

import pytest

from chatapp.agents.inprocess import InProcessRuntime
from chatapp.agents.offline import OfflineResponder
from chatapp.conversations.agent_runtime import ConversationInfo
from chatapp.conversations.events import AgentStateEvent, TranscriptEvent
from chatapp.conversations.pipeline import TranscriptPipeline
from chatapp.core.database import connection
from tests.factories import make_conversation


class CountingSink:
    """The real pipeline, noting when the agent has finished a number of turns (it goes idle after each)."""

    def __init__(self, pipeline: TranscriptPipeline, turns: int) -> None:
        self.pipeline = pipeline
        self.turns = turns
        self.done = asyncio.Event()

    async def transcript(self, event: TranscriptEvent) -> None:
        await self.pipeline.transcript(event)

    async def agent_state(self, event: AgentStateEvent) -> None:
        await self.pipeline.agent_state(event)
        if event.state == "idle":
            self.turns -= 1
            if self.turns <= 0:
                self.done.set()


async def test_output_for_a_deleted_conversation_is_logged_once_at_info_without_traceback(
    pipeline: TranscriptPipeline, caplog: pytest.LogCaptureFixture
) -> None:
    conversation = await make_conversation()
    async with connection() as conn:  # New Chat deleted it (the user never spoke) while the agent ran on
        await conn.execute("DELETE FROM chat_session WHERE id = $1", conversation.id)
    sink = CountingSink(pipeline, turns=3)  # the greeting and two replies
    runtime = InProcessRuntime(sink=sink, llm_factory=lambda: OfflineResponder(word_delay=0), greet=True)
    info = ConversationInfo(conversation.id, conversation.room_name, "You are a test agent.", "Ada")

    with caplog.at_level(logging.INFO, logger="chatapp.agents.inprocess"):
        await runtime.start(info)
        await runtime.send_text(conversation.id, "Where to in June?")
        await runtime.send_text(conversation.id, "And in July?")
        await asyncio.wait_for(sink.done.wait(), 10)
        await runtime.stop(conversation.id)

    records = [r for r in caplog.records if r.name == "chatapp.agents.inprocess"]
    gone = [r for r in records if "is gone" in r.getMessage()]
    assert len(gone) == 1
    assert gone[0].levelno == logging.INFO
    assert str(conversation.id) in gone[0].getMessage()
    assert not [r for r in records if r.levelno >= logging.WARNING or r.exc_info]
    async with connection() as conn:
        assert await conn.fetchval("SELECT count(*) FROM utterance WHERE session = $1", conversation.id) == 0
