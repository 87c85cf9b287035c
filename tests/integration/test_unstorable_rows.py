"""One bad row never stops saving: unstorable interims are dropped at the end, the reaper goes row by row and
re-checks idleness under the per-user lock."""

from __future__ import annotations

import asyncio
import logging
import uuid

import pytest

from chatapp.accounts.session_store import PostgresStore
from chatapp.conversations import queries
from chatapp.conversations.service import ConversationService
from chatapp.core.database import connection
from chatapp.history.reaper import reap_idle, reap_round
from tests.factories import final, interim, make_user
from tests.support import idle_for

# Far older than anything other tests leave idle, so these rows come first in the reaper's batch.
LONG_AGO = 10_000_000


async def texts(conversation_id: uuid.UUID) -> list[tuple[str, bool]]:
    return [(u.text, u.interrupted) for u in await queries.list_utterances(conversation_id)]


async def open_with_bad_interims(service: ConversationService) -> tuple[uuid.UUID, uuid.UUID]:
    """A conversation whose buffer holds a good interim and two PostgreSQL would refuse (put straight into
    the buffer: the HTTP edges refuse such input now)."""
    user = await make_user()
    cid = (await service.open(user.id, user.display_name)).conversation.id
    await service.pipeline.apply(cid, [final(cid, "u1", "Weekend in Porto")])
    buffer = service.pipeline.buffer
    assert buffer.apply_interim(interim(cid, "nul-\x00-id", "an id PostgreSQL refuses"))
    assert buffer.apply_interim(interim(cid, "nul", "text with \x00 in it", role="user"))
    assert buffer.apply_interim(interim(cid, "a1", "Porto is lovely in", role="agent"))
    return user.id, cid


async def test_new_chat_drops_unstorable_interims_and_saves_the_rest(
    service: ConversationService, caplog: pytest.LogCaptureFixture
) -> None:
    user_id, cid = await open_with_bad_interims(service)

    with caplog.at_level(logging.WARNING, logger="chatapp.conversations.service"):
        result = await service.new_chat(user_id, "Ada", cid)

    assert result.saved is not None
    assert result.saved.id == cid
    assert await texts(cid) == [("Weekend in Porto", False), ("Porto is lovely in", True)]
    assert result.outcome.current is not None
    assert result.outcome.current.active
    dropped = [r for r in caplog.records if "unstorable interim dropped" in r.getMessage()]
    assert len(dropped) == 2
    assert all("\x00" not in r.getMessage() and "PostgreSQL refuses" not in r.getMessage() for r in dropped)


async def test_the_reaper_saves_a_conversation_with_unstorable_interims(service: ConversationService) -> None:
    _, cid = await open_with_bad_interims(service)
    await idle_for(cid, LONG_AGO)

    await reap_idle(service, idle_minutes=30)

    saved = await queries.get_conversation(cid)
    assert saved is not None
    assert saved.end_reason == "idle"
    assert await texts(cid) == [("Weekend in Porto", False), ("Porto is lovely in", True)]


async def test_one_failing_row_does_not_stop_the_reaper_round(
    service: ConversationService, caplog: pytest.LogCaptureFixture
) -> None:
    failing, fine = await make_user(), await make_user()
    failing_id = (await service.open(failing.id, failing.display_name)).conversation.id
    fine_id = (await service.open(fine.id, fine.display_name)).conversation.id
    for cid in (failing_id, fine_id):
        await service.pipeline.apply(cid, [final(cid, "u1", f"Idle {cid}")])
    await idle_for(failing_id, LONG_AGO + 1)  # the oldest: first in the round
    await idle_for(fine_id, LONG_AGO)
    expired = f"expired-{uuid.uuid4()}"
    sessions = PostgresStore("session")
    async with connection() as conn:
        await conn.execute(
            "INSERT INTO http_session (key, value, expires_at) VALUES ($1, 'x', now() - interval '1 hour')",
            f"session:{expired}",
        )
    service.faults.arm("save")  # the first end() of the round fails, as a row PostgreSQL refuses would

    with caplog.at_level(logging.WARNING, logger="chatapp.history.reaper"):
        await reap_round(service, 30, sessions)

    still = await queries.get_conversation(failing_id)
    assert still is not None
    assert still.active  # a failed save changes nothing...
    saved = await queries.get_conversation(fine_id)
    assert saved is not None
    assert saved.end_reason == "idle"  # ...and the round went on to the next one
    assert await sessions.get(expired) is None
    async with connection() as conn:
        assert await conn.fetchval("SELECT count(*) FROM http_session WHERE key = $1", f"session:{expired}") == 0
    assert any(str(failing_id) in r.getMessage() and "InjectedFault" in r.getMessage() for r in caplog.records)
    assert not any(r.exc_info for r in caplog.records)


async def test_activity_while_the_reaper_waits_for_the_user_lock_keeps_the_conversation(
    service: ConversationService,
) -> None:
    user = await make_user()
    cid = (await service.open(user.id, user.display_name)).conversation.id
    await service.pipeline.apply(cid, [final(cid, "u1", "Still typing")])
    await idle_for(cid, LONG_AGO)

    async with connection() as conn, conn.transaction():
        # Another request holds the user's lock and notes activity; the reaper scans (and sees idle) meanwhile.
        await conn.execute(queries.LOCK_USER_SQL, user.id)
        await conn.execute("UPDATE chat_session SET last_activity_at = now() WHERE id = $1", cid)
        reaper = asyncio.create_task(reap_idle(service, idle_minutes=30))
        async with connection() as watcher:
            for _ in range(200):
                waiting = await watcher.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE $1",
                    "%user_account%FOR UPDATE%",
                )
                if waiting or reaper.done():
                    break
                await asyncio.sleep(0.02)
        assert waiting, "the reaper never waited for the user's lock"

    await reaper
    still = await queries.get_conversation(cid)
    assert still is not None
    assert still.active
    assert service.agents.runtime.is_running(cid)
