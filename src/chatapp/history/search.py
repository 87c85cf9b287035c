"""Full-text search over saved conversations (PostgreSQL, no extra service), as the person types: the last word
is a prefix, and when the words find little, titles also match by substring and by similarity (pg_trgm).

Archived conversations are found too, marked as such (as mail apps search "All mail"): archiving tidies the list,
it does not hide a conversation from the person looking for it. Pinned ones are marked.

Ranking every match of a very common word across 10,000 conversations costs about a second, so matches
are ranked in windows: the newest SEARCH_CANDIDATES matches (found through the GIN index on search_doc)
are ranked among themselves and paged through by rank, then the next older window, and so on, so every
match is reachable and none is shown twice. The cursor holds the window (the oldest conversation of the
previous one) and the position in it (rank, last activity, id). A page costs at most two window rankings.
The snippet is the best-matching utterance of each conversation on the page, highlighted with ts_headline in
the same statement (one round trip per page).
Every page also says how many conversations match in all.
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


# What the search box holds, as a tsquery. People search as they type, so the last word is matched as a prefix
# ('reykj' finds Reykjavik), stemmed ('hotels' finds hotel), or as typed when English drops it (a stop word may
# begin a longer word: 'to' finds Tokyo), unless it ends a "quoted phrase" or follows an operator (-word).
# `pattern` and `fuzzy` are for the titles, when the search is plain words of at least 3 characters (shorter
# ones have no trigram to look up; "phrases", -exclusions and `or` are for the words).
_QUERY = r"""
typed AS (
    SELECT $2::text AS words, substring($2 from '(?:^|\s)(\w+)$') AS last,
           length($2) - length(replace($2, '"', '')) AS quotes,
           length($2) >= 3 AND $2 ~ '^[\w ]+$' AS plain
),
q AS (
    SELECT CASE WHEN t.last IS NULL OR t.quotes % 2 = 1 THEN websearch_to_tsquery('english', t.words)
                ELSE websearch_to_tsquery('english', left(t.words, -length(t.last)))
                     && CASE WHEN numnode(to_tsquery('english', quote_literal(t.last) || ':*')) > 0
                             THEN to_tsquery('english', quote_literal(t.last) || ':*')
                             ELSE to_tsquery('simple', quote_literal(t.last) || ':*') END
           END AS query,
           CASE WHEN t.plain THEN '%' || replace(t.words, '_', '\_') || '%' END AS pattern,
           CASE WHEN t.plain THEN t.words END AS fuzzy
    FROM typed t
)"""

# The statements, as constants so the benchmark's bare-SQL baseline runs exactly what the app runs. The history
# filters' parameters come last ($10 on), so a new filter renumbers nothing here.
#
# `found` is every conversation the words find, read once (id and date only) for the count the page shows and
# for the window. Only when the words find less than a page do titles also match by substring ('javik') and by
# word similarity (pg_trgm's <% and <<%, at their default thresholds: 'Lisbn' and 'Rekjavik', typos, still find
# "Lisbon" and "Reykjavik"; 'hostel' does not find "hotel"): those scans cost more than
# the whole word search does for a common word, and a fragment or a typo is what finds little. Title-only matches
# rank by their similarity, the others by ts_rank. Each candidate's row is read by its id (LATERAL: an index
# lookup each, not a scan of the owner's conversations).
# `found` reads the query as a value ((SELECT query FROM q)), not by joining q: the index scan then takes it as
# a parameter, and the every-match scan has no join node over it (13% less PostgreSQL CPU for a 40% word).
SEARCH_SQL = f"""
WITH {_QUERY},
found AS MATERIALIZED (
    SELECT s.id, s.ended_at AS listed_at FROM chat_session s
    WHERE s.owner = $1 AND s.ended_at IS NOT NULL AND s.deleted_at IS NULL AND s.search_doc @@ (SELECT query FROM q)
      AND {filters.sql(10)}
),
found_count AS (SELECT count(*) AS n FROM found),
titles AS MATERIALIZED (
    SELECT s.id, s.ended_at AS listed_at FROM chat_session s, q
    WHERE (SELECT n FROM found_count) < {PAGE_SIZE} AND s.owner = $1 AND s.ended_at IS NOT NULL AND s.deleted_at IS NULL
      AND (s.title ILIKE q.pattern OR q.fuzzy <% s.title OR q.fuzzy <<% s.title) AND s.id NOT IN (SELECT id FROM found)
      AND {filters.sql(10)}
),
matched AS (
    SELECT id, listed_at, false AS by_title FROM found
    UNION ALL
    SELECT id, listed_at, true FROM titles
),
candidates AS (
    SELECT m.id, m.listed_at, m.by_title FROM matched m
    WHERE $8::timestamptz IS NULL OR (m.listed_at, m.id) < ($8, $9::uuid)
    ORDER BY m.listed_at DESC, m.id DESC
    LIMIT $3
),
ranked AS (
    SELECT c.id, s.title, s.started_at, c.listed_at, s.ended_at, s.message_count, s.pinned, s.archived,
           (CASE WHEN c.by_title
                 THEN greatest(word_similarity(q.fuzzy, s.title), strict_word_similarity(q.fuzzy, s.title))
                 ELSE ts_rank(s.search_doc, q.query) END)::float8 AS rank,
           count(*) OVER w AS window_size,
           last_value(c.listed_at) OVER w AS edge_listed_at,
           last_value(c.id) OVER w AS edge_id
    FROM candidates c
    CROSS JOIN LATERAL (
        SELECT title, started_at, ended_at, last_seq - superseded AS message_count, search_doc,
               pinned_at IS NOT NULL AS pinned, archived_at IS NOT NULL AS archived
        FROM chat_session WHERE id = c.id
    ) s, q
    WINDOW w AS (ORDER BY c.listed_at DESC, c.id DESC ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
),
-- The page, then each shown row's snippet: its best-matching utterance, highlighted with ts_headline (the
-- expensive part, so only for the rows shown, not for the one read past the page to see whether more follow).
page AS (
    SELECT ranked.*, row_number() OVER (ORDER BY rank DESC, listed_at DESC, id DESC) AS n FROM ranked
    WHERE $4::float8 IS NULL OR (rank, listed_at, id) < ($4, $5::timestamptz, $6::uuid)
    ORDER BY rank DESC, listed_at DESC, id DESC
    LIMIT $7
)
SELECT page.id, page.title, page.started_at, page.listed_at, page.ended_at, page.message_count, page.pinned,
       page.archived, page.rank, page.window_size, page.edge_listed_at, page.edge_id,
       (SELECT n FROM found_count) + (SELECT count(*) FROM titles) AS total,
       (SELECT ts_headline('english', best.text, q.query, '{_HEADLINE}')
        FROM (SELECT u.text FROM utterance u
              WHERE page.n < $7 AND u.session = page.id AND u.tsv @@ q.query AND u.superseded_at IS NULL
              ORDER BY ts_rank(u.tsv, q.query) DESC, u.seq
              LIMIT 1) best) AS headline
