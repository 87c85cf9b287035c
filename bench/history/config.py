"""The history benchmarks' knobs (BENCH_HISTORY_*), the words they search for, and the app's statements they
recognise in PostgreSQL's log (imported from the app's history modules, never copied)."""

from __future__ import annotations

import re

from bench.kit.machine import env_float
from bench.kit.statements import (
    SESSION_READ,
    sql_key,
)
from chatapp.history import analytics
from chatapp.history.search import SEARCH_SQL
from chatapp.history.service import API_PAGE_SQL, FIRST_PAGE_SQL, PAGE_SIZE, SAVED_PAGE_SQL

CONVERSATIONS = int(env_float("BENCH_HISTORY_CONVERSATIONS", 10_000))
PER_CONVERSATION = int(env_float("BENCH_HISTORY_UTTERANCES", 100))  # 10,000 x 100 = 1,000,000 utterances
REQUESTS = int(env_float("BENCH_HISTORY_REQUESTS", 400))  # per measurement, at CONCURRENCY
CONCURRENCY = int(env_float("BENCH_HISTORY_CONCURRENCY", 8))
SERIAL_REQUESTS = 100  # per measurement, one at a time (for the notes)
DEEP_PAGE = min(400, max(2, CONVERSATIONS // PAGE_SIZE))
ROUNDS = int(env_float("BENCH_HISTORY_ROUNDS", 3))  # app, floor and SQL in turn, each round; medians reported
# Targets (issue 25): ratios measured within one run, so they hold on any machine, not absolute times.
FLOOR_RATIO_TARGET = 1.3  # htmx and full list pages: p99 vs the framework floor's (bench/history/floor_app.py)
LIST_CPU_TARGET = 0.0012  # seconds of app CPU per htmx or full list page
JSON_RATIO_TARGET = 1.2  # JSON API pages: p99 vs their bare keyset SQL
SEARCH_RATIO_TARGET = 1.3  # search: p99 vs its bare SQL (the search statement, snippets included)
SEARCH_CPU_TARGET = 0.0015  # seconds of app CPU per search
# The search SQL itself must not get slower to make the ratio easier: its p99 at 8 concurrent in the README when
# issue 25 started ('aqueduct', 'hotel'; 2026-12-07).
SEARCH_SQL_P99_BEFORE = (0.0342, 0.0424)
DEEP_RATIO_TARGET = 1.2
ANALYTICS_P99_TARGET = 0.100
EMAIL = "bench-history@example.com"  # one user, reused when BENCH_DATABASE_URL points at a seeded database
RARE_WORD, RARE_SHARE = "aqueduct", 0.01  # in ~1% of utterances (neither word is in VOCABULARY)
COMMON_WORD, COMMON_SHARE = "hotel", 0.40  # in ~40% of utterances: every conversation matches
SEED_CONNECTIONS = 2
HX = {"HX-Request": "true"}

ITEM_ID = re.compile(rb'data-testid="history-item" data-conversation-id="([0-9a-f-]{36})"')
LOAD_MORE = re.compile(rb'hx-get="(/history\?[^"]+)"')

# The app's statements, imported from history/service.py and history/search.py (their parameters come from the
# app's own keyset_page_query, search_query and analytics.counts_query). The bench still checks
# that the app sends exactly these (PostgreSQL's statement log of one request of each kind) and that the search
# answers the same conversations as the app.
KEYSET_PAGE = SAVED_PAGE_SQL
FIRST_PAGE = FIRST_PAGE_SQL
API_PAGE = API_PAGE_SQL
SEARCH = SEARCH_SQL
# The lists' order: last activity (a saved conversation's end), as the app's keyset pages.
OFFSET_PAGE = """
    SELECT id, title, started_at, ended_at, last_seq AS message_count FROM chat_session
    WHERE owner = $1 AND ended_at IS NOT NULL
    ORDER BY ended_at DESC, id DESC
    OFFSET $2 LIMIT $3
"""
# What each request sends, in order: Litestar reads the login session, then the page's own statement(s).
FIRST_REQUEST = (SESSION_READ, FIRST_PAGE)  # page 1 of the main list: its pins and rows in one statement
LIST_REQUEST = (SESSION_READ, KEYSET_PAGE)
API_REQUEST = (SESSION_READ, API_PAGE)
SEARCH_REQUEST = (SESSION_READ, SEARCH)  # the page, its count and its snippets in one statement
ANALYTICS_REQUEST = (SESSION_READ, analytics.VERSION_SQL)  # the numbers from the process's cache
ANALYTICS_COLD_REQUEST = (*ANALYTICS_REQUEST, analytics.COUNTS_SQL, analytics.TOPICS_SQL)  # first view after a change
NAMES = {
    sql_key(sql): name
    for name, sql in (
        ("session read", SESSION_READ),
        ("keyset page", KEYSET_PAGE),
        ("first page with pins", FIRST_PAGE),
        ("API keyset page", API_PAGE),
        ("search", SEARCH),
        ("analytics version", analytics.VERSION_SQL),
        ("analytics counts", analytics.COUNTS_SQL),
        ("analytics topics", analytics.TOPICS_SQL),
    )
}
WAL_LSN = "SELECT pg_current_wal_lsn()::text"
WAL_BYTES = "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::text::pg_lsn)"
