"""Debian's redis-server for the tests of `CHATAPP_CHANNELS=redis`: loopback only, nothing saved to disk."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import free_port


def redis_server_binary() -> str:
    """Debian's redis-server (`make deploy-deps` installs it); the tests need it, so its absence is a failure."""
    found = shutil.which("redis-server")
    if found is None:
        pytest.fail("redis-server is missing: run `make deploy-deps` (apt-get install -y redis-server)")
    return found


@dataclass
class RedisServer:
    """One redis-server process on a port of its own; stop() and start() again on the same port (an outage)."""

    bind: str
    port: int
    work_dir: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.bind}:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        command = [
            redis_server_binary(),
            "--bind", self.bind, "--port", str(self.port), "--save", "", "--appendonly", "no",
            "--dir", str(self.work_dir), "--protected-mode", "no", "--daemonize", "no",
        ]  # fmt: skip
        log = (self.work_dir / "redis.log").open("ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError((self.work_dir / "redis.log").read_text())
            with socket.socket() as sock:
                if sock.connect_ex((self.bind, self.port)) == 0:
                    return self
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()  # as a crash or a host lost: no goodbye to the subscribers
            self.process.wait()
        self.process = None

    def command_calls(self, name: str) -> int:
        """How many times the server ran `name` (INFO commandstats), through redis-cli."""
        out = subprocess.run(
            ["redis-cli", "-h", self.bind, "-p", str(self.port), "INFO", "commandstats"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        for line in out.splitlines():
            if line.startswith(f"cmdstat_{name}:"):
                return int(line.split("calls=")[1].split(",")[0])
        return 0


def start_redis(work_dir: Path, bind: str = "127.0.0.1") -> RedisServer:
    return RedisServer(bind=bind, port=free_port(), work_dir=work_dir).start()
