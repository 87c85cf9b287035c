"""Spoken turns through a real LiveKit server and the real `chatapp agent` worker, with the local speech server
(espeak-ng speaks, pocketsphinx listens) and the OpenAI-compatible chat fake answering "Okay.".

Measured from the person's last audio frame (a `livekit` rtc participant, on this process's clock):
(i) the user's final on the conversation's SSE stream, (ii) the agent's first audible audio frame at the
participant, (iii) the agent's final on SSE. Baseline in the same run, interleaved turn by turn: the same worker
code with transcript forwarding switched off (CHATAPP_AGENT_FORWARD_TRANSCRIPTS=false, its own worker and app), so
(ii) shows what forwarding costs the voice. For (i) and (iii), when the agent emitted the final as the participant
sees it through LiveKit: the user's, when the agent's `lk.transcription` stream for it closed; the agent's, when
the agent's state turned back to listening (livekit-agents adds the spoken reply to the conversation, our
forwarder's cue, just before). SSE minus that is what our forwarding, ingest and stream add; LiveKit's own hop
to the participant is inside the emission time, so the difference leans slightly in our favour.

Needs a LiveKit server (`make livekit`), espeak-ng and sox (`make speech-tools`); run it sealed as root
(`scripts/loopback-only .venv/bin/python -m bench voice`) so that no media can leave loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import math
import re
import statistics
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
from httpx_sse import aconnect_sse
from livekit import rtc
from tests.fakes.openai_chat import fake_openai
from tests.support_livekit import (
    AgentWorker,
    LiveKitServer,
    Participant,
    SpeechFake,
    find_server,
    speech_pcm,
    worker_env,
)

from bench.kit.machine import BenchEnv, env_float
from bench.kit.server import running_app, signup
from bench.kit.tables import Report, Row, ms, times, verdict
from bench.kit.timing import percentile

TURNS = int(env_float("BENCH_VOICE_TURNS", 20))  # per variant; the targets want medians over at least 20
TURN_TIMEOUT = 45.0
PHRASES = ["plan a trip to lisbon", "what is the weather like", "book a hotel in rome"]
ADDED_TARGET = 0.05  # forwarding adds at most 5% to (ii)
SSE_TARGET = 0.050  # (i) and (iii) reach SSE within 50 ms of the agent emitting them
PANEL = re.compile(
    r'data-conversation-id="([0-9a-f-]{36})"[\s\S]*?data-livekit-url="([^"]+)"[\s\S]*?data-livekit-token="([^"]+)"'
)
FINAL = re.compile(r'data-role="(user|agent)"[^>]*data-final="true"|data-final="true"[^>]*data-role="(user|agent)"')


class TimedParticipant(Participant):
    """A participant that notes when each final `lk.transcription` stream closed, as (time, user?, text)."""

    def __init__(self) -> None:
        super().__init__()
        self.finals: list[tuple[float, bool, str]] = []
        self.mic_sids: set[str] = set()

    async def join(self, url: str, token: str) -> None:
        await super().join(url, token)
        self.mic_sids = set(self.room.local_participant.track_publications)

    async def _read_text(self, reader: rtc.TextStreamReader, identity: str) -> None:
        text = await reader.read_all()
        attributes = dict(reader.info.attributes or {})
        if attributes.get("lk.transcription_final") == "true":
            user = attributes.get("lk.transcribed_track_id", "") in self.mic_sids
            self.finals.append((time.monotonic(), user, text))

    def final_after(self, moment: float, user: bool) -> float | None:
        return next((t for t, u, _ in self.finals if t > moment and u == user), None)


@dataclass
class SseWatch:
    """The conversation's SSE stream: when each final (by role) arrived."""

    finals: list[tuple[float, str]] = field(default_factory=list)

    def after(self, moment: float, role: str) -> float | None:
        return next((t for t, r in self.finals if t > moment and r == role), None)


