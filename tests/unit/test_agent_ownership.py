"""Pieces of one-agent-per-conversation that need no server: the taken-over agent's first turn, the hub's
routing of agent commands, and how many workers `chatapp serve` runs."""

from __future__ import annotations

import uuid

import pytest

from chatapp.agents.inprocess import InProcessRuntime
from chatapp.cli import serve_workers
from chatapp.conversations.agent_runtime import ConversationInfo
from chatapp.conversations.buffer import TranscriptBuffer
from chatapp.conversations.hub import Hub, make_channels
from chatapp.conversations.live_events import AgentText, Command, Ended
from chatapp.core.settings import SettingsError
from tests.fakes.llm import RecordingSink, ScriptedLLM


async def test_a_taken_over_agent_answers_the_unanswered_message_first_without_greeting() -> None:
    sink, model = RecordingSink(), ScriptedLLM(["Florence is an easy train ride away."])
    runtime = InProcessRuntime(sink, lambda: model, greet=True)
    history = (("agent", "Hello! Where to?"), ("user", "Rome"), ("agent", "Rome it is."), ("user", "And Florence?"))
    info = ConversationInfo(uuid.uuid4(), "room", "You plan trips.", history=history, answer_last=True)
    try:
        await runtime.start(info)
        await sink.wait_for(lambda: len(sink.finals) == 1)
    finally:
        await runtime.aclose()
    assert sink.finals[0].text == "Florence is an easy train ride away."
    assert model.contexts == [
        [
            ("system", "You plan trips."),
            ("assistant", "Hello! Where to?"),
            ("user", "Rome"),
            ("assistant", "Rome it is."),
            ("user", "And Florence?"),
        ]
    ]


async def test_agent_commands_go_to_the_owner_hook_never_to_streams() -> None:
    hub = Hub(make_channels("memory", "postgresql:///unused"), TranscriptBuffer())
    seen: list[Command | Ended] = []
    hub.on_command = seen.append
    conversation_id = uuid.uuid4()
    async with hub.listen(conversation_id, uuid.uuid4()) as listener:
        text = AgentText(conversation_id=conversation_id, to="p", text="hi")
        ended = Ended(conversation_id=conversation_id, user_id=uuid.uuid4(), reason="new_chat")
        hub.dispatch(text)
        hub.dispatch(ended)
        assert listener.get_nowait() == ended
        assert listener.empty()
    assert seen == [text, ended]


@pytest.mark.parametrize(
    ("requested", "env", "expected"),
    [
        (None, {}, (2, "postgres")),
        (None, {"CHATAPP_CHANNELS": "memory"}, (1, None)),
        (None, {"CHATAPP_CHANNELS": "postgres"}, (2, "postgres")),
        (None, {"CHATAPP_WORKERS": "1"}, (1, None)),
        (None, {"CHATAPP_WORKERS": "3"}, (3, "postgres")),
        (1, {"CHATAPP_WORKERS": "3"}, (1, None)),
        (None, {"CHATAPP_CHANNELS": "redis"}, (2, "redis")),
        (None, {"CHATAPP_CHANNELS": "redis", "CHATAPP_WORKERS": "1"}, (1, None)),
    ],
)
def test_serve_workers_default_to_one_per_core_with_postgres_channels(
    monkeypatch: pytest.MonkeyPatch, requested: int | None, env: dict[str, str], expected: tuple[int, str | None]
) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert serve_workers(requested, env) == expected


@pytest.mark.parametrize(
    ("requested", "env", "message"),
    [
        (2, {"CHATAPP_CHANNELS": "memory"}, "several workers need CHATAPP_CHANNELS=postgres"),
        (0, {}, "at least 1"),
        (None, {"CHATAPP_WORKERS": "many"}, "whole number"),
    ],
)
def test_impossible_worker_settings_are_refused(requested: int | None, env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        serve_workers(requested, env)
