"""CPU meters: the app's process tree, PostgreSQL's backends and the rest of the machine, over one measurement."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path

import asyncpg


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


def machine_busy() -> float | None:
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
        sample["machine"] = machine_busy()
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
