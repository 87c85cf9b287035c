"""A person in a real LiveKit room, through the livekit rtc SDK, with the real `chatapp agent` worker: what they
say is heard (Silero VAD, then speech-to-text on the speech fake), answered (the chat fake) and spoken (espeak
through the worker's TTS); what they type over `lk.chat` is answered too; the app stores every final once, in
order, and streams it."""

from __future__ import annotations

import time
import uuid

import pytest
from livekit import api, rtc
from livekit.rtc.participant import PublishTrackError

from chatapp.conversations.agent_access import room_name_for
from tests.fakes.openai_chat import Reply
from tests.support import htmx, utterance_roles, utterance_texts
from tests.support_livekit import TURN_WITHIN, VoiceStack, in_a_room, speech_pcm
from tests.support_stream import assert_exactly_once_in_order, open_stream, stored_seqs

pytestmark = pytest.mark.voice

GREETING = "Hello, where to?"
ANSWER = "Lisbon is lovely in May."
SAID = "plan a trip to lisbon"


async def test_a_spoken_turn_is_heard_answered_and_spoken_and_both_finals_are_stored_once_in_order_and_streamed(
    voice: VoiceStack,
) -> None:
    voice.llm.script[:] = [Reply(GREETING), Reply(ANSWER)]
    asked_before = len(voice.speech.requests())
    async with in_a_room(voice) as room:
        stream = await open_stream(room.client, f"/conversations/{room.conversation_id}/stream")
        spoken = await room.person.say(speech_pcm(SAID))
        first_audio = await room.person.agent_speaks_after(spoken, TURN_WITHIN)
        await room.agent_finals(2)
        voice.timings["turn_first_agent_audio"] = first_audio - spoken
        voice.timings["turn_answer_stored"] = time.monotonic() - spoken
        stored = await stored_seqs(room.conversation_id)
        await stream.wait_for(stored[-1])
        await stream.close()
    assert [(role, text) for _, role, text in await utterance_texts(room.conversation_id)] == [
        ("agent", GREETING),
        ("user", SAID),
        ("agent", ANSWER),
    ]
    assert_exactly_once_in_order(stream.seqs, stored)
    asked = [(r["kind"], r["text"]) for r in voice.speech.requests()[asked_before:]]
    assert asked == [("speech", GREETING), ("transcription", SAID), ("speech", ANSWER)]  # it spoke, heard, spoke
    assert len(room.person.audio_tracks) == 1
    assert room.person.audio_tracks[0].startswith("agent-")  # what we heard was the agent's voice
    voice.assert_nothing_left_loopback()


async def test_text_typed_in_voice_mode_reaches_the_agent_over_lk_chat_and_is_stored_once(voice: VoiceStack) -> None:
    """As static/voice.js does: the text goes over the room's `lk.chat` stream with its item id, and is posted
    to the app under the same id; the agent answers it, and it is stored once."""
    typed, answer = "Three days in Porto, please.", "Porto in three days: start at the Ribeira."
    voice.llm.script[:] = [Reply(GREETING), Reply(answer)]
    async with in_a_room(voice) as room:
        item, sent = uuid.uuid4().hex, time.monotonic()
        await room.person.room.local_participant.send_text(
            typed, topic="lk.chat", attributes={"chatapp.item_id": f"typed-{item}"}
        )
        posted = await room.client.post(
            f"/conversations/{room.conversation_id}/messages",
            data={"text": typed, "item_id": item},
            headers=htmx(room.client),
        )
        assert posted.status_code == 204
        await room.agent_finals(2)  # stored once it has been said aloud:
        assert room.person.loud_after(sent) is not None
    assert [(role, text) for _, role, text in await utterance_texts(room.conversation_id)] == [
        ("agent", GREETING),
        ("user", typed),
        ("agent", answer),
    ]
    assert [item_id for _, role, item_id in await utterance_roles(room.conversation_id) if role == "user"] == [
        f"typed-{item}"
    ]
    assert voice.llm.messages(-1)[-1] == ("user", typed)  # the model was asked about exactly that text
    voice.assert_nothing_left_loopback()


async def test_the_token_the_page_hands_out_lets_the_person_publish_their_microphone_and_nothing_else(
    voice: VoiceStack,
) -> None:
    """The real server enforces the app's grants: the microphone is published (the other tests speak through
    it); a camera is refused, and the server lists only the microphone. (The server answers NOT_ALLOWED at
    once, but the SDK only gives up after its publish timeout, ~10 s: one refused source is enough.)"""
    voice.llm.script[:] = [Reply(GREETING)]
    async with in_a_room(voice) as room:
        me = room.person.room.local_participant
        camera = rtc.LocalVideoTrack.create_video_track("camera", rtc.VideoSource(64, 64))
        with pytest.raises(PublishTrackError):
            await me.publish_track(camera, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_CAMERA))
        on_server = await voice.livekit.published_sources(room_name_for(room.conversation_id), me.identity)
    assert on_server == [api.TrackSource.MICROPHONE]
