"""List pages (first, deep by cursor, htmx, JSON) and search, each against the bare SQL the app runs for it."""

from __future__ import annotations

import contextlib
import functools
import statistics
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg

from bench.history.config import (
    API_REQUEST,
    COMMON_WORD,
    CONCURRENCY,
    CONVERSATIONS,
    DEEP_PAGE,
    DEEP_RATIO_TARGET,
    EMAIL,
    FIRST_REQUEST,
    FLOOR_RATIO_TARGET,
    HX,
    ITEM_ID,
    JSON_RATIO_TARGET,
    LIST_CPU_TARGET,
    LIST_REQUEST,
    NAMES,
    OFFSET_PAGE,
    PER_CONVERSATION,
    RARE_WORD,
    REQUESTS,
    ROUNDS,
    SEARCH_CPU_TARGET,
    SEARCH_RATIO_TARGET,
    SEARCH_REQUEST,
    SEARCH_SQL_P99_BEFORE,
    SEED_CONNECTIONS,
    SERIAL_REQUESTS,
    WAL_BYTES,
    WAL_LSN,
)
from bench.history.dataset import Seed
from bench.history.load import (
    HttpCall,
    Load,
    SqlCall,
    cursor_of,
    explain,
    get_once,
    http_load,
    json_check,
    rows_check,
    search_check,
    sql_load,
    walk,
)
from bench.kit.cpu import CpuMeter
from bench.kit.machine import BenchEnv
from bench.kit.profile import profiled
from bench.kit.server import AppServer
from bench.kit.statements import (
    SESSION_READ,
    describe_statements,
    login_session_row,
    not_background,
    sql_key,
    statement_facts,
    statement_log,
    statement_mismatch,
)
from bench.kit.tables import Report, Row, ms, times, verdict
from chatapp.history.search import SEARCH_CANDIDATES, search_query
from chatapp.history.service import PAGE_SIZE, api_page_query, decode_cursor, first_page_query, keyset_page_query


