"""The speech fake speaks and listens for real, in the wire formats the worker's own STT and TTS use: what
espeak-ng says through `/audio/speech` comes back as the same words from `/audio/transcriptions`."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from livekit import rtc
from livekit.agents import stt, tts

from chatapp.core.settings import Settings
from chatapp.livekit import worker
from tests.fakes.speech import SAMPLE_RATE, speech_server

PHRASES = ["plan a trip to lisbon", "what is the weather like", "book a hotel in rome"]


def speech_settings(base_url: str) -> Settings:
    return Settings.from_env(
        {
            "CHATAPP_SECRET_KEY": "s" * 40,
            "CHATAPP_DATA_DIR": "/nonexistent",
            "CHATAPP_STT_BASE_URL": base_url,
            "CHATAPP_TTS_BASE_URL": base_url,
        }
    )


async def spoken(engine: tts.TTS[Any], text: str) -> rtc.AudioFrame:
    async with engine.synthesize(text) as stream:
        frames = [event.frame async for event in stream]
    return rtc.combine_audio_frames(frames)


@pytest.mark.parametrize("phrase", PHRASES)
async def test_what_the_workers_tts_says_its_stt_hears_back_word_for_word(phrase: str) -> None:
    async with speech_server(PHRASES) as base_url:
        settings = speech_settings(base_url)
        engine, listener = worker.build_tts(settings), worker.build_stt(settings)
        try:
            audio = await spoken(engine, phrase)
            heard = await listener.recognize(audio)
        finally:
            await engine.aclose()
            await listener.aclose()
    assert audio.sample_rate == SAMPLE_RATE
    assert 1.0 < audio.duration < 5.0
    assert heard.type == stt.SpeechEventType.FINAL_TRANSCRIPT
    assert heard.alternatives[0].text == phrase


async def test_without_a_grammar_it_still_recognizes_with_the_general_language_model() -> None:
    async with speech_server() as base_url, httpx.AsyncClient(base_url=base_url) as http:
        wav = await http.post("/audio/speech", json={"model": "m", "voice": "v", "input": "hello world"})
        heard = await http.post("/audio/transcriptions", files={"file": ("a.wav", wav.content)}, data={"model": "m"})
    assert wav.headers["content-type"] == "audio/wav"
    assert heard.status_code == 200
    assert heard.json()["text"]  # espeak through a general model: some words, not necessarily these


async def test_pcm_is_raw_24_khz_mono_samples() -> None:
    async with speech_server() as base_url, httpx.AsyncClient(base_url=base_url) as http:
        pcm = await http.post(
            "/audio/speech", json={"model": "m", "voice": "v", "input": "hello", "response_format": "pcm"}
        )
        log = (await http.get("/_requests")).json()
    assert pcm.headers["content-type"] == "audio/pcm"
    assert len(pcm.content) % 2 == 0
    assert log[0]["audio_seconds"] == pytest.approx(len(pcm.content) / 2 / SAMPLE_RATE, abs=0.01)


@pytest.mark.parametrize(
    ("path", "request_args", "message"),
    [
        ("/audio/speech", {"json": {"model": "m", "input": " "}}, "'input' is required."),
        ("/audio/speech", {"content": b"{not json", "headers": {"content-type": "application/json"}}, "not JSON"),
        ("/audio/transcriptions", {"data": {"model": "m"}, "files": {"x": ("a", b"")}}, "'file' is required."),
        ("/audio/transcriptions", {"files": {"file": ("a.wav", b"RIFF but not audio")}}, "could not be decoded"),
        ("/audio/transcriptions", {"json": {"file": "x"}}, "multipart/form-data"),
    ],
)
async def test_bad_requests_get_openais_400_error_shape(path: str, request_args: dict[str, Any], message: str) -> None:
    async with speech_server() as base_url, httpx.AsyncClient(base_url=base_url) as http:
        response = await http.post(path, **request_args)
        log = (await http.get("/_requests")).json()
    assert response.status_code == 400
    assert message in response.json()["error"]["message"]
    assert log == []
