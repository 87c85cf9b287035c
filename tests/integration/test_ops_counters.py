"""The idle reaper's counters, in-process against the real database (the service fixture)."""

from __future__ import annotations

import uuid

from chatapp.accounts.session_store import PostgresStore
from chatapp.conversations.service import ConversationService
from chatapp.core import metrics
from chatapp.core.database import connection
from chatapp.history.reaper import reap_round
from tests.factories import final, make_user
from tests.support import idle_for


def reaper(action: str) -> float:
    return metrics.REAPER_ACTIONS.labels(action)._value.get()  # type: ignore[attr-defined, no-any-return]


async def test_reaper_counts_what_it_ended_failed_and_deleted(service: ConversationService) -> None:
    ended, failed, deleted = reaper("ended"), reaper("failed"), reaper("sessions_deleted")
    saved_one, broken_one = await make_user(), await make_user()
    for user in (saved_one, broken_one):
        cid = (await service.open(user.id, user.display_name)).conversation.id
        await service.pipeline.apply(cid, [final(cid, "u1", "Counted, never labelled")])
        await idle_for(cid, 31)
    async with connection() as conn:
        await conn.execute(
            "INSERT INTO http_session (key, value, expires_at) VALUES ($1, '{}', now() - interval '1 minute')",
            f"session:{uuid.uuid4().hex}",
        )
    service.faults.arm("save")  # the first of the two cannot be saved this round

    await reap_round(service, 30, PostgresStore("session"))

    assert reaper("failed") - failed == 1
    assert reaper("ended") - ended >= 1
    assert reaper("sessions_deleted") - deleted >= 1
