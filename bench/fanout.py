"""Fan-out: live events delivered to SSE clients with 1, 2, 4 and 8 listening app processes on one PostgreSQL
(`CHATAPP_CHANNELS=postgres`, LISTEN/NOTIFY through Litestar's asyncpg backend) and on one Redis
(`CHATAPP_CHANNELS=redis`), with the CPU each delivered event cost.

Every app process receives every event, whichever of its tabs it is for, so each event costs each process a
decode and a routing step, and each stream a render: on a small machine the CPU, not the transport, is what runs
out. Each round holds one stream per process on each of the conversations and posts batches of agent finals
through the ingest API, spread over the processes, as fast as the processes take them (closed loop). Delivered =
SSE events with an id (a final) read from the streams; every event published must reach every stream (0 lost).
Baseline, same run: the bare transport with as many listening connections, in this one process (the app's
payload for one final, the app's one-round-trip batch statements: NOTIFY_MANY_SQL and PUBLISH_MANY_LUA).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg
import httpx

from bench.kit.cpu import CpuMeter
from bench.kit.http import HttpConnection, ingest_body
from bench.kit.machine import BenchEnv, env_float
from bench.kit.server import AppServer, cookie_header, free_port, ingest_auth, open_chat, signup
from bench.kit.tables import Report, Row, per_second, times, verdict

PROCESSES: Sequence[int] = (8, 4, 2, 1)  # measured from the most down, stopping processes between rounds
SECONDS = env_float("BENCH_FANOUT_SECONDS", 5.0)
BASELINE_SECONDS = env_float("BENCH_FANOUT_BASELINE_SECONDS", 2.0)
SENDERS = int(env_float("BENCH_FANOUT_SENDERS", 4))
BATCH = int(env_float("BENCH_FANOUT_BATCH", 10))
CONVERSATIONS = 2  # one user each (a user has one active conversation); a stream per process on each
DRAIN_SECONDS = 15.0
START_SECONDS = env_float("BENCH_FANOUT_START_SECONDS", 600.0)
UTTERANCE = "Could we spend two nights in Lisbon and then take the train up to Porto for the weekend?"
ID_LINE = b"\nid: "  # a final's SSE event carries its sequence number as the id; interims and states do not


@dataclass
class StreamCounter:
    """One SSE stream read raw (no parsing beyond counting finals), so the bench process keeps up."""

    server: AppServer
    path: str
    cookie: str
    after: int  # Last-Event-ID: the stream replays nothing older (earlier rounds' finals are not counted)
    finals: int = 0
    ended: bool = False
    task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        reader, writer = await asyncio.open_connection(self.server.host, self.server.port)
        writer.write(
            f"GET {self.path} HTTP/1.1\r\nHost: {self.server.host}:{self.server.port}\r\nCookie: {self.cookie}\r\n"
            f"Accept: text/event-stream\r\nLast-Event-ID: {self.after}\r\n\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"stream refused: {head[:200]!r}")
        self.task = asyncio.create_task(self._count(reader, writer))

    async def _count(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tail = b"\n"
        try:
            while chunk := await reader.read(65536):
                data = tail + chunk
                self.finals += data.count(ID_LINE)
                tail = data[-(len(ID_LINE) - 1) :]
        finally:
            self.ended = True
            writer.close()

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)


@dataclass
class Person:
    client: httpx.AsyncClient
    conversation: uuid.UUID


@dataclass
class Round:
    backend: str
    processes: int
    published: int
    delivered: int
    delivered_after_drain: int
    expected: int
    ended_streams: int
    duplicated: int  # finals a stream got beyond what was published for it
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.delivered / SECONDS

    @property
    def lost(self) -> int:
        return self.expected - self.delivered_after_drain

    def cpu_per_event_us(self, *parts: str) -> float:
        """CPU microseconds per delivered event of the named parts ("app": all the app processes)."""
        spent = sum(v for k, v in self.cpu.items() if (k.startswith("app") and "app" in parts) or k in parts)
        return spent / 100 * SECONDS / self.delivered * 1e6 if self.delivered else float("nan")

    def cpu_cell(self) -> str:
        total = self.cpu_per_event_us("app", "postgres", "redis")
        split = f"app {self.cpu_per_event_us('app'):.0f} + postgres {self.cpu_per_event_us('postgres'):.0f}"
        if self.backend == "redis":
            split += f" + redis {self.cpu_per_event_us('redis'):.0f}"
        return f"{total:.0f} µs CPU/event ({split})"


# --- the transports alone -----------------------------------------------------------------------------------------


def payload() -> bytes:
    """What the hub publishes for one final of the bench's text (its wire format)."""
    from chatapp.conversations.hub import encode
    from chatapp.conversations.live_events import Final

    event = Final(uuid.uuid4(), 12345, f"f-{uuid.uuid4().hex}", "agent", UTTERANCE, False, datetime.now(UTC))
    (one,) = encode(event)
    return one


