"""The worker's transcript forwarder: what it sends for each session event, and how it delivers."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from livekit import rtc
from livekit.agents import AgentSession, llm
from livekit.agents.voice import room_io

from chatapp.agents.product import TravelAgent, history_context
from chatapp.livekit.forwarder import ITEM_ID_ATTRIBUTE, TranscriptForwarder
from tests.fakes.llm import ScriptedLLM

URL = "http://app.test/api/conversations/c/events"


class FakeIngest:
    """The ingest endpoint's contract: 2xx acknowledges a batch; finals are kept once per item id."""

    def __init__(self) -> None:
        self.batches: list[list[dict[str, Any]]] = []
        self.finals: dict[str, dict[str, Any]] = {}
        self.script: list[int | Exception] = []  # answers to give before behaving normally
        self.tokens: set[str] = set()
        self.bad_texts: set[str] = set()  # content the app refuses with 422

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.tokens.add(request.headers["authorization"])
        if self.script:
            step = self.script.pop(0)
            if isinstance(step, Exception):
                raise step
            headers = {"Retry-After": "0"} if step == 429 else {}
            return httpx.Response(step, json={"detail": "scripted"}, headers=headers)
        events = json.loads(request.content)["events"]
        assert 1 <= len(events) <= 100
        if any(e["text"] in self.bad_texts for e in events):
            return httpx.Response(422, json={"detail": "bad text", "status_code": 422})
        self.batches.append(events)
        for event in events:
            if event["final"]:
                self.finals.setdefault(event["item_id"], event)
        return httpx.Response(200, json={"stored": len(events), "ignored": 0})

    @property
    def events(self) -> list[dict[str, Any]]:
        return [e for batch in self.batches for e in batch]

    def final_texts(self) -> list[tuple[str, str]]:
        return [(e["role"], e["text"]) for e in self.finals.values()]


@pytest.fixture
async def ingest() -> AsyncIterator[tuple[FakeIngest, Callable[..., TranscriptForwarder]]]:
    app = FakeIngest()
    forwarders: list[TranscriptForwarder] = []
    client = httpx.AsyncClient(transport=httpx.MockTransport(app.handle))

    def make(**kwargs: Any) -> TranscriptForwarder:
        options: dict[str, Any] = {"initial_backoff": 0.01, "max_backoff": 0.05} | kwargs
        forwarder = TranscriptForwarder(URL, "tok", conversation_id="c", client=client, **options)
        forwarders.append(forwarder)
        return forwarder

    yield app, make
    for forwarder in forwarders:
        await forwarder.aclose(timeout=1)
    await client.aclose()


Ingest = tuple[FakeIngest, Callable[..., TranscriptForwarder]]


async def test_finals_are_sent_in_order_in_batches_of_at_most_100(ingest: Ingest) -> None:
    app, make = ingest
    forwarder = make()
    for n in range(250):
        forwarder._final(f"i-{n}", "user", f"text {n}", False, _at())
    forwarder.start()
    assert await forwarder.flush(5)
    assert [len(b) for b in app.batches] == [100, 100, 50]
    assert [e["item_id"] for e in app.events] == [f"i-{n}" for n in range(250)]
    assert app.tokens == {"Bearer tok"}
    assert forwarder.delivered == 250


async def test_superseded_interims_are_not_sent(ingest: Ingest) -> None:
    app, make = ingest
    forwarder = make()
    for word in ["Lis", "Lisbon", "Lisbon in", "Lisbon in May"]:
        forwarder.on_agent_text(word[len(forwarder._reply.text) :] if forwarder._reply else word)
    forwarder.on_user_transcribed("hel", False)
    forwarder.on_agent_text(" please")
    forwarder.on_user_transcribed("hello", False)
    forwarder.start()
    assert await forwarder.flush(5)
    assert [(e["role"], e["text"], e["final"]) for e in app.events] == [
        ("agent", "Lisbon in May please", False),
        ("user", "hello", False),
    ]


@pytest.mark.parametrize(
    "failures",
    [[503], [500, 502, 504], [429], [408], [httpx.ConnectError("down")], [httpx.ReadTimeout("slow"), 503]],
)
async def test_retryable_failures_are_retried_until_acknowledged(ingest: Ingest, failures: list[Any]) -> None:
    app, make = ingest
    app.script = list(failures)
    forwarder = make()
    forwarder.start()
    forwarder._final("a", "user", "one", False, _at())
    forwarder._final("b", "agent", "two", False, _at())
    assert await forwarder.flush(5)
    assert [e["item_id"] for e in app.events] == ["a", "b"]
    assert forwarder.attempts == len(failures) + 1
    assert forwarder.dropped == 0


