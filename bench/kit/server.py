"""The app under test: `chatapp serve` in its own process, and a person's first steps in it (sign up, log in,
open the chat, the ingest token)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.kit.machine import ROOT, SECRET_KEY, BenchEnv, chatapp_env

PASSWORD = "correct horse battery staple"
CSRF_INPUT = re.compile(r'name="_csrf_token" value="([^"]+)"')
CHAT_PANEL_ID = re.compile(r'id="chat-panel"[^>]*data-conversation-id="([0-9a-f-]{36})"')
LOG_TAIL_CHARS = 4000
SERVE = ("chatapp", "serve")


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
    def spawn(cls, dsn: str, data_dir: Path, command: Sequence[str] = SERVE, **env: str) -> AppServer:
        """Start the process without waiting for it (a fraction of a millisecond). `command` is what follows
        `python -m`: `chatapp serve`, or another server that takes --host and --port (the bench's floor)."""
        port = free_port()
        data_dir.mkdir(parents=True, exist_ok=True)
        log_path = data_dir / f"server-{port}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", *command, "--host", "127.0.0.1", "--port", str(port)],
                cwd=ROOT,
                env=chatapp_env(dsn, data_dir, **env),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return cls(f"http://127.0.0.1:{port}", "127.0.0.1", port, process, log_path)

    @classmethod
    async def start(cls, dsn: str, data_dir: Path, command: Sequence[str] = SERVE, **env: str) -> AppServer:
        server = cls.spawn(dsn, data_dir, command, **env)
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
async def running_app(env: BenchEnv, command: Sequence[str] = SERVE, **app_env: str) -> AsyncIterator[AppServer]:
    """An app process for one benchmark (`chatapp serve` unless `command` says otherwise), always stopped
    afterwards; its log is shown if the benchmark fails."""
    server = await AppServer.start(env.dsn, env.new_dir("app"), command, **app_env)
    try:
        yield server
    except Exception:
        print(f"--- app server log (last {LOG_TAIL_CHARS} characters) ---\n{server.log_tail()}", file=sys.stderr)
        raise
    finally:
        server.stop()


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
