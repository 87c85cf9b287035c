"""A conversation whose search document would pass PostgreSQL's 1 MB tsvector limit still saves, and stays findable."""

from __future__ import annotations

import logging
import time
import uuid

import pytest

from chatapp.conversations import queries
from chatapp.conversations.service import ConversationService
from chatapp.core.database import connection
from tests.factories import final, make_user


async def add_random_words(conversation_id: uuid.UUID, utterances: int, words: int = 100) -> None:
    """`utterances` utterances of `words` distinct random 16-letter words each, written in one statement."""
    async with connection() as conn:
        await conn.execute(
            """
            INSERT INTO utterance (session, seq, item_id, role, text)
            SELECT $1, 1 + g, 'bulk-' || g, 'user', (
                SELECT string_agg(translate(substr(md5(random()::text), 1, 16), '0123456789', 'ghijklmnop'), ' ')
                FROM generate_series(1, $3) k WHERE g > 0
            )
            FROM generate_series(1, $2) g
            """,
            conversation_id,
            utterances,
            words,
        )
        await conn.execute("UPDATE chat_session SET last_seq = $2 WHERE id = $1", conversation_id, utterances + 1)


async def finds(conversation_id: uuid.UUID, word: str) -> bool:
    async with connection() as conn:
        return bool(
            await conn.fetchval(
                "SELECT search_doc @@ plainto_tsquery('english', $2) FROM chat_session WHERE id = $1",
                conversation_id,
                word,
            )
        )


# The limit counts lexeme bytes plus 4 bytes of positions each. 60,000 distinct 16-letter words: over 1 MB with
# positions, under it stripped; 80,000: over it either way.
@pytest.mark.parametrize(("utterances", "fallbacks"), [(600, 1), (800, 2)])
async def test_a_conversation_too_large_for_one_tsvector_still_saves(
    service: ConversationService, utterances: int, fallbacks: int, caplog: pytest.LogCaptureFixture
) -> None:
    user = await make_user()
    cid = (await service.open(user.id, user.display_name)).conversation.id
    await service.pipeline.apply(cid, [final(cid, "u1", "Kilimanjaro expedition notes")])
    await add_random_words(cid, utterances)
    async with connection() as conn:
        first_bulk = await conn.fetchval("SELECT text FROM utterance WHERE session = $1 AND seq = 2", cid)
    first_bulk_word = first_bulk.split()[0]

    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="chatapp.conversations.queries"):
        result = await service.end(user.id, cid, "new_chat")
    took = time.monotonic() - started

    assert result.saved is not None
    assert result.saved.title == "Kilimanjaro expedition notes"
    assert len(await queries.list_utterances(cid)) == utterances + 1
    assert await finds(cid, "Kilimanjaro")  # the title and the start of the transcript are searchable
    assert await finds(cid, first_bulk_word)
    assert took < 10
    assert sum("too large" in r.getMessage() for r in caplog.records) == fallbacks
    async with connection() as conn:
        lexemes = await conn.fetchval("SELECT length(search_doc) FROM chat_session WHERE id = $1", cid)
    assert lexemes > 20_000  # a large part of the transcript, not just the title
