"""History: list pages (first, and deep by cursor) and full-text search over 10,000 conversations of one user.

Targets from the issue, with 1,000,000 utterances in the database: p99 under 10 ms for any list page at 8
concurrent requests, the 400th page within 1.2x of the first, and search under 50 ms even for a very common word.
Baselines in the same run on the same database: the bare SQL of each page (timed with asyncpg at the same
concurrency), and OFFSET pagination for the deep page. The baselines' statements are checked against PostgreSQL's
own log of one request of each kind, and their rows against the app's pages.
"""

from __future__ import annotations

import asyncio
import functools
import html
import json
import math
import os
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import asyncpg
import httpx

from bench.common import (
    SESSION_READ,
    VOCABULARY,
    VOCABULARY_SKEW,
    AppServer,
    BenchEnv,
    CpuMeter,
    HttpConnection,
    HttpReply,
    Report,
    Row,
    cookie_header,
    describe_statements,
    env_float,
    login,
    login_session_row,
    ms,
    percentile,
    running_app,
    signup,
    sql_key,
    statement_facts,
    statement_log,
    statement_mismatch,
    times,
    verdict,
)
from chatapp.conversations import store
from chatapp.history import analytics
from chatapp.history.search import SEARCH_CANDIDATES, SEARCH_SQL, SNIPPETS_SQL
from chatapp.history.service import PAGE_SIZE, SAVED_PAGE_SQL, decode_cursor

