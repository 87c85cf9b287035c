"""The in-process agent runtime on a real text-only AgentSession; a scripted LLM stands in for the model."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Sequence
from typing import Any

import pytest
from livekit.agents import llm
from livekit.plugins import openai

from chatapp.agents import inprocess
from chatapp.agents.inprocess import InProcessRuntime
from chatapp.agents.models import build_llm
from chatapp.agents.offline import OFFLINE_NOTICE, OfflineResponder, compose_reply
from chatapp.conversations.agent_runtime import AgentStartError, ConversationInfo, StartInfo
from chatapp.conversations.events import AgentStateEvent, TranscriptEvent
from chatapp.core.settings import Settings
from tests.fakes.llm import RecordingSink, Runtime, ScriptedLLM

LISBON = "Lisbon is lovely in spring, with mild weather, few crowds and long evenings by the river."


async def test_reply_streams_growing_interims_then_one_final(started: Runtime) -> None:
    runtime, sink, model, info = await started([LISBON])

    await runtime.send_text(info.id, "Where should I go in spring?")
    await sink.wait_for(lambda: "idle" in sink.states)

    [final] = sink.finals
    assert (final.role, final.text, final.interrupted) == ("agent", LISBON, False)
    interims = [e for e in sink.transcripts if not e.final]
    assert len(interims) >= 3
    assert {e.item_id for e in sink.transcripts} == {final.item_id}
    texts = [e.text for e in interims]
    assert all(b.startswith(a) and len(b) > len(a) for a, b in itertools.pairwise(texts))
    assert LISBON.startswith(texts[-1])
    assert sink.transcripts[-1] is final
    assert sink.states == ["thinking", "speaking", "idle"]
    assert model.contexts[0][0] == ("system", "You plan trips.")
    assert model.contexts[0][-1] == ("user", "Where should I go in spring?")
    assert all(e.role == "agent" for e in sink.transcripts)  # the user's text is not echoed


async def test_turns_are_answered_in_order_one_at_a_time(started: Runtime) -> None:
    runtime, sink, model, info = await started(["First answer, nice and long.", "Second answer."], delay=0.005)

    await runtime.send_text(info.id, "one")
    await runtime.send_text(info.id, "two")
    await sink.wait_for(lambda: len(sink.finals) == 2)

    first, second = sink.finals
    assert (first.text, second.text) == ("First answer, nice and long.", "Second answer.")
    assert first.item_id != second.item_id
    ids = [e.item_id for e in sink.transcripts]
    assert ids == [first.item_id] * ids.count(first.item_id) + [second.item_id] * ids.count(second.item_id)
    assert sink.states == ["thinking", "speaking", "idle"] * 2
    # the second turn only started once the first reply was in the context
    assert model.contexts[1][-3:] == [
        ("user", "one"),
        ("assistant", "First answer, nice and long."),
        ("user", "two"),
    ]
    assert not any(e.role == "user" for e in sink.transcripts)


async def test_agent_greets_a_new_conversation(started: Runtime) -> None:
    _, sink, model, _ = await started(["Hello! Where to?"], greet=True)

    await sink.wait_for(lambda: len(sink.finals) == 1)

    assert sink.finals[0].text == "Hello! Where to?"
    assert [role for role, _ in model.contexts[0]] == ["system"]  # instructions and "greet", as one message


async def test_history_seeds_the_context_and_skips_the_greeting(started: Runtime) -> None:
    history = (("user", "I want to go to Kyoto"), ("agent", "Kyoto in autumn is beautiful. How long?"))
    runtime, sink, model, info = await started(["Five days is perfect."], greet=True, history=history)

    await asyncio.sleep(0.05)
    assert sink.events == []
    assert model.contexts == []

    await runtime.send_text(info.id, "Five days")
    await sink.wait_for(lambda: len(sink.finals) == 1)

    assert model.contexts[0] == [
        ("system", "You plan trips."),
        ("user", "I want to go to Kyoto"),
        ("assistant", "Kyoto in autumn is beautiful. How long?"),
        ("user", "Five days"),
    ]


async def test_start_is_idempotent(started: Runtime) -> None:
    runtime, sink, model, info = await started(["Hi there!"], greet=True)

    assert await runtime.start(info) == StartInfo(mode="text")
    await asyncio.gather(runtime.start(info), runtime.start(info))
    await sink.wait_for(lambda: "idle" in sink.states)
    await asyncio.sleep(0.02)

    assert len(model.contexts) == 1
    assert len(sink.finals) == 1
    assert runtime.is_running(info.id)


async def test_stop_cuts_a_long_reply_and_keeps_what_was_said(started: Runtime) -> None:
    long_reply = " ".join(f"word{i}" for i in range(200))
    runtime, sink, model, info = await started([long_reply], delay=0.01)
    model.pieces = 100

    await runtime.send_text(info.id, "Tell me everything")
    await sink.wait_for(lambda: len(sink.transcripts) >= 3)
    await runtime.stop(info.id)

    [final] = sink.finals
    interims = [e for e in sink.transcripts if not e.final]
    assert final.interrupted
    assert final.item_id == interims[-1].item_id
    assert final.text.startswith(interims[-1].text)
    assert len(final.text) < len(long_reply)
    assert not runtime.is_running(info.id)
    await runtime.stop(info.id)  # idempotent
    await runtime.stop(uuid.uuid4())  # never started
    await runtime.send_text(info.id, "anyone there?")  # ignored, not raised
    await asyncio.sleep(0.02)
    assert len(sink.finals) == 1


async def test_llm_failures_report_unavailable_and_the_next_turn_works(started: Runtime) -> None:
    failures: list[str | Exception] = [RuntimeError("model down") for _ in range(4)]
    runtime, sink, _, info = await started([*failures, "Back again."])

    for attempt in range(1, 5):
        await runtime.send_text(info.id, f"try {attempt}")
        await sink.wait_for(lambda: sink.states.count("unavailable") == attempt)  # noqa: B023
    assert sink.finals == []
    detail = next(e.detail for e in sink.events if isinstance(e, AgentStateEvent) and e.state == "unavailable")
    assert "RuntimeError" in detail
    assert "model down" not in detail

    await runtime.send_text(info.id, "again")
    await sink.wait_for(lambda: "idle" in sink.states)
    assert [e.text for e in sink.finals] == ["Back again."]
    assert runtime.is_running(info.id)


async def test_a_session_closed_underneath_is_reopened_with_the_conversation(started: Runtime) -> None:
    runtime, sink, model, info = await started(["First.", "Still here."])
    await runtime.send_text(info.id, "one")
    await sink.wait_for(lambda: len(sink.finals) == 1)

    session = runtime._conversations[info.id]._session
    assert session is not None
    await session.aclose()  # as LiveKit does on its own after repeated errors
    await runtime.send_text(info.id, "still there?")
    await sink.wait_for(lambda: len(sink.finals) == 2)

    assert sink.finals[1].text == "Still here."
    assert model.contexts[1][-3:] == [("user", "one"), ("assistant", "First."), ("user", "still there?")]


async def test_a_failed_start_raises_agent_start_error_and_can_be_retried() -> None:
    sink, models = RecordingSink(), iter([None, ScriptedLLM(["Hello again."])])

    def factory() -> llm.LLM[Any]:
        if (model := next(models)) is None:
            raise ConnectionError("no model")
        return model

    runtime = InProcessRuntime(sink, factory)
    info = ConversationInfo(id=uuid.uuid4(), room_name="room", system_prompt="You plan trips.")
    try:
        with pytest.raises(AgentStartError):
            await runtime.start(info)
        assert not runtime.is_running(info.id)
        assert await runtime.start(info) == StartInfo(mode="text")
        await sink.wait_for(lambda: len(sink.finals) == 1)
    finally:
        await runtime.aclose()


async def _collect(model: OfflineResponder, messages: Sequence[tuple[str, str]]) -> list[str]:
    ctx = llm.ChatContext.empty()
    for role, text in messages:
        ctx.add_message(role=role, content=text)  # type: ignore[arg-type]
    stream = model.chat(chat_ctx=ctx)
    async with stream:
        return [chunk.delta.content async for chunk in stream if chunk.delta and chunk.delta.content]


async def test_offline_responder_streams_word_by_word_and_answers_sensibly() -> None:
    model = OfflineResponder(word_delay=0)
    system = ("system", "You plan trips.")

    greeting = await _collect(model, [system, ("user", "hello")])
    assert len(greeting) > 5
    assert all(len(chunk.split()) == 1 for chunk in greeting)
    assert OFFLINE_NOTICE in "".join(greeting)

    trip = "".join(await _collect(model, [system, ("user", "I want to plan a trip to Lisbon")]))
    assert "Lisbon" in trip
    assert trip.endswith("?")
    assert OFFLINE_NOTICE not in trip
    await model.aclose()


def test_offline_replies_greet_first_and_mention_the_demo_only_once() -> None:
    system = ("system", "You plan trips.")
    opening = compose_reply([system, ("system", "Greet the person.")])
    assert OFFLINE_NOTICE in opening
    assert OFFLINE_NOTICE not in compose_reply([system, ("assistant", opening), ("user", "hi")])
    assert "A weekend in New York" in compose_reply([system, ("user", "We'd love a weekend in New York")])
    later = compose_reply([system, ("user", "A trip to Porto"), ("assistant", "?"), ("user", "3 days")])
    assert "3 days in Porto" in later
    assert "?" in compose_reply([system, ("user", "What should I pack?")])


async def test_offline_responder_runs_in_the_runtime() -> None:
    sink = RecordingSink()
    runtime = InProcessRuntime(sink, lambda: OfflineResponder(word_delay=0))
    info = ConversationInfo(id=uuid.uuid4(), room_name="room", system_prompt="You plan trips.")
    try:
        await runtime.start(info)
        await sink.wait_for(lambda: len(sink.finals) == 1)
        await runtime.send_text(info.id, "I want to plan a trip to Lisbon")
        await sink.wait_for(lambda: len(sink.finals) == 2)
    finally:
        await runtime.aclose()
    greeting, answer = sink.finals
    assert OFFLINE_NOTICE in greeting.text
    assert "Lisbon" in answer.text
    assert len([e for e in sink.transcripts if e.item_id == answer.item_id]) > 5
    assert not runtime.is_running(info.id)


async def test_build_llm_picks_the_configured_model() -> None:
    assert isinstance(build_llm(Settings()), OfflineResponder)
    model = build_llm(Settings(llm_base_url="http://127.0.0.1:9/v1", llm_model="llama3"))
    assert isinstance(model, openai.LLM)
    assert model.model == "llama3"
    await model.aclose()


class DatabaseAwaySink(RecordingSink):
    """Refuses finals with a connection error while `away` is set, as the pipeline does during an outage."""

    def __init__(self) -> None:
        super().__init__()
        self.away = True
        self.refused = 0

    async def transcript(self, event: TranscriptEvent) -> None:
        if self.away and event.final:
            self.refused += 1
            raise ConnectionRefusedError("database down")
        await super().transcript(event)


async def test_finals_wait_for_the_database_in_a_bounded_queue_and_are_stored_in_order_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(inprocess, "MAX_WAITING_FINALS", 2)
    monkeypatch.setattr(inprocess, "RETRY_MAX", 0.05)
    sink, model = DatabaseAwaySink(), ScriptedLLM(["One.", "Two.", "Three, too many."])
    runtime = InProcessRuntime(sink, lambda: model, greet=False)
    info = ConversationInfo(id=uuid.uuid4(), room_name="room", system_prompt="You plan trips.")
    try:
        await runtime.start(info)
        for text in ("a", "b", "c"):
            await runtime.send_text(info.id, text)
        await sink.wait_for(lambda: len(model.contexts) == 3 and sink.refused >= 3)
        await asyncio.sleep(0.1)  # the third reply ends while two finals already wait
        sink.away = False
        await sink.wait_for(lambda: len(sink.finals) == 2)
        await asyncio.sleep(0.2)
    finally:
        await runtime.aclose()
    assert [f.text for f in sink.finals] == ["One.", "Two."]
    assert "1 agent final(s) of conversation" in caplog.text  # the one past the bound, said when it stopped
    assert caplog.text.count("agent output: database unavailable") == 1
    assert caplog.text.count("agent output: the database is back") == 1
