"""The real voice stack for the voice tests: a LiveKit server binary (found, or reported missing with how to get
one), a loopback-only server config, the processes (`livekit-server --dev`, the speech fake, the `chatapp agent`
worker started as the README tells a user), a person in a room (the `livekit` rtc SDK), and the network checks
that show no packet left loopback.

Where the binary comes from: LIVEKIT_SERVER_BIN, else `livekit-server` on PATH, else the per-user build cache
that `make livekit` fills (`go install` of LIVEKIT_VERSION). Without one the voice tests skip with one line;
under CI=true they fail instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import pytest
from livekit import api, rtc

from chatapp.conversations.agent_access import room_name_for
from tests.fakes.openai_chat import FakeOpenAI
from tests.fakes.speech import synthesize
from tests.support import ROOT, AppServer, client_ip, free_port, signup, utterance_texts

LIVEKIT_VERSION = "v1.13.5"
API_KEY = "voice-test-key"
API_SECRET = "voice-test-secret-long-enough-for-hs256-0123456789"  # PyJWT warns below 32 bytes
AGENT_NAME = "voice-test-agent"
HOW_TO_GET = (
    f"no LiveKit server: run `make livekit` (builds {LIVEKIT_VERSION} with Go 1.26+), "
    "or set LIVEKIT_SERVER_BIN to a livekit-server binary"
)
READY = 60.0  # seconds a process may take to start on a busy 2-core machine
TURN_WITHIN = 30.0  # seconds for one turn; ~1-3 s alone, far more when the 2 cores are busy
# scripts/loopback-only's namespace: loopback and a veth pair with both ends inside and no route anywhere.
SEALED_INTERFACES = {"lo", "sink0", "sink1"}


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


# ---- the server binary ----


def cache_dir() -> Path:
    """Where `make livekit` builds the server: one per user and version, shared by every clone."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "chatapp" / "livekit-server" / LIVEKIT_VERSION


def find_server() -> Path | None:
    """The LiveKit server binary to test against, or None."""
    if named := os.environ.get("LIVEKIT_SERVER_BIN", "").strip():
        path = Path(named)
        return path if path.is_file() and os.access(path, os.X_OK) else None
    if on_path := shutil.which("livekit-server"):
        return Path(on_path)
    built = cache_dir() / "server"
    return built if built.is_file() and os.access(built, os.X_OK) else None


def require_server() -> Path:
    """The binary; else skip with how to get one (a failure under CI=true, where a skip would hide it)."""
    if (found := find_server()) is not None:
        return found
    if in_ci():
        pytest.fail(HOW_TO_GET, pytrace=False)
    pytest.skip(HOW_TO_GET)


def server_config(http_port: int, udp_port: int, webhook_urls: list[str]) -> dict[str, object]:
    """`livekit-server --dev --config` on loopback only: signalling and API bound to 127.0.0.1, all WebRTC media
    muxed over one loopback UDP port, no TCP fallback (it binds every interface), only `lo` offered as an ICE
    candidate, a dummy STUN server (else it hands clients public ones), and webhooks signed with our key.
    Rooms are only made by the app's API calls: with auto_create on, an agent or browser joining a room New
    Chat has just deleted would make it again, and the agent would sit in it until its empty timeout."""
    config: dict[str, object] = {
        "port": http_port,
        "bind_addresses": ["127.0.0.1"],
        "rtc": {
            "udp_port": udp_port,
            "tcp_port": 0,
            "node_ip": "127.0.0.1",
            "use_external_ip": False,
            "enable_loopback_candidate": True,
            "interfaces": {"includes": ["lo"]},
            "stun_servers": ["127.0.0.1:3478"],
        },
        "keys": {API_KEY: API_SECRET},
        "agents": {"target_load": 1.0},  # the worker reports jobs/max, so dispatch until it is full
        "room": {"auto_create": False},  # rooms are the app's: a join never re-creates a deleted one
        "logging": {"level": "info"},
    }
    if webhook_urls:
        config["webhook"] = {"api_key": API_KEY, "urls": webhook_urls}
    return config


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---- the network: proof that nothing left loopback ----


