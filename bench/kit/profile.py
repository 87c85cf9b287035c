"""Where the app's CPU goes during one phase of a benchmark: py-spy on the app's processes, only when asked.

`BENCH_PYSPY_DIR=/tmp/prof python -m bench history` records each profiled phase of the first round (the app's
htmx lists, a search; in `live`, one-event ingest POSTs) with `py-spy record --subprocesses --format raw` into
that folder (needs `pip install py-spy` and ptrace rights: root, or kernel.yama.ptrace_scope = 0). Unset, nothing
is recorded and nothing is imported. `python -m bench.kit.profile FILE` summarises a recording: the functions
that take the most samples themselves, and the share of samples under each layer (uvicorn, Litestar's
middleware, Jinja, asyncpg, ...), workers only. py-spy sees Python frames: time in C code (uvloop's loop and
socket writes, asyncpg's Cython protocol) counts for the Python frame that called it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

PROFILE_DIR = os.environ.get("BENCH_PYSPY_DIR", "").strip()
RATE = 250  # samples per second per process: enough for a few seconds' phase, little overhead


@contextlib.asynccontextmanager
async def profiled(pid: int, name: str) -> AsyncIterator[None]:
    """Record `pid` and its children while the block runs, into BENCH_PYSPY_DIR/<name>.txt (a no-op unset)."""
    if not PROFILE_DIR:
        yield
        return
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    os.makedirs(PROFILE_DIR, exist_ok=True)
    process = await asyncio.create_subprocess_exec(
        py_spy,
        "record",
        "--pid",
        str(pid),
        "--subprocesses",
        "--rate",
        str(RATE),
        "--format",
        "raw",
        "--nonblocking",
        "--output",
        os.path.join(PROFILE_DIR, f"{name}.txt"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    await asyncio.sleep(1.0)  # py-spy attaches to every process first
    try:
        yield
    finally:
        process.send_signal(signal.SIGINT)  # py-spy writes its file on Ctrl-C
        await process.wait()


# Layers, by the first frame of a stack that matches (most specific first): what each sample was busy with.
LAYERS = (
    ("jinja2 (templates)", ("jinja2/", "templates/", "markupsafe")),
    ("asyncpg / piccolo (database client)", ("asyncpg/", "piccolo/")),
    ("msgspec / json (encoding)", ("msgspec", "json/")),
    ("chatapp code", ("chatapp/",)),
    ("litestar middleware", ("litestar/middleware", "prometheus", "litestar/plugins")),
    ("litestar routing, DI, request/response", ("litestar/",)),
    ("uvicorn / httptools (HTTP)", ("uvicorn/", "httptools")),
    ("event loop (uvloop, asyncio)", ("uvloop", "asyncio/")),
)


def summarise(path: Path, top: int = 25) -> str:
    """Each layer's share of the samples, by the layer of the innermost frame that has one (self) and by any
    frame in the stack (inclusive), then the busiest frames themselves."""
    own: Counter[str] = Counter()
    self_layers: Counter[str] = Counter()
    under: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not frames or any(f.startswith("run_workers (") for f in frames):
            continue  # the supervisor process, which only watches the workers
        total += count
        own[frames[-1]] += count
        found = [layer for layer, marks in LAYERS if any(m in frame for frame in frames for m in marks)]
        under.update(dict.fromkeys(found, count))
        innermost = next(
            (layer for frame in reversed(frames) for layer, marks in LAYERS if any(m in frame for m in marks)),
            "other",
        )
        self_layers[innermost] += count
    if not total:
        return f"{path.name}: no samples"
    lines = [f"{path.name}: {total:,} samples; layer: self / inclusive"]
    for layer, n in self_layers.most_common():
        lines.append(f"  {100 * n / total:5.1f}% / {100 * under.get(layer, 0) / total:5.1f}%  {layer}")
    lines.append("  busiest frames (self):")
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in own.most_common(top)]
    return "\n".join(lines)


if __name__ == "__main__":
    for name in sys.argv[1:]:
        print(summarise(Path(name)))
