"""The chat page in voice mode, in Chromium with a fake microphone, against the real LiveKit server and the real
agent worker: it joins the conversation's room, hears the person (the microphone plays a recording), shows the
live transcript and the agent's spoken reply, and plays the agent's voice."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, Page, expect

from chatapp.core.database import connection
from tests.e2e.pages import ChatPage
from tests.fakes.openai_chat import Reply
from tests.support import client_ip, utterance_texts
from tests.support_livekit import VoiceStack

pytestmark = pytest.mark.voice

GREETING = "Hello, where to?"
ANSWER = "Rome has lovely hotels near the Pantheon."
SAID = "book a hotel in rome"  # what the fake microphone plays (conftest's SAID_IN_BROWSER)
WITHIN = 30_000  # ms for a turn on a busy 2-core machine

# The page's LiveKit room, as static/voice.js holds it: who it hears (subscribed audio tracks with their packets
# received so far) and whether it may play audio.
ROOM_STATE = """async () => {
  const session = window.chatappVoice.state();
  const room = session && session.room;
  if (!room) return null;
  const heard = [];
  for (const person of room.remoteParticipants.values()) {
    for (const publication of person.audioTrackPublications.values()) {
      if (!publication.isSubscribed || !publication.track) continue;
      let packets = 0;
      const report = await publication.track.getRTCStatsReport();
      if (report) report.forEach((s) => { if (s.type === "inbound-rtp") packets += s.packetsReceived || 0; });
      heard.push({ identity: person.identity, isAgent: person.isAgent, packets: packets });
    }
  }
  return { name: room.name, state: room.state, canPlaybackAudio: room.canPlaybackAudio, heard: heard,
    micOn: session.micOn, token: room.engine && room.engine.token };
}"""


async def voice_page(browser: Browser, voice: VoiceStack) -> tuple[BrowserContext, Page, ChatPage]:
    context = await browser.new_context(extra_http_headers={"X-Forwarded-For": client_ip()})
    page = await context.new_page()
    chat = ChatPage(page, voice.app.url)
    await chat.signup()
    return context, page, chat


async def room_state(page: Page) -> dict[str, Any]:
    state: dict[str, Any] | None = await page.evaluate(ROOM_STATE)
    assert state is not None, "the page is in no LiveKit room"
    return state


async def test_the_chat_page_in_voice_mode_hears_the_microphone_shows_the_transcript_and_plays_the_agent(
    voice: VoiceStack, voice_browser: Browser, screenshots: Path
) -> None:
    voice.llm.script[:] = [Reply(GREETING), Reply(ANSWER)]
    context, page, chat = await voice_page(voice_browser, voice)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    status = page.get_by_test_id("voice-status")
    cid = uuid.UUID(await chat.conversation_id())

    # Joined: the agent came, greeted (spoken, shown) and listens; its voice is subscribed and playing.
    await expect(chat.finals("agent").locator(".bubble")).to_have_text([GREETING], timeout=WITHIN)
    await expect(status).to_have_attribute("data-state", "listening", timeout=WITHIN)
    await expect(status).to_have_text("Agent is listening")
    await expect(page.locator("#voice-audio audio")).to_have_count(1)
    joined = await room_state(page)
    assert joined["canPlaybackAudio"] is True
    [agent] = joined["heard"]
    assert agent["isAgent"] is True
    assert agent["identity"].startswith("agent-")
    assert agent["packets"] > 0  # the greeting's audio arrived

    # The microphone on: the recording plays, the agent hears it, answers aloud, and the page shows both.
    button = page.get_by_test_id("voice-button")
    await button.click()
    await expect(button).to_have_attribute("aria-pressed", "true")
    await expect(chat.finals("user").locator(".bubble")).to_have_text([SAID], timeout=WITHIN)
    await page.screenshot(path=screenshots / "voice-connected-heard.png")
    await expect(chat.finals("agent").locator(".bubble")).to_have_text([GREETING, ANSWER], timeout=WITHIN)
    await expect(status).to_have_attribute("data-state", "listening", timeout=WITHIN)
    await page.screenshot(path=screenshots / "voice-connected-answered.png")
    answered = await room_state(page)
    assert answered["micOn"] is True
    assert answered["heard"][0]["packets"] > agent["packets"]  # the answer's audio arrived too

    assert [(role, text) for _, role, text in await utterance_texts(cid)] == [
        ("agent", GREETING),
        ("user", SAID),
        ("agent", ANSWER),
    ]
    async with connection() as conn:
        published = await conn.fetchval("SELECT count(*) FROM utterance WHERE session = $1", cid)
    assert published == 3
    assert errors == []
    await context.close()
    await voice.livekit.delete_room(answered["name"])
    await voice.worker.wait_job_ended(cid)
