"""Continue: the saved transcript reaches the model as context, also after the agent is restarted."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import pytest_asyncio

from chatapp.agents.inprocess import InProcessRuntime
from chatapp.conversations import queries
from chatapp.conversations.pipeline import TranscriptPipeline
from chatapp.conversations.service import ConversationService
from chatapp.core.faults import Faults
from chatapp.core.settings import Settings
from tests.factories import make_saved, make_user
from tests.fakes.llm import ScriptedLLM
from tests.support import SECRET_KEY

OLD = [("user", "Plan five days in Kyoto"), ("agent", "Kyoto in autumn is beautiful. Temples or food?")]


@pytest_asyncio.fixture(loop_scope="session")
async def recorded(pipeline: TranscriptPipeline) -> AsyncIterator[tuple[ConversationService, ScriptedLLM]]:
    """The real service whose agent runs on a recording model, so tests see exactly what it is sent."""
    settings = Settings.from_env({"CHATAPP_SECRET_KEY": SECRET_KEY, "CHATAPP_DATA_DIR": "/nonexistent"})
    model = ScriptedLLM(["Temples it is.", "Fushimi Inari at dawn."])
    runtime = InProcessRuntime(sink=pipeline, llm_factory=lambda: model, greet=True)
    yield ConversationService(settings, pipeline, runtime, pipeline.hub, Faults()), model
    await runtime.aclose()


async def test_continued_context_is_old_transcript_then_new_turns_even_after_a_restart(
    recorded: tuple[ConversationService, ScriptedLLM],
) -> None:
    service, model = recorded
    user = await make_user()
    old_id = await make_saved(user, "Kyoto", datetime(2026, 5, 1, tzinfo=UTC), lines=OLD)  # type: ignore[arg-type]
    result = await service.new_chat(user.id, user.display_name, None, continue_from=old_id)
    new = result.outcome.current
    assert new is not None
    assert new.continued_from == old_id

    await service.send_text(user.id, new.id, "Temples, please", "u-1")
    await _wait(lambda: len(model.contexts) == 1)
    assert model.contexts[0][1:] == [
        ("user", "Plan five days in Kyoto"),
        ("assistant", "Kyoto in autumn is beautiful. Temples or food?"),
        ("user", "Temples, please"),
    ]  # no greeting: the agent picks up where the old conversation left off

    await _wait_stored(new.id, 2)
    await service.agents.runtime.stop(new.id)  # e.g. the app restarted, or the agent crashed
    assert await service.ensure_agent(new, user.display_name) is not None

    await service.send_text(user.id, new.id, "Where at dawn?", "u-2")
    await _wait(lambda: len(model.contexts) == 2)
    assert model.contexts[1][1:] == [
        ("user", "Plan five days in Kyoto"),
        ("assistant", "Kyoto in autumn is beautiful. Temples or food?"),
        ("user", "Temples, please"),
        ("assistant", "Temples it is."),
        ("user", "Where at dawn?"),
    ]


async def _wait(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def _wait_stored(conversation_id: uuid.UUID, count: int) -> None:
    async with asyncio.timeout(3.0):
        while len(await queries.list_utterances(conversation_id)) < count:
            await asyncio.sleep(0.01)
