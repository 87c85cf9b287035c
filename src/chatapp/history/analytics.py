"""Numbers for the analytics page, aggregated in PostgreSQL in a few statements on one connection.

COUNTS_SQL reads only chat_session (one row per saved conversation, through the owner index): conversations and
messages per local day (last 30 days) and per local week (last 26, Monday first), the duration buckets and the
start hours over every saved conversation. "Messages" of a day are those of the conversations started that day
(`last_seq - superseded` is the message count: replies replaced by Retry are not counted), so no utterance is
read.

TOPICS_SQL runs ts_stat over what the user said (their utterances' stored `tsv`, one document per conversation)
in the newest TOPIC_CONVERSATIONS conversations. Not over `search_doc`: that holds the agent's replies too, and
the agent's stock phrases ("tell", "help", "sure") would outrank the user's own topics. Not over every
conversation either: ts_stat walks every lexeme of every document, which over 10,000 conversations of 100
utterances costs seconds (measured in bench/history.py), and the recent conversations' topics are the more
interesting ones. ts_stat gives stemmed lexemes ("travel" for "travelling"), so each is shown as its most
common spelling in a sample of the same utterances, or as the lexeme when the sample lacks it.

Together they cost tens of milliseconds of PostgreSQL CPU for a long history (see bench/history.py), so each
process keeps the last answer per user (up to CACHE_USERS users), keyed by VERSION_SQL (the number of saved
conversations, their messages and the newest end: saving, deleting or a late final changes it), the time zone
and the local date. A page view then costs that one small aggregate; a stale answer is never shown and no other
code has to invalidate anything.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from chatapp.core.database import connection
from chatapp.history.charts import BarChart, ColumnChart, Datum, bar_chart, column_chart

DAYS = 30
WEEKS = 26
# Upper bounds in seconds of the duration buckets; the last bucket is everything longer.
DURATION_BOUNDS = (60, 5 * 60, 15 * 60, 30 * 60, 60 * 60)
DURATION_LABELS = ("< 1 min", "1\u20135 min", "5\u201315 min", "15\u201330 min", "30\u201360 min", "≥ 1 h")
TOPIC_CONVERSATIONS = 100
TOPIC_COUNT = 10
TOPIC_MIN_LENGTH = 3  # lexemes shorter than this ("ok", "hi") are noise
TOPIC_SAMPLE_UTTERANCES = 500
CACHE_USERS = 1000  # per process; an entry is a few kB

COUNTS_SQL = """
WITH saved AS MATERIALIZED (
    -- How long it lasted: its active time, the gaps before each reopening left out (earlier periods' lengths,
    -- read only for conversations that were reopened).
    SELECT started_at AT TIME ZONE $2 AS local,
           extract(epoch FROM ended_at - coalesce(reopened_at, started_at))
           + CASE WHEN period = 0 THEN 0 ELSE (SELECT extract(epoch FROM sum(p.ended_at - p.started_at))
                                               FROM conversation_period p WHERE p.session = s.id) END AS seconds,
           last_seq - superseded AS last_seq
    FROM chat_session s WHERE owner = $1 AND ended_at IS NOT NULL AND deleted_at IS NULL
),
today AS (SELECT (now() AT TIME ZONE $2)::date AS d),
-- Only the rows inside each window are grouped (a long history has thousands of older days).
by_day AS (SELECT local::date AS day, count(*) AS n, sum(last_seq) AS m FROM saved, today
           WHERE local >= today.d - ($3::int - 1) GROUP BY 1),
by_week AS (SELECT date_trunc('week', local)::date AS week, count(*) AS n, sum(last_seq) AS m FROM saved, today
            WHERE local >= date_trunc('week', today.d) - ($4::int - 1) * interval '1 week' GROUP BY 1),
by_duration AS (SELECT width_bucket(seconds, $5::float8[]) AS bucket, count(*) AS n, sum(last_seq) AS m
                FROM saved GROUP BY 1),
by_hour AS (SELECT extract(hour FROM local)::int AS hour, count(*) AS n, sum(last_seq) AS m FROM saved GROUP BY 1)
SELECT 'day' AS kind, g.day::date AS day, NULL::int AS bucket, coalesce(c.n, 0) AS conversations,
       coalesce(c.m, 0) AS messages
FROM today, generate_series(today.d - ($3::int - 1), today.d, interval '1 day') AS g(day)
LEFT JOIN by_day c ON c.day = g.day::date
UNION ALL
SELECT 'week', g.week::date, NULL, coalesce(c.n, 0), coalesce(c.m, 0)
FROM today, generate_series(date_trunc('week', today.d) - ($4::int - 1) * interval '1 week',
                            date_trunc('week', today.d), interval '1 week') AS g(week)
