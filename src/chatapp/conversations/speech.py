"""Server dictation: a recording from the browser (MediaRecorder's webm/opus, or WAV, OGG...) decoded with PyAV
and transcribed by the same OpenAI-compatible speech-to-text the agent worker uses, so dictation works in any
browser that can record, not only where the browser's own speech service answers."""

from __future__ import annotations

import array
import asyncio
import io
import logging
import wave

import av
import httpx

from chatapp.core.settings import Settings

log = logging.getLogger(__name__)

MAX_AUDIO_BYTES = 4 * 1024 * 1024  # a minute of webm/opus is ~0.3 MB, of 16 kHz WAV ~1.9 MB
MAX_SECONDS = 60.0  # the longest recording transcribed; the browser stops recording at this length
RATE = 16_000  # what speech-to-text is sent: 16-bit mono 16 kHz WAV (small, and every recognizer reads it)
OPENAI_BASE_URL = "https://api.openai.com/v1"
STT_TIMEOUT = 30.0
# A recording whose loudest sample stays below this (about -50 dBFS) is silence: recognizers make words up from
# silence (Whisper's "Thank you."), so it is never sent.
SILENCE_PEAK = 100


class BadAudio(ValueError):
    """The upload is not audio we can decode, or holds none."""


class AudioTooLong(ValueError):
    """The recording is longer than MAX_SECONDS."""


class NothingHeard(ValueError):
    """Speech-to-text heard no words in the recording."""


class SpeechUnavailable(RuntimeError):
    """The speech-to-text service could not be reached or failed."""


def to_wav(audio: bytes, max_seconds: float = MAX_SECONDS) -> tuple[bytes, float]:
    """The first audio stream of `audio` (any container PyAV reads) as 16-bit mono 16 kHz WAV, and its length in
    seconds. CPU-bound: run it in a thread. Decoding stops as soon as the recording passes `max_seconds`."""
    limit = int(max_seconds * RATE)
    chunks: list[bytes] = []
    samples = 0
    try:
        with av.open(io.BytesIO(audio), mode="r") as container:
            if not container.streams.audio:
                raise BadAudio("The recording holds no audio.")
            resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
            for frame in container.decode(container.streams.audio[0]):
                for out in resampler.resample(frame):
                    samples += out.samples
                    if samples > limit:
                        raise AudioTooLong(f"Recordings can be at most {max_seconds:g} seconds long.")
                    chunks.append(bytes(out.planes[0])[: out.samples * 2])
            for out in resampler.resample(None):
                samples += out.samples
                chunks.append(bytes(out.planes[0])[: out.samples * 2])
    except (av.error.FFmpegError, ValueError, IndexError) as exc:
        if isinstance(exc, (BadAudio, AudioTooLong)):
            raise
        raise BadAudio("The recording could not be decoded as audio.") from None
    if samples > limit:
        raise AudioTooLong(f"Recordings can be at most {max_seconds:g} seconds long.")
    if samples == 0:
        raise BadAudio("The recording holds no audio.")
    pcm = b"".join(chunks)
    if max(map(abs, array.array("h", pcm))) < SILENCE_PEAK:
        raise NothingHeard("No speech was heard in the recording.")
    out_file = io.BytesIO()
    with wave.open(out_file, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(RATE)
        wav.writeframes(pcm)
    return out_file.getvalue(), samples / RATE


class Transcriber:
    """Speech-to-text over the OpenAI audio API (`POST {base}/audio/transcriptions`), as the worker's STT."""

    def __init__(self, settings: Settings) -> None:
        self.base_url = settings.stt_base_url or OPENAI_BASE_URL
        self.model = settings.stt_model
        self.language = settings.stt_language
        self._api_key = settings.stt_api_key or "no-key"

    async def transcribe(self, audio: bytes) -> str:
        """The words in `audio` (any container PyAV decodes). BadAudio, AudioTooLong, NothingHeard or
        SpeechUnavailable say what went wrong; nothing here is logged with the words."""
        wav, seconds = await asyncio.to_thread(to_wav, audio)
        data = {"model": self.model, "language": self.language, "response_format": "json"}
        try:
            async with httpx.AsyncClient(timeout=STT_TIMEOUT) as client:
                response = await client.post(
                    f"{self.base_url}/audio/transcriptions",
                    headers={"Authorization": f"Bearer {self._api_key}"},
                    data=data,
                    files={"file": ("dictation.wav", wav, "audio/wav")},
                )
        except httpx.HTTPError as exc:
            log.warning("speech-to-text unreachable for %.1f s of dictation: %s", seconds, type(exc).__name__)
            raise SpeechUnavailable("Speech recognition is unavailable right now. You can still type.") from None
        if response.status_code != 200:
            log.warning("speech-to-text answered %s for %.1f s of dictation", response.status_code, seconds)
            raise SpeechUnavailable("Speech recognition is unavailable right now. You can still type.")
        try:
            text = response.json().get("text", "")
        except (ValueError, AttributeError):
            text = None
        if not isinstance(text, str):
            raise SpeechUnavailable("Speech recognition gave an answer we could not read.")
        if not text.strip():
            raise NothingHeard("No speech was heard in the recording.")
        return text.strip()