async def measure_pages(
    report: Report,
    app: AppServer,
    floor: AppServer,
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
        if at is None or after is None:
            rows = [r for r in await conn.fetch(*first_page_query(user_id, PAGE_SIZE + 1)) if not r["is_pin"]]
        else:
            rows = await conn.fetch(*keyset_page_query(user_id, (at, after), PAGE_SIZE + 1))
        return [str(r["id"]) for r in rows[:PAGE_SIZE]]

    async def searched(conn: asyncpg.Connection, word: str) -> list[str]:
        rows = await conn.fetch(*search_query(user_id, word, PAGE_SIZE + 1))
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

    first_page = first_page_query(user_id, PAGE_SIZE + 1)
    deep_page = keyset_page_query(user_id, (deep_at, deep_id), PAGE_SIZE + 1)
    api_first_page = api_page_query(user_id, None, PAGE_SIZE + 1)
    api_deep_page = api_page_query(user_id, (deep_at, deep_id), PAGE_SIZE + 1)
    key_first = SqlCall("keyset first", lambda c: c.fetch(*first_page))
    key_deep = SqlCall("keyset deep", lambda c: c.fetch(*deep_page))
    api_first = SqlCall("API first", lambda c: c.fetch(*api_first_page))
    api_deep = SqlCall("API deep", lambda c: c.fetch(*api_deep_page))
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
    # The floor must serve the same page: the same rows, and (CSRF tokens and highlight markers apart) as many bytes.
    sizes: list[str] = []
    for call in (first_full, first_hx, deep_hx, first_json, deep_json, rare, common):
        mine, its = await get_once(app, call, cookies[0]), await get_once(floor, call, cookies[0])
        if ITEM_ID.findall(mine.body) != ITEM_ID.findall(its.body) or (
            call in (first_json, deep_json) and mine.body != its.body
        ):
            agree.append(f"{call.name}: the floor's rows differ from the app's")
        sizes.append(f"{call.name} {len(mine.body):,} / {len(its.body):,}")
    # One request of each kind with PostgreSQL's statement log on: what the app sends, compared with the baselines.
    probe_calls = [
        (first_full, FIRST_REQUEST),
        (first_hx, FIRST_REQUEST),
        (deep_hx, LIST_REQUEST),
        (first_json, API_REQUEST),
        (deep_json, API_REQUEST),
        (rare, SEARCH_REQUEST),
        (common, SEARCH_REQUEST),
    ]
    seen: dict[str, list[str]] = {}
    async with statement_log(env) as log:
        if log is not None:
            for call, expected in probe_calls:
                _, statements = await log.capture(functools.partial(get_once, app, call, cookies[0]))
                seen[call.name] = not_background(statements)
                if problem := statement_mismatch(call.name, seen[call.name], expected, NAMES):
                    agree.append(problem)

    # One request at a time first (the cost of each), for the notes.
    calls = [first_full, first_hx, deep_hx, first_json, deep_json, rare, common]
    serial_http = {c.name: await http_load(app, cookies, [c], SERIAL_REQUESTS, 1, None) for c in calls}
    sql_calls = [key_first, key_deep, api_first, api_deep, offset_deep, rare_sql, common_sql]
    serial_sql = {c.name: await sql_load(conns[:1], [c], SERIAL_REQUESTS, None) for c in sql_calls}

    # Then ROUNDS rounds at CONCURRENCY closed-loop requesters: in each, every phase against the app, the floor
    # and the bare SQL, the three in a rotated order, so a slow stretch of a shared machine falls on all of them
    # in turn. Each target is the median over the rounds of the ratio measured within one round.
    http_phases = {
        "lists_hx": [first_hx, deep_hx],
        "lists_json": [first_json, deep_json],
        "full": [first_full],
        "rare": [rare],
        "common": [common],
    }
    sql_phases = {
        "lists": [key_first, key_deep, api_first, api_deep, offset_deep],
        "rare": [rare_sql],
        "common": [common_sql],
        "request": [request_first, request_deep],
    }

    async def app_side(server: AppServer, side: str, found: dict[str, Load]) -> None:
        for key, phase in http_phases.items():
            # BENCH_PYSPY_DIR: the first round's htmx lists and rare-word search, app and floor, under py-spy.
            record = not rounds and key in ("lists_hx", "rare")
            async with profiled(server.pid, f"history-{side}-{key}") if record else contextlib.nullcontext():
                found[f"{side}:{key}"] = await http_load(server, cookies, phase, REQUESTS, CONCURRENCY, dsn)

    async def sql_side(found: dict[str, Load]) -> None:
        for key, phase in sql_phases.items():
            found[f"sql:{key}"] = await sql_load(conns, phase, REQUESTS, dsn)

    rounds: list[dict[str, Load]] = []
    wal_per_page = 0.0
    for number in range(ROUNDS):
        found: dict[str, Load] = {}
        sides = [app_side(app, "app", found), app_side(floor, "floor", found), sql_side(found)]
        wal_before = await conns[0].fetchval(WAL_LSN)
        for side in sides[number % 3 :] + sides[: number % 3]:
            await side
        if number == 0:  # the app's list pages, the floor's and the SQL: none of them should write
            phased = sum(found[k].requests + found[k].warmup for k in ("app:lists_hx", "floor:lists_hx"))
            wal_per_page = float(await conns[0].fetchval(WAL_BYTES, wal_before)) / phased
        rounds.append(found)

    def med(value: Callable[[dict[str, Load]], float]) -> float:
        return statistics.median(value(r) for r in rounds)

    def p(load: str, name: str, pct: float) -> float:
        return med(lambda r: r[load].p(name, pct))

    def both(load: str, name: str) -> str:
        return f"{ms(p(load, name, 50))} / {ms(p(load, name, 99))}"

    def over(a: str, a_name: str, b: str, b_name: str, pct: float) -> float:
        return med(lambda r: r[a].p(a_name, pct) / r[b].p(b_name, pct))

    def ratio(a: str, a_name: str, b: str, b_name: str) -> str:
        return f"{times(over(a, a_name, b, b_name, 50))} / {times(over(a, a_name, b, b_name, 99))}"

    def rate(load: str) -> float:
        return med(lambda r: r[load].requests / r[load].elapsed)

    def cpu(load: str, group: str = "app") -> float:
        return med(lambda r: r[load].cpu_per_request(group))

    def against_floor(phase: str, call: HttpCall, sql: str, base_name: str, label: str) -> Row:
        value = over(f"app:{phase}", call.name, f"floor:{phase}", call.name, 99)
        return Row(
            f"{call.name}, p50 / p99",
            both(f"app:{phase}", call.name),
            f"{label} {both(sql, base_name)}",
            ratio(f"app:{phase}", call.name, sql, base_name),
            f"p99 ≤ {FLOOR_RATIO_TARGET:g}x floor",
            verdict(value <= FLOOR_RATIO_TARGET),
            both(f"floor:{phase}", call.name),
            ratio(f"app:{phase}", call.name, f"floor:{phase}", call.name),
        )

    def against_sql(phase: str, call: HttpCall, sql: str, base_name: str, label: str, target: float) -> Row:
        value = over(f"app:{phase}", call.name, sql, base_name, 99)
        return Row(
            f"{call.name}, p50 / p99",
            both(f"app:{phase}", call.name),
            f"{label} {both(sql, base_name)}",
            ratio(f"app:{phase}", call.name, sql, base_name),
            f"p99 ≤ {target:g}x {label}",
            verdict(value <= target),
            both(f"floor:{phase}", call.name),
            ratio(f"app:{phase}", call.name, f"floor:{phase}", call.name),
        )

    def deep_vs_first(phase: str, deep: HttpCall, first: HttpCall, what: str) -> Row:
        value = over(f"app:{phase}", deep.name, f"app:{phase}", first.name, 99)
        return Row(
            f"page {DEEP_PAGE} ÷ first page, {what} (same phase, interleaved), p50 / p99",
            ratio(f"app:{phase}", deep.name, f"app:{phase}", first.name),
            f"keyset SQL {ratio('sql:lists', key_deep.name, 'sql:lists', key_first.name)}",
            "—",
            f"p99 ≤ {DEEP_RATIO_TARGET:g}x",
            verdict(value <= DEEP_RATIO_TARGET),
            ratio(f"floor:{phase}", deep.name, f"floor:{phase}", first.name),
        )

    def cpu_row(what: str, phases: Sequence[str], target: float) -> Row:
        app_cpu = [cpu(f"app:{phase}") for phase in phases]
        floor_cpu = [cpu(f"floor:{phase}") for phase in phases]
        return Row(
            f"app CPU per request (all its processes), {what}",
            " / ".join(ms(c) for c in app_cpu),
            "—",
            "—",
            f"≤ {ms(target)}",
            verdict(all(c <= target for c in app_cpu)),
            " / ".join(ms(c) for c in floor_cpu),
            " / ".join(times(a / f) for a, f in zip(app_cpu, floor_cpu, strict=True)),
        )

    request_names = ", ".join(NAMES[sql_key(sql)] for sql in LIST_REQUEST)
    loads = [load for r in rounds for key, load in r.items() if not key.startswith("sql:")]
    errors = [e for load in loads + list(serial_http.values()) for e in load.errors]
    requests = sum(load.requests for load in loads + list(serial_http.values()))
    list_rows = [
        against_floor("full", first_full, "sql:lists", key_first.name, "keyset SQL"),
        against_floor("lists_hx", first_hx, "sql:lists", key_first.name, "keyset SQL"),
        against_floor("lists_hx", deep_hx, "sql:lists", key_deep.name, "keyset SQL"),
        cpu_row("htmx list page / full page", ["lists_hx", "full"], LIST_CPU_TARGET),
        deep_vs_first("lists_hx", deep_hx, first_hx, "htmx"),
        Row(
            f"first page / page {DEEP_PAGE}, htmx, p50, beside all the SQL of the request ({request_names})",
            f"{ms(p('app:lists_hx', first_hx.name, 50))} / {ms(p('app:lists_hx', deep_hx.name, 50))}",
            f"request SQL {ms(p('sql:request', request_first.name, 50))} / "
            f"{ms(p('sql:request', request_deep.name, 50))}",
            f"{times(over('app:lists_hx', first_hx.name, 'sql:request', request_first.name, 50))} / "
            f"{times(over('app:lists_hx', deep_hx.name, 'sql:request', request_deep.name, 50))}",
            floor=f"{ms(p('floor:lists_hx', first_hx.name, 50))} / {ms(p('floor:lists_hx', deep_hx.name, 50))}",
        ),
        against_sql("lists_json", first_json, "sql:lists", api_first.name, "its keyset SQL", JSON_RATIO_TARGET),
        against_sql("lists_json", deep_json, "sql:lists", api_deep.name, "its keyset SQL", JSON_RATIO_TARGET),
        deep_vs_first("lists_json", deep_json, first_json, "JSON API"),
    ]
    search_sql_p99 = (p("sql:rare", rare_sql.name, 99), p("sql:common", common_sql.name, 99))
    search_rows = [
        against_sql("rare", rare, "sql:rare", rare_sql.name, "search SQL", SEARCH_RATIO_TARGET),
        against_sql("common", common, "sql:common", common_sql.name, "search SQL", SEARCH_RATIO_TARGET),
        cpu_row(f"search '{RARE_WORD}' / '{COMMON_WORD}'", ["rare", "common"], SEARCH_CPU_TARGET),
        Row(
            f"search SQL alone (the search statement, snippets included), '{RARE_WORD}' / '{COMMON_WORD}', p99",
            " / ".join(ms(v) for v in search_sql_p99),
            f"README before this issue {' / '.join(ms(v) for v in SEARCH_SQL_P99_BEFORE)}",
            " / ".join(times(a / b) for a, b in zip(search_sql_p99, SEARCH_SQL_P99_BEFORE, strict=True)),
            "no slower",
            verdict(all(a <= b for a, b in zip(search_sql_p99, SEARCH_SQL_P99_BEFORE, strict=True))),
        ),
    ]
    report.rows += list_rows
    report.rows += [
        Row(
            f"page {DEEP_PAGE} as bare SQL: keyset (the app's) vs OFFSET {deep_offset} LIMIT {PAGE_SIZE + 1}, "
            "p50 / p99",
            f"keyset {both('sql:lists', key_deep.name)}",
            f"OFFSET {both('sql:lists', offset_deep.name)}",
            ratio("sql:lists", key_deep.name, "sql:lists", offset_deep.name),
        ),
        Row(
            f"page {DEEP_PAGE} by cursor over HTTP (htmx) vs OFFSET pagination as bare SQL, p50 / p99",
            both("app:lists_hx", deep_hx.name),
            f"OFFSET SQL {both('sql:lists', offset_deep.name)}",
            ratio("app:lists_hx", deep_hx.name, "sql:lists", offset_deep.name),
        ),
        *search_rows,
        Row(
            "wrong answers (app and floor): non-200, wrong row count, unhighlighted snippets; app vs SQL (and floor) "
            "disagreements",
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
        "the search statement (candidates, rank and snippets in one), as the app runs it; request SQL = "
        f"{request_names}, each connection reading its own session row); {ROUNDS} rounds, each measuring the app, "
        "the floor and the SQL in turn (rotated); every figure above is the median over the rounds, every ratio "
        "the median of the rounds' own ratios",
        "floor: bench/history/floor_app.py, a Litestar app on the same uvicorn, worker count and per-worker sockets, "
        "the same pool, request SQL (the login session read and the app's own page function), Jinja engine and "
        "template, without the app's middleware, dependency injection, validation and HTTP protocol limits",
        "response bytes, app / floor: " + "; ".join(sizes),
        "one request at a time, p50 / p99: "
        + "; ".join(f"{name} {_both(load, name)}" for name, load in serial_http.items())
        + "; bare SQL: "
        + "; ".join(f"{name} {_both(load, name)}" for name, load in serial_sql.items()),
    ]
    for key, name in (
        ("lists_hx", "htmx lists"),
        ("lists_json", "JSON lists"),
        ("full", "full page"),
        ("rare", f"search '{RARE_WORD}'"),
        ("common", f"search '{COMMON_WORD}'"),
    ):
        app_rate, floor_rate = rate(f"app:{key}"), rate(f"floor:{key}")
        report.notes.append(
            f"{name}: app {app_rate:,.0f} requests/s, CPU per request: app {ms(cpu(f'app:{key}'))}, PostgreSQL "
            f"{ms(cpu(f'app:{key}', 'postgres'))}; floor {floor_rate:,.0f} requests/s, its CPU "
            f"{ms(cpu(f'floor:{key}'))}, PostgreSQL {ms(cpu(f'floor:{key}', 'postgres'))} (last round, app: CPU "
            f"{CpuMeter.describe(rounds[-1][f'app:{key}'].cpu)})"
        )
    if wal_per_page > 0:
        report.notes.append(
            f"the database wrote {wal_per_page:,.0f} bytes of WAL per request during the first round (the "
            "requests' own statements are listed above)"
        )
    else:
        report.notes.append("list page views write nothing to the database: no WAL during the first round")
    report.notes.append(
        f"closed loop: with {CONCURRENCY} requests always in flight, latency ≈ {CONCURRENCY} ÷ throughput; the "
        "floor serves the same pages with the same SQL and template, so what the app adds over it is its own "
        "per-request work (the README's 'Where the time goes')"
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
            "EXPLAIN first page: " + await explain(conns[0], *first_page),
            f"EXPLAIN page {DEEP_PAGE}: " + await explain(conns[0], *deep_page),
        ]
    if search_missed:
        for word in (RARE_WORD, COMMON_WORD):
            query = search_query(user_id, word, PAGE_SIZE + 1)
            report.notes.append(
                f"EXPLAIN search '{word}' (candidates, rank and snippets): " + await explain(conns[0], *query)
            )


def _both(load: Load, name: str) -> str:
    return f"{ms(load.p(name, 50))} / {ms(load.p(name, 99))}"


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
