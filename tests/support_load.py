"""Watching a running server from outside while something heavy happens to it: the longest wait of a small
request made every 10 ms, and the peak memory (RSS) of the server process.

The watcher is a process of its own (`python -m tests.support_load`), so nothing the test process does (building
a 20 MB upload, parsing responses) can delay its requests and be mistaken for a stall of the server. With
`new_connections` every request opens a new TCP connection (so the kernel picks a worker each time), and with
`kill_pid` the watcher sends SIGKILL to that process between two of its own requests, after `kill_after`
seconds: no request of its own is in flight on the killed process, so every wait or failure it sees afterwards
is the server's doing.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
MIB = 1024 * 1024


@dataclass
class Watched:
    """What the watcher saw: every request's wait (seconds), failures (their error names), memory (bytes)."""

    waits: list[float]
    failures: list[str]
    baseline_rss: int
    peak_rss: int
    killed_at: float | None = None  # seconds after the start, when `kill_pid` was killed
    waits_after_kill: list[float] = field(default_factory=list)

    @property
    def longest_wait(self) -> float:
        return max(self.waits, default=0.0)

    @property
    def extra_mib(self) -> float:
        return (self.peak_rss - self.baseline_rss) / MIB

    def summary(self) -> str:
        return (
            f"{len(self.waits)} requests, longest wait {self.longest_wait * 1000:.0f} ms "
            f"(p99 {sorted(self.waits)[int(len(self.waits) * 0.99)] * 1000:.0f} ms), "
            f"{len(self.failures)} failed, server RSS {self.baseline_rss / MIB:.0f} -> peak "
            f"{self.peak_rss / MIB:.0f} MiB (+{self.extra_mib:.0f})"
        )


class Watcher:
    """`with Watcher(url, pid) as watcher: ...` then `watcher.result`; the baseline RSS is taken at the start."""

    def __init__(
        self,
        url: str,
        pid: int,
        *,
        path: str = "/healthz",
        interval: float = 0.01,
        new_connections: bool = False,
        kill_pid: int | None = None,
        kill_after: float = 1.0,
    ) -> None:
        self.args = {
            "url": url,
            "pid": pid,
            "path": path,
            "interval": interval,
            "new_connections": new_connections,
            "kill_pid": kill_pid,
            "kill_after": kill_after,
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.result: Watched | None = None

    def __enter__(self) -> Watcher:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.support_load", json.dumps(self.args)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.process.stdout is not None
        assert self.process.stdout.readline() == b"watching\n"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.process is not None
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(b"stop\n")
        self.process.stdin.flush()
        out = self.process.stdout.read()
        self.process.wait(timeout=30)
        self.result = Watched(**json.loads(out))


def _rss(process: psutil.Process) -> int:
    try:
        return int(process.memory_info().rss)
    except psutil.Error:
        return 0


def _watch(url: str, pid: int, path: str, interval: float, new_connections: bool, kill_pid: int | None,
           kill_after: float) -> None:  # fmt: skip
    server = psutil.Process(pid)
    baseline = _rss(server)
    peak = [baseline]
    done = threading.Event()

    def sample() -> None:  # on its own: a stalled request must not stop the sampling
        while not done.wait(0.005):
            peak[0] = max(peak[0], _rss(server))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    waits: list[float] = []
    waits_after_kill: list[float] = []
    failures: list[str] = []
    killed_at: float | None = None
    limits = httpx.Limits(max_keepalive_connections=0) if new_connections else httpx.Limits()
    headers = {"connection": "close"} if new_connections else {}
    started = time.monotonic()
    print("watching", flush=True)
    with httpx.Client(base_url=url, timeout=60.0, limits=limits, headers=headers) as client:
        while not select.select([sys.stdin], [], [], 0)[0]:
            if kill_pid is not None and killed_at is None and time.monotonic() - started >= kill_after:
                os.kill(kill_pid, signal.SIGKILL)  # between two requests: none of ours is on it
                killed_at = time.monotonic() - started
            begin = time.monotonic()
            try:
                client.get(path)
            except httpx.HTTPError as exc:
                failures.append(type(exc).__name__)
            wait = time.monotonic() - begin
            waits.append(wait)
            if killed_at is not None:
                waits_after_kill.append(wait)
            time.sleep(max(0.0, interval - wait))
    done.set()
    sampler.join()
    sys.stdin.readline()
    result = Watched(waits, failures, baseline, peak[0], killed_at, waits_after_kill)
    sys.stdout.write(json.dumps(result.__dict__))


if __name__ == "__main__":
    _watch(**json.loads(sys.argv[1]))