async def test_backoff_grows_exponentially_up_to_the_cap(ingest: Ingest) -> None:
    app, make = ingest
    app.script = [503] * 5
    forwarder = make(initial_backoff=0.02, max_backoff=0.08)
    forwarder._final("a", "user", "one", False, _at())
    began = time.monotonic()
    forwarder.start()
    assert await forwarder.flush(5)
    elapsed = time.monotonic() - began
    # 0.02 + 0.04 + 0.08 + 0.08 + 0.08 = 0.30 (jitter ±20%)
    assert 0.23 < elapsed < 1.0


@pytest.mark.parametrize("status", [404, 410])
async def test_a_gone_conversation_drops_its_events_for_good(
    ingest: Ingest, caplog: pytest.LogCaptureFixture, status: int
) -> None:
    app, make = ingest
    app.script = [status]
    forwarder = make()
    forwarder._final("a", "user", "secret words", False, _at())
    forwarder.start()
    assert await forwarder.flush(5)
    forwarder._final("b", "user", "more", False, _at())
    assert await forwarder.flush(5)
    assert app.events == []
    assert forwarder.dropped == 2
    assert forwarder.attempts == 1
    assert "is gone" in caplog.text
    assert f"HTTP {status}" in caplog.text
    assert "secret words" not in caplog.text


@pytest.mark.parametrize("status", [401, 403])
async def test_a_rejected_token_drops_the_conversation_loudly_once(
    ingest: Ingest, caplog: pytest.LogCaptureFixture, status: int
) -> None:
    app, make = ingest
    app.script = [status]
    forwarder = make(batch_size=1)
    forwarder._final("a", "user", "secret words", False, _at())
    forwarder._final("b", "user", "more", False, _at())
    forwarder.start()
    assert await forwarder.flush(5)
    forwarder._final("c", "agent", "later", False, _at())
    assert await forwarder.flush(5)
    assert app.events == []
    assert forwarder.attempts == 1  # nothing more is tried with a token the app refuses
    assert forwarder.dropped == 3
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1
    assert "rejected the token" in errors[0].getMessage()
    assert f"HTTP {status}" in errors[0].getMessage()
    assert "secret words" not in caplog.text
    assert "tok" not in caplog.text.replace("token", "")


async def test_a_422_batch_is_split_and_only_the_bad_event_dropped(
    ingest: Ingest, caplog: pytest.LogCaptureFixture
) -> None:
    app, make = ingest
    app.bad_texts = {"unstorable words"}
    forwarder = make()
    forwarder._final("a", "user", "one", False, _at())
    forwarder._final("bad", "agent", "unstorable words", False, _at())
    forwarder._final("c", "user", "three", False, _at())
    forwarder.start()
    assert await forwarder.flush(5)
    assert [e["item_id"] for e in app.events] == ["a", "c"]
    assert forwarder.delivered == 2
    assert forwarder.dropped == 1
    assert "one by one" in caplog.text
    assert "first item bad" in caplog.text  # the dropped event is named by its id...
    assert "unstorable words" not in caplog.text  # ...never by its text


@pytest.mark.parametrize("status", [400, 413, 422])
async def test_other_4xx_is_a_bug_logged_and_dropped(
    ingest: Ingest, caplog: pytest.LogCaptureFixture, status: int
) -> None:
    app, make = ingest
    app.script = [status]
    forwarder = make(batch_size=1)
    forwarder._final("a", "user", "refused", False, _at())
    forwarder._final("b", "user", "accepted", False, _at())
    forwarder.start()
    assert await forwarder.flush(5)
    assert [e["item_id"] for e in app.events] == ["b"]
    assert forwarder.dropped == 1
    assert f"HTTP {status}" in caplog.text
    assert "refused" not in caplog.text.replace("ingest refused", "")


