"""Load for the history benchmarks: closed-loop HTTP and bare-SQL load, page checks, the cursor chain to the
deep page, and EXPLAIN summaries."""

from __future__ import annotations

import asyncio
import html
import json
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import asyncpg

from bench.history.config import DEEP_PAGE, HX, ITEM_ID, LOAD_MORE
from bench.kit.cpu import CpuMeter
from bench.kit.http import HttpConnection, HttpReply
from bench.kit.server import AppServer
from bench.kit.timing import percentile
from chatapp.history.service import PAGE_SIZE


@dataclass(frozen=True)
class HttpCall:
    """One kind of request and how to tell a right answer from a wrong one ("" when right)."""

    name: str
    path: str
    headers: Mapping[str, str]
    check: Callable[[bytes], str]


@dataclass
class Load:
    """Latencies per call name from one phase, its errors, and where the CPU went meanwhile."""

    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    requests: int = 0
    elapsed: float = math.nan
    cpu: dict[str, float] = field(default_factory=dict)
    warmup: int = 0  # unmeasured requests sent first

    def p(self, name: str, pct: float) -> float:
        return percentile(self.latencies.get(name, []), pct)

    def cpu_per_request(self, name: str) -> float:
        """Seconds of CPU the process group `name` spent per measured request."""
        return self.cpu.get(name, math.nan) / 100 * self.elapsed / self.requests if self.requests else math.nan


async def closed_loop(
    workers: int, total: int, one: Callable[[int, int], Awaitable[tuple[int, float, str]]], meter: CpuMeter
) -> tuple[list[tuple[int, float, str]], float, dict[str, float]]:
    """`workers` loops that each send their next request as soon as the last one is answered, until `total`
    requests are done. `one(worker, index)` returns (index, seconds, problem)."""
    counter = iter(range(total))
    results: list[tuple[int, float, str]] = []

    async def worker(w: int) -> None:
        for index in counter:
            results.append(await one(w, index))

    await meter.start()
    started = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(workers)))
    elapsed = time.perf_counter() - started
    return results, elapsed, await meter.stop()


async def http_load(
    app: AppServer, cookies: Sequence[str], calls: Sequence[HttpCall], per_call: int, workers: int, dsn: str | None
) -> Load:
    """`per_call` requests of each call, interleaved, from `workers` keep-alive connections, each with its own
    login session (as separate tabs or devices would have); a short unmeasured warm-up first."""
    connections = [HttpConnection(app.host, app.port) for _ in range(workers)]

    async def one(w: int, index: int) -> tuple[int, float, str]:
        call = calls[index % len(calls)]
        headers = {**call.headers, "Cookie": cookies[w % len(cookies)]}
        started = time.perf_counter()
        try:
            reply = await connections[w].request("GET", call.path, None, headers)
        except (OSError, asyncio.IncompleteReadError) as exc:
            return index, time.perf_counter() - started, f"{call.name}: {type(exc).__name__}"
        elapsed = time.perf_counter() - started
        if reply.status != 200:
            return index, elapsed, f"{call.name}: HTTP {reply.status} {reply.body[:200]!r}"
        problem = call.check(reply.body)
        return index, elapsed, f"{call.name}: {problem}" if problem else ""

    warmup = workers * len(calls) * 2
    try:
        await closed_loop(workers, warmup, one, CpuMeter({}))
        results, elapsed, cpu = await closed_loop(workers, per_call * len(calls), one, CpuMeter({"app": app.pid}, dsn))
    finally:
        for connection in connections:
            await connection.close()
    load = Load(requests=len(results), elapsed=elapsed, cpu=cpu, warmup=warmup)
    for index, seconds, problem in results:
        load.latencies.setdefault(calls[index % len(calls)].name, []).append(seconds)
        if problem:
            load.errors.append(problem)
    return load


SqlRun = Callable[[asyncpg.Connection], Awaitable[Any]]


@dataclass(frozen=True)
class SqlCall:
    name: str
    run: SqlRun


async def sql_load(
    conns: Sequence[asyncpg.Connection], calls: Sequence[SqlCall], per_call: int, dsn: str | None
) -> Load:
    """The baseline: the same statements straight through asyncpg, one connection per worker, same interleaving."""

    async def one(w: int, index: int) -> tuple[int, float, str]:
        started = time.perf_counter()
        await calls[index % len(calls)].run(conns[w])
        return index, time.perf_counter() - started, ""

    await closed_loop(len(conns), len(conns) * len(calls) * 2, one, CpuMeter({}))
    results, elapsed, cpu = await closed_loop(len(conns), per_call * len(calls), one, CpuMeter({}, dsn))
    load = Load(requests=len(results), elapsed=elapsed, cpu=cpu)
    for index, seconds, _ in results:
        load.latencies.setdefault(calls[index % len(calls)].name, []).append(seconds)
    return load


def rows_check(expected: int) -> Callable[[bytes], str]:
    def check(body: bytes) -> str:
        found = body.count(b'data-testid="history-item"')
        return "" if found == expected else f"{found} rows, expected {expected}"

    return check


def json_check(expected: int) -> Callable[[bytes], str]:
    def check(body: bytes) -> str:
        found = len(json.loads(body)["items"])
        return "" if found == expected else f"{found} items, expected {expected}"

    return check


