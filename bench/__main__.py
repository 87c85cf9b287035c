"""`python -m bench [name ...]`: run the benchmarks (all by default) and print one markdown table each.

Benchmarks are not timed tests: each one prints its numbers beside a baseline measured in the same run, and the
table says whether the target was met. The exit status is non-zero only when a benchmark could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from bench import fanout, history, live, newchat, streams, voice
from bench.kit.machine import BenchEnv, bench_database, machine_facts, migrate
from bench.kit.tables import Report, format_report

Benchmark = Callable[[BenchEnv], Awaitable[Report]]

# name -> benchmark; each starts its own app process against the run's shared, freshly migrated database.
BENCHMARKS: dict[str, Benchmark] = {
    "live": live.run,
    "newchat": newchat.run,
    "history": history.run,
    "streams": streams.run,
    "history-analytics": history.run_analytics,
    "fanout": fanout.run,
    "voice": voice.run,
}
# Run only when named: voice needs a LiveKit server, espeak-ng and sox (make livekit speech-tools).
ON_REQUEST = {"voice"}


async def run_benchmarks(env: BenchEnv, names: Sequence[str]) -> int:
    print("# chatapp benchmarks\n")
    for fact in await machine_facts(env.dsn):
        print(f"- {fact}")
    print(f"- database: {'fresh embedded PostgreSQL (deleted afterwards)' if env.embedded else 'BENCH_DATABASE_URL'}")
    print(flush=True)
    failures = 0
    for name in names:
        started = time.perf_counter()
        try:
            report = await BENCHMARKS[name](env)
        except Exception:
            failures += 1
            print(f"## {name}\n\nFAILED after {time.perf_counter() - started:.1f} s:\n", flush=True)
            traceback.print_exc()
            print()
            continue
        print(format_report(report))
        print(f"\n({name} took {time.perf_counter() - started:.0f} s)\n", flush=True)
    return 1 if failures else 0


async def _stoppable(coro: Coroutine[Any, Any, int]) -> int:
    """SIGTERM cancels the run like Ctrl-C does, so the app process and the database are still cleaned up."""
    task = asyncio.current_task()
    if task is not None:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await coro


def _run(coro: Coroutine[Any, Any, int]) -> int:
    """On uvloop when installed (as the app's uvicorn is), so the client side adds as little delay as it can."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(_stoppable(coro))
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_stoppable(coro))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument(
        "names",
        nargs="*",
        metavar="name",
        help=f"benchmarks to run (default all but {', '.join(sorted(ON_REQUEST))}: {', '.join(BENCHMARKS)})",
    )
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(BENCHMARKS))
        return 0
    unknown = [name for name in args.names if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    names = args.names or [name for name in BENCHMARKS if name not in ON_REQUEST]
    try:
        import httpx_sse  # noqa: F401
    except ImportError:
        print("python -m bench needs httpx-sse: pip install -e '.[test]'", file=sys.stderr)
        return 2
    try:
        with (
            tempfile.TemporaryDirectory(prefix="chatapp-bench-") as tmp,
            bench_database(Path(tmp)) as (dsn, server_log),
        ):
            migrate(dsn, Path(tmp) / "migrate")
            return _run(run_benchmarks(BenchEnv(dsn, Path(tmp), server_log), names))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("\ninterrupted; the app process and the benchmark database were stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