def interfaces() -> list[str]:
    """This process's network namespace's interfaces (/sys/class/net would show the host's)."""
    return sorted(name for _, name in socket.if_nameindex())


def sealed() -> bool:
    """True inside scripts/loopback-only's namespace: no interface but loopback and the veth pair it made, and
    no IPv4 route at all (the main table is empty; local addresses live in the local table)."""
    routes = Path("/proc/self/net/route").read_text().splitlines()[1:]
    return set(interfaces()) <= SEALED_INTERFACES and not routes


def transmitted() -> dict[str, tuple[int, int]]:
    """(bytes, packets) each interface of this namespace has sent so far."""
    counts: dict[str, tuple[int, int]] = {}
    for line in Path("/proc/self/net/dev").read_text().splitlines()[2:]:
        name, data = line.split(":", 1)
        fields = data.split()
        counts[name.strip()] = (int(fields[8]), int(fields[9]))
    return counts


def udp_datagrams_sent() -> int:
    """UDP datagrams this namespace has sent so far (WebRTC media is UDP here: the server has no TCP port)."""
    lines = [line.split() for line in Path("/proc/self/net/snmp").read_text().splitlines() if line.startswith("Udp:")]
    header, values = lines[0], lines[1]
    return int(values[header.index("OutDatagrams")])


@dataclass
class NetworkWitness:
    """What was sent on this namespace's network since `start()`."""

    sealed: bool
    packets_before: dict[str, int]
    udp_before: int

    @classmethod
    def start(cls) -> NetworkWitness:
        return cls(sealed(), {name: packets for name, (_, packets) in transmitted().items()}, udp_datagrams_sent())

    def packets_sent(self) -> dict[str, int]:
        """Packets sent per interface since start."""
        return {name: packets - self.packets_before.get(name, 0) for name, (_, packets) in transmitted().items()}

    def udp_sent(self) -> int:
        return udp_datagrams_sent() - self.udp_before


def off_loopback_peers(pids: list[int]) -> list[str]:
    """Every inet socket of these processes (and their children) connected to a peer off loopback. ICE's UDP
    sockets are unconnected (no peer to see): only a sealed namespace proves where their packets went."""
    found: list[str] = []
    for pid in pids:
        try:
            root = psutil.Process(pid)
            processes = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for process in processes:
            try:
                connections = process.net_connections(kind="inet")
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            found += [
                f"{process.name()}[{process.pid}] {c.laddr} -> {c.raddr}"
                for c in connections
                if c.raddr and not _loopback(c.raddr.ip)
            ]
    return found


def _loopback(ip: str) -> bool:
    return ip.startswith("127.") or ip in {"::1", "::ffff:127.0.0.1"}


# ---- processes ----