async def bare_postgres(dsn: str, listeners: int) -> float:
    """NOTIFY_MANY_SQL batches from SENDERS connections to `listeners` LISTEN connections: deliveries per second."""
    from chatapp.conversations.hub import NOTIFY_MANY_SQL

    channel = f"bench_fanout_{uuid.uuid4().hex[:8]}"
    received = [0] * listeners
    conns = [await asyncpg.connect(dsn) for _ in range(listeners)]
    senders = [await asyncpg.connect(dsn) for _ in range(SENDERS)]
    try:
        for index, conn in enumerate(conns):

            def on_notify(*_: object, index: int = index) -> None:
                received[index] += 1

            await conn.add_listener(channel, on_notify)
        texts = [payload().decode()] * BATCH
        return await _bare_rate(received, lambda n: senders[n].execute(NOTIFY_MANY_SQL, channel, texts))
    finally:
        for conn in conns + senders:
            await conn.close()


async def bare_redis(url: str, listeners: int) -> float:
    """PUBLISH_MANY_LUA batches from SENDERS tasks to `listeners` subscriber connections: deliveries per second."""
    from redis.asyncio import Redis

    from chatapp.conversations.redis_channels import PUBLISH_MANY_LUA

    channel = f"bench_fanout_{uuid.uuid4().hex[:8]}"
    received = [0] * listeners
    redis = Redis.from_url(url)
    script = redis.register_script(PUBLISH_MANY_LUA)
    pubsubs = [redis.pubsub() for _ in range(listeners)]
    readers: list[asyncio.Task[None]] = []
    try:
        for index, pubsub in enumerate(pubsubs):
            await pubsub.subscribe(channel)

            async def read(pubsub: object = pubsub, index: int = index) -> None:
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)  # type: ignore[attr-defined]
                    if message is not None:
                        received[index] += 1

            readers.append(asyncio.create_task(read()))
        args = [payload()] * BATCH
        return await _bare_rate(received, lambda n: script(keys=[channel], args=args))
    finally:
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        for pubsub in pubsubs:
            await pubsub.aclose()  # type: ignore[no-untyped-call]
        await redis.aclose()


async def _bare_rate(received: list[int], send: object) -> float:
    stop = time.perf_counter() + BASELINE_SECONDS

    async def sender(n: int) -> None:
        while time.perf_counter() < stop:
            await send(n)  # type: ignore[operator]

    start_count, started = sum(received), time.perf_counter()
    await asyncio.gather(*(sender(n) for n in range(SENDERS)))
    return (sum(received) - start_count) / (time.perf_counter() - started)