async def test_a_batch_that_keeps_failing_is_dropped_after_its_retry_time_and_the_next_goes(
    ingest: Ingest, caplog: pytest.LogCaptureFixture
) -> None:
    app, make = ingest
    app.script = [500] * 6  # the first batch's attempts within its retry time; then the app recovers
    forwarder = make(batch_size=2, initial_backoff=0.02, max_backoff=0.04, retry_for=0.15)
    for n in range(3):
        forwarder._final(f"i-{n}", "user", f"text {n}", False, _at())
    began = time.monotonic()
    forwarder.start()
    assert await forwarder.flush(5)
    assert time.monotonic() - began < 1.0
    assert [e["item_id"] for e in app.events] == ["i-2"]
    assert forwarder.dropped == 2
    assert forwarder.delivered == 1
    assert "still failing (HTTP 500)" in caplog.text
    assert "dropped 2 event(s) (2 final)" in caplog.text
    assert "text 0" not in caplog.text


async def test_close_gives_up_after_its_timeout(ingest: Ingest) -> None:
    app, make = ingest
    app.script = [503] * 1000
    forwarder = make()
    forwarder.start()
    forwarder._final("a", "user", "lost", False, _at())
    began = time.monotonic()
    assert not await forwarder.aclose(timeout=0.3)
    assert time.monotonic() - began < 1.0


def _at() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


# ---- what a real AgentSession (text mode, scripted LLM) makes the forwarder send ----


async def run_session(
    forwarder: TranscriptForwarder, script: list[str], turns: list[str], *, seed: tuple[tuple[str, str], ...] = ()
) -> AgentSession[None]:
    session: AgentSession[None] = AgentSession(llm=ScriptedLLM(script))
    session.output.transcription = forwarder.text_output()
    forwarder.attach(session)
    agent = TravelAgent(instructions="You plan trips.", chat_ctx=history_context(seed) if seed else None)
    forwarder.ignore(item.id for item in agent.chat_ctx.items)
    await session.start(agent)
    for text in turns:
        await session.run(user_input=text)
    return session


async def test_a_session_sends_each_message_once_with_interims_first(ingest: Ingest) -> None:
    app, make = ingest
    forwarder = make()
    forwarder.start()
    session = await run_session(forwarder, ["Lisbon is lovely in May.", "Try the pastries."], ["Lisbon?", "Food?"])
    assert await forwarder.aclose(history=session.history.items, timeout=5)
    await session.aclose()

    assert app.final_texts() == [
        ("user", "Lisbon?"),
        ("agent", "Lisbon is lovely in May."),
        ("user", "Food?"),
        ("agent", "Try the pastries."),
    ]
    finals = [e for e in app.events if e["final"]]
    assert len(finals) == 4  # the reconciliation found nothing missing
    for final in finals[1::2]:  # every agent final was preceded by interims of the same item
        interims = [e for e in app.events if e["item_id"] == final["item_id"] and not e["final"]]
        assert interims
        assert final["text"].startswith(interims[-1]["text"])


async def test_speech_interims_and_the_committed_turn_share_one_item(ingest: Ingest) -> None:
    app, make = ingest
    forwarder = make()
    forwarder.start()
    session = await run_session(forwarder, ["Sure."], [])
    for text, final in [("I'd like", False), ("I'd like to go", True), ("to Rome", False)]:
        forwarder.on_user_transcribed(text, final)
        assert await forwarder.flush(5)  # (otherwise the next interim replaces it before it is sent)
    await session.run(user_input="I'd like to go to Rome")  # the turn is committed as one user message
    assert await forwarder.aclose(history=session.history.items, timeout=5)
    await session.aclose()

    user = [e for e in app.events if e["role"] == "user"]
    assert [(e["text"], e["final"]) for e in user] == [
        ("I'd like", False),
        ("I'd like to go", False),
        ("I'd like to go to Rome", False),
        ("I'd like to go to Rome", True),
    ]
    assert len({e["item_id"] for e in user}) == 1


async def test_shutdown_reconciles_what_was_missed_and_what_was_cut_off(ingest: Ingest) -> None:
    app, make = ingest
    forwarder = make()
    forwarder.start()
    session: AgentSession[None] = AgentSession(llm=ScriptedLLM(["First answer.", "Second answer."]))
    await session.start(TravelAgent(instructions="x"))
    await session.run(user_input="one")  # before the forwarder was attached: never announced
    session.output.transcription = forwarder.text_output()
    forwarder.attach(session)
    await session.run(user_input="two")
    forwarder.on_user_transcribed("and three", False)  # still being said when the job ends
    assert await forwarder.aclose(history=session.history.items, timeout=5)
    await session.aclose()

    assert app.final_texts() == [
        ("user", "two"),
        ("agent", "Second answer."),
        ("user", "one"),
        ("agent", "First answer."),
        ("user", "and three"),
    ]
    assert app.finals[next(k for k, v in app.finals.items() if v["text"] == "and three")]["interrupted"]


