"""A person speaks into a real LiveKit room through the livekit rtc SDK: the real `chatapp agent` worker hears
them (Silero VAD, then speech-to-text on the speech fake), answers (the chat fake), speaks (espeak through its
TTS), and the app stores both finals once, in order, and streams them to an SSE client."""

from __future__ import annotations

import html
import re
import time
import uuid

import httpx
import pytest

from tests.fakes.openai_chat import Reply
from tests.support import client_ip, signup, utterance_texts, wait_for
from tests.support_livekit import Participant, VoiceStack, speech_pcm
from tests.support_stream import assert_exactly_once_in_order, open_stream, stored_seqs

pytestmark = pytest.mark.voice

CONVERSATION = re.compile(r'id="chat-panel"[^>]*data-conversation-id="([0-9a-f-]{36})"')
PANEL_TOKEN = re.compile(r'data-livekit-token="([^"]+)"')
PANEL_URL = re.compile(r'data-livekit-url="([^"]+)"')
GREETING = "Hello, where to?"
ANSWER = "Lisbon is lovely in May."
SAID = "plan a trip to lisbon"
TURN_WITHIN = 30.0  # seconds; a spoken turn takes ~2-5 s alone, far more when the 2 cores are busy


def roles(n_agent: int, cid: uuid.UUID) -> object:
    async def enough() -> bool:
        return sum(role == "agent" for _, role, _ in await utterance_texts(cid)) >= n_agent

    return enough


async def test_a_spoken_turn_is_heard_answered_and_spoken_and_both_finals_are_stored_once_in_order_and_streamed(
    voice: VoiceStack,
) -> None:
    voice.llm.script[:] = [Reply(GREETING), Reply(ANSWER)]
    async with httpx.AsyncClient(base_url=voice.app.url, headers={"X-Forwarded-For": client_ip()}, timeout=15) as c:
        await signup(c)
        page = (await c.get("/")).text
        cid, url, token = (
            m.group(1) if (m := rx.search(page)) else "" for rx in (CONVERSATION, PANEL_URL, PANEL_TOKEN)
        )
        assert url, "the chat page hands out no LiveKit URL"
        assert token, "the chat page hands out no LiveKit token"
        asked_before = len(voice.speech.requests())
        person = Participant()
        began = time.monotonic()
        await person.join(html.unescape(url), html.unescape(token))
        voice.timings["participant_join"] = time.monotonic() - began
        try:
            await wait_for(roles(1, uuid.UUID(cid)), TURN_WITHIN)  # the agent greeted
            voice.timings["greeting_stored_after_join"] = time.monotonic() - began
            await person.agent_state("listening", began, TURN_WITHIN)  # and is done speaking
            stream = await open_stream(c, f"/conversations/{cid}/stream")
            spoken = await person.say(speech_pcm(SAID))
            await wait_for(roles(2, uuid.UUID(cid)), TURN_WITHIN)
            voice.timings["turn_answer_stored"] = time.monotonic() - spoken
            voice.timings["turn_first_agent_audio"] = await person.agent_speaks_after(spoken, TURN_WITHIN) - spoken
            stored = await stored_seqs(uuid.UUID(cid))
            await stream.wait_for(stored[-1])
        finally:
            await person.leave()
        await stream.close()
    assert [(role, text) for _, role, text in await utterance_texts(uuid.UUID(cid))] == [
        ("agent", GREETING),
        ("user", SAID),
        ("agent", ANSWER),
    ]
    assert_exactly_once_in_order(stream.seqs, stored)
    requests = voice.speech.requests()[asked_before:]
    voice.timings["turn_audio_transcribed_seconds"] = sum(r["audio_seconds"] for r in requests[1:2])
    asked = [(r["kind"], r["text"]) for r in requests]
    assert asked == [("speech", GREETING), ("transcription", SAID), ("speech", ANSWER)]  # it spoke, heard, spoke
    assert len(person.audio_tracks) == 1
    assert person.audio_tracks[0].startswith("agent-")  # what we heard was the agent's voice
    voice.assert_nothing_left_loopback()