LEFT JOIN by_week c ON c.week = g.week::date
UNION ALL
SELECT 'duration', NULL, g.bucket, coalesce(c.n, 0), coalesce(c.m, 0)
FROM generate_series(0, cardinality($5::float8[])) AS g(bucket) LEFT JOIN by_duration c USING (bucket)
UNION ALL
SELECT 'hour', NULL, g.hour, coalesce(c.n, 0), coalesce(c.m, 0)
FROM generate_series(0, 23) AS g(hour) LEFT JOIN by_hour c USING (hour)
UNION ALL
SELECT 'total', min(local)::date, NULL, count(*), coalesce(sum(last_seq), 0) FROM saved
ORDER BY 1, 2, 3
"""

# ts_stat takes its query as text: the owner goes in through format('%L'), never by string concatenation.
# One document per conversation (its user utterances' stored tsv), so ndoc counts conversations.
TOPICS_SQL = """
WITH top AS (
    SELECT word AS lexeme, ndoc, nentry
    FROM ts_stat(format(
        'SELECT tsvector_agg(u.tsv) FROM ('
        '    SELECT id FROM chat_session WHERE owner = %L AND ended_at IS NOT NULL AND deleted_at IS NULL'
        '    ORDER BY ended_at DESC, id DESC LIMIT %s'
        ') AS s JOIN utterance u ON u.session = s.id WHERE u.role = ''user'' GROUP BY s.id',
        $1::uuid::text, $2::int))
    WHERE length(word) >= $3 AND word !~ '[0-9]'
    ORDER BY ndoc DESC, nentry DESC, word
    LIMIT $4
),
sample AS (
    SELECT u.text FROM (
        SELECT id FROM chat_session WHERE owner = $1::uuid AND ended_at IS NOT NULL AND deleted_at IS NULL
        ORDER BY ended_at DESC, id DESC LIMIT $2
    ) AS s
    JOIN utterance u ON u.session = s.id
    WHERE u.role = 'user'
    LIMIT $5
),
words AS (
    SELECT w.word, (ts_lexize('english_stem', w.word))[1] AS lexeme
    FROM sample, regexp_split_to_table(lower(sample.text), '[^[:alpha:]]+') AS w(word)
    WHERE length(w.word) >= $3
),
spelling AS (
    SELECT DISTINCT ON (lexeme) lexeme, word
    FROM words WHERE lexeme IN (SELECT lexeme FROM top)
    GROUP BY lexeme, word
    ORDER BY lexeme, count(*) DESC, word
)
SELECT top.lexeme, coalesce(spelling.word, top.lexeme) AS word, top.ndoc, top.nentry
FROM top LEFT JOIN spelling USING (lexeme)
ORDER BY top.ndoc DESC, top.nentry DESC, top.lexeme
"""


@dataclass(frozen=True)
class Period:
    """A local day or week (its Monday) with the conversations started in it and their messages."""

    start: date
    conversations: int
    messages: int


@dataclass(frozen=True)
class Topic:
    word: str  # readable spelling
    lexeme: str
    conversations: int
    mentions: int


@dataclass
class Analytics:
    conversations: int = 0
    messages: int = 0
    first_day: date | None = None
    days: list[Period] = field(default_factory=list)
    weeks: list[Period] = field(default_factory=list)
    durations: list[int] = field(default_factory=list)  # conversations per DURATION_LABELS bucket
    hours: list[int] = field(default_factory=list)  # conversations started per local hour 0-23
    topics: list[Topic] = field(default_factory=list)


async def analytics(owner: uuid.UUID, zone: ZoneInfo) -> Analytics:
    """The user's numbers, with days, weeks and hours in `zone` (UTC if PostgreSQL does not know the zone):
    from this process's cache while VERSION_SQL says nothing changed, else computed (and cached)."""
    async with connection() as conn:
        version = await conn.fetchrow(VERSION_SQL, owner)
        key: CacheKey = (version["n"], version["m"], version["newest"], zone.key, datetime.now(zone).date())
        cached = _cache.get(owner)
        if cached is not None and cached[0] == key:
            _cache.move_to_end(owner)
            return cached[1]
        result = await _compute(conn, owner, zone)
    _cache[owner] = (key, result)
    if len(_cache) > CACHE_USERS:
        _cache.popitem(last=False)
    return result


async def _compute(conn: asyncpg.Connection, owner: uuid.UUID, zone: ZoneInfo) -> Analytics:
    try:
        rows = await _counts(conn, owner, zone.key)
    except asyncpg.InvalidParameterValueError:  # a zone Python knows and this PostgreSQL does not
        rows = await _counts(conn, owner, "UTC")
    result = Analytics()
    for row in rows:
        kind = row["kind"]
        if kind == "total":
            result.conversations, result.messages, result.first_day = row["conversations"], row["messages"], row["day"]
        elif kind in ("day", "week"):
            period = Period(row["day"], row["conversations"], row["messages"])
            (result.days if kind == "day" else result.weeks).append(period)
        elif kind == "duration":
            result.durations.append(row["conversations"])
        else:
            result.hours.append(row["conversations"])
    if result.conversations:
        result.topics = await topics(conn, owner)
    return result


