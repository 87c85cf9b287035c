"""`chatapp agent`: the LiveKit agent worker. It registers under CHATAPP_AGENT_NAME and is dispatched
explicitly, one job per conversation room, by the app's LiveKit runtime.

Each job runs the same `TravelAgent` as the in-process runtime, with speech-to-text, the language model and
text-to-speech from settings (OpenAI-compatible endpoints; Silero VAD, whose model ships in its wheel), and
reports the transcript to the app through a `TranscriptForwarder` posting to the ingest endpoint named in the
dispatch metadata. Without STT/TTS settings the agent still answers typed text (`lk.chat`) in text.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from typing import Any

from livekit.agents import (
    AgentServer,
    AgentSession,
    JobContext,
    JobProcess,
    TurnHandlingOptions,
    room_io,
    stt,
    tts,
    vad,
)
from livekit.agents.types import NOT_GIVEN
from livekit.plugins import openai

from chatapp.agents.models import build_llm
from chatapp.agents.product import TravelAgent, greeting_instructions
from chatapp.conversations.agent_runtime import ConversationInfo
from chatapp.core.logfilters import keep_transcripts_out
from chatapp.core.settings import Settings, get_settings
from chatapp.livekit.forwarder import TranscriptForwarder
from chatapp.livekit.metadata import BadMetadata, DispatchMetadata

log = logging.getLogger(__name__)

# After a room is deleted the job gets this long to post its last reconciliation before it is killed.
FORWARD_DRAIN_TIMEOUT = 45.0
SHUTDOWN_PROCESS_TIMEOUT = 60.0
_NO_KEY = "not-needed"  # local OpenAI-compatible servers need no key, but the OpenAI client insists on one


def speech_configured(settings: Settings) -> bool:
    """Voice needs both an STT and a TTS endpoint (a base URL, or an API key for OpenAI itself)."""
    return settings.stt_configured and settings.tts_configured


def build_stt(settings: Settings) -> stt.STT[Any]:
    return openai.STT(
        model=settings.stt_model,
        language=settings.stt_language,
        base_url=settings.stt_base_url or NOT_GIVEN,
        api_key=settings.stt_api_key or _NO_KEY,
        use_realtime=False,
    )


def build_tts(settings: Settings) -> tts.TTS[Any]:
    return openai.TTS(
        model=settings.tts_model,
        voice=settings.tts_voice,
        base_url=settings.tts_base_url or NOT_GIVEN,
        api_key=settings.tts_api_key or _NO_KEY,
    )


def load_vad() -> vad.VAD:
    from livekit.plugins import silero

    return silero.VAD.load()


def turn_handling(settings: Settings) -> TurnHandlingOptions:
    """`vad`: the turn ends after the VAD's silence (and the endpointing delay). `model` (the default) leaves
    livekit-agents' end-of-turn model in charge: local in production, LiveKit Cloud's with --dev; it may hold a
    turn it thinks unfinished for up to 3 s."""
    return TurnHandlingOptions(turn_detection="vad") if settings.turn_detection == "vad" else TurnHandlingOptions()


def build_session(settings: Settings, voice_activity: vad.VAD | None) -> AgentSession[None]:
    if not speech_configured(settings):
        return AgentSession(llm=build_llm(settings), user_away_timeout=None)
    return AgentSession(
        stt=build_stt(settings),
        llm=build_llm(settings),
        tts=build_tts(settings),
        vad=voice_activity or load_vad(),
        turn_handling=turn_handling(settings),
        user_away_timeout=None,
    )


def room_options(settings: Settings, forwarder: TranscriptForwarder | None, identity: str) -> room_io.RoomOptions:
    """Audio in and out when speech is configured; typed text always (its item id noted by the forwarder, so
    text the browser also posted to the app is stored once). The agent stays when the person's browser
    disconnects (a reload): the room's deletion, not a departure, ends the job. No forwarder: the bench's
    baseline, livekit-agents' own room I/O alone."""
    speech = speech_configured(settings)
    if forwarder is None:
        text_input, text_output = room_io.TextInputOptions(), room_io.TextOutputOptions()
    else:
        text_input = room_io.TextInputOptions(text_input_cb=forwarder.text_input_cb)
        text_output = room_io.TextOutputOptions(next_in_chain=forwarder.text_output())
    return room_io.RoomOptions(
        text_input=text_input,
        audio_input=speech,
        audio_output=speech,
        text_output=text_output,
        participant_identity=identity or NOT_GIVEN,
        close_on_disconnect=False,
    )


def prewarm(proc: JobProcess) -> None:
    """Load the VAD model once per job process, before any job is assigned to it."""
    if speech_configured(get_settings()):
        proc.userdata["vad"] = load_vad()