@dataclass
class Side:
    """One variant: a signed-up person in their conversation's room, and (forwarding on) its SSE stream."""

    name: str
    person: TimedParticipant
    sse: SseWatch | None
    first_audio: list[float] = field(default_factory=list)  # (ii)
    user_sse: list[float] = field(default_factory=list)  # (i)
    agent_sse: list[float] = field(default_factory=list)  # (iii)
    user_emitted: list[float] = field(default_factory=list)
    agent_emitted: list[float] = field(default_factory=list)
    user_lag: list[float] = field(default_factory=list)  # SSE minus emission
    agent_lag: list[float] = field(default_factory=list)


async def wait_for(check: object, what: str, timeout: float = TURN_TIMEOUT) -> float:
    deadline = time.monotonic() + timeout
    while (found := check()) is None:  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.005)
    return float(found)


async def quiet(person: TimedParticipant) -> None:
    """Until the agent is listening again (the previous reply fully spoken)."""
    await wait_for(
        lambda: True if person.agent_states and person.agent_states[-1][1] == "listening" else None, "listening"
    )
    await asyncio.sleep(0.3)


async def turn(side: Side, phrase: str) -> None:
    person = side.person
    await quiet(person)
    spoken = await person.say(speech_pcm(phrase, lead_silence=0.3))
    heard = await person.agent_speaks_after(spoken, TURN_TIMEOUT)
    side.first_audio.append(heard - spoken)
    user_emit = await wait_for(lambda: person.final_after(spoken, True), "user transcription")
    # The agent's reply is final once it has been spoken: livekit-agents then adds it to the conversation (our
    # forwarder's cue) and turns the agent's state to listening, which is the moment seen here.
    agent_emit = await person.agent_state("listening", heard, TURN_TIMEOUT)
    side.user_emitted.append(user_emit - spoken)
    side.agent_emitted.append(agent_emit - spoken)
    if side.sse is not None:
        sse = side.sse
        user_at = await wait_for(lambda: sse.after(spoken, "user"), "user final on SSE")
        agent_at = await wait_for(lambda: sse.after(spoken, "agent"), "agent final on SSE")
        side.user_sse.append(user_at - spoken)
        side.agent_sse.append(agent_at - spoken)
        side.user_lag.append(user_at - user_emit)
        side.agent_lag.append(agent_at - agent_emit)


async def watch_sse(client: httpx.AsyncClient, conversation_id: uuid.UUID, watch: SseWatch) -> None:
    async with aconnect_sse(client, "GET", f"/conversations/{conversation_id}/stream") as source:
        async for event in source.aiter_sse():
            if event.event == "message" and (match := FINAL.search(event.data)):
                watch.finals.append((time.monotonic(), match.group(1) or match.group(2)))


@contextlib.asynccontextmanager
async def in_room(name: str, app_url: str, sse: bool) -> AsyncIterator[Side]:
    async with httpx.AsyncClient(base_url=app_url, timeout=httpx.Timeout(15, read=None)) as client:
        await signup(client, f"voice-{name}-{uuid.uuid4().hex[:8]}@example.com")
        match = PANEL.search((await client.get("/")).text)
        if not match:
            raise RuntimeError(f"the {name} app's chat page is not in voice mode")
        conversation_id = uuid.UUID(match.group(1))
        watch = SseWatch() if sse else None
        reader = asyncio.create_task(watch_sse(client, conversation_id, watch)) if watch else None
        person = TimedParticipant()
        await person.join(html.unescape(match.group(2)), html.unescape(match.group(3)))
        try:
            await wait_for(lambda: person.final_after(0.0, False), "the greeting", 60.0)
            yield Side(name, person, watch)
        finally:
            await person.leave()
            if reader:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await reader


def median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