# What the numbers depend on besides the clock: saving, deleting and a late final each change it.
VERSION_SQL = """
SELECT count(*) AS n, coalesce(sum(last_seq), 0) AS m, max(ended_at) AS newest
FROM chat_session WHERE owner = $1 AND ended_at IS NOT NULL AND deleted_at IS NULL
"""
CacheKey = tuple[int, int, datetime | None, str, date]
_cache: OrderedDict[uuid.UUID, tuple[CacheKey, Analytics]] = OrderedDict()


async def topics(conn: asyncpg.Connection, owner: uuid.UUID) -> list[Topic]:
    """The user's most frequent topics, straight from the database (no cache)."""
    rows = await conn.fetch(
        TOPICS_SQL, owner, TOPIC_CONVERSATIONS, TOPIC_MIN_LENGTH, TOPIC_COUNT, TOPIC_SAMPLE_UTTERANCES
    )
    return [Topic(r["word"], r["lexeme"], r["ndoc"], r["nentry"]) for r in rows]


def counts_query(owner: uuid.UUID, zone: str) -> tuple[Any, ...]:
    """The counts statement and its parameters, built in one place (the bench runs exactly these)."""
    return COUNTS_SQL, owner, zone, DAYS, WEEKS, [float(b) for b in DURATION_BOUNDS]


async def _counts(conn: asyncpg.Connection, owner: uuid.UUID, zone: str) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(*counts_query(owner, zone))
    return rows


def week_label(start: date) -> str:
    end = start + timedelta(days=6)
    return f"{start:%b %-d}\u2013{end:%b %-d, %Y}" if start.year != end.year else f"{start:%b %-d}\u2013{end:%b %-d}"


def charts(result: Analytics) -> dict[str, ColumnChart | BarChart]:
    """The page's charts, by name, from the numbers."""
    days, weeks = result.days, result.weeks
    return {
        "days": column_chart(
            "chart-days",
            "Conversations per day",
            f"Conversations started on each of the last {DAYS} days, {sum(p.conversations for p in days)} in all.",
            "conversations",
            [Datum(f"{p.start:%b %-d}", f"{p.start:%a, %b %-d}", p.conversations) for p in days],
        ),
        "day_messages": column_chart(
            "chart-day-messages",
            "Messages per day",
            f"Messages in the conversations started on each of the last {DAYS} days, "
            f"{sum(p.messages for p in days)} in all.",
            "messages",
            [Datum(f"{p.start:%b %-d}", f"{p.start:%a, %b %-d}", p.messages) for p in days],
        ),
        "weeks": column_chart(
            "chart-weeks",
            "Conversations per week",
            f"Conversations started in each of the last {WEEKS} weeks (Monday to Sunday), "
            f"{sum(p.conversations for p in weeks)} in all.",
            "conversations",
            [Datum(f"{p.start:%b %-d}", week_label(p.start), p.conversations) for p in weeks],
        ),
        "week_messages": column_chart(
            "chart-week-messages",
            "Messages per week",
            f"Messages in the conversations started in each of the last {WEEKS} weeks, "
            f"{sum(p.messages for p in weeks)} in all.",
            "messages",
            [Datum(f"{p.start:%b %-d}", week_label(p.start), p.messages) for p in weeks],
        ),
        "durations": bar_chart(
            "chart-durations",
            "How long conversations last",
            "Saved conversations by duration, from under a minute to over an hour.",
            "conversations",
            [Datum(label, label, n) for label, n in zip(DURATION_LABELS, result.durations, strict=True)],
        ),
        "hours": column_chart(
            "chart-hours",
            "Busiest hours",
            "Conversations started in each hour of the day, in your time zone, over all saved conversations.",
            "conversations",
            [Datum(f"{h:02d}", f"{h:02d}:00\u2013{(h + 1) % 24:02d}:00", n) for h, n in enumerate(result.hours)],
            label_newest=False,
        ),
        "topics": bar_chart(
            "chart-topics",
            "Most frequent topics",
            f"The words you used in the most conversations, among your newest {TOPIC_CONVERSATIONS}.",
            "conversations",
            [
                Datum(
                    t.word,
                    f"{t.word} (in {t.conversations} conversation{'' if t.conversations == 1 else 's'})",
                    t.conversations,
                )
                for t in result.topics
            ],
        ),
    }
