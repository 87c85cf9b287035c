"""A scripted LLM for a real AgentSession (text mode) and an event sink that records what the agent emits."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from livekit.agents import llm
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, APIConnectOptions, NotGivenOr

from chatapp.agents.inprocess import InProcessRuntime
from chatapp.conversations.agent_runtime import ConversationInfo
from chatapp.conversations.events import AgentStateEvent, TranscriptEvent


class ScriptedLLM(llm.LLM[Any]):
    """Replies with the next scripted string in several chunks; a scripted exception is raised instead."""

    def __init__(self, script: Sequence[str | Exception], *, pieces: int = 4, delay: float = 0.0) -> None:
        super().__init__()
        self.script = list(script)
        self.pieces = pieces
        self.delay = delay
        self.contexts: list[list[tuple[str, str]]] = []

    def chat(
        self,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool] | None = None,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        parallel_tool_calls: NotGivenOr[bool] = NOT_GIVEN,
        tool_choice: NotGivenOr[llm.ToolChoice] = NOT_GIVEN,
        extra_kwargs: NotGivenOr[dict[str, Any]] = NOT_GIVEN,
    ) -> ScriptedStream:
        self.contexts.append([(m.role, m.text_content or "") for m in chat_ctx.messages()])
        step = self.script.pop(0) if self.script else "Okay."
        return ScriptedStream(self, step, chat_ctx=chat_ctx, tools=tools or [], conn_options=conn_options)


class ScriptedStream(llm.LLMStream):
    def __init__(self, owner: ScriptedLLM, step: str | Exception, **kwargs: Any) -> None:
        super().__init__(owner, **kwargs)
        self._owner = owner
        self._step = step

    async def _run(self) -> None:
        if isinstance(self._step, Exception):
            raise self._step
        size = max(1, -(-len(self._step) // self._owner.pieces))
        for start in range(0, len(self._step), size):
            delta = llm.ChoiceDelta(role="assistant", content=self._step[start : start + size])
            self._event_ch.send_nowait(llm.ChatChunk(id="scripted", delta=delta))
            await asyncio.sleep(self._owner.delay)


class RecordingSink:
    def __init__(self) -> None:
        self.events: list[TranscriptEvent | AgentStateEvent] = []

    async def transcript(self, event: TranscriptEvent) -> None:
        self.events.append(event)

    async def agent_state(self, event: AgentStateEvent) -> None:
        self.events.append(event)

    @property
    def transcripts(self) -> list[TranscriptEvent]:
        return [e for e in self.events if isinstance(e, TranscriptEvent)]

    @property
    def finals(self) -> list[TranscriptEvent]:
        return [e for e in self.transcripts if e.final]

    @property
    def states(self) -> list[str]:
        return [e.state for e in self.events if isinstance(e, AgentStateEvent)]

    async def wait_for(self, condition: Callable[[], bool], timeout: float = 3.0) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0.005)


Runtime = Callable[..., Awaitable[tuple[InProcessRuntime, RecordingSink, ScriptedLLM, ConversationInfo]]]
