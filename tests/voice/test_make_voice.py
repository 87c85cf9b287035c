"""`make voice` (scripts/voice), run as a user runs it with OpenAI-compatible speech endpoints (the speech fake)
and no LLM (the offline demo model answers): one command brings up LiveKit, the app and the worker; a person
joins the room the page hands out, speaks, and is heard and answered aloud; Ctrl+C stops all of it."""

from __future__ import annotations

import asyncio
import html
import os
import re
import signal
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import psutil
import pytest
import yaml
from livekit import api

from chatapp.conversations.agent_access import room_name_for
from tests.support import ROOT, client_ip, free_port, signup, utterance_texts
from tests.support_livekit import READY, TURN_WITHIN, Participant, SpeechFake, free_udp_port, speech_pcm

pytestmark = pytest.mark.voice

SAID = "plan a trip to lisbon"
PANEL = re.compile(
    r'data-conversation-id="([0-9a-f-]{36})"[\s\S]*?data-livekit-url="([^"]+)"[\s\S]*?data-livekit-token="([^"]+)"'
)


def wait_until(ready: object, what: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY
    while not ready():  # type: ignore[operator]
        assert proc.poll() is None, f"make voice exited early:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"{what} not ready:\n{log.read_text()}"
        time.sleep(0.2)


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


async def stored_roles(conversation_id: uuid.UUID, roles: list[str]) -> None:
    deadline = time.monotonic() + TURN_WITHIN
    while [role for _, role, _ in await utterance_texts(conversation_id)] != roles:
        assert time.monotonic() < deadline, await utterance_texts(conversation_id)
        await asyncio.sleep(0.1)


async def test_make_voice_starts_livekit_the_app_and_the_worker_and_a_spoken_turn_is_answered(
    livekit_binary: Path, db: str, tmp_path: Path
) -> None:
    speech = SpeechFake.launch(tmp_path, [SAID])
    port, voice_dir = free_port(), tmp_path / "voice"
    env = {
        **os.environ,
        "CHATAPP_ENV_FILE": "/nonexistent",
        "DATABASE_URL": db,
        "CHATAPP_DATA_DIR": str(tmp_path / "data"),
        "CHATAPP_STT_BASE_URL": speech.base_url,
        "CHATAPP_TTS_BASE_URL": speech.base_url,
        "LIVEKIT_SERVER_BIN": str(livekit_binary),
        "PORT": str(port),
        "LIVEKIT_PORT": str(free_port()),
        "LIVEKIT_UDP_PORT": str(free_udp_port()),
        "VOICE_DIR": str(voice_dir),
    }
    log = tmp_path / "make-voice.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["make", "--no-print-directory", "voice", f"PORT={port}"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    started = psutil.Process(proc.pid)
    try:
        await asyncio.to_thread(speech.wait_ready)
        app_url = f"http://127.0.0.1:{port}"
        await asyncio.to_thread(wait_until, lambda: answers(f"{app_url}/healthz"), "the app", proc, log)
        agent_log = voice_dir / "agent.log"
        registered = lambda: agent_log.exists() and "registered worker" in agent_log.read_text()  # noqa: E731
        await asyncio.to_thread(wait_until, registered, "the worker", proc, log)

        async with httpx.AsyncClient(base_url=app_url, headers={"X-Forwarded-For": client_ip()}, timeout=15) as c:
            await signup(c)
            match = PANEL.search((await c.get("/")).text)
            assert match, "the chat page is not in voice mode"
            conversation_id = uuid.UUID(match.group(1))
            person = Participant()
            await person.join(html.unescape(match.group(2)), html.unescape(match.group(3)))
            try:
                await stored_roles(conversation_id, ["agent"])  # the greeting, stored once it has been said
                while not person.agent_states or person.agent_states[-1][1] != "listening":
                    await asyncio.sleep(0.05)  # done speaking it (within the test's own timeout)
                spoken = await person.say(speech_pcm(SAID))
                await person.agent_speaks_after(spoken, TURN_WITHIN)
                await stored_roles(conversation_id, ["agent", "user", "agent"])
            finally:
                await person.leave()
        assert ("user", SAID) in [(role, text) for _, role, text in await utterance_texts(conversation_id)]
        config = yaml.safe_load((voice_dir / "livekit.yaml").read_text())
        [(key, secret)] = config["keys"].items()
        assert len(secret) >= 32  # no PyJWT warning, unlike --dev's "secret"
        assert config["bind_addresses"] == ["127.0.0.1"]
        async with api.LiveKitAPI(f"http://127.0.0.1:{config['port']}", key, secret) as lk:
            await lk.room.delete_room(api.DeleteRoomRequest(room=room_name_for(conversation_id)))
    finally:
        children = started.children(recursive=True)
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl+C in the terminal: the whole foreground group
        proc.wait(timeout=90)
        speech.stop()
    _, alive = psutil.wait_procs(children, timeout=30)
    assert alive == [], f"still running after Ctrl+C: {alive}"
    assert len(children) >= 3  # the LiveKit server, the app and the worker
