"""Where the Stop control appears: only while the agent is thinking or speaking, and never in voice mode,
whose LiveKit agent the app cannot interrupt (its runtime says so instead of pretending)."""

from __future__ import annotations

import uuid

import pytest
from jinja2 import Environment, FileSystemLoader, select_autoescape

from chatapp.conversations.rendering import markdown_filter
from chatapp.conversations.views import STATUS_LABELS, Fragments
from chatapp.core.paths import TEMPLATES_DIR
from chatapp.livekit.runtime import LiveKitRuntime
from tests.fakes.livekit import FakeLiveKit, make_settings

CID = uuid.uuid4()


def status_html(state: str, *, voice: bool) -> str:
    env = Environment(loader=FileSystemLoader(TEMPLATES_DIR), autoescape=select_autoescape())
    env.globals |= {"status_labels": STATUS_LABELS, "voice_enabled": voice, "static_url": str}
    env.filters["markdown"] = markdown_filter
    return Fragments(env).block("agent_status", agent_state=state, agent_detail="", conversation_id=CID)


@pytest.mark.parametrize(
    ("state", "shown"),
    [
        ("thinking", True),
        ("speaking", True),
        ("idle", False),
        ("listening", False),
        ("starting", False),
        ("unavailable", False),
    ],
)
def test_stop_shows_only_while_the_agent_replies(state: str, shown: bool) -> None:
    html = status_html(state, voice=False)
    assert ('data-testid="stop-button"' in html) is shown
    if shown:
        assert f'hx-post="/conversations/{CID}/stop"' in html


def test_no_stop_in_voice_mode() -> None:
    assert 'data-testid="stop-button"' not in status_html("speaking", voice=True)


async def test_livekit_runtime_reports_that_it_cannot_interrupt(fake: FakeLiveKit) -> None:
    runtime = LiveKitRuntime(make_settings(fake))
    try:
        assert await runtime.interrupt(CID) is False
    finally:
        await runtime.aclose()