@dataclass
class Process:
    """A child process writing to a log file in the test's directory."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    launched_at: float = field(default_factory=time.monotonic)
    started_in: float = 0.0  # seconds from launch to ready

    @classmethod
    def launch(cls, name: str, argv: list[str], log_path: Path, env: dict[str, str]) -> Process:
        with log_path.open("ab") as log:
            process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        return cls(name=name, process=process, log_path=log_path)

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_until(self, ready: Callable[[], bool], timeout: float = READY) -> None:
        """Poll `ready()` until true; stop the process and fail with its log when it exits or times out."""
        while not ready():
            problem = ""
            if self.process.poll() is not None:
                problem = f"exited early ({self.process.returncode})"
            elif time.monotonic() - self.launched_at > timeout:
                problem = f"not ready after {timeout:.0f} s"
            if problem:
                self.stop()
                raise RuntimeError(f"{self.name} {problem}:\n{self.log()[-4000:]}")
            time.sleep(0.05)
        self.started_in = time.monotonic() - self.launched_at

    def stop(self, timeout: float = 15.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _server_env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/")}


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class LiveKitServer:
    """`livekit-server --dev --config <loopback config>` on free ports."""

    proc: Process
    http_port: int
    udp_port: int
    api_key: str = API_KEY
    api_secret: str = API_SECRET

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.http_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @classmethod
    def start(cls, binary: Path, work_dir: Path, webhook_urls: list[str] | None = None) -> LiveKitServer:
        http_port, udp_port = free_port(), free_udp_port()
        config = work_dir / "livekit.yaml"
        config.write_text(json.dumps(server_config(http_port, udp_port, webhook_urls or []), indent=2))  # YAML
        argv = [str(binary), "--dev", "--config", str(config)]
        server = cls(
            Process.launch("livekit-server", argv, work_dir / "livekit.log", _server_env()), http_port, udp_port
        )
        server.proc.wait_until(lambda: _answers(server.http_url))  # "/" answers OK once it serves
        return server

    def crash(self) -> None:
        """SIGKILL it: every room, participant and dispatch is gone (a dev server keeps them in memory only)."""
        self.proc.process.kill()
        self.proc.process.wait()

    def start_again(self) -> None:
        """The same binary and config on the same ports, ready to serve (after `crash`)."""
        argv = [str(arg) for arg in self.proc.process.args]  # type: ignore[union-attr]
        with self.proc.log_path.open("a") as log:
            log.write("---- started again ----\n")
        self.proc = Process.launch("livekit-server", argv, self.proc.log_path, _server_env())
        self.proc.wait_until(lambda: _answers(self.http_url))

    def api(self) -> api.LiveKitAPI:
        return api.LiveKitAPI(self.http_url, self.api_key, self.api_secret)

    async def delete_room(self, name: str) -> None:
        async with self.api() as lk:
            await lk.room.delete_room(api.DeleteRoomRequest(room=name))

    async def room_names(self) -> list[str]:
        async with self.api() as lk:
            return [room.name for room in (await lk.room.list_rooms(api.ListRoomsRequest())).rooms]

    async def dispatches(self, room: str) -> list[api.AgentDispatch]:
        """The agent dispatches the server holds for `room`."""
        async with self.api() as lk:
            return list(await lk.agent_dispatch.list_dispatch(room))

    async def wait_room_gone(self, room: str, timeout: float = TURN_WITHIN) -> None:
        deadline = time.monotonic() + timeout
        while room in await self.room_names():
            assert time.monotonic() < deadline, f"room {room} is still on the server"
            await asyncio.sleep(0.1)

    async def published_sources(self, room: str, identity: str) -> list[int]:
        """The sources of the tracks the server has for `identity` in `room`."""
        async with self.api() as lk:
            found = await lk.room.get_participant(api.RoomParticipantIdentity(room=room, identity=identity))
        return [track.source for track in found.tracks]

    async def close_rooms(self) -> list[str]:
        """Delete every room (which ends their agents' jobs); returns their names."""
        async with self.api() as lk:
            rooms = (await lk.room.list_rooms(api.ListRoomsRequest())).rooms
            for room in rooms:
                await lk.room.delete_room(api.DeleteRoomRequest(room=room.name))
        return [room.name for room in rooms]

    def stop(self) -> None:
        self.proc.stop()


@dataclass
class SpeechFake:
    """tests/fakes/speech.py in a process of its own (recognition is CPU-bound)."""

    proc: Process
    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @classmethod
    def launch(cls, work_dir: Path, phrases: list[str]) -> SpeechFake:
        """Start it without waiting (`wait_ready()`), so other processes can start meanwhile."""
        port = free_port()
        argv = [sys.executable, "-m", "tests.fakes.speech", "--port", str(port)]
        for phrase in phrases:
            argv += ["--phrase", phrase]
        return cls(Process.launch("speech fake", argv, work_dir / "speech.log", dict(os.environ)), port)

    def wait_ready(self) -> None:
        self.proc.wait_until(lambda: _answers(f"http://127.0.0.1:{self.port}/healthz"))

    @classmethod
    @contextlib.contextmanager
    def running(cls, work_dir: Path, phrases: list[str]) -> Iterator[SpeechFake]:
        """Started and ready, stopped afterwards (a fixture's whole life)."""
        fake = cls.launch(work_dir, phrases)
        try:
            fake.wait_ready()
            yield fake
        finally:
            fake.stop()

    def requests(self) -> list[dict[str, Any]]:
        """What it was asked so far: kind (speech/transcription), text, ms, audio_seconds."""
        found: list[dict[str, Any]] = httpx.get(f"{self.base_url}/_requests", timeout=5.0).json()
        return found

    def stop(self) -> None:
        self.proc.stop()


def worker_env(livekit: LiveKitServer, speech: SpeechFake, work_dir: Path, **extra: str) -> dict[str, str]:
    """The environment a user gives `chatapp agent` (README, "Voice with LiveKit"): turns end on the VAD's silence;
    and for a small shared machine:
    its load is its share of 4 conversations, not the machine's CPU (which the browser, the server and other
    work share, and which LiveKit checks before every dispatch), one warm job process, and the health check
    on loopback at any free port."""
    return {
        **os.environ,
        "CHATAPP_ENV_FILE": "/nonexistent",
        "CHATAPP_DATA_DIR": str(work_dir / "worker"),
        "CHATAPP_SECRET_KEY": "the-worker-signs-nothing-but-needs-a-key-0123",
        "CHATAPP_LOG_LEVEL": "info",
        "LIVEKIT_URL": livekit.url,
        "LIVEKIT_API_KEY": livekit.api_key,
        "LIVEKIT_API_SECRET": livekit.api_secret,
        "CHATAPP_AGENT_NAME": AGENT_NAME,
        "CHATAPP_STT_BASE_URL": speech.base_url,
        "CHATAPP_TTS_BASE_URL": speech.base_url,
        "CHATAPP_TURN_DETECTION": "vad",
        "CHATAPP_AGENT_MAX_JOBS": "4",
        "CHATAPP_AGENT_IDLE_PROCESSES": "1",
        "CHATAPP_AGENT_HEALTH_HOST": "127.0.0.1",
        "CHATAPP_AGENT_HEALTH_PORT": "0",
        **extra,
    }


@dataclass
class AgentWorker:
    """`chatapp agent` (production mode, as a user runs it), ready once LiveKit registered it."""

    proc: Process
    env: dict[str, str] = field(default_factory=dict)  # what it was started with, to relaunch it

    @classmethod
    def launch(cls, work_dir: Path, env: dict[str, str]) -> AgentWorker:
        """Start it without waiting (`wait_registered()`), so other processes can start meanwhile."""
        argv = [sys.executable, "-m", "chatapp", "agent"]
        return cls(Process.launch("chatapp agent", argv, work_dir / "agent.log", env), env)

    def kill_9(self) -> list[int]:
        """SIGKILL the worker and its job processes at once (a crash, an OOM kill of its container): nothing
        of it gets to run another line. Returns the pids killed."""
        root = psutil.Process(self.proc.pid)
        victims = [root, *root.children(recursive=True)]
        for victim in victims:
            with contextlib.suppress(psutil.NoSuchProcess):
                victim.send_signal(signal.SIGKILL)
        psutil.wait_procs(victims, timeout=10)
        self.proc.process.wait()
        return [victim.pid for victim in victims]

    def relaunched(self) -> AgentWorker:
        """A new worker with the same settings, logging to the same file (wait_registered() before use)."""
        argv = [sys.executable, "-m", "chatapp", "agent"]
        with self.proc.log_path.open("a") as log:
            log.write("---- relaunched ----\n")
        return AgentWorker(Process.launch("chatapp agent", argv, self.proc.log_path, self.env), self.env)

    def wait_registered_again(self) -> None:
        """wait_registered for a relaunched worker (the log above the relaunch mark is the old one's)."""
        self.proc.wait_until(lambda: "registered worker" in self.proc.log().rsplit("---- relaunched ----", 1)[-1])

    def wait_registered(self) -> None:
        self.proc.wait_until(lambda: "registered worker" in self.proc.log())

    def registrations(self) -> int:
        """How often it has registered with LiveKit so far (once more after each server restart)."""
        return self.proc.log().count("registered worker")

    async def wait_registrations(self, count: int, timeout: float = READY) -> None:
        deadline = time.monotonic() + timeout
        while self.registrations() < count:
            assert time.monotonic() < deadline, "the worker did not register with LiveKit again"
            await asyncio.sleep(0.1)

    def job_ended(self, conversation_id: uuid.UUID) -> str:
        """The worker's log line for the end of this conversation's job ('' while it runs)."""
        marker = f"conversation {conversation_id} job ended"
        return next((line for line in self.proc.log().splitlines() if marker in line), "")

    async def wait_job_ended(self, conversation_id: uuid.UUID, timeout: float = TURN_WITHIN, jobs: int = 1) -> str:
        """Wait until the job (or the conversation's first `jobs` jobs) has ended, its final reconciliation
        posted; returns the last one's log line."""
        deadline = time.monotonic() + timeout
        marker = f"conversation {conversation_id} job ended"
        while len(lines := [line for line in self.proc.log().splitlines() if marker in line]) < jobs:
            assert time.monotonic() < deadline, f"the job of conversation {conversation_id} did not end"
            await asyncio.sleep(0.05)
        return lines[jobs - 1]

    def stop(self) -> None:
        self.proc.stop(timeout=70.0)  # it lets running jobs finish first


@dataclass
class Ingested:
    """One ingest request the worker made, as the app answered it."""

    conversation_id: str
    status: int
    events: list[dict[str, Any]]


class IngestRecorder:
    """A recording proxy between the agent worker and the app's ingest endpoint (the app's CHATAPP_INGEST_URL):
    what the worker posted and what the app answered, so a test knows which events were acknowledged (2xx).
    Threads of its own, so it answers whatever the test's event loop is doing."""

    def __init__(self, app_url: str) -> None:
        self.app_url = app_url
        self.requests: list[Ingested] = []
        self._lock = threading.Lock()
        self._client = httpx.Client(timeout=30.0)
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() in {"authorization", "content-type"}}
                try:
                    answer = recorder._client.post(recorder.app_url + self.path, content=body, headers=headers)
                    status, content = answer.status_code, answer.content
                except httpx.HTTPError:
                    status, content = 502, b"{}"
                recorder._record(self.path, status, body)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="ingest-recorder", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def _record(self, path: str, status: int, body: bytes) -> None:
        match = re.search(r"/api/conversations/([0-9a-f-]{36})/events", path)
        try:
            events = list(json.loads(body).get("events") or [])
        except (ValueError, AttributeError):
            events = []
        with self._lock:
            self.requests.append(Ingested(match.group(1) if match else "", status, events))

    def acknowledged(self, conversation_id: uuid.UUID) -> list[dict[str, Any]]:
        """The events of the conversation the app answered 2xx for, in the order posted."""
        with self._lock:
            found = [r for r in self.requests if r.conversation_id == str(conversation_id) and 200 <= r.status < 300]
        return [event for request in found for event in request.events]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._client.close()


