"""Server dictation: a recording posted to the app is transcribed by the configured speech-to-text (the local
speech fake: espeak-ng's words recognized by pocketsphinx) and stored as the user's message, once; bad, too big
and too long recordings are a clear 4xx and store nothing."""

from __future__ import annotations

import io
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import av
import httpx
import pytest
import pytest_asyncio

from chatapp.conversations.speech import MAX_AUDIO_BYTES
from tests.fakes.speech import synthesize, wav_bytes
from tests.support import (
    AppServer,
    client_ip,
    csrf,
    open_conversation,
    signup,
    utterance_roles,
    utterance_texts,
    wait_for,
)
from tests.support_livekit import SpeechFake

PHRASE = "book a hotel in rome"


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SpeechFake]:
    with SpeechFake.running(Path(tmp_path_factory.mktemp("speech")), [PHRASE, "plan a trip to lisbon"]) as fake:
        yield fake


@pytest.fixture(scope="module")
def stt_app(db: str, speech: SpeechFake, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    server = AppServer.start(db, Path(tmp_path_factory.mktemp("stt-app")), CHATAPP_STT_BASE_URL=speech.base_url)
    yield server
    server.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def person(stt_app: AppServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stt_app.url, headers={"X-Forwarded-For": client_ip()}, timeout=30) as c:
        await signup(c)
        yield c


def spoken_wav(text: str, rate: int = 16_000) -> bytes:
    silence = b"\0\0" * (rate // 4)
    return wav_bytes(silence + synthesize(text, rate) + silence, rate)


def spoken_webm(text: str) -> bytes:
    """`text` as MediaRecorder sends it: Opus in WebM at 48 kHz, encoded with PyAV."""
    pcm = synthesize(text, 48_000)
    out = io.BytesIO()
    with av.open(out, mode="w", format="webm") as container:
        stream = container.add_stream("libopus", rate=48_000, layout="mono")
        frame = av.AudioFrame(format="s16", layout="mono", samples=len(pcm) // 2)
        frame.planes[0].update(pcm)
        frame.sample_rate = 48_000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()


async def post_audio(
    client: httpx.AsyncClient, cid: uuid.UUID, audio: bytes, item: str, media_type: str = "audio/wav"
) -> httpx.Response:
    return await client.post(
        f"/conversations/{cid}/dictation/audio",
        params={"item_id": item},
        content=audio,
        headers={**csrf(client), "Content-Type": media_type, "Accept": "application/json"},
    )


async def user_messages(cid: uuid.UUID) -> list[tuple[str, str]]:
    return [(item, text) for item, role, text in await utterance_texts(cid) if role == "user"]


async def test_a_spoken_wav_is_stored_once_as_the_users_message_and_answered(person: httpx.AsyncClient) -> None:
    cid = await open_conversation(person)
    audio = spoken_wav(PHRASE)
    item = str(uuid.uuid4())
    first = await post_audio(person, cid, audio, item)
    assert first.status_code == 200, first.text
    assert first.json() == {"text": PHRASE}
    again = await post_audio(person, cid, audio, item)  # a retried post
    assert again.status_code == 200
    assert await user_messages(cid) == [(f"dictation-{item}", PHRASE)]

    async def answered() -> bool:
        return [role for _, role, _ in await utterance_roles(cid)][-2:] == ["user", "agent"]

    await wait_for(answered)


async def test_mediarecorders_webm_opus_is_decoded_and_stored(person: httpx.AsyncClient) -> None:
    cid = await open_conversation(person)
    response = await post_audio(person, cid, spoken_webm("plan a trip to lisbon"), "webm-1", "audio/webm")
    assert response.status_code == 200, response.text
    assert await user_messages(cid) == [("dictation-webm-1", "plan a trip to lisbon")]


async def test_a_recording_over_the_apps_1_mib_body_cap_is_accepted_under_its_own(person: httpx.AsyncClient) -> None:
    cid = await open_conversation(person)
    rate = 48_000
    audio = wav_bytes(synthesize(PHRASE, rate) + b"\0\0" * rate * 10, rate)  # 12 s of 48 kHz WAV
    assert 1024 * 1024 < len(audio) < MAX_AUDIO_BYTES
    response = await post_audio(person, cid, audio, "big-1")
    assert response.status_code == 200, response.text
    assert await user_messages(cid) == [("dictation-big-1", PHRASE)]


async def test_bad_recordings_are_a_clear_4xx_and_store_nothing(person: httpx.AsyncClient) -> None:
    cid = await open_conversation(person)
    rate = 8_000
    refusals = {
        "too big": (b"\0" * (MAX_AUDIO_BYTES + 1), "audio/wav", 413),
        "too long": (wav_bytes(b"\0\0" * rate * 61, rate), "audio/wav", 413),
        "garbage": (b"this is not audio at all" * 100, "audio/webm", 422),
        "empty": (b"", "audio/webm", 422),
        "silence": (wav_bytes(b"\0\0" * rate * 2, rate), "audio/wav", 422),
        "not audio": (spoken_wav(PHRASE), "text/plain", 415),
    }
    for name, (audio, media_type, status) in refusals.items():
        response = await post_audio(person, cid, audio, f"bad-{name.replace(' ', '-')}", media_type)
        assert response.status_code == status, (name, response.text)
        assert response.json()["detail"], name  # says what was wrong
    assert await user_messages(cid) == []


async def test_another_users_conversation_is_404_and_a_post_without_csrf_is_refused(
    person: httpx.AsyncClient, stt_app: AppServer
) -> None:
    cid = await open_conversation(person)
    audio = spoken_wav(PHRASE)
    async with httpx.AsyncClient(base_url=stt_app.url, headers={"X-Forwarded-For": client_ip()}, timeout=30) as other:
        await signup(other)
        assert (await post_audio(other, cid, audio, "theirs")).status_code == 404
    no_token = await person.post(
        f"/conversations/{cid}/dictation/audio",
        params={"item_id": "no-csrf"},
        content=audio,
        headers={"Content-Type": "audio/wav"},
    )
    assert no_token.status_code == 403
    assert await user_messages(cid) == []


async def test_without_speech_to_text_the_page_uses_the_browser_and_the_route_says_so(
    client: httpx.AsyncClient,
) -> None:
    await signup(client)
    page = await client.get("/")
    assert 'data-dictation="browser"' in page.text
    cid = await open_conversation(client)
    response = await post_audio(client, cid, spoken_wav(PHRASE), "no-stt")
    assert response.status_code == 503
    assert "not set up" in response.json()["detail"]
    assert await user_messages(cid) == []