async def test_seeded_history_of_a_continued_conversation_is_not_sent_again(ingest: Ingest) -> None:
    app, make = ingest
    forwarder = make()
    forwarder.start()
    seed = (("user", "Old question"), ("agent", "Old answer"))
    session = await run_session(forwarder, ["New answer."], ["New question"], seed=seed)
    assert await forwarder.aclose(history=[*session.history.items], timeout=5)
    await session.aclose()
    assert app.final_texts() == [("user", "New question"), ("agent", "New answer.")]


async def test_interrupted_agent_messages_are_marked_and_late_words_ignored(ingest: Ingest) -> None:
    app, make = ingest
    forwarder = make()
    forwarder.start()
    forwarder.on_agent_text("Lisbon is")
    cut = llm.ChatMessage(role="assistant", content=["Lisbon is"], interrupted=True)
    forwarder.on_item_added(cut)  # committed before the text output flushed (a RoomIO race)
    forwarder.on_agent_text(" lovely")  # the rest of that segment: not a new reply
    forwarder.on_agent_flush()
    forwarder.on_agent_text("Next reply.")
    forwarder.on_item_added(llm.ChatMessage(role="assistant", content=["Next reply."]))
    typed = llm.ChatMessage(role="user", content=["typed in the room"])
    forwarder.on_item_added(typed)
    forwarder.on_item_added(typed)  # a repeat never becomes a second final
    assert await forwarder.aclose(timeout=5)
    finals = list(app.finals.values())
    assert [(f["role"], f["text"], f["interrupted"]) for f in finals] == [
        ("agent", "Lisbon is", True),
        ("agent", "Next reply.", False),
        ("user", "typed in the room", False),
    ]
    assert finals[2]["item_id"] == f"user-{typed.id}"
    assert not any("lovely" in e["text"] for e in app.events)


async def test_very_long_text_is_cut_to_what_the_app_accepts(ingest: Ingest) -> None:
    app, make = ingest
    forwarder = make()
    forwarder.start()
    forwarder.on_item_added(llm.ChatMessage(role="assistant", content=["x" * 20_000]))
    assert await forwarder.aclose(timeout=5)
    assert len(app.events[0]["text"]) == 10_000
    await asyncio.sleep(0)


def _typed_event(text: str, attributes: dict[str, str] | None) -> room_io.TextInputEvent:
    info = rtc.TextStreamInfo(
        stream_id="s",
        mime_type="text/plain",
        topic="lk.chat",
        timestamp=0,
        size=None,
        attributes=attributes,
        attachments=[],
    )
    return room_io.TextInputEvent(text=text, info=info, participant=None)


async def test_typed_text_with_the_browsers_item_id_is_sent_under_that_id(ingest: Ingest) -> None:
    app, make = ingest
    forwarder = make()
    forwarder.start()
    session: AgentSession[None] = AgentSession(llm=ScriptedLLM(["Noted.", "Sure."]))
    session.output.transcription = forwarder.text_output()
    forwarder.attach(session)
    await session.start(TravelAgent(instructions="x"))
    forwarder.on_user_transcribed("and I was say", False)  # speech in progress keeps its own item
    await forwarder.text_input_cb(session, _typed_event("Typed in voice mode", {ITEM_ID_ATTRIBUTE: "typed-abc-123"}))
    await forwarder.text_input_cb(session, _typed_event("No id given", None))
    await forwarder.text_input_cb(session, _typed_event("Bad id", {ITEM_ID_ATTRIBUTE: "agent-x; drop"}))
    for _ in range(200):
        if len([m for m in session.history.items if getattr(m, "role", "") == "user"]) == 3:
            break
        await asyncio.sleep(0.01)
    assert await forwarder.aclose(history=session.history.items, timeout=5)
    await session.aclose()
    users = {v["text"]: k for k, v in app.finals.items() if v["role"] == "user"}
    assert users["Typed in voice mode"] == "typed-abc-123"
    assert users["No id given"].startswith("user-")
    assert users["Bad id"].startswith("user-")
    speech = [e for e in app.events if e["text"] == "and I was say"]
    assert speech
    assert speech[0]["item_id"] != "typed-abc-123"
    assert list(app.finals).count("typed-abc-123") == 1
