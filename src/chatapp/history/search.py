"""Full-text search over saved conversations (PostgreSQL, no extra service).

Archived conversations are found too, marked as such (as mail apps search "All mail"): archiving tidies the list,
it does not hide a conversation from the person looking for it. Pinned ones are marked.

Ranking every match of a very common word across 10,000 conversations costs about a second, so matches
are ranked in windows: the newest SEARCH_CANDIDATES matches (found through the GIN index on search_doc)
are ranked among themselves and paged through by rank, then the next older window, and so on, so every
match is reachable and none is shown twice. The cursor holds the window (the oldest conversation of the
previous one) and the position in it (rank, started_at, id). A page costs at most two window rankings.
The snippet is the best-matching utterance of each conversation on the page, highlighted with ts_headline.
"""

from __future__ import annotations

import base64
import json
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from markupsafe import Markup, escape

from chatapp.conversations import queries
from chatapp.core.database import connection
from chatapp.core.validation import as_utc
from chatapp.history import filters
from chatapp.history.service import CURSOR_ERRORS, PAGE_SIZE, BadCursor

SEARCH_CANDIDATES = 100
MAX_QUERY_LENGTH = 200
# Highlight markers no stored text can contain, so a message cannot fake a highlight: a random word per
# process (letters and digits survive escaping and need no quoting in the options).
_NONCE = secrets.token_hex(12)
_START, _STOP = f"hlstart{_NONCE}", f"hlstop{_NONCE}"
_HEADLINE = f'StartSel={_START}, StopSel={_STOP}, MaxWords=24, MinWords=10, MaxFragments=2, FragmentDelimiter=" … "'


# The statements, as constants so the benchmark's bare-SQL baseline runs exactly what the app runs. The history
# filters' parameters come last ($10 on), so a new filter renumbers nothing here.
SEARCH_SQL = f"""
WITH q AS (SELECT websearch_to_tsquery('english', $2) AS query),
candidates AS (
    SELECT s.id, s.title, s.started_at, s.ended_at, s.last_seq, s.search_doc,
           s.pinned_at IS NOT NULL AS pinned, s.archived_at IS NOT NULL AS archived
    FROM chat_session s, q
    WHERE s.owner = $1 AND s.ended_at IS NOT NULL AND s.search_doc @@ q.query
      AND ($8::timestamptz IS NULL OR (s.started_at, s.id) < ($8, $9::uuid))
      AND {filters.sql(10)}
    ORDER BY s.started_at DESC, s.id DESC
    LIMIT $3
),
ranked AS (
    SELECT c.id, c.title, c.started_at, c.ended_at, c.last_seq, c.pinned, c.archived,
           ts_rank(c.search_doc, q.query)::float8 AS rank,
           count(*) OVER w AS window_size,
           last_value(c.started_at) OVER w AS edge_started_at,
           last_value(c.id) OVER w AS edge_id
    FROM candidates c, q
    WINDOW w AS (ORDER BY c.started_at DESC, c.id DESC ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
)
SELECT * FROM ranked
WHERE $4::float8 IS NULL OR (rank, started_at, id) < ($4, $5::timestamptz, $6::uuid)
ORDER BY rank DESC, started_at DESC, id DESC
LIMIT $7
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
    item: queries.SavedSummary
    snippet: Markup


@dataclass(frozen=True)
class SearchPage:
    hits: list[SearchHit]
    next_cursor: str | None


def highlight(headline: str) -> Markup:
    """Escape everything, then turn the markers ts_headline placed into <mark> elements."""
    escaped = str(escape(headline))
    return Markup(escaped.replace(_START, "<mark>").replace(_STOP, "</mark>"))  # noqa: S704 - escaped above


_Key = tuple[datetime, uuid.UUID]
_Position = tuple[float, datetime, uuid.UUID]


def _encode(window: _Key | None, after: _Position | None) -> str:
    edge = [window[0].isoformat(), str(window[1])] if window else None
    position = [after[0], after[1].isoformat(), str(after[2])] if after else None
    raw = json.dumps([edge, position]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(cursor: str) -> tuple[_Key | None, _Position | None]:
    try:
        edge, position = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        window = (as_utc(datetime.fromisoformat(edge[0])), uuid.UUID(edge[1])) if edge is not None else None
        after = (
            (float(position[0]), as_utc(datetime.fromisoformat(position[1])), uuid.UUID(position[2]))
            if position is not None
            else None
        )
    except CURSOR_ERRORS:
        raise BadCursor("invalid cursor") from None
    if window is None and after is None:
        raise BadCursor("invalid cursor")
    return window, after


def search_query(
    owner: uuid.UUID,
    query: str,
    count: int,
    filter_params: Sequence[Any] | None = None,
    after: _Position | None = None,
    window: _Key | None = None,
) -> tuple[Any, ...]:
    """The search statement and its parameters, built in one place (the bench runs exactly these)."""
    chosen = filters.params_or_none(filter_params)
    return (
        SEARCH_SQL,
        owner,
        query,
        SEARCH_CANDIDATES,
        *(after or (None, None, None)),
        count,
        *(window or (None, None)),
        *chosen,
    )


def snippets_query(ids: list[uuid.UUID], query: str) -> tuple[Any, ...]:
    """The snippets statement and its parameters (the bench runs exactly these)."""
    return SNIPPETS_SQL, ids, query


async def search(
    owner: uuid.UUID,
    query: str,
    cursor: str | None = None,
    filter_params: Sequence[Any] | None = None,
    limit: int = PAGE_SIZE,
) -> SearchPage:
    """One page of matches, best first within each window of SEARCH_CANDIDATES, windows newest first, within
    the history filters (`filters.apply(...).params`)."""
    window, after = _decode(cursor) if cursor else (None, None)
    page: list[Any] = []
    next_cursor: str | None = None
    async with connection() as conn:

        async def fetch(after: _Position | None, count: int) -> list[Any]:
            return list(await conn.fetch(*search_query(owner, query, count, filter_params, after, window)))

        while True:
            need = limit - len(page)  # 0 once the page is full: then only look whether anything is left
            rows = await fetch(after, need + 1)
            page += rows[:need]
            if len(rows) > need:
                last = page[-1] if need else None
                next_cursor = _encode(window, (last["rank"], last["started_at"], last["id"]) if last else after)
                break
            this_window = rows[0] if rows else None
            if this_window is None and after is not None:
                # The cursor is past the window's last row (matches deleted since); its edge is still needed.
                this_window = next(iter(await fetch(None, 1)), None)
            if this_window is None or this_window["window_size"] < SEARCH_CANDIDATES:
                break  # the oldest window: nothing older matches
            window, after = (this_window["edge_started_at"], this_window["edge_id"]), None
        snippets = await _snippets(conn, [r["id"] for r in page], query)
    hits = [
        SearchHit(
            queries.SavedSummary(
                r["id"], r["title"], r["started_at"], r["ended_at"], r["last_seq"], r["pinned"], r["archived"]
            ),
            snippets.get(r["id"], Markup("")),
        )
        for r in page
    ]
    return SearchPage(hits, next_cursor)


async def _snippets(conn: object, ids: list[uuid.UUID], query: str) -> dict[uuid.UUID, Markup]:
    if not ids:
        return {}
    rows = await conn.fetch(*snippets_query(ids, query))  # type: ignore[attr-defined]
    return {row["session"]: highlight(row["headline"]) for row in rows}
