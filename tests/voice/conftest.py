"""The voice stack, once per session (it takes ~10 s to start): a real LiveKit server on loopback, the speech
fake, the OpenAI-compatible chat fake (scripted replies), the app configured for LiveKit and the `chatapp agent`
worker process.

Run them sealed (`make test` does, as root: scripts/loopback-only): then no packet can leave loopback, and
each test checks that none tried. Under CI=true an unsealed run fails: it could not show that."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Playwright

from tests.fakes.openai_chat import fake_openai
from tests.fakes.speech import wav_bytes
from tests.support import ROOT, AppServer, free_port
from tests.support_browser import CHROMIUM, CHROMIUM_ARGS
from tests.support_livekit import (
    AGENT_NAME,
    MIC_RATE,
    AgentWorker,
    IngestRecorder,
    LiveKitServer,
    NetworkWitness,
    SpeechFake,
    VoiceStack,
    in_ci,
    require_server,
    silence,
    speech_pcm,
    worker_env,
)

# What the tests say: the recognizer listens for exactly these (a grammar), so it hears them reliably.
PHRASES = ["plan a trip to lisbon", "what is the weather like", "book a hotel in rome"]
TIMINGS = ROOT / "test-artifacts" / "voice-timings.jsonl"
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
# What the browser's fake microphone says, once, from the moment the page turns the microphone on.
SAID_IN_BROWSER = "book a hotel in rome"


@pytest.fixture(scope="session")
def livekit_binary() -> Path:
    """Asked for first, so a missing server skips (or fails) before anything is started."""
    return require_server()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def voice(livekit_binary: Path, db: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[VoiceStack]:
    network = NetworkWitness.start()
    if in_ci() and not network.sealed:
        pytest.fail("CI=true: run the voice tests under scripts/loopback-only (make test does, as root)")
    work = Path(tmp_path_factory.mktemp("voice"))
    app_port = free_port()
    began = time.monotonic()
    livekit = LiveKitServer.start(livekit_binary, work, webhook_urls=[f"http://127.0.0.1:{app_port}/livekit/webhook"])
    ingest = IngestRecorder(f"http://127.0.0.1:{app_port}")  # what the worker posts, and the app's answers
    started: list[LiveKitServer | SpeechFake | AgentWorker | IngestRecorder] = [livekit, ingest]
    async with fake_openai() as llm:
        try:  # the speech fake, the worker and the app start side by side
            speech = SpeechFake.launch(work, PHRASES)
            started.append(speech)
            worker = AgentWorker.launch(work, worker_env(livekit, speech, work, CHATAPP_LLM_BASE_URL=llm.base_url))
            started.append(worker)
            app = await asyncio.to_thread(
                AppServer.start,
                db,
                work / "app",
                port=app_port,
                LIVEKIT_URL=livekit.url,
                LIVEKIT_API_KEY=livekit.api_key,
                LIVEKIT_API_SECRET=livekit.api_secret,
                CHATAPP_AGENT_NAME=AGENT_NAME,
                CHATAPP_INGEST_URL=ingest.url,
            )
            await asyncio.to_thread(speech.wait_ready)
            await asyncio.to_thread(worker.wait_registered)
        except BaseException:
            for part in reversed(started):
                part.stop()
            raise
        stack = VoiceStack(livekit, speech, llm, app, worker, network, ingest)
        stack.timings |= {
            "livekit_start": livekit.proc.started_in,
            "speech_fake_start": speech.proc.started_in,
            "worker_registered": worker.proc.started_in,
            "stack_start": time.monotonic() - began,
        }
        try:
            yield stack  # a test that breaks a part (kills the worker, restarts the server) puts it back
        finally:
            await shut_down(stack)
        stack.assert_nothing_left_loopback()  # over the whole session, not only the tests that check it


async def shut_down(stack: VoiceStack) -> None:
    """Delete the rooms (each job ends with its room, so the worker stops without waiting), stop every process
    whatever fails on the way, and note the timings."""
    try:
        await stack.livekit.close_rooms()
    finally:
        stopping = time.monotonic()
        stack.worker.stop()
        stack.timings["worker_stop"] = time.monotonic() - stopping
        stack.app.stop()
        stack.speech.stop()
        stack.livekit.stop()
        if stack.ingest is not None:
            stack.ingest.stop()
        TIMINGS.parent.mkdir(parents=True, exist_ok=True)
        with TIMINGS.open("a") as out:
            rounded = {name: round(seconds, 3) for name, seconds in stack.timings.items()}
            out.write(json.dumps({"sealed": stack.network.sealed, **rounded}) + "\n")


@pytest.fixture(scope="session")
def microphone_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fake microphone's recording: a pause (playback starts when the page asks for the microphone), the
    phrase, then silence long enough for the agent's VAD to hear the turn end."""
    path = Path(tmp_path_factory.mktemp("microphone")) / "said.wav"
    path.write_bytes(wav_bytes(speech_pcm(SAID_IN_BROWSER, lead_silence=2.5) + silence(3.0), MIC_RATE))
    return path


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def voice_browser(playwright: Playwright, microphone_wav: Path) -> AsyncIterator[Browser]:
    """A Chromium of its own (the fake microphone is a launch argument): the microphone is allowed without a
    prompt and plays `microphone_wav` once per capture; WebRTC may use loopback; audio plays without a click."""
    browser = await playwright.chromium.launch(
        executable_path=CHROMIUM,
        args=[
            *CHROMIUM_ARGS,
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={microphone_wav}%noloop",
            "--allow-loopback-in-peer-connection",
            "--autoplay-policy=no-user-gesture-required",
            # ICE host candidates as plain addresses, not mDNS names (whose multicast would go out of sink0)
            "--disable-features=WebRtcHideLocalIpsWithMdns",
        ],
    )
    try:
        yield browser
    finally:
        await browser.close()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
