"""The Analytics page under load: cached and cold views against the bare SQL of the same numbers."""

from __future__ import annotations

import functools
import html
import os
import re
import time
import uuid

import asyncpg

from bench.history.config import (
    ANALYTICS_COLD_REQUEST,
    ANALYTICS_P99_TARGET,
    ANALYTICS_REQUEST,
    CONCURRENCY,
    CONVERSATIONS,
    EMAIL,
    NAMES,
    REQUESTS,
    SERIAL_REQUESTS,
)
from bench.history.load import HttpCall, Load, SqlCall, explain, get_once, http_load, sql_load
from bench.kit.cpu import CpuMeter
from bench.kit.machine import BenchEnv
from bench.kit.server import AppServer
from bench.kit.statements import (
    SESSION_READ,
    describe_statements,
    login_session_row,
    not_background,
    statement_log,
    statement_mismatch,
)
from bench.kit.tables import Report, Row, ms, times, verdict
from chatapp.history import analytics

TOPICS_ROW = re.compile(rb'<tr><th scope="row">([^<]+) \(in \d+ conversations?\)</th>')


def analytics_check(body: bytes) -> str:
    charts = body.count(b'role="img"')
    if charts != 7:
        return f"{charts} charts, expected 7"
    if f'data-testid="total-conversations">{CONVERSATIONS:,}<'.encode() not in body:
        return "wrong conversation count"
    return ""


async def measure_analytics(
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

    async def version(conn: asyncpg.Connection) -> None:
        await conn.fetchval(SESSION_READ, session_keys[conns.index(conn)])
        await conn.fetchrow(analytics.VERSION_SQL, user_id)

    async def counts(conn: asyncpg.Connection) -> None:
        await conn.fetch(*analytics.counts_query(user_id, "UTC"))

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
            seen = {name: not_background(statements) for name, statements in seen.items()}
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
    report.notes.append("EXPLAIN analytics counts: " + await explain(conns[0], *analytics.counts_query(user_id, "UTC")))
    if p99 >= ANALYTICS_P99_TARGET:
        report.notes.append("EXPLAIN analytics version: " + await explain(conns[0], analytics.VERSION_SQL, user_id))
