"""Helpers shared by the integration and browser tests: a real app process, signing up, form tokens."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
CSRF_INPUT = re.compile(r'name="_csrf_token" value="([^"]+)"')
PASSWORD = "correct horse battery staple"
SECRET_KEY = "test-secret-key-for-the-suite-only-0123456789"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class AppServer:
    """`chatapp serve` in a subprocess: the same command a person runs, against the test database."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @classmethod
    def start(
        cls, dsn: str, data_dir: Path, *, port: int | None = None, ready_timeout: float = 30.0, **env: str
    ) -> AppServer:
        """Start on `port` (a restart on the same address), or on a free one."""
        port = port or free_port()
        data_dir.mkdir(parents=True, exist_ok=True)
        log_path = data_dir / f"server-{port}.log"
        environment = {
            **os.environ,
            "DATABASE_URL": dsn,
            "CHATAPP_DATA_DIR": str(data_dir),
            "CHATAPP_TEST_FAULTS": "1",
            "CHATAPP_FORWARDED_ALLOW_IPS": "127.0.0.1",
            "CHATAPP_LOG_LEVEL": "warning",
            "CHATAPP_ENV_FILE": "/nonexistent",
            "CHATAPP_SECRET_KEY": SECRET_KEY,
            "CHATAPP_WORKERS": "1",  # one process per AppServer: its fault switches and agents are all in it
            **env,
        }
        log = log_path.open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "chatapp", "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        server = cls(url=f"http://127.0.0.1:{port}", process=process, log_path=log_path)
        try:
            server.wait_ready(ready_timeout)
        except RuntimeError:
            server.stop()
            raise
        return server

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"app server exited early:\n{self.log_path.read_text()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"app server did not become ready:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def unique_email() -> str:
    return f"user-{uuid.uuid4().hex[:12]}@example.com"


def client_ip() -> str:
    """A distinct client address per test (the server trusts X-Forwarded-For from 127.0.0.1)."""
    value = uuid.uuid4().int
    return f"10.{value % 250}.{(value >> 8) % 250}.{(value >> 16) % 250 + 1}"


def csrf_from(html: str) -> str:
    match = CSRF_INPUT.search(html)
    assert match, "page has no CSRF input"
    return match.group(1)


async def form_token(client: httpx.AsyncClient, path: str = "/login") -> str:
    response = await client.get(path)
    return csrf_from(response.text)


async def signup(client: httpx.AsyncClient, email: str | None = None, display_name: str = "Ada Traveller") -> str:
    """Sign up through the real form; the client keeps the login cookie. Returns the email."""
    email = email or unique_email()
    token = await form_token(client, "/signup")
    response = await client.post(
        "/signup",
        data={"_csrf_token": token, "email": email, "display_name": display_name, "password": PASSWORD},
    )
    assert response.status_code == 303, response.text
    return email