def search_check(body: bytes) -> str:
    found = body.count(b'data-testid="history-item"')
    if found != PAGE_SIZE:
        return f"{found} results, expected {PAGE_SIZE}"
    return "" if body.count(b"<mark>") >= PAGE_SIZE else "snippets without highlights"


async def get_once(app: AppServer, call: HttpCall, cookie: str) -> HttpReply:
    connection = HttpConnection(app.host, app.port)
    try:
        reply = await connection.request("GET", call.path, None, {**call.headers, "Cookie": cookie})
    finally:
        await connection.close()
    if reply.status != 200:
        raise RuntimeError(f"{call.name} answered {reply.status}: {reply.body[:300]!r}")
    return reply


@dataclass
class Walk:
    deep_path: str  # the htmx infinite-scroll URL that answers page DEEP_PAGE
    deep_ids: list[str]
    json_deep_path: str
    json_deep_ids: list[str]
    seen: int
    duplicates: int
    seconds: float


async def walk(app: AppServer, cookie: str) -> Walk:
    """Follow the infinite-scroll links from the first page to page DEEP_PAGE as the browser does (each page's
    'Load more' hx-get), and the JSON API's next_cursor chain as far."""
    connection = HttpConnection(app.host, app.port)
    started = time.perf_counter()
    seen: set[str] = set()
    duplicates = 0
    try:
        path, headers = "/history", {"Cookie": cookie}
        for page in range(1, DEEP_PAGE + 1):
            reply = await connection.request("GET", path, None, headers)
            if reply.status != 200:
                raise RuntimeError(f"history page {page} ({path}) answered {reply.status}")
            ids = [m.decode() for m in ITEM_ID.findall(reply.body)]
            duplicates += sum(1 for i in ids if i in seen)
            seen.update(ids)
            if page == DEEP_PAGE:
                deep_path, deep_ids = path, ids
                break
            more = LOAD_MORE.search(reply.body)
            if more is None or len(ids) != PAGE_SIZE:
                raise RuntimeError(f"history page {page} has {len(ids)} rows and {'a' if more else 'no'} next link")
            path = html.unescape(more.group(1).decode())
            headers = {**HX, "HX-Target": "load-more", "HX-Current-URL": f"{app.url}/history", "Cookie": cookie}
        json_path = f"/api/users/sessions?limit={PAGE_SIZE}"
        for page in range(1, DEEP_PAGE + 1):
            reply = await connection.request("GET", json_path, None, {"Cookie": cookie})
            if reply.status != 200:
                raise RuntimeError(f"JSON page {page} ({json_path}) answered {reply.status}")
            data = json.loads(reply.body)
            if page == DEEP_PAGE:
                json_ids = [item["id"] for item in data["items"]]
                break
            json_path = f"/api/users/sessions?limit={PAGE_SIZE}&cursor={quote(data['next_cursor'])}"
    finally:
        await connection.close()
    return Walk(deep_path, deep_ids, json_path, json_ids, len(seen), duplicates, time.perf_counter() - started)


def cursor_of(path: str) -> str:
    return parse_qs(urlsplit(path).query)["cursor"][0]


def _nodes(plan: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    found = [plan]
    for child in plan.get("Plans", []):
        found += _nodes(child)
    return found


def _total(node: Mapping[str, Any]) -> float:
    return float(node.get("Actual Total Time", 0.0)) * float(node.get("Actual Loops", 1) or 1)


async def explain(conn: asyncpg.Connection, sql: str, *args: Any) -> str:
    """One line from EXPLAIN (ANALYZE, BUFFERS, VERBOSE): total time, buffers, and the nodes that took longest
    (own time, not counting their children), including which node computes ts_headline or ts_rank."""
    raw = await conn.fetchval(f"EXPLAIN (ANALYZE, BUFFERS, VERBOSE, FORMAT JSON) {sql}", *args)
    result = json.loads(raw)[0]
    plan = result["Plan"]
    own: list[tuple[float, str]] = []
    for node in _nodes(plan):
        mine = _total(node) - sum(_total(child) for child in node.get("Plans", []))
        label = node["Node Type"]
        if "Relation Name" in node:
            label += f" on {node['Relation Name']}"
        if "Index Name" in node:
            label += f" using {node['Index Name']}"
        details = [f"{node.get('Actual Rows', 0):,.0f} rows x {node.get('Actual Loops', 1)}"]
        output = " ".join(node.get("Output", []))
        below = " ".join(" ".join(child.get("Output", [])) for child in node.get("Plans", []))
        computes = [f for f in ("ts_headline", "ts_rank") if f + "(" in output and f + "(" not in below]
        if computes:
            details.append("computes " + " and ".join(computes))
        if "Sort Method" in node:
            details.append(str(node["Sort Method"]))
        own.append((mine, f"{label} {max(mine, 0.0):.2f} ms ({', '.join(details)})"))
    own.sort(reverse=True)
    hit, read = plan.get("Shared Hit Blocks", 0), plan.get("Shared Read Blocks", 0)
    jit = result.get("JIT")
    jit_note = f", JIT {jit['Timing']['Total']:.1f} ms" if jit else ""
    return (
        f"{result['Execution Time']:.2f} ms (planning {result.get('Planning Time', 0.0):.2f} ms{jit_note}; "
        f"buffers hit {hit:,} read {read:,}); slowest nodes: " + "; ".join(text for _, text in own[:3])
    )