@dataclass
class VoiceStack:
    """Everything a voice test talks to, all on loopback."""

    livekit: LiveKitServer
    speech: SpeechFake
    llm: FakeOpenAI
    app: AppServer
    worker: AgentWorker
    network: NetworkWitness
    ingest: IngestRecorder | None = None  # set when the app's CHATAPP_INGEST_URL points through it
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def pids(self) -> list[int]:
        return [self.livekit.proc.pid, self.speech.proc.pid, self.app.process.pid, self.worker.proc.pid, os.getpid()]

    def assert_nothing_left_loopback(self) -> None:
        """No socket of the stack (or of this test process) has a peer off loopback; in the sealed namespace
        also: nothing but loopback carried a packet (the media went over lo, the veth pair sent nothing)."""
        assert off_loopback_peers(self.pids) == []
        if self.network.sealed:
            sent = self.network.packets_sent()
            beyond = {name: n for name, n in sent.items() if name != "lo" and n}
            assert beyond == {}, f"packets sent on interfaces other than lo: {beyond}"
            assert self.network.udp_sent() > 200  # the media (50 packets a second each way) went: over lo


# ---- a person in the room, through the livekit rtc SDK ----

MIC_RATE = 48000  # what a browser's microphone track carries
FRAME_MS = 10
FRAME_SAMPLES = MIC_RATE * FRAME_MS // 1000
LOUD = 500  # RMS of an s16 frame above which the agent is audibly speaking (silence is 0)
QUIET = 64  # |sample| below which espeak's output is silence