async def entrypoint(ctx: JobContext) -> None:
    """One conversation: join its room, run the agent, forward the transcript, reconcile on shutdown."""
    settings = get_settings()
    try:
        meta = DispatchMetadata.from_json(ctx.job.metadata)
    except BadMetadata as exc:
        log.error("refusing a job for room %s: %s", ctx.job.room.name, exc)
        ctx.shutdown("bad dispatch metadata")
        return
    forwarder = TranscriptForwarder(meta.ingest_url, meta.ingest_token, conversation_id=meta.conversation_id)
    forwarding = settings.agent_forward_transcripts
    if forwarding:
        forwarder.start()
    info = ConversationInfo(
        id=meta.conversation_id,
        room_name=ctx.job.room.name,
        system_prompt=meta.system_prompt,
        user_display_name=meta.user_name,
        history=meta.history,
    )
    agent = TravelAgent.for_conversation(info)
    forwarder.ignore(item.id for item in agent.chat_ctx.items)
    session = build_session(settings, ctx.proc.userdata.get("vad"))
    if forwarding:
        forwarder.attach(session)

    async def finish(reason: str) -> None:
        with contextlib.suppress(Exception):
            await session.aclose()  # commits a reply that was cut off, so the history below has it
        if forwarding:
            await forwarder.aclose(history=list(session.history.items), timeout=FORWARD_DRAIN_TIMEOUT)
        log.info(
            "conversation %s job ended (%s): %d event(s) delivered, %d dropped",
            meta.conversation_id,
            reason,
            forwarder.delivered,
            forwarder.dropped,
        )

    ctx.add_shutdown_callback(finish)
    await ctx.connect()
    leave_a_room_made_again(ctx, str(meta.conversation_id))
    options = room_options(settings, forwarder if forwarding else None, meta.user_identity)
    await session.start(agent, room=ctx.room, room_options=options)
    if not meta.history:
        session.generate_reply(instructions=greeting_instructions(meta.user_name))
    elif meta.answer_last and meta.history[-1][0] == "user":  # typed while the room had no agent: answer it
        session.generate_reply()


def leave_a_room_made_again(ctx: JobContext, conversation_id: str) -> None:
    """End the job when its room is replaced by a new one of the same name. A self-hosted LiveKit server that
    restarts forgets its rooms; the app then opens the room again (same name, new sid) with a fresh dispatch,
    and the SDK of this job, still reconnecting, would join that room too: two agents answering every turn."""
    dispatched = ctx.job.room.sid
    if not dispatched:  # nothing to tell a new room by
        return
    checks: set[asyncio.Task[None]] = set()

    async def check() -> None:
        await asyncio.sleep(0.5)  # the new room's info arrives around the reconnection
        sid = ctx.room.isconnected() and await ctx.room.sid
        if sid and sid != dispatched:
            log.warning(
                "conversation %s: its room was opened again; this job ends, the new one has its agent", conversation_id
            )
            ctx.shutdown("room opened again")

    def soon(*_: Any) -> None:
        task = asyncio.ensure_future(check())
        checks.add(task)
        task.add_done_callback(checks.discard)

    ctx.room.on("reconnected", soon)
    ctx.room.on("room_updated", soon)


def job_count_load(max_jobs: int) -> Callable[[AgentServer], float]:
    """The worker's load as its share of `max_jobs` conversations. livekit-agents' default is the whole
    machine's CPU, which the worker reports to LiveKit, and the LiveKit server sends no job to a worker above
    its `agents.target_load` (0.7): on a machine shared with other work, dispatch then stops at random."""

    def load(server: AgentServer) -> float:
        return min(1.0, len(server.active_jobs) / max_jobs)

    return load


def capacity_options(settings: Settings) -> dict[str, Any]:
    """The operator's capacity and health-check settings for AgentServer; unset ones keep livekit-agents'
    defaults, whose production values (full above 70% CPU, a warm process per core, the health check on
    every interface at 8081) starve a small shared machine and expose a port."""
    options: dict[str, Any] = {"host": settings.agent_health_host}
    if settings.agent_max_jobs is not None:
        options["load_fnc"] = job_count_load(settings.agent_max_jobs)
        options["load_threshold"] = 1.0  # full at max_jobs
    if settings.agent_load_threshold is not None:
        options["load_threshold"] = settings.agent_load_threshold
    if settings.agent_idle_processes is not None:
        options["num_idle_processes"] = settings.agent_idle_processes
    if settings.agent_health_port is not None:
        options["port"] = settings.agent_health_port
    return options


def build_server(settings: Settings) -> AgentServer:
    server = AgentServer(
        ws_url=settings.livekit_url,
        api_key=settings.livekit_api_key,
        api_secret=settings.livekit_api_secret,
        setup_fnc=prewarm,
        shutdown_process_timeout=SHUTDOWN_PROCESS_TIMEOUT,
        **capacity_options(settings),
    )
    server.rtc_session(entrypoint, agent_name=settings.agent_name)
    return server


def run_worker(settings: Settings, *, dev: bool = False) -> int:
    """Run until SIGINT/SIGTERM, then let running conversations finish (a second signal stops at once).
    Returns the exit status: 1 when the worker itself failed (LiveKit unreachable, bad credentials)."""
    keep_transcripts_out(settings.log_level)  # livekit-agents logs what people say at DEBUG
    return asyncio.run(_serve(build_server(settings), dev))


async def _serve(server: AgentServer, dev: bool) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        stop.set()
        if signals > 1:
            running.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    running: asyncio.Task[Any] = asyncio.create_task(server.run(devmode=dev))
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    log.info("agent worker stopping")
    draining = asyncio.create_task(server.drain())
    await asyncio.wait({draining, running}, return_when=asyncio.FIRST_COMPLETED)
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await server.aclose()
    failed = running.done() and not running.cancelled() and running.exception() is not None
    if failed:
        log.error("agent worker failed: %s", type(running.exception()).__name__)
    for task in (draining, running):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    return 1 if failed else 0
