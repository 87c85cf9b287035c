"""Full-text search over saved conversations (PostgreSQL, no extra service).

Ranking every match of a very common word across 10,000 conversations costs about a second, so results
are ranked among the newest SEARCH_CANDIDATES matches (found through the GIN index on search_doc); the
snippet is the best-matching utterance of each conversation on the page, highlighted with ts_headline.
"""

from __future__ import annotations

import base64
import json
import secrets
import uuid
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from markupsafe import Markup, escape

from chatapp.conversations import store
from chatapp.database import connection
from chatapp.history.service import CURSOR_ERRORS, PAGE_SIZE, BadCursor
from chatapp.validation import as_utc

SEARCH_CANDIDATES = 100
MAX_QUERY_LENGTH = 200
# Highlight markers no stored text can contain, so a message cannot fake a highlight: a random word per
# process (letters and digits survive escaping and need no quoting in the options).
_NONCE = secrets.token_hex(12)
_START, _STOP = f"hlstart{_NONCE}", f"hlstop{_NONCE}"
_HEADLINE = f'StartSel={_START}, StopSel={_STOP}, MaxWords=24, MinWords=10, MaxFragments=2, FragmentDelimiter=" … "'


# The statements, as constants so the benchmark's bare-SQL baseline runs exactly what the app runs.
SEARCH_SQL = """
WITH q AS (SELECT websearch_to_tsquery('english', $2) AS query),
candidates AS (
    SELECT s.id, s.title, s.started_at, s.ended_at, s.last_seq, s.search_doc
    FROM chat_session s, q
    WHERE s.owner = $1 AND s.ended_at IS NOT NULL AND s.search_doc @@ q.query
      AND ($3::timestamptz IS NULL OR s.started_at >= $3)
      AND ($4::timestamptz IS NULL OR s.started_at < $4)
    ORDER BY s.started_at DESC, s.id DESC
    LIMIT $5
),
ranked AS (
    SELECT c.id, c.title, c.started_at, c.ended_at, c.last_seq,
           ts_rank(c.search_doc, q.query)::float8 AS rank
    FROM candidates c, q
)
SELECT * FROM ranked
WHERE $6::float8 IS NULL OR (rank, started_at, id) < ($6, $7::timestamptz, $8::uuid)
ORDER BY rank DESC, started_at DESC, id DESC
LIMIT $9
"""
SNIPPETS_SQL = f"""
WITH q AS (SELECT websearch_to_tsquery('english', $2) AS query),
best AS (
    SELECT DISTINCT ON (u.session) u.session, u.text
    FROM utterance u, q
    WHERE u.session = ANY($1::uuid[]) AND u.tsv @@ q.query
    ORDER BY u.session, ts_rank(u.tsv, q.query) DESC, u.seq
)
-- Highlight only each conversation's best utterance: ts_headline is the expensive part.
SELECT best.session, ts_headline('english', best.text, q.query, '{_HEADLINE}') AS headline
FROM best, q
"""


@dataclass(frozen=True)
class SearchHit:
    item: store.SavedSummary
    snippet: Markup


@dataclass(frozen=True)
class SearchPage:
    hits: list[SearchHit]
    next_cursor: str | None


def highlight(headline: str) -> Markup:
    """Escape everything, then turn the markers ts_headline placed into <mark> elements."""
    escaped = str(escape(headline))
    return Markup(escaped.replace(_START, "<mark>").replace(_STOP, "</mark>"))  # noqa: S704 - escaped above


def _encode(rank: float, started_at: datetime, conversation_id: uuid.UUID) -> str:
    raw = json.dumps([rank, started_at.isoformat(), str(conversation_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(cursor: str) -> tuple[float, datetime, uuid.UUID]:
    try:
        rank, started_at, conversation_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return float(rank), as_utc(datetime.fromisoformat(started_at)), uuid.UUID(conversation_id)
    except CURSOR_ERRORS:
        raise BadCursor("invalid cursor") from None


# A day more than Python's range on each side, so every zone's day bounds still fit in UTC.
FIRST_DATE, LAST_DATE = date(1, 1, 2), date(9999, 12, 30)


def date_bounds(
    date_from: date | None, date_to: date | None, zone: ZoneInfo
) -> tuple[datetime | None, datetime | None]:
    """Inclusive calendar days in the person's time zone, as a half-open timestamp range."""
    start = datetime.combine(date_from, time.min, tzinfo=zone) if date_from else None
    end = datetime.combine(date_to + timedelta(days=1), time.min, tzinfo=zone) if date_to else None
    return start, end


async def search(
    owner: uuid.UUID,
    query: str,
    cursor: str | None = None,
    started_from: datetime | None = None,
    started_before: datetime | None = None,
    limit: int = PAGE_SIZE,
) -> SearchPage:
    after = _decode(cursor) if cursor else None
    async with connection() as conn:
        rows = await conn.fetch(
            SEARCH_SQL,
            owner,
            query,
            started_from,
            started_before,
            SEARCH_CANDIDATES,
            after[0] if after else None,
            after[1] if after else None,
            after[2] if after else None,
            limit + 1,
        )
        page = rows[:limit]
        snippets = await _snippets(conn, [r["id"] for r in page], query)
    hits = [
        SearchHit(
            store.SavedSummary(r["id"], r["title"], r["started_at"], r["ended_at"], r["last_seq"]),
            snippets.get(r["id"], Markup("")),
        )
        for r in page
    ]
    last = page[-1] if page else None
    next_cursor = _encode(last["rank"], last["started_at"], last["id"]) if last and len(rows) > limit else None
    return SearchPage(hits, next_cursor)


async def _snippets(conn: object, ids: list[uuid.UUID], query: str) -> dict[uuid.UUID, Markup]:
    if not ids:
        return {}
    rows = await conn.fetch(  # type: ignore[attr-defined]
        SNIPPETS_SQL,
        ids,
        query,
    )
    return {row["session"]: highlight(row["headline"]) for row in rows}