CONVERSATIONS = int(env_float("BENCH_HISTORY_CONVERSATIONS", 10_000))
PER_CONVERSATION = int(env_float("BENCH_HISTORY_UTTERANCES", 100))  # 10,000 x 100 = 1,000,000 utterances
REQUESTS = int(env_float("BENCH_HISTORY_REQUESTS", 400))  # per measurement, at CONCURRENCY
CONCURRENCY = int(env_float("BENCH_HISTORY_CONCURRENCY", 8))
SERIAL_REQUESTS = 100  # per measurement, one at a time (for the notes)
DEEP_PAGE = min(400, max(2, CONVERSATIONS // PAGE_SIZE))
LIST_P99_TARGET = 0.010
DEEP_RATIO_TARGET = 1.2
SEARCH_P99_TARGET = 0.050
ANALYTICS_P99_TARGET = 0.100
EMAIL = "bench-history@example.com"  # one user, reused when BENCH_DATABASE_URL points at a seeded database
RARE_WORD, RARE_SHARE = "aqueduct", 0.01  # in ~1% of utterances (neither word is in VOCABULARY)
COMMON_WORD, COMMON_SHARE = "hotel", 0.40  # in ~40% of utterances: every conversation matches
SEED_CONNECTIONS = 2
HX = {"HX-Request": "true"}

ITEM_ID = re.compile(rb'data-testid="history-item" data-conversation-id="([0-9a-f-]{36})"')
LOAD_MORE = re.compile(rb'hx-get="(/history\?[^"]+)"')

# --- seeding -----------------------------------------------------------------------------------------------------

SEED_CONVERSATIONS = """
    INSERT INTO chat_session (id, room_name, owner, system_prompt, started_at, ended_at, title, last_activity_at,
                              last_seq, end_reason)
    SELECT id, 'chat-' || replace(id::text, '-', ''), $1, '', t, t + interval '12 minutes', NULL,
           t + interval '12 minutes', $3, 'new_chat'
    FROM (SELECT gen_random_uuid() AS id,
                 now() - n * interval '157 minutes' - random() * interval '60 minutes' AS t
          FROM generate_series(1, $2) AS n) AS s
"""
# Made-up utterances from VOCABULARY (skewed to its front), 4-19 words, alternating user and agent; the rare and
# the common word are slipped in at a random place with their share of probability. The lateral subquery refers to
# both c and g, so the planner cannot compute it once per seq and reuse it for every conversation.
SEED_UTTERANCES = """
    INSERT INTO utterance (session, seq, item_id, role, text, created_at, received_at)
    SELECT c.id, g.n, 'seed-' || g.n, CASE WHEN g.n % 2 = 1 THEN 'user' ELSE 'agent' END,
           upper(left(w.words, 1)) || substr(w.words, 2) || '.',
           c.started_at + g.n * interval '7 seconds', c.started_at + g.n * interval '7 seconds'
    FROM chat_session c
    CROSS JOIN generate_series(1, $2) AS g(n)
    CROSS JOIN LATERAL (
        SELECT string_agg(x.word, ' ' ORDER BY x.pos) AS words
        FROM (
            SELECT ($3::text[])[1 + floor(power(random(), $4) * cardinality($3::text[]))::int] AS word,
                   i::float8 AS pos
            FROM generate_series(1, 4 + floor(random() * 16)::int + g.n * 0 + c.last_seq * 0) AS i
            UNION ALL SELECT $5, random() * 12 WHERE random() < $6 AND c.id IS NOT NULL
            UNION ALL SELECT $7, random() * 12 WHERE random() < $8 AND c.id IS NOT NULL
        ) AS x
    ) AS w
    WHERE c.owner = $1 AND c.id >= $9 AND ($10::uuid IS NULL OR c.id < $10)
"""
# The title is the first user utterance (cut), and search_doc the same expression as store.refresh_search_doc
# (set-based: the utterances' stored tsvectors concatenated in order with tsvector_agg); docs_differ() checks it.
SEED_SEARCH_DOCS = """
    UPDATE chat_session s SET
        title = d.title,
        search_doc = setweight(to_tsvector('english', coalesce(d.title, '')), 'A')
            || setweight(coalesce(d.doc, ''::tsvector), 'B')
    FROM (SELECT u.session, left(min(u.text) FILTER (WHERE u.seq = 1), 60) AS title,
                 tsvector_agg(u.tsv ORDER BY u.seq) AS doc
          FROM utterance u JOIN chat_session c ON c.id = u.session
          WHERE c.owner = $1 AND c.id >= $2 AND ($3::uuid IS NULL OR c.id < $3)
          GROUP BY u.session) AS d
    WHERE s.id = d.session
"""
SEED_SAMPLE = "SELECT id FROM chat_session WHERE owner = $1 AND ended_at IS NOT NULL ORDER BY id LIMIT 5"
SEARCH_DOC = "SELECT search_doc::text FROM chat_session WHERE id = $1"
SEEDED = """
    SELECT count(*) AS conversations, count(search_doc) AS documents,
           coalesce(sum(last_seq), 0) AS utterances
    FROM chat_session WHERE owner = $1 AND ended_at IS NOT NULL
"""

# --- the app's SQL, imported from history/service.py and history/search.py ----------------------------------------
# The bench still checks that the app sends exactly these (PostgreSQL's statement log of one request of each kind)
# and that the search answers the same conversations as the app.

KEYSET_PAGE = SAVED_PAGE_SQL
SEARCH = SEARCH_SQL
SNIPPETS = SNIPPETS_SQL
OFFSET_PAGE = """
    SELECT id, title, started_at, ended_at, last_seq AS message_count FROM chat_session
    WHERE owner = $1 AND ended_at IS NOT NULL
    ORDER BY started_at DESC, id DESC
    OFFSET $2 LIMIT $3
"""
# What each request sends, in order: Litestar reads the login session, then the page's own statement(s).
LIST_REQUEST = (SESSION_READ, KEYSET_PAGE)
SEARCH_REQUEST = (SESSION_READ, SEARCH, SNIPPETS)
ANALYTICS_REQUEST = (SESSION_READ, analytics.VERSION_SQL)  # the numbers from the process's cache
ANALYTICS_COLD_REQUEST = (*ANALYTICS_REQUEST, analytics.COUNTS_SQL, analytics.TOPICS_SQL)  # first view after a change
NAMES = {
    sql_key(sql): name
    for name, sql in (
        ("session read", SESSION_READ),
        ("keyset page", KEYSET_PAGE),
        ("search", SEARCH),
        ("snippets", SNIPPETS),
        ("analytics version", analytics.VERSION_SQL),
        ("analytics counts", analytics.COUNTS_SQL),
        ("analytics topics", analytics.TOPICS_SQL),
    )
}
WAL_LSN = "SELECT pg_current_wal_lsn()::text"
WAL_BYTES = "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::text::pg_lsn)"


@dataclass
class Seed:
    user_id: uuid.UUID
    seconds: float | None  # None: the database was already seeded
    rare_share: float = math.nan
    common_share: float = math.nan
    rare_conversations: int = 0
    common_conversations: int = 0
    docs_rebuilt: bool = False  # a reused seed's search documents were written by an older expression
    docs_differ: int = 0  # sample conversations whose search_doc is not what store.refresh_search_doc writes


async def docs_differ(conn: asyncpg.Connection, user_id: uuid.UUID) -> int:
    """How many of a few seeded conversations have a search document other than the one the app's own
    store.refresh_search_doc writes for them (its UPDATEs are rolled back)."""
    differ = 0
    for row in await conn.fetch(SEED_SAMPLE, user_id):
        seeded = await conn.fetchval(SEARCH_DOC, row["id"])
        transaction = conn.transaction()
        await transaction.start()
        try:
            await store.refresh_search_doc(conn, row["id"])
            written = await conn.fetchval(SEARCH_DOC, row["id"])
        finally:
            await transaction.rollback()
        differ += seeded != written
    return differ


async def seed(dsn: str, user_id: uuid.UUID) -> Seed:
    """10,000 saved conversations of 100 utterances for the user, set-based on two connections, then the search
    documents in one UPDATE per half and VACUUM ANALYZE. Skipped when the user already has exactly that."""
    conns = [await asyncpg.connect(dsn) for _ in range(SEED_CONNECTIONS)]
    try:
        conn = conns[0]
        have = await conn.fetchrow(SEEDED, user_id)
        done = CONVERSATIONS * PER_CONVERSATION
        # Each connection seeds the conversations whose ids fall in its share of the uuid space.
        step = (1 << 128) // SEED_CONNECTIONS
        ranges = [
            (uuid.UUID(int=k * step), uuid.UUID(int=(k + 1) * step) if k + 1 < SEED_CONNECTIONS else None)
            for k in range(SEED_CONNECTIONS)
        ]
        if have["conversations"] == have["documents"] == CONVERSATIONS and have["utterances"] == done:
            result = Seed(user_id, None)
            if await docs_differ(conn, user_id):
                await asyncio.gather(
                    *(
                        c.execute(SEED_SEARCH_DOCS, user_id, low, high)
                        for c, (low, high) in zip(conns, ranges, strict=True)
                    )
                )
                await conn.execute("VACUUM ANALYZE chat_session")
                result.docs_rebuilt = True
        else:
            started = time.perf_counter()
            await conn.execute("DELETE FROM chat_session WHERE owner = $1", user_id)  # a partial earlier seed
            await conn.execute(SEED_CONVERSATIONS, user_id, CONVERSATIONS, PER_CONVERSATION)
            await conn.execute("ANALYZE chat_session")
            words = list(VOCABULARY)
            shares = (RARE_WORD, RARE_SHARE, COMMON_WORD, COMMON_SHARE)
            await asyncio.gather(
                *(
                    c.execute(SEED_UTTERANCES, user_id, PER_CONVERSATION, words, VOCABULARY_SKEW, *shares, low, high)
                    for c, (low, high) in zip(conns, ranges, strict=True)
                )
            )
            await asyncio.gather(
                *(c.execute(SEED_SEARCH_DOCS, user_id, low, high) for c, (low, high) in zip(conns, ranges, strict=True))
            )
            await asyncio.gather(
                conns[0].execute("VACUUM ANALYZE chat_session"),
                conns[1].execute("VACUUM ANALYZE utterance"),
            )
            result = Seed(user_id, time.perf_counter() - started)
        result.docs_differ = await docs_differ(conn, user_id)
        shares = await conn.fetchrow(
            """
            SELECT avg((u.tsv @@ to_tsquery('english', $2))::int) AS rare,
                   avg((u.tsv @@ to_tsquery('english', $3))::int) AS common
            FROM utterance u JOIN chat_session c ON c.id = u.session WHERE c.owner = $1
            """,
            user_id,
            RARE_WORD,
            COMMON_WORD,
        )
        matches = await conn.fetchrow(
            """
            SELECT count(*) FILTER (WHERE search_doc @@ to_tsquery('english', $2)) AS rare,
                   count(*) FILTER (WHERE search_doc @@ to_tsquery('english', $3)) AS common
            FROM chat_session WHERE owner = $1 AND ended_at IS NOT NULL
            """,
            user_id,
            RARE_WORD,
            COMMON_WORD,
        )
        distinct = await conn.fetchval(
            "SELECT count(DISTINCT u.text) FROM utterance u JOIN chat_session c ON c.id = u.session "
            "WHERE c.owner = $1 AND u.seq = 2",
            user_id,
        )
        if distinct < CONVERSATIONS // 2:
            raise RuntimeError(f"the seed repeats itself: {distinct} different texts at seq 2 in {CONVERSATIONS}")
        result.rare_share, result.common_share = float(shares["rare"]), float(shares["common"])
        result.rare_conversations, result.common_conversations = matches["rare"], matches["common"]
        return result
    finally:
        for c in conns:
            await c.close()


# --- load --------------------------------------------------------------------------------------------------------


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


# --- checks ------------------------------------------------------------------------------------------------------


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


# --- the cursor chain --------------------------------------------------------------------------------------------


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


# --- EXPLAIN -----------------------------------------------------------------------------------------------------


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


# --- the benchmark -----------------------------------------------------------------------------------------------


async def _user(db: asyncpg.Connection, clients: Sequence[httpx.AsyncClient]) -> uuid.UUID:
    """The history user (signed up through the form the first time), logged in once per client: one login
    session per concurrent requester."""
    user_id = await db.fetchval("SELECT id FROM user_account WHERE email = $1", EMAIL)
    if user_id is None:
        await signup(clients[0], EMAIL, "Bench History")
        user_id = await db.fetchval("SELECT id FROM user_account WHERE email = $1", EMAIL)
    else:
        await login(clients[0], EMAIL)
    for client in clients[1:]:
        await login(client, EMAIL)
    assert isinstance(user_id, uuid.UUID)
    return user_id


async def run(env: BenchEnv) -> Report:
    """Everything: the list pages, search and the analytics page."""
    return await _run(env, True)


async def run_analytics(env: BenchEnv) -> Report:
    """Only the analytics page, on the same seed (`python -m bench history-analytics`)."""
    return await _run(env, False)


async def _run(env: BenchEnv, lists: bool) -> Report:
    utterances = CONVERSATIONS * PER_CONVERSATION
    report = Report(
        f"history{'' if lists else ' (analytics only)'}: {CONVERSATIONS:,} conversations, {utterances:,} utterances, "
        f"one user, {CONCURRENCY} concurrent"
    )
    clients = [httpx.AsyncClient(timeout=60.0) for _ in range(CONCURRENCY)]
    conns: list[asyncpg.Connection] = []
    try:
        async with running_app(env) as app:
            for client in clients:
                client.base_url = httpx.URL(app.url)
            conns = [await asyncpg.connect(env.dsn) for _ in range(CONCURRENCY)]
            user_id = await _user(conns[0], clients)
            seeded = await seed(env.dsn, user_id)
            cookies = [cookie_header(client) for client in clients]
            await _measure_analytics(report, app, conns, user_id, cookies, env)
            if lists:
                await _measure(report, app, conns, user_id, cookies, seeded, env)
            problems = app.log_problems()
    finally:
        for conn in conns:
            await conn.close()
        for client in clients:
            await client.aclose()
    report.notes.append(
        f"the app logged {len(problems)} error line(s), first: {problems[0][:300]}"
        if problems
        else "the app logged no errors"
    )
    return report


# Statements a probe may catch that are not the request's own: asyncpg's one-time type introspection on a fresh
# pool connection (its jit switch around it) and the app's agent-lease renewal running meanwhile.
BACKGROUND = (
    "SELECT current_setting('jit')",
    "SELECT set_config('jit'",
    "WITH RECURSIVE typeinfo_tree",
    "SELECT l.conversation FROM agent_lease",
)
TOPICS_ROW = re.compile(rb'<tr><th scope="row">([^<]+) \(in \d+ conversations?\)</th>')


def analytics_check(body: bytes) -> str:
    charts = body.count(b'role="img"')
    if charts != 7:
        return f"{charts} charts, expected 7"
    if f'data-testid="total-conversations">{CONVERSATIONS:,}<'.encode() not in body:
        return "wrong conversation count"
    return ""


async def _measure_analytics(
    report: Report,
    app: AppServer,
    conns: list[asyncpg.Connection],
    user_id: uuid.UUID,
    cookies: list[str],
    env: BenchEnv,
) -> None:
    """The analytics page (first view after start-up, then from the process's cache) against its own SQL."""
    page = HttpCall("analytics page: GET /history/analytics", "/history/analytics", {}, analytics_check)
    session_keys = [
        await login_session_row(conn, f"bench-analytics-{uuid.uuid4().hex[:8]}", user_id, EMAIL, "Bench")
        for conn in conns
    ]
    bounds = [float(b) for b in analytics.DURATION_BOUNDS]

    async def version(conn: asyncpg.Connection) -> None:
        await conn.fetchval(SESSION_READ, session_keys[conns.index(conn)])
        await conn.fetchrow(analytics.VERSION_SQL, user_id)

    async def counts(conn: asyncpg.Connection) -> None:
        await conn.fetch(analytics.COUNTS_SQL, user_id, "UTC", analytics.DAYS, analytics.WEEKS, bounds)

    async def topics(conn: asyncpg.Connection) -> list[str]:
        return [t.word for t in await analytics.topics(conn, user_id)]

    agree: list[str] = []
    seen: dict[str, list[str]] = {}
    async with statement_log(env) as log:
        # The first view after start-up computes the numbers; the next one takes them from the process's cache.
        started = time.perf_counter()
        if log is not None:
            cold, seen["first view"] = await log.capture(functools.partial(get_once, app, page, cookies[0]))
        else:
            cold = await get_once(app, page, cookies[0])
        cold_seconds = time.perf_counter() - started
        if log is not None:
            _, seen["cached"] = await log.capture(functools.partial(get_once, app, page, cookies[0]))
            seen = {
                name: [st for st in statements if not st.startswith(BACKGROUND)] for name, statements in seen.items()
            }
            for name, expected in (("first view", ANALYTICS_COLD_REQUEST), ("cached", ANALYTICS_REQUEST)):
                if problem := statement_mismatch(f"analytics, {name}", seen[name], expected, NAMES):
                    agree.append(problem)
    if problem := analytics_check(cold.body):
        agree.append(f"analytics page: {problem}")
    shown = [html.unescape(m.decode()) for m in TOPICS_ROW.findall(cold.body)]
    if shown != await topics(conns[0]):
        agree.append(f"analytics topics: the page shows {shown}, the SQL answers {await topics(conns[0])}")

    serial = await http_load(app, cookies, [page], SERIAL_REQUESTS, 1, None)
    topics_serial = await sql_load(conns[:1], [SqlCall("topics", topics)], 20, None)
    counts_serial = await sql_load(conns[:1], [SqlCall("counts", counts)], 20, None)
    version_serial = await sql_load(conns[:1], [SqlCall("version", version)], SERIAL_REQUESTS, None)
    loaded = await http_load(app, cookies, [page], REQUESTS, CONCURRENCY, env.dsn)
    base = await sql_load(conns, [SqlCall("version", version)], REQUESTS, env.dsn)

    def both(load: Load, name: str) -> str:
        return f"{ms(load.p(name, 50))} / {ms(load.p(name, 99))}"

    p99 = loaded.p(page.name, 99)
    report.rows += [
        Row(
            f"{page.name}, numbers cached, {CONCURRENCY} concurrent, p50 / p99",
            both(loaded, page.name),
            f"its SQL (session read + version) {both(base, 'version')}",
            f"{times(loaded.p(page.name, 50) / base.p('version', 50))} / {times(p99 / base.p('version', 99))}",
            f"p99 < {ms(ANALYTICS_P99_TARGET)}",
            verdict(p99 < ANALYTICS_P99_TARGET),
        ),
        Row(
            f"{page.name}, numbers cached, one at a time, p50 / p99",
            both(serial, page.name),
            f"its SQL {both(version_serial, 'version')}",
            f"{times(serial.p(page.name, 50) / version_serial.p('version', 50))} / "
            f"{times(serial.p(page.name, 99) / version_serial.p('version', 99))}",
        ),
        Row(
            "analytics, first view after start-up or a change (counts + topics computed; topics: ts_stat over the "
            f"newest {analytics.TOPIC_CONVERSATIONS} conversations' user utterances), one request",
            ms(cold_seconds),
            f"counts SQL p50 / p99 {both(counts_serial, 'counts')}; topics SQL {both(topics_serial, 'topics')}",
        ),
        Row(
            "analytics: wrong answers (non-200, charts or totals missing); app vs SQL disagreements",
            f"{len(loaded.errors) + len(serial.errors)} of {loaded.requests + serial.requests}; {len(agree)}",
            "—",
            "—",
            "0; 0",
            verdict(not loaded.errors and not serial.errors and not agree),
        ),
    ]
    report.notes.append(
        f"analytics: {loaded.requests / loaded.elapsed:,.0f} requests/s at {CONCURRENCY} concurrent, CPU per request: "
        f"app {ms(loaded.cpu_per_request('app'))}, PostgreSQL {ms(loaded.cpu_per_request('postgres'))} "
        f"(CPU {CpuMeter.describe(loaded.cpu)}); load average before: " + " ".join(f"{x:.2f}" for x in os.getloadavg())
    )
    if seen:
        report.notes.append(
            "analytics statements: "
            + "; ".join(f"{name}: {describe_statements(st, NAMES)}" for name, st in seen.items())
        )
    report.notes += loaded.errors[:1] + serial.errors[:1] + agree
    report.notes.append(
        "EXPLAIN analytics counts: "
        + await explain(conns[0], analytics.COUNTS_SQL, user_id, "UTC", analytics.DAYS, analytics.WEEKS, bounds)
    )
    if p99 >= ANALYTICS_P99_TARGET:
        report.notes.append("EXPLAIN analytics version: " + await explain(conns[0], analytics.VERSION_SQL, user_id))


async def _measure(
    report: Report,
    app: AppServer,
    conns: list[asyncpg.Connection],
    user_id: uuid.UUID,
    cookies: list[str],
    seeded: Seed,
    env: BenchEnv,
) -> None:
    dsn = env.dsn
    chain = await walk(app, cookies[0])
    deep_offset = (DEEP_PAGE - 1) * PAGE_SIZE
    offset_ids = [str(r["id"]) for r in await conns[0].fetch(OFFSET_PAGE, user_id, deep_offset, PAGE_SIZE)]
    deep_at, deep_id = decode_cursor(cursor_of(chain.deep_path))
    json_cursor = parse_qs(urlsplit(chain.json_deep_path).query)["cursor"][0]

    history_url = {"HX-Current-URL": f"{app.url}/history"}
    results_fragment = {**HX, **history_url, "HX-Target": "history-results", "HX-Trigger": "search-q"}
    first_full = HttpCall("first page, full page: GET /history", "/history", {}, rows_check(PAGE_SIZE))
    first_hx = HttpCall("first page, htmx fragment", "/history?q=&from=&to=", results_fragment, rows_check(PAGE_SIZE))
    deep_hx = HttpCall(
        f"page {DEEP_PAGE} by cursor, htmx fragment (infinite scroll)",
        chain.deep_path,
        {**HX, **history_url, "HX-Target": "load-more"},
        rows_check(PAGE_SIZE),
    )
    first_json = HttpCall("first page, JSON API", f"/api/users/sessions?limit={PAGE_SIZE}", {}, json_check(PAGE_SIZE))
    deep_json = HttpCall(f"page {DEEP_PAGE} by cursor, JSON API", chain.json_deep_path, {}, json_check(PAGE_SIZE))
    rare = HttpCall(
        f"search '{RARE_WORD}' ({100 * seeded.rare_share:.1f}% of utterances), htmx",
        f"/history?q={RARE_WORD}&from=&to=",
        results_fragment,
        search_check,
    )
    common = HttpCall(
        f"search '{COMMON_WORD}' ({100 * seeded.common_share:.0f}% of utterances), htmx",
        f"/history?q={COMMON_WORD}&from=&to=",
        results_fragment,
        search_check,
    )

    async def page_ids(conn: asyncpg.Connection, at: datetime | None, after: uuid.UUID | None) -> list[str]:
        rows = await conn.fetch(KEYSET_PAGE, user_id, at, after, PAGE_SIZE + 1, None, None)
        return [str(r["id"]) for r in rows[:PAGE_SIZE]]

    async def searched(conn: asyncpg.Connection, word: str) -> list[str]:
        rows = await conn.fetch(
            SEARCH, user_id, word, SEARCH_CANDIDATES, None, None, None, PAGE_SIZE + 1, None, None, None, None
        )
        await conn.fetch(SNIPPETS, [r["id"] for r in rows[:PAGE_SIZE]], word)
        return [str(r["id"]) for r in rows[:PAGE_SIZE]]

    # What an authenticated page costs in SQL besides its own: Litestar reads the login session row (one SELECT).
    # Each baseline connection reads its own session row, as each requester has its own login session.
    session_keys = [
        await login_session_row(conn, f"bench-history-baseline-{uuid.uuid4().hex[:8]}", user_id, EMAIL, "Bench")
        for conn in conns
    ]

    def with_session(
        page: Callable[[asyncpg.Connection], Awaitable[Any]],
    ) -> Callable[[asyncpg.Connection], Awaitable[Any]]:
        async def call(conn: asyncpg.Connection) -> None:
            await conn.fetchval(SESSION_READ, session_keys[conns.index(conn)])
            await page(conn)

        return call

    key_first = SqlCall("keyset first", lambda c: c.fetch(KEYSET_PAGE, user_id, None, None, PAGE_SIZE + 1, None, None))
    key_deep = SqlCall(
        "keyset deep", lambda c: c.fetch(KEYSET_PAGE, user_id, deep_at, deep_id, PAGE_SIZE + 1, None, None)
    )
    offset_deep = SqlCall("offset deep", lambda c: c.fetch(OFFSET_PAGE, user_id, deep_offset, PAGE_SIZE + 1))
    rare_sql = SqlCall("rare", lambda c: searched(c, RARE_WORD))
    common_sql = SqlCall("common", lambda c: searched(c, COMMON_WORD))
    request_first = SqlCall("request first", with_session(key_first.run))
    request_deep = SqlCall("request deep", with_session(key_deep.run))

    # Same answers from the app and from the bare SQL, and the same statements, or the comparison means nothing.
    agree: list[str] = []
    for call, word in ((rare, RARE_WORD), (common, COMMON_WORD)):
        reply = await get_once(app, call, cookies[0])
        app_ids = [m.decode() for m in ITEM_ID.findall(reply.body)]
        if app_ids != await searched(conns[0], word):
            agree.append(f"search '{word}': the app's first page differs from the bare SQL's")
    first_ids = [m.decode() for m in ITEM_ID.findall((await get_once(app, first_full, cookies[0])).body)]
    if first_ids != await page_ids(conns[0], None, None):
        agree.append("the first page differs from the keyset SQL's")
    if chain.deep_ids != await page_ids(conns[0], deep_at, deep_id):
        agree.append(f"page {DEEP_PAGE} by cursor differs from the keyset SQL's")
    if chain.deep_ids != offset_ids or chain.json_deep_ids != offset_ids:
        agree.append(f"page {DEEP_PAGE} by cursor differs from OFFSET {deep_offset} (html, JSON)")
    if json_cursor != cursor_of(chain.deep_path):
        agree.append("the JSON API and the page hand out different cursors for the same page")
    if seeded.docs_differ:
        agree.append(
            f"{seeded.docs_differ} sampled conversations: the seeded search_doc is not what store.refresh_search_doc "
            "writes"
        )
    # One request of each kind with PostgreSQL's statement log on: what the app sends, compared with the baselines.
    probe_calls = [
        (first_full, LIST_REQUEST),
        (first_hx, LIST_REQUEST),
        (deep_hx, LIST_REQUEST),
        (first_json, LIST_REQUEST),
        (deep_json, LIST_REQUEST),
        (rare, SEARCH_REQUEST),
        (common, SEARCH_REQUEST),
    ]
    seen: dict[str, list[str]] = {}
    async with statement_log(env) as log:
        if log is not None:
            for call, expected in probe_calls:
                _, seen[call.name] = await log.capture(functools.partial(get_once, app, call, cookies[0]))
                if problem := statement_mismatch(call.name, seen[call.name], expected, NAMES):
                    agree.append(problem)

    # One request at a time first (the cost of each), then CONCURRENCY closed-loop requesters.
    calls = [first_full, first_hx, deep_hx, first_json, deep_json, rare, common]
    serial_http = {c.name: await http_load(app, cookies, [c], SERIAL_REQUESTS, 1, None) for c in calls}
    sql_calls = [key_first, key_deep, offset_deep, rare_sql, common_sql]
    serial_sql = {c.name: await sql_load(conns[:1], [c], SERIAL_REQUESTS, None) for c in sql_calls}
    wal_before = await conns[0].fetchval(WAL_LSN)
    lists_hx = await http_load(app, cookies, [first_hx, deep_hx], REQUESTS, CONCURRENCY, dsn)
    wal_per_page = float(await conns[0].fetchval(WAL_BYTES, wal_before)) / (lists_hx.requests + lists_hx.warmup)
    lists_json = await http_load(app, cookies, [first_json, deep_json], REQUESTS, CONCURRENCY, dsn)
    full = await http_load(app, cookies, [first_full], REQUESTS, CONCURRENCY, dsn)
    rare_load = await http_load(app, cookies, [rare], REQUESTS, CONCURRENCY, dsn)
    common_load = await http_load(app, cookies, [common], REQUESTS, CONCURRENCY, dsn)
    lists_sql = await sql_load(conns, [key_first, key_deep, offset_deep], REQUESTS, dsn)
    rare_base = await sql_load(conns, [rare_sql], REQUESTS, dsn)
    common_base = await sql_load(conns, [common_sql], REQUESTS, dsn)
    request_sql = await sql_load(conns, [request_first, request_deep], REQUESTS, dsn)

    def both(load: Load, name: str) -> str:
        return f"{ms(load.p(name, 50))} / {ms(load.p(name, 99))}"

    def ratio(a: Load, a_name: str, b: Load, b_name: str) -> str:
        return f"{times(a.p(a_name, 50) / b.p(b_name, 50))} / {times(a.p(a_name, 99) / b.p(b_name, 99))}"

    def row(load: Load, call: HttpCall, base: Load, base_name: str, label: str, target: float) -> Row:
        p99 = load.p(call.name, 99)
        return Row(
            f"{call.name}, p50 / p99",
            both(load, call.name),
            f"{label} {both(base, base_name)}",
            ratio(load, call.name, base, base_name),
            f"p99 < {ms(target)}",
            verdict(p99 < target),
        )

    def deep_vs_first(load: Load, deep: HttpCall, first: HttpCall, what: str) -> Row:
        value = load.p(deep.name, 99) / load.p(first.name, 99)
        return Row(
            f"page {DEEP_PAGE} ÷ first page, {what} (same phase, interleaved), p50 / p99",
            ratio(load, deep.name, load, first.name),
            f"keyset SQL {ratio(lists_sql, key_deep.name, lists_sql, key_first.name)}",
            "—",
            f"p99 ≤ {DEEP_RATIO_TARGET:g}x",
            verdict(value <= DEEP_RATIO_TARGET),
        )

    request_names = ", ".join(NAMES[sql_key(sql)] for sql in LIST_REQUEST)
    loads = [lists_hx, lists_json, full, rare_load, common_load]
    errors = [e for load in loads + list(serial_http.values()) for e in load.errors]
    requests = sum(load.requests for load in loads + list(serial_http.values()))
    list_rows = [
        row(full, first_full, lists_sql, key_first.name, "keyset SQL", LIST_P99_TARGET),
        row(lists_hx, first_hx, lists_sql, key_first.name, "keyset SQL", LIST_P99_TARGET),
        row(lists_hx, deep_hx, lists_sql, key_deep.name, "keyset SQL", LIST_P99_TARGET),
        deep_vs_first(lists_hx, deep_hx, first_hx, "htmx"),
        Row(
            f"first page / page {DEEP_PAGE}, htmx, p50, beside all the SQL of the request ({request_names})",
            f"{ms(lists_hx.p(first_hx.name, 50))} / {ms(lists_hx.p(deep_hx.name, 50))}",
            f"request SQL {ms(request_sql.p(request_first.name, 50))} / {ms(request_sql.p(request_deep.name, 50))}",
            f"{times(lists_hx.p(first_hx.name, 50) / request_sql.p(request_first.name, 50))} / "
            f"{times(lists_hx.p(deep_hx.name, 50) / request_sql.p(request_deep.name, 50))}",
        ),
        row(lists_json, first_json, lists_sql, key_first.name, "keyset SQL", LIST_P99_TARGET),
        row(lists_json, deep_json, lists_sql, key_deep.name, "keyset SQL", LIST_P99_TARGET),
        deep_vs_first(lists_json, deep_json, first_json, "JSON API"),
    ]
    search_rows = [
        row(rare_load, rare, rare_base, rare_sql.name, "search SQL", SEARCH_P99_TARGET),
        row(common_load, common, common_base, common_sql.name, "search SQL", SEARCH_P99_TARGET),
    ]
    report.rows += list_rows
    report.rows += [
        Row(
            f"page {DEEP_PAGE} as bare SQL: keyset (the app's) vs OFFSET {deep_offset} LIMIT {PAGE_SIZE + 1}, "
            "p50 / p99",
            f"keyset {both(lists_sql, key_deep.name)}",
            f"OFFSET {both(lists_sql, offset_deep.name)}",
            ratio(lists_sql, key_deep.name, lists_sql, offset_deep.name),
        ),
        Row(
            f"page {DEEP_PAGE} by cursor over HTTP (htmx) vs OFFSET pagination as bare SQL, p50 / p99",
            both(lists_hx, deep_hx.name),
            f"OFFSET SQL {both(lists_sql, offset_deep.name)}",
            ratio(lists_hx, deep_hx.name, lists_sql, offset_deep.name),
        ),
        *search_rows,
        Row(
            "wrong answers: non-200, wrong row count, unhighlighted snippets; app vs SQL disagreements",
            f"{len(errors)} of {requests}; {len(agree)}",
            "—",
            "—",
            "0; 0",
            verdict(not errors and not agree),
        ),
    ]

    if seeded.seconds is None:
        rebuilt = "; its search documents were rebuilt: they were not what store.refresh_search_doc writes now"
        reused = "seed: reused (the database already held this user's conversations)"
        report.notes.append(reused + (rebuilt if seeded.docs_rebuilt else ""))
    else:
        report.notes.append(
            f"seed: {seeded.seconds:.1f} s for {CONVERSATIONS:,} saved conversations x {PER_CONVERSATION} utterances "
            f"(set-based INSERT … SELECT on {SEED_CONNECTIONS} connections, search_doc with store.refresh_search_doc's "
            "expression, VACUUM ANALYZE)"
        )

    def candidates(matches: int) -> str:
        if matches > SEARCH_CANDIDATES:
            return f"ranks the newest {SEARCH_CANDIDATES} of them"
        return f"ranks all {matches:,} (no more than SEARCH_CANDIDATES = {SEARCH_CANDIDATES})"

    report.notes += [
        f"words: '{RARE_WORD}' is in {100 * seeded.rare_share:.2f}% of utterances, so in "
        f"{seeded.rare_conversations:,} of {CONVERSATIONS:,} conversations (search "
        f"{candidates(seeded.rare_conversations)}); '{COMMON_WORD}' in {100 * seeded.common_share:.1f}% of "
        f"utterances, {seeded.common_conversations:,} conversations (search {candidates(seeded.common_conversations)})",
        f"cursor chain: followed {DEEP_PAGE - 1} 'Load more' links and {DEEP_PAGE - 1} JSON next_cursor links in "
        f"{chain.seconds:.1f} s; {chain.seen:,} distinct rows, {chain.duplicates} repeated; page {DEEP_PAGE} "
        f"{'equals' if chain.deep_ids == offset_ids else 'DIFFERS FROM'} OFFSET {deep_offset}",
        _statements_note(seen),
        f"each measurement: {REQUESTS} requests from {CONCURRENCY} closed-loop requesters, each with its own "
        "keep-alive connection and login session; first and deep pages interleaved in one phase; baselines: the "
        f"same SQL through asyncpg on {CONCURRENCY} connections, interleaved the same way (search SQL = "
        "the candidates/rank statement and the snippets statement, as the app runs them; request SQL = "
        f"{request_names}, each connection reading its own session row)",
        "one request at a time, p50 / p99: "
        + "; ".join(f"{name} {both(load, name)}" for name, load in serial_http.items())
        + "; bare SQL: "
        + "; ".join(f"{name} {both(load, name)}" for name, load in serial_sql.items()),
    ]
    for name, load in (
        ("htmx lists", lists_hx),
        ("JSON lists", lists_json),
        ("full page", full),
        (f"search '{RARE_WORD}'", rare_load),
        (f"search '{COMMON_WORD}'", common_load),
    ):
        report.notes.append(
            f"{name}: {load.requests / load.elapsed:,.0f} requests/s, CPU per request: app "
            f"{ms(load.cpu_per_request('app'))}, PostgreSQL {ms(load.cpu_per_request('postgres'))} "
            f"(CPU {CpuMeter.describe(load.cpu)})"
        )
    if wal_per_page > 0:
        report.notes.append(
            f"the database wrote {wal_per_page:,.0f} bytes of WAL per request during the htmx list phase (the "
            "requests' own statements are listed above)"
        )
    else:
        report.notes.append("list page views write nothing to the database: no WAL during the htmx list phase")
    report.notes.append(
        f"closed loop: with {CONCURRENCY} requests always in flight, latency ≈ {CONCURRENCY} ÷ throughput, so a p99 "
        f"under {ms(LIST_P99_TARGET)} needs well over {CONCURRENCY / LIST_P99_TARGET:,.0f} requests/s from this one "
        "app process"
    )
    busiest = max(load.cpu.get("other", 0.0) for load in loads)
    if busiest > 25:
        report.notes.append(
            f"WARNING: other processes on this machine used up to {busiest:.0f}% CPU during the measurements; "
            "the numbers are slower (and tails longer) than on a quiet machine"
        )
    report.notes += errors[:1] + agree

    list_missed = any(r.met == verdict(False) for r in list_rows)
    search_missed = any(r.met == verdict(False) for r in search_rows)
    if list_missed:
        report.notes += [
            "EXPLAIN first page: "
            + await explain(conns[0], KEYSET_PAGE, user_id, None, None, PAGE_SIZE + 1, None, None),
            f"EXPLAIN page {DEEP_PAGE}: "
            + await explain(conns[0], KEYSET_PAGE, user_id, deep_at, deep_id, PAGE_SIZE + 1, None, None),
        ]
    if search_missed:
        for word in (RARE_WORD, COMMON_WORD):
            args = (user_id, word, SEARCH_CANDIDATES, None, None, None, PAGE_SIZE + 1, None, None, None, None)
            ids = [r["id"] for r in (await conns[0].fetch(SEARCH, *args))[:PAGE_SIZE]]
            report.notes += [
                f"EXPLAIN search '{word}' (candidates + rank): " + await explain(conns[0], SEARCH, *args),
                f"EXPLAIN search '{word}' (snippets): " + await explain(conns[0], SNIPPETS, ids, word),
            ]


def _statements_note(seen: Mapping[str, Sequence[str]]) -> str:
    """What PostgreSQL logged for one request of each kind, grouped by identical statement lists."""
    if not seen:
        return (
            "statements per request not checked against the app: that needs the bench's embedded database (it "
            "switches on log_statement around one request of each kind)"
        )
    groups: dict[tuple[str, ...], list[str]] = {}
    for name, statements in seen.items():
        groups.setdefault(tuple(statements), []).append(name)
    parts = [f"{describe_statements(s, NAMES)} for {'; '.join(names)}" for s, names in groups.items()]
    return (
        "statements PostgreSQL logged (log_statement = 'all') for one request of each kind, each one round trip: "
        + " — ".join(parts)
        + " — "
        + ", ".join(statement_facts([s for statements in seen.values() for s in statements]))
    )
