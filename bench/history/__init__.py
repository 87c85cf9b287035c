"""History: list pages (first, and deep by cursor) and full-text search over 10,000 conversations of one user.

Targets (issue 25), with 1,000,000 utterances in the database, 8 concurrent, each the median of 3 rounds: list
pages within 1.3x of the framework floor's p99 (floor_app.py: the same pages with no middleware) and at most 1.2 ms
of app CPU each, JSON pages within 1.2x of their bare SQL, search within 1.3x of its SQL and 1.5 ms of app CPU, the
400th page within 1.2x of the first. Baselines in the same run on the same database: the bare SQL of each page
(timed with asyncpg at the same concurrency), OFFSET pagination for the deep page, and the floor. The baselines'
statements are checked against PostgreSQL's own log of one request of each kind, and their rows (and the floor's)
against the app's pages.

Modules: config (knobs, the app's statements), dataset (seeding), load (load generators, checks, the cursor
chain, EXPLAIN), pages (the list and search measurements), floor_app and floor (the framework floor),
analytics_page (the Analytics page).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg
import httpx

from bench.history.analytics_page import measure_analytics
from bench.history.config import CONCURRENCY, CONVERSATIONS, EMAIL, PER_CONVERSATION
from bench.history.dataset import seed
from bench.history.floor import FLOOR
from bench.history.pages import measure_pages
from bench.kit.machine import BenchEnv
from bench.kit.server import cookie_header, login, running_app, signup
from bench.kit.tables import Report


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
            await measure_analytics(report, app, conns, user_id, cookies, env)
            if lists:
                async with running_app(env, FLOOR) as floor:
                    await measure_pages(report, app, floor, conns, user_id, cookies, seeded, env)
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
