"""The chat page in voice mode, in Chromium with a fake microphone, against the real LiveKit server and the real
agent worker: it joins the conversation's room, hears the person (the microphone plays a recording), shows the
live transcript and the agent's spoken reply, and plays the agent's voice."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, Page, expect

from chatapp.core.database import connection
from tests.e2e.pages import ChatPage
from tests.fakes.openai_chat import Reply
from tests.support import client_ip, utterance_texts
from tests.support_livekit import AGENT_NAME, VoiceStack

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
      try {
        const report = await publication.track.getRTCStatsReport();
        if (report) report.forEach((s) => { if (s.type === "inbound-rtp") packets += s.packetsReceived || 0; });
      } catch (error) { packets = -1; }  // its receiver went meanwhile
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


def token_claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims


# Long enough to be cut: espeak takes ~20 s to say it.
LONG_ANSWER = (
    "Rome has many hotels. Near the Pantheon you can walk to the Trevi fountain, the Spanish steps and "
    "Piazza Navona in minutes. Trastevere is quieter, with small family hotels, cobbled lanes and the best "
    "dinners in town. Near Termini the rooms are cheaper and the trains leave for Florence and Naples."
)


async def test_new_chat_in_voice_mode_saves_the_cut_reply_deletes_the_room_and_joins_a_new_one(
    voice: VoiceStack, voice_browser: Browser, screenshots: Path
) -> None:
    """New Chat while the agent is speaking: the old room goes from the server, its job ends and its last
    finals (the reply it was cut off in, marked interrupted) are in the saved conversation; the page joins the
    new room, which has a new dispatch, with a fresh token; History shows the saved voice transcript."""
    voice.llm.script[:] = [Reply(GREETING), Reply(LONG_ANSWER), Reply(GREETING)]
    context, page, chat = await voice_page(voice_browser, voice)
    status = page.get_by_test_id("voice-status")
    old = uuid.UUID(await chat.conversation_id())
    await expect(status).to_have_attribute("data-state", "listening", timeout=WITHIN)
    before = await room_state(page)
    await page.get_by_test_id("voice-button").click()
    await expect(chat.finals("user").locator(".bubble")).to_have_text([SAID], timeout=WITHIN)
    speaking = page.locator('#messages-container .message[data-role="agent"][data-final="false"] .bubble')
    await expect(speaking).to_contain_text("Rome has many hotels", timeout=WITHIN)  # the live transcript
    await expect(status).to_have_attribute("data-state", "speaking")
    await page.screenshot(path=screenshots / "voice-speaking-before-new-chat.png")

    await page.locator("#new-chat-button").click()
    await expect(chat.panel).not_to_have_attribute("data-conversation-id", str(old), timeout=WITHIN)
    new = uuid.UUID(await chat.conversation_id())
    await voice.livekit.wait_room_gone(before["name"])
    ended = await voice.worker.wait_job_ended(old)
    assert ", 0 dropped" in ended

    # Saved from the server's transcript and the job's late finals: the reply it was cut off in, interrupted.
    async with connection() as conn:
        rows = await conn.fetch("SELECT role, text, interrupted FROM utterance WHERE session = $1 ORDER BY seq", old)
        saved = await conn.fetchval("SELECT ended_at IS NOT NULL FROM chat_session WHERE id = $1", old)
    assert saved
    said = [(r["role"], r["text"], r["interrupted"]) for r in rows]
    assert said[:2] == [("agent", GREETING, False), ("user", SAID, False)]
    [(role, cut, interrupted)] = said[2:]
    assert (role, interrupted) == ("agent", True)
    assert cut.startswith("Rome has many hotels")
    assert len(cut) < len(LONG_ANSWER)

    # The page is in the new conversation's room, with a token for it; the room has its own dispatch.
    await expect(status).to_have_attribute("data-state", "listening", timeout=WITHIN)
    after = await room_state(page)
    assert after["name"] != before["name"]
    assert after["name"] in await voice.livekit.room_names()
    assert after["token"] != before["token"]
    assert token_claims(after["token"])["video"]["room"] == after["name"]
    [dispatch] = [d for d in await voice.livekit.dispatches(after["name"]) if d.agent_name == AGENT_NAME]
    assert json.loads(dispatch.metadata)["conversation_id"] == str(new)
    assert [job.room.name for job in dispatch.state.jobs] == [after["name"]]  # the worker took it
    await expect(page.locator("#voice-audio audio")).to_have_count(1)
    await page.screenshot(path=screenshots / "voice-new-chat-joined.png")

    # History shows the saved voice transcript, the cut reply marked.
    await page.goto(f"{voice.app.url}/history/{old}")
    lines = page.get_by_test_id("transcript-line")
    await expect(lines).to_have_count(3)
    await expect(lines.nth(1)).to_contain_text(SAID)
    await expect(lines.nth(2)).to_contain_text("Rome has many hotels")
    await expect(lines.nth(2).get_by_test_id("interrupted")).to_be_visible()
    await page.screenshot(path=screenshots / "voice-saved-in-history.png")
    await context.close()
    await voice.livekit.delete_room(after["name"])
    await voice.worker.wait_job_ended(new)


TYPED = "Is the Vatican museum open on Mondays?"
TYPED_ANSWER = "Yes, the Vatican museums open on Mondays."


async def test_a_livekit_server_restart_shows_reconnecting_typing_still_works_and_voice_comes_back(
    voice: VoiceStack, voice_browser: Browser, screenshots: Path
) -> None:
    """The server crashes (rooms, participants and dispatches gone) and starts again: the page says voice is
    reconnecting, typed text is stored and shown meanwhile, then the page rejoins with a fresh token, the app
    opens the room again with a new dispatch, and the new agent answers what was typed, aloud."""
    voice.llm.script[:] = [Reply(GREETING), Reply(TYPED_ANSWER)]
    context, page, chat = await voice_page(voice_browser, voice)
    page.on("console", lambda message: print(f"console {message.type}: {message.text}"))  # shown on a failure
    status = page.get_by_test_id("voice-status")
    cid = uuid.UUID(await chat.conversation_id())
    await expect(status).to_have_attribute("data-state", "listening", timeout=WITHIN)
    # The agent may be listening before its greeting has reached the app: the conversation starts once it has.
    await expect(chat.finals("agent").locator(".bubble")).to_have_text([GREETING], timeout=WITHIN)
    before = await room_state(page)

    registered = voice.worker.registrations()
    await asyncio.to_thread(voice.livekit.crash)
    try:
        await expect(status).to_have_attribute("data-state", "reconnecting", timeout=WITHIN)
        await expect(status).to_have_text("Voice reconnecting… You can still type.")
        await chat.send(TYPED)  # typing works meanwhile: stored and shown
        await expect(chat.finals("user").locator(".bubble")).to_have_text([TYPED])
        await page.screenshot(path=screenshots / "voice-reconnecting.png")
        assert [(role, text) for _, role, text in await utterance_texts(cid)] == [("agent", GREETING), ("user", TYPED)]
    finally:
        await asyncio.to_thread(voice.livekit.start_again)
        await voice.worker.wait_registrations(registered + 1)  # the tests after need it

    # Voice comes back: the room again, a new agent, which answers what was typed (spoken and stored).
    await expect(chat.finals("agent").locator(".bubble")).to_have_text([GREETING, TYPED_ANSWER], timeout=90_000)
    await expect(status).to_have_attribute("data-state", "listening", timeout=WITHIN)
    after = await room_state(page)
    assert after["name"] == before["name"]
    assert after["token"] != before["token"]  # a fresh token from the app
    first_job = await voice.worker.wait_job_ended(cid)  # the old agent left: one agent in the room
    assert "(room opened again)" in first_job
    [agent] = after["heard"]
    assert agent["identity"] != before["heard"][0]["identity"]
    assert agent["packets"] > 0
    [dispatch] = [d for d in await voice.livekit.dispatches(after["name"]) if d.agent_name == AGENT_NAME]
    assert json.loads(dispatch.metadata)["conversation_id"] == str(cid)
    await page.screenshot(path=screenshots / "voice-back-after-restart.png")
    assert [(role, text) for _, role, text in await utterance_texts(cid)] == [
        ("agent", GREETING),
        ("user", TYPED),
        ("agent", TYPED_ANSWER),
    ]
    await context.close()
    await voice.livekit.delete_room(after["name"])
    await voice.worker.wait_job_ended(cid, jobs=2)