async def run(env: BenchEnv) -> Report:
    binary = find_server()
    if binary is None:
        raise RuntimeError("no LiveKit server: run `make livekit` (Go 1.26+) or set LIVEKIT_SERVER_BIN")
    work = env.new_dir("voice")
    livekit = LiveKitServer.start(binary, work)
    speech = SpeechFake.launch(work, PHRASES)
    workers: list[AgentWorker] = []
    try:
        async with fake_openai() as llm:
            speech_env = {"CHATAPP_LLM_BASE_URL": llm.base_url, "CHATAPP_AGENT_IDLE_PROCESSES": "1"}
            for name, forward in (("forwarding", "true"), ("baseline", "false")):
                (work / name).mkdir()
                extra = {
                    **speech_env,
                    "CHATAPP_AGENT_NAME": f"bench-{name}",
                    "CHATAPP_AGENT_FORWARD_TRANSCRIPTS": forward,
                }
                workers.append(AgentWorker.launch(work / name, worker_env(livekit, speech, work / name, **extra)))
            lk = {
                "CHATAPP_WORKERS": "1",  # one process each: its agents and streams all in it
                "LIVEKIT_URL": livekit.url,
                "LIVEKIT_API_KEY": livekit.api_key,
                "LIVEKIT_API_SECRET": livekit.api_secret,
            }
            async with (
                running_app(env, **lk, CHATAPP_AGENT_NAME="bench-forwarding") as app_on,
                running_app(env, **lk, CHATAPP_AGENT_NAME="bench-baseline") as app_off,
            ):
                await asyncio.to_thread(speech.wait_ready)
                for worker in workers:
                    await asyncio.to_thread(worker.wait_registered)
                async with (
                    in_room("forwarding", app_on.url, True) as on,
                    in_room("baseline", app_off.url, False) as off,
                ):
                    for index in range(TURNS):
                        phrase = PHRASES[index % len(PHRASES)]
                        order = (on, off) if index % 2 == 0 else (off, on)  # neither always goes first
                        for side in order:
                            await turn(side, phrase)
                await livekit.close_rooms()
    finally:
        for worker in workers:
            worker.stop()
        speech.stop()
        livekit.stop()
    return report(on, off)


def report(on: Side, off: Side) -> Report:
    ii_on, ii_off = median(on.first_audio), median(off.first_audio)
    added = ii_on / ii_off - 1 if ii_off else math.nan
    user_lag, agent_lag = median(on.user_lag), median(on.agent_lag)
    rows = [
        Row(
            "(i) last audio frame → user's final on SSE",
            ms(median(on.user_sse)),
            f"{ms(median(off.user_emitted))} (emitted, baseline)",
        ),
        Row(
            "(i) SSE after the agent emitted it",
            ms(user_lag),
            "—",
            target=f"≤ {SSE_TARGET * 1000:.0f} ms",
            met=verdict(user_lag <= SSE_TARGET),
        ),
        Row(
            "(ii) last audio frame → agent's first audio frame",
            ms(ii_on),
            ms(ii_off),
            times(ii_on / ii_off if ii_off else math.nan),
            f"≤ +{ADDED_TARGET:.0%}",
            verdict(added <= ADDED_TARGET),
        ),
        Row(
            "(iii) last audio frame → agent's final on SSE",
            ms(median(on.agent_sse)),
            f"{ms(median(off.agent_emitted))} (emitted, baseline)",
        ),
        Row(
            "(iii) SSE after the agent emitted it",
            ms(agent_lag),
            "—",
            target=f"≤ {SSE_TARGET * 1000:.0f} ms",
            met=verdict(agent_lag <= SSE_TARGET),
        ),
    ]
    notes = [
        f"medians over {len(on.first_audio)} spoken turns with forwarding and {len(off.first_audio)} without, "
        "interleaved turn by turn (alternating which goes first); real LiveKit server on loopback, two "
        "`chatapp agent` workers (forwarding on / CHATAPP_AGENT_FORWARD_TRANSCRIPTS=false) and two app processes",
        f"(ii) forwarding adds {added:+.1%} (p90 {ms(percentile(on.first_audio, 90))} vs "
        f"{ms(percentile(off.first_audio, 90))})",
        "emitted: the user's final when its lk.transcription stream closed at the participant, the agent's when "
        "its state turned back to listening (its reply spoken and added to the conversation)",
    ]
    return Report("voice: spoken turns through LiveKit (forwarding vs. none)", rows, notes)