def silence(seconds: float, rate: int = MIC_RATE) -> bytes:
    return b"\0\0" * int(rate * seconds)


def speech_pcm(text: str, lead_silence: float = 1.0, rate: int = MIC_RATE) -> bytes:
    """`text` spoken by espeak-ng as s16le mono PCM at the microphone's rate, after some silence (a person
    pauses before answering) and cut where the voice ends (espeak pads ~0.3 s), so the end of the audio is the
    end of speech that latencies are measured from."""
    samples = np.frombuffer(synthesize(text, rate), dtype=np.int16)
    voiced = np.flatnonzero(np.abs(samples) > QUIET)
    return silence(lead_silence, rate) + samples[: voiced[-1] + 1 if voiced.size else 0].tobytes()


class Participant:
    """A person in a LiveKit room: an always-open microphone (silence unless `say()` queued speech, so the
    agent's VAD hears each turn end), and what arrives from the agent: its audio frames (the loud ones' arrival
    times) and its `lk.transcription` text streams."""

    def __init__(self) -> None:
        self.room = rtc.Room()
        self.source = rtc.AudioSource(MIC_RATE, 1, queue_size_ms=100)
        self._pending = bytearray()
        self._spoken = asyncio.Event()
        self.speech_ended_at = 0.0  # monotonic time the last speech frame was played out
        self.agent_frames = 0
        self.loud_frames: list[float] = []
        self.agent_states: list[tuple[float, str]] = []  # (monotonic time, lk.agent.state) as they changed
        self.audio_tracks: list[str] = []  # identities of the participants whose audio we subscribed
        self.transcriptions: list[tuple[str, dict[str, str], str]] = []  # (identity, attributes, text)
        self._tasks: set[asyncio.Task[None]] = set()

    async def join(self, url: str, token: str) -> None:
        """Join with the token the app handed out and publish the microphone (the only source it allows)."""
        self.room.on("track_subscribed", self._subscribed)
        self.room.on("participant_attributes_changed", self._attributes)
        self.room.register_text_stream_handler("lk.transcription", self._on_text)
        await self.room.connect(url, token)
        track = rtc.LocalAudioTrack.create_audio_track("microphone", self.source)
        options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        await self.room.local_participant.publish_track(track, options)
        self._spawn(self._microphone())

    def _subscribed(self, track: rtc.Track, _pub: rtc.RemoteTrackPublication, who: rtc.RemoteParticipant) -> None:
        if track.kind == rtc.TrackKind.KIND_AUDIO:
            self.audio_tracks.append(who.identity)
            self._spawn(self._listen(track))

    def _attributes(self, changed: dict[str, str], who: rtc.Participant) -> None:
        if state := changed.get("lk.agent.state"):
            self.agent_states.append((time.monotonic(), state))

    def _on_text(self, reader: rtc.TextStreamReader, identity: str) -> None:
        self._spawn(self._read_text(reader, identity))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _microphone(self) -> None:
        size = FRAME_SAMPLES * 2
        quiet = silence(FRAME_MS / 1000)
        while True:
            chunk = bytes(self._pending[:size])
            del self._pending[:size]
            frame = rtc.AudioFrame(chunk.ljust(size, b"\0") if chunk else quiet, MIC_RATE, 1, FRAME_SAMPLES)
            await self.source.capture_frame(frame)
            if chunk and not self._pending:
                self.speech_ended_at = time.monotonic() + self.source.queued_duration
                self._spoken.set()

    async def say(self, pcm: bytes) -> float:
        """Speak `pcm` (s16le mono 48 kHz) into the microphone; returns once its last frame is played out,
        with that moment (monotonic)."""
        self._spoken.clear()
        self._pending += pcm
        await self._spoken.wait()
        await asyncio.sleep(max(0.0, self.speech_ended_at - time.monotonic()))
        return self.speech_ended_at

    async def agent_state(self, state: str, after: float, timeout: float) -> float:
        """Wait until the agent's `lk.agent.state` became `state` after `after`; returns when it did."""
        deadline = time.monotonic() + timeout
        while (seen := next((t for t, s in self.agent_states if s == state and t > after), None)) is None:
            assert time.monotonic() < deadline, f"the agent never became {state} (states: {self.agent_states})"
            await asyncio.sleep(0.02)
        return seen

    def loud_after(self, moment: float) -> float | None:
        """When the first loud agent frame after `moment` arrived."""
        return next((t for t in self.loud_frames if t > moment), None)

    async def agent_speaks_after(self, moment: float, timeout: float) -> float:
        """Wait for the agent's voice (a loud frame) after `moment`; returns when it arrived."""
        deadline = time.monotonic() + timeout
        while (heard := self.loud_after(moment)) is None:
            assert time.monotonic() < deadline, "the agent's voice never arrived"
            await asyncio.sleep(0.02)
        return heard

    async def _listen(self, track: rtc.Track) -> None:
        async for event in rtc.AudioStream(track):
            self.agent_frames += 1
            samples = np.frombuffer(event.frame.data, dtype=np.int16).astype(np.float64)
            if samples.size and float(np.sqrt(np.mean(samples * samples))) > LOUD:
                self.loud_frames.append(time.monotonic())

    async def _read_text(self, reader: rtc.TextStreamReader, identity: str) -> None:
        text = await reader.read_all()
        self.transcriptions.append((identity, dict(reader.info.attributes or {}), text))

    async def leave(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.room.disconnect()
        await self.source.aclose()


# ---- a signed-up person in their conversation's room ----

_PANEL = {
    "conversation": re.compile(r'id="chat-panel"[^>]*data-conversation-id="([0-9a-f-]{36})"'),
    "url": re.compile(r'data-livekit-url="([^"]+)"'),
    "token": re.compile(r'data-livekit-token="([^"]+)"'),
}


@dataclass
class InRoom:
    """A person signed up in the app (`client`), their active conversation and them in its LiveKit room."""

    client: httpx.AsyncClient
    conversation_id: uuid.UUID
    person: Participant
    joined_at: float

    async def agent_finals(self, count: int, timeout: float = TURN_WITHIN) -> None:
        """Wait until the conversation has `count` agent finals stored."""
        deadline = time.monotonic() + timeout
        while sum(role == "agent" for _, role, _ in await utterance_texts(self.conversation_id)) < count:
            assert time.monotonic() < deadline, f"fewer than {count} agent finals stored"
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def in_a_room(voice: VoiceStack, *, close: bool = True) -> AsyncIterator[InRoom]:
    """Sign up, open the chat page and join its room with the URL and token the page hands out; wait until the
    agent has greeted (stored) and stopped speaking. On the way out leave, and unless `close` is false delete
    the room as New Chat would and wait for the job to end (its shutdown reconciliation posted): the agent
    stays in a room its person left, so rooms would pile up."""
    async with httpx.AsyncClient(base_url=voice.app.url, headers={"X-Forwarded-For": client_ip()}, timeout=15) as c:
        await signup(c)
        page = (await c.get("/")).text
        found = {name: html.unescape(m.group(1)) if (m := rx.search(page)) else "" for name, rx in _PANEL.items()}
        assert found["url"], "the chat page hands out no LiveKit URL"
        assert found["token"], "the chat page hands out no LiveKit token"
        person = Participant()
        began = time.monotonic()
        await person.join(found["url"], found["token"])
        voice.timings["participant_join"] = time.monotonic() - began
        room = InRoom(c, uuid.UUID(found["conversation"]), person, began)
        try:
            await room.agent_finals(1)  # the greeting
            voice.timings["greeting_stored_after_join"] = time.monotonic() - began
            await person.agent_state("listening", began, TURN_WITHIN)
            yield room
        finally:
            await person.leave()
            if close:
                await voice.livekit.delete_room(room_name_for(room.conversation_id))
        if close:
            await voice.worker.wait_job_ended(room.conversation_id)