FROM page, q
ORDER BY page.n
"""


@dataclass(frozen=True)
class SearchHit:
    item: queries.SavedSummary
    snippet: Markup


@dataclass(frozen=True)
class SearchPage:
    hits: list[SearchHit]
    next_cursor: str | None
    # How many conversations match in all (counted on the first page only; None on later ones).
    total: int | None = None


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
    total: int | None = None
    async with connection() as conn:

        async def fetch(after: _Position | None, count: int) -> list[Any]:
            return list(await conn.fetch(*search_query(owner, query, count, filter_params, after, window)))

        while True:
            need = limit - len(page)  # 0 once the page is full: then only look whether anything is left
            rows = await fetch(after, need + 1)
            if cursor is None and total is None:
                total = rows[0]["total"] if rows else 0
            page += rows[:need]
            if len(rows) > need:
                last = page[-1] if need else None
                next_cursor = _encode(window, (last["rank"], last["listed_at"], last["id"]) if last else after)
                break
            this_window = rows[0] if rows else None
            if this_window is None and after is not None:
                # The cursor is past the window's last row (matches deleted since); its edge is still needed.
                this_window = next(iter(await fetch(None, 1)), None)
            if this_window is None or this_window["window_size"] < SEARCH_CANDIDATES:
                break  # the oldest window: nothing older matches
            window, after = (this_window["edge_listed_at"], this_window["edge_id"]), None
    hits = [
        SearchHit(
            queries.SavedSummary(
                r["id"], r["title"], r["started_at"], r["ended_at"], r["message_count"], r["pinned"], r["archived"]
            ),
            highlight(r["headline"]) if r["headline"] is not None else Markup(""),
        )
        for r in page
    ]
    return SearchPage(hits, next_cursor, total)
