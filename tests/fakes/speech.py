"""A local OpenAI-compatible speech server that really speaks and really listens, for the voice tests.

- `POST /v1/audio/speech` synthesizes the `input` text with Debian's `espeak-ng`, resampled by `sox` to what
  livekit-plugins-openai's TTS expects: raw s16le mono 24 kHz (`audio/pcm`) when `response_format` is `pcm`,
  else the same samples in a WAV (`audio/wav`; the plugin decodes by the response's Content-Type).
- `POST /v1/audio/transcriptions` (multipart `file`, as the plugin's STT posts a `file.wav`) recognizes the
  speech with the `pocketsphinx` wheel's en-US model and answers `{"text": ...}`. With `--phrase` options the
  recognizer uses a grammar of just those phrases (espeak's voice is hard for the general language model),
  and falls back to the language model when the grammar finds nothing.

Run it as a process of its own (`python -m tests.fakes.speech --port N [--phrase "..."]...`): recognition is
CPU-bound and would stall a test's event loop. `GET /v1/_requests` lists what it was asked (kind, text, ms).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import subprocess
import threading
import time
import wave
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

SAMPLE_RATE = 24000  # livekit-plugins-openai's TTS sample rate
RECOGNIZER_RATE = 16000  # pocketsphinx's en-US acoustic model
VOICE = "en-us"
WORDS_PER_MINUTE = 140  # slower than espeak's 175: the recognizer gets far more of it right
MAX_TEXT = 4096  # OpenAI's limit for /audio/speech input
MAX_AUDIO_BYTES = 25 * 1024 * 1024  # OpenAI's upload limit for /audio/transcriptions


class BadAudio(ValueError):
    """The upload is not audio sox can read."""


def synthesize(text: str, rate: int = SAMPLE_RATE, words_per_minute: int = WORDS_PER_MINUTE) -> bytes:
    """`text` spoken by espeak-ng as raw s16le mono PCM at `rate` Hz."""
    spoken = subprocess.run(
        ["espeak-ng", "-v", VOICE, "-s", str(words_per_minute), "--stdout", text],
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout
    return to_pcm(spoken, rate)


def to_pcm(audio: bytes, rate: int) -> bytes:
    """Any audio sox reads (WAV here) as raw s16le mono PCM at `rate` Hz."""
    converted = subprocess.run(
        ["sox", "-V1", "-", "-t", "raw", "-r", str(rate), "-e", "signed", "-b", "16", "-c", "1", "-"],
        input=audio,
        capture_output=True,
        timeout=30,
    )
    if converted.returncode != 0:
        raise BadAudio(converted.stderr.decode(errors="replace").strip() or "sox could not read the audio")
    return converted.stdout


def wav_bytes(pcm: bytes, rate: int = SAMPLE_RATE) -> bytes:
    """Raw s16le mono PCM wrapped in a WAV header."""
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm)
    return out.getvalue()


def grammar(phrases: Sequence[str]) -> str:
    """A JSGF grammar accepting exactly one of `phrases` (lower-cased, punctuation dropped)."""
    alternatives = " | ".join(normalize(p) for p in phrases)
    return f"#JSGF V1.0;\ngrammar phrases;\npublic <phrase> = {alternatives};\n"


def normalize(text: str) -> str:
    """Lower case words only: how the recognizer spells what it heard."""
    return " ".join("".join(c for c in word if c.isalnum() or c == "'") for word in text.lower().split()).strip()


class Recognizer:
    """pocketsphinx decoders (one for the grammar, one for the language model), one utterance at a time."""

    def __init__(self, phrases: Sequence[str] = ()) -> None:
        from pocketsphinx import Decoder

        self._lm = Decoder(samprate=RECOGNIZER_RATE, loglevel="FATAL")
        self._grammar = None
        if phrases:
            self._grammar = Decoder(samprate=RECOGNIZER_RATE, loglevel="FATAL")
            self._grammar.add_jsgf_string("phrases", grammar(phrases))
            self._grammar.activate_search("phrases")
        self._lock = threading.Lock()

    def recognize(self, pcm16k: bytes) -> str:
        """What was said in raw s16le mono 16 kHz audio ('' for silence)."""
        with self._lock:
            if self._grammar is not None and (text := self._decode(self._grammar, pcm16k)):
                return text
            return self._decode(self._lm, pcm16k)

    @staticmethod
    def _decode(decoder: Any, pcm: bytes) -> str:
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)
        decoder.end_utt()
        hypothesis = decoder.hyp()
        return str(hypothesis.hypstr).strip() if hypothesis is not None else ""


@dataclass
class SpeechServer:
    """The aiohttp handlers and what they were asked."""

    recognizer: Recognizer
    words_per_minute: int = WORDS_PER_MINUTE
    requests: list[dict[str, Any]] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_AUDIO_BYTES + 64 * 1024)
        for prefix in ("/v1", ""):  # the base URL may or may not end in /v1
            app.router.add_post(f"{prefix}/audio/speech", self.speech)
            app.router.add_post(f"{prefix}/audio/transcriptions", self.transcriptions)
        app.router.add_get("/v1/_requests", self.log)
        app.router.add_get("/healthz", self.health)
        return app

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def log(self, request: web.Request) -> web.Response:
        return web.json_response(self.requests)

    async def speech(self, request: web.Request) -> web.Response:
        started = time.time()
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return error(400, "The request body is not JSON.")
        text = body.get("input") if isinstance(body, dict) else None
        if not isinstance(text, str) or not text.strip():
            return error(400, "'input' is required.")
        if len(text) > MAX_TEXT:
            return error(400, f"'input' is longer than {MAX_TEXT} characters.")
        pcm = await asyncio.to_thread(synthesize, text, SAMPLE_RATE, self.words_per_minute)
        self._note("speech", text, started, seconds=len(pcm) / 2 / SAMPLE_RATE)
        if body.get("response_format") == "pcm":
            return web.Response(body=pcm, content_type="audio/pcm")
        return web.Response(body=wav_bytes(pcm), content_type="audio/wav")

    async def transcriptions(self, request: web.Request) -> web.Response:
        started = time.time()
        if not request.content_type.startswith("multipart/"):
            return error(400, "Send the audio as multipart/form-data with a 'file' part.")
        form = await request.post()
        upload = form.get("file")
        if not isinstance(upload, web.FileField):
            return error(400, "'file' is required.")
        audio = upload.file.read()
        try:
            pcm = await asyncio.to_thread(to_pcm, audio, RECOGNIZER_RATE)
        except BadAudio:
            return error(400, "The audio file could not be decoded.")
        text = await asyncio.to_thread(self.recognizer.recognize, pcm)
        seconds = len(pcm) / 2 / RECOGNIZER_RATE
        self._note("transcription", text, started, seconds=seconds)
        if form.get("response_format") == "verbose_json":
            return web.json_response({"text": text, "language": "english", "duration": seconds, "segments": []})
        if form.get("response_format") == "text":
            return web.Response(text=text)
        return web.json_response({"text": text})

    def _note(self, kind: str, text: str, started: float, *, seconds: float) -> None:
        """`at`: when the request arrived (epoch seconds), `ms`: how long answering it took."""
        took = round((time.time() - started) * 1000)
        self.requests.append(
            {"kind": kind, "text": text, "at": started, "ms": took, "audio_seconds": round(seconds, 2)}
        )


def error(status: int, message: str) -> web.Response:
    """OpenAI's error JSON, which the openai client turns into an APIStatusError."""
    body = {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}}
    return web.json_response(body, status=status)


@asynccontextmanager
async def speech_server(phrases: Sequence[str] = ()) -> AsyncIterator[str]:
    """Serve the fake in the running event loop on a free local port; yields its base URL (`.../v1`)."""
    runner = web.AppRunner(SpeechServer(Recognizer(phrases)).app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--phrase", action="append", default=[], help="a phrase the recognizer should expect")
    parser.add_argument("--words-per-minute", type=int, default=WORDS_PER_MINUTE)
    args = parser.parse_args(argv)
    server = SpeechServer(Recognizer(args.phrase), words_per_minute=args.words_per_minute)
    web.run_app(server.app(), host=args.host, port=args.port, print=None, handle_signals=True)


if __name__ == "__main__":
    main()
