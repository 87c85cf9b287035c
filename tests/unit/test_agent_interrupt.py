"""The Stop button's runtime half: `interrupt()` cuts the current reply and the agent keeps serving."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from chatapp.agents.inprocess import InProcessRuntime
from chatapp.conversations.agent_runtime import ConversationInfo
from tests.fakes.llm import RecordingSink, Runtime, ScriptedLLM, ScriptedStream

LONG = " ".join(f"word{i}" for i in range(200))


async def test_interrupt_cuts_the_reply_and_keeps_what_was_shown(started: Runtime) -> None:
    runtime, sink, model, info = await started([LONG, "Short answer."], delay=0.01)
    model.pieces = 100

    await runtime.send_text(info.id, "Tell me everything")
    await sink.wait_for(lambda: len(sink.transcripts) >= 3)
    assert await runtime.interrupt(info.id)
    await sink.wait_for(lambda: len(sink.finals) == 1 and sink.states[-1] == "idle")

    [final] = sink.finals
    interims = [e for e in sink.transcripts if not e.final]
    assert final.interrupted
    assert final.item_id == interims[-1].item_id
    assert final.text == interims[-1].text  # exactly what the person saw, nothing generated after Stop
    assert len(final.text) < len(LONG)
    assert runtime.is_running(info.id)

    # The agent is still there and answers the next message in full.
    await runtime.send_text(info.id, "Briefly?")
    await sink.wait_for(lambda: len(sink.finals) == 2)
    assert sink.finals[1].text == "Short answer."
    assert not sink.finals[1].interrupted


async def test_interrupt_with_nothing_to_stop_is_a_no_op(started: Runtime) -> None:
    runtime, sink, _model, info = await started(["Done."])
    await runtime.send_text(info.id, "Hi")
    await sink.wait_for(lambda: len(sink.finals) == 1 and sink.states[-1] == "idle")
    assert not await runtime.interrupt(info.id)
    assert not await runtime.interrupt(uuid.uuid4())
    assert not sink.finals[0].interrupted


class SlowStart(ScriptedStream):
    """The model takes its time before the first token: the agent is still thinking."""

    async def _run(self) -> None:
        await asyncio.sleep(0.3)
        await super()._run()


async def test_interrupt_while_thinking_stores_nothing() -> None:
    """Stop before any text arrived: no final at all, and the agent goes back to idle and stays."""
    sink, model = RecordingSink(), ScriptedLLM([LONG])

    def chat(**kw: Any) -> SlowStart:
        return SlowStart(model, LONG, chat_ctx=kw["chat_ctx"], tools=[], conn_options=kw["conn_options"])

    model.chat = chat  # type: ignore[method-assign,assignment]
    runtime = InProcessRuntime(sink, lambda: model, greet=False)
    info = ConversationInfo(id=uuid.uuid4(), room_name="room", system_prompt="You plan trips.")
    await runtime.start(info)
    try:
        await runtime.send_text(info.id, "Hi")
        await sink.wait_for(lambda: "thinking" in sink.states)
        assert await runtime.interrupt(info.id)
        await sink.wait_for(lambda: sink.states[-1] == "idle")
        await asyncio.sleep(0.4)  # past the moment the model would have started to answer
        assert sink.transcripts == []
        assert runtime.is_running(info.id)
    finally:
        await runtime.aclose()
