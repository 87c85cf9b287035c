"""The history dataset: one user's conversations and utterances seeded set-based in PostgreSQL, with search
documents as the app writes them (checked on a sample against queries.refresh_search_doc)."""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from dataclasses import dataclass

import asyncpg

from bench.history.config import (
    COMMON_SHARE,
    COMMON_WORD,
    CONVERSATIONS,
    PER_CONVERSATION,
    RARE_SHARE,
    RARE_WORD,
    SEED_CONNECTIONS,
)
from bench.kit.text import VOCABULARY, VOCABULARY_SKEW
from chatapp.conversations import queries

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
# The title is the first user utterance (cut), and search_doc the same expression as queries.refresh_search_doc
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


@dataclass
class Seed:
    user_id: uuid.UUID
    seconds: float | None  # None: the database was already seeded
    rare_share: float = math.nan
    common_share: float = math.nan
    rare_conversations: int = 0
    common_conversations: int = 0
    docs_rebuilt: bool = False  # a reused seed's search documents were written by an older expression
    docs_differ: int = 0  # sample conversations whose search_doc is not what queries.refresh_search_doc writes


async def docs_differ(conn: asyncpg.Connection, user_id: uuid.UUID) -> int:
    """How many of a few seeded conversations have a search document other than the one the app's own
    queries.refresh_search_doc writes for them (its UPDATEs are rolled back)."""
    differ = 0
    for row in await conn.fetch(SEED_SAMPLE, user_id):
        seeded = await conn.fetchval(SEARCH_DOC, row["id"])
        transaction = conn.transaction()
        await transaction.start()
        try:
            await queries.refresh_search_doc(conn, row["id"])
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