# --- the app --------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def redis_server(env: BenchEnv) -> Iterator[tuple[str, int | None]]:
    """BENCH_REDIS_URL, or Debian's redis-server on a free loopback port for the run (url, its pid)."""
    if url := os.environ.get("BENCH_REDIS_URL", "").strip():
        yield url, None
        return
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is missing: apt-get install redis-server (or set BENCH_REDIS_URL)")
    port, folder = free_port(), env.new_dir("redis")
    argv = [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]
    process = subprocess.Popen([*argv, "--dir", str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0", process.pid
    finally:
        process.terminate()
        process.wait(timeout=10)


async def start_processes(env: BenchEnv, count: int, **app_env: str) -> list[AppServer]:
    """All at once (on a busy machine eight start-ups take minutes: the one deadline covers them all)."""
    servers = [AppServer.spawn(env.dsn, env.new_dir("app"), **app_env) for _ in range(count)]
    deadline = time.monotonic() + START_SECONDS
    try:
        for server in servers:
            await server.wait_ready(timeout=max(1.0, deadline - time.monotonic()))
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return servers


async def greeted(dsn: str, conversation: uuid.UUID) -> None:
    """The agent's greeting is stored, so the rounds count only the bench's finals."""
    conn = await asyncpg.connect(dsn)
    try:
        for _ in range(300):
            if await conn.fetchval("SELECT count(*) FROM utterance WHERE session = $1", conversation):
                await asyncio.sleep(1.0)  # its last words and state changes
                return
            await asyncio.sleep(0.1)
    finally:
        await conn.close()
    raise RuntimeError("the agent never greeted")


async def measure(
    backend: str, servers: list[AppServer], people: list[Person], meter_pids: dict[str, int], dsn: str
) -> Round:
    conn = await asyncpg.connect(dsn)
    try:
        last = {
            p.conversation: await conn.fetchval("SELECT max(seq) FROM utterance WHERE session = $1", p.conversation)
            for p in people
        }
    finally:
        await conn.close()
    streams = [
        StreamCounter(
            server, f"/conversations/{p.conversation}/stream", cookie_header(p.client), last[p.conversation] or 0
        )
        for server in servers
        for p in people
    ]
    for stream in streams:
        await stream.open()
    await asyncio.sleep(1.0)  # replays done
    base = [stream.finals for stream in streams]
    published = [0] * len(people)
    meter = CpuMeter({**{f"app{n}": s.pid for n, s in enumerate(servers)}, **meter_pids}, dsn)
    stop = time.perf_counter() + SECONDS

    async def sender(n: int) -> None:
        person, server = n % len(people), servers[n % len(servers)]
        auth = {"Authorization": ingest_auth(people[person].conversation)}
        http = HttpConnection(server.host, server.port)
        try:
            while time.perf_counter() < stop:
                batch = [
                    {"item_id": uuid.uuid4().hex, "role": "agent", "text": UTTERANCE, "final": True}
                    for _ in range(BATCH)
                ]
                status, body = await http.post_json(
                    f"/api/conversations/{people[person].conversation}/events", ingest_body(batch), auth
                )
                if status != 200:
                    raise RuntimeError(f"ingest answered {status}: {body[:200]!r}")
                published[person] += BATCH
        finally:
            await http.close()

    await meter.start()
    await asyncio.gather(*(sender(n) for n in range(SENDERS)))
    delivered = sum(stream.finals for stream in streams) - sum(base)
    cpu = await meter.stop()
    per_stream = [published[i % len(people)] for i in range(len(streams))]  # streams go server by server
    for _ in range(int(DRAIN_SECONDS * 10)):  # the streams catch up with what was published
        if not any(s.finals - b < want and not s.ended for s, b, want in zip(streams, base, per_stream, strict=True)):
            break
        await asyncio.sleep(0.1)
    got = [s.finals - b for s, b in zip(streams, base, strict=True)]
    after = sum(min(n, want) for n, want in zip(got, per_stream, strict=True))
    extra = sum(max(0, n - want) for n, want in zip(got, per_stream, strict=True))
    ended = sum(stream.ended for stream in streams)
    for stream in streams:
        await stream.close()
    return Round(backend, len(servers), sum(published), delivered, after, sum(per_stream), ended, extra, cpu)


async def run_backend(env: BenchEnv, backend: str, extra_pids: dict[str, int], **app_env: str) -> list[Round]:
    servers = await start_processes(env, max(PROCESSES), CHATAPP_CHANNELS=backend, CHATAPP_WORKERS="1", **app_env)
    rounds: list[Round] = []
    try:
        people = []
        for n in range(CONVERSATIONS):
            client = httpx.AsyncClient(base_url=servers[n % len(servers)].url, timeout=30.0)
            await signup(client, f"fanout-{backend}-{n}-{uuid.uuid4().hex[:8]}@example.com")
            people.append(Person(client, await open_chat(client)))
        for person in people:
            await greeted(env.dsn, person.conversation)
        for count in PROCESSES:
            for server in servers[count:]:
                server.stop()
            rounds.append(await measure(backend, servers[:count], people, extra_pids, env.dsn))
        for person in people:
            await person.client.aclose()
    finally:
        for server in servers:
            server.stop()
    return rounds


async def run(env: BenchEnv) -> Report:
    report = Report("Fan-out: live events delivered to SSE clients, by listening app processes")
    results: list[tuple[Round, float]] = []
    for backend in ("postgres", "redis"):
        if backend == "postgres":
            rounds = await run_backend(env, backend, {})
            bare = [await bare_postgres(env.dsn, r.processes * CONVERSATIONS) for r in rounds]
        else:
            with redis_server(env) as (url, pid):
                rounds = await run_backend(env, backend, {"redis": pid} if pid else {}, CHATAPP_REDIS_URL=url)
                bare = [await bare_redis(url, r.processes * CONVERSATIONS) for r in rounds]
        results += zip(rounds, bare, strict=True)
    for r, bare in sorted(results, key=lambda item: (item[0].processes, item[0].backend)):
        report.rows.append(
            Row(
                f"{r.backend}, {r.processes} process{'es' if r.processes > 1 else ''} "
                f"({r.processes * CONVERSATIONS} streams)",
                f"{per_second(r.rate)} delivered ({per_second(r.published / SECONDS)} published), {r.cpu_cell()}",
                f"bare {'NOTIFY' if r.backend == 'postgres' else 'PUBLISH'}: {per_second(bare)}",
                times(r.rate / bare),
                "0 lost, 0 twice",
                verdict(r.lost == 0 and r.ended_streams == 0 and r.duplicated == 0),
            )
        )
    for r, _ in results:
        report.notes.append(
            f"{r.backend}, {r.processes}: CPU {CpuMeter.describe(_summed(r.cpu))}"
            + (
                f"; lost {r.lost}, twice {r.duplicated}, streams ended {r.ended_streams}"
                if r.lost or r.ended_streams or r.duplicated
                else ""
            )
        )
    report.notes.append(
        f"{SENDERS} closed-loop senders, {BATCH} agent finals per ingest POST, spread over the processes; "
        f"{CONVERSATIONS} conversations with one stream per process each; {SECONDS:.0f} s per round. CPU/event = "
        "app processes + PostgreSQL (+ redis-server) CPU over the round / events delivered."
    )
    report.notes.append(
        "Baseline: the bare transport with the same number of listening connections, all in the bench process "
        f"(so it is bounded by one Python process), {BASELINE_SECONDS:.0f} s each."
    )
    return report


def _summed(cpu: dict[str, float]) -> dict[str, float]:
    """The app processes as one entry."""
    summed = {"app": sum(v for k, v in cpu.items() if k.startswith("app"))}
    summed.update({k: v for k, v in cpu.items() if not k.startswith("app")})
    return summed
