"""Unit fixtures: in-process agent runtimes on a real text-only AgentSession with a scripted LLM."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence

import pytest

from chatapp.agents.inprocess import InProcessRuntime
from chatapp.conversations.agent_runtime import ConversationInfo, StartInfo
from tests.fakes.llm import RecordingSink, Runtime, ScriptedLLM


@pytest.fixture
async def started() -> AsyncIterator[Runtime]:
    """Start a runtime for one new conversation; every runtime is closed after the test."""
    runtimes: list[InProcessRuntime] = []

    async def start(
        script: Sequence[str | Exception] = (),
        *,
        greet: bool = False,
        history: tuple[tuple[str, str], ...] = (),
        delay: float = 0.0,
    ) -> tuple[InProcessRuntime, RecordingSink, ScriptedLLM, ConversationInfo]:
        sink, model = RecordingSink(), ScriptedLLM(script, delay=delay)
        runtime = InProcessRuntime(sink, lambda: model, greet=greet)
        runtimes.append(runtime)
        info = ConversationInfo(id=uuid.uuid4(), room_name="room", system_prompt="You plan trips.", history=history)
        assert await runtime.start(info) == StartInfo(mode="text")
        return runtime, sink, model, info

    yield start
    for runtime in runtimes:
        await runtime.aclose()
