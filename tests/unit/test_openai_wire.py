"""The real model path (livekit.plugins.openai via CHATAPP_LLM_BASE_URL) against a local OpenAI wire fake."""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from livekit.agents import llm

from chatapp.agents.inprocess import InProcessRuntime
from chatapp.agents.models import build_llm
from chatapp.agents.product import merge_system_messages
from chatapp.conversations.agent_runtime import ConversationInfo
from chatapp.conversations.events import AgentStateEvent
from chatapp.core.settings import Settings
from tests.fakes.llm import RecordingSink
from tests.fakes.openai_chat import FakeOpenAI, Reply, fake_openai

PROMPT = "You plan trips."
Start = Callable[..., Awaitable[tuple[InProcessRuntime, RecordingSink, FakeOpenAI, ConversationInfo]]]


@pytest.fixture
async def wire() -> AsyncIterator[Start]:
    """A runtime on the real OpenAI plugin pointed at a fresh local fake; closed after the test."""
    runtimes: list[InProcessRuntime] = []
    async with fake_openai() as fake:

        async def start(
            *script: Reply, greet: bool = False, history: tuple[tuple[str, str], ...] = ()
        ) -> tuple[InProcessRuntime, RecordingSink, FakeOpenAI, ConversationInfo]:
            fake.script.extend(script)
            settings = Settings(llm_base_url=fake.base_url, llm_model="local-model")
            sink = RecordingSink()
            runtime = InProcessRuntime(sink, lambda: build_llm(settings), greet=greet)
            runtimes.append(runtime)
            info = ConversationInfo(id=uuid.uuid4(), room_name="room", system_prompt=PROMPT, history=history)
            await runtime.start(info)
            return runtime, sink, fake, info

        yield start
        for runtime in runtimes:
            await runtime.aclose()


async def test_streamed_reply_gives_growing_interims_one_final_and_carries_history(wire: Start) -> None:
    first = "Lisbon is lovely in spring, with mild weather and long evenings."
    runtime, sink, fake, info = await wire(Reply(first, pieces=5), Reply("Five days is ideal."))

    await runtime.send_text(info.id, "Where in spring?")
    await sink.wait_for(lambda: sink.states.count("idle") == 1)
    await runtime.send_text(info.id, "How long?")
    await sink.wait_for(lambda: sink.states.count("idle") == 2)

    one, two = sink.finals
    assert (one.text, two.text) == (first, "Five days is ideal.")
    interims = [e.text for e in sink.transcripts if not e.final and e.item_id == one.item_id]
    assert len(interims) >= 3
    assert all(b.startswith(a) and len(b) > len(a) for a, b in itertools.pairwise(interims))
    assert [e for e in sink.transcripts if e.item_id == one.item_id][-1] is one
    assert sink.states == ["thinking", "speaking", "idle"] * 2
    assert fake.requests[0]["stream"] is True
    assert fake.requests[0]["model"] == "local-model"
    assert fake.messages(0) == [("system", PROMPT), ("user", "Where in spring?")]
    assert fake.messages(1) == [
        ("system", PROMPT),
        ("user", "Where in spring?"),
        ("assistant", first),
        ("user", "How long?"),
    ]


async def test_greeting_sends_a_single_system_message(wire: Start) -> None:
    _, sink, fake, _ = await wire(Reply("Hello! Where to?"), greet=True)

    await sink.wait_for(lambda: "idle" in sink.states)

    assert [f.text for f in sink.finals] == ["Hello! Where to?"]
    [(role, content)] = fake.messages(0)  # local chat templates reject two system messages in a row
    assert role == "system"
    assert content.startswith(PROMPT)
    assert "Greet the person" in content


async def test_continued_history_is_sent_to_the_model(wire: Start) -> None:
    history = (("user", "I want Kyoto"), ("agent", "Kyoto in autumn is beautiful."))
    runtime, sink, fake, info = await wire(Reply("Great."), greet=True, history=history)

    await runtime.send_text(info.id, "Five days")
    await sink.wait_for(lambda: "idle" in sink.states)

    assert len(fake.requests) == 1  # no greeting for a continued conversation
    assert fake.messages(0) == [
        ("system", PROMPT),
        ("user", "I want Kyoto"),
        ("assistant", "Kyoto in autumn is beautiful."),
        ("user", "Five days"),
    ]


async def test_slow_first_token_shows_thinking_then_streams(wire: Start) -> None:
    runtime, sink, _, info = await wire(Reply("Take your time.", first_token_delay=0.4))

    began = time.monotonic()
    await runtime.send_text(info.id, "Hi")
    await sink.wait_for(lambda: sink.states == ["thinking"])
    await sink.wait_for(lambda: "idle" in sink.states)

    assert time.monotonic() - began >= 0.4
    assert [f.text for f in sink.finals] == ["Take your time."]
    assert sink.states == ["thinking", "speaking", "idle"]


async def test_rejected_key_reports_unavailable_with_the_status(wire: Start) -> None:
    runtime, sink, fake, info = await wire(Reply(status=401), Reply("Back again."))

    await runtime.send_text(info.id, "Hi")
    await sink.wait_for(lambda: "unavailable" in sink.states)

    [state] = [e for e in sink.events if isinstance(e, AgentStateEvent) and e.state == "unavailable"]
    assert "401" in state.detail
    assert "Try again" in state.detail
    assert sink.finals == []
    assert len(fake.requests) == 1  # a bad key is not retried

    await runtime.send_text(info.id, "Hi again")
    await sink.wait_for(lambda: "idle" in sink.states)
    assert [f.text for f in sink.finals] == ["Back again."]


async def test_rate_limit_once_is_retried_and_answered(wire: Start) -> None:
    runtime, sink, fake, info = await wire(Reply(status=429), Reply("Sorry for the wait."))

    await runtime.send_text(info.id, "Hi")
    await sink.wait_for(lambda: "idle" in sink.states)

    assert [f.text for f in sink.finals] == ["Sorry for the wait."]
    assert "unavailable" not in sink.states
    assert len(fake.requests) == 2
    assert fake.requests[0] == fake.requests[1]


async def test_server_error_that_persists_reports_unavailable(wire: Start) -> None:
    runtime, sink, _, info = await wire(*[Reply(status=500)] * 4)

    await runtime.send_text(info.id, "Hi")
    await sink.wait_for(lambda: "unavailable" in sink.states, timeout=8.0)

    [state] = [e for e in sink.events if isinstance(e, AgentStateEvent) and e.state == "unavailable"]
    assert "did not answer" in state.detail
    assert sink.finals == []


def test_only_adjacent_system_messages_are_merged() -> None:
    ctx = llm.ChatContext.empty()
    ctx.add_message(role="system", content="Instructions.")
    ctx.add_message(role="system", content="Greet.")
    ctx.add_message(role="user", content="Hi")
    ctx.add_message(role="system", content="Be brief.")
    ctx.add_message(role="assistant", content="Hello!")

    merged = merge_system_messages(ctx)

    assert [(m.role, m.text_content) for m in merged.messages()] == [
        ("system", "Instructions.\n\nGreet."),
        ("user", "Hi"),
        ("system", "Be brief."),
        ("assistant", "Hello!"),
    ]
    assert len(ctx.messages()) == 5  # the session's own context is left as it was
