"""New Chat at the service level: save from the server's buffer, exactly once, and safe when things fail."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from chatapp.conversations import queries
from chatapp.conversations import service as service_module
from chatapp.conversations.service import TITLE_LENGTH, ConversationService, make_title
from chatapp.core.database import connection
from chatapp.core.faults import InjectedFault
from tests.factories import final, interim, make_user
from tests.support_statements import log_statements


async def utterances(conversation_id: uuid.UUID) -> list[tuple[int, str, str, bool]]:
    async with connection() as conn:
        rows = await conn.fetch(
            "SELECT seq, role, text, interrupted FROM utterance WHERE session = $1 ORDER BY seq", conversation_id
        )
    return [(r["seq"], r["role"], r["text"], r["interrupted"]) for r in rows]


async def active_count(owner: uuid.UUID) -> int:
    async with connection() as conn:
        return int(
            await conn.fetchval("SELECT count(*) FROM chat_session WHERE owner = $1 AND ended_at IS NULL", owner)
        )


async def saved_ids(owner: uuid.UUID) -> list[uuid.UUID]:
    return [s.id for s in await queries.recent_saved(owner, limit=100)]


async def test_save_with_finals_only(service: ConversationService) -> None:
    user = await make_user()
    view = await service.open(user.id, user.display_name)
    cid = view.conversation.id
    await service.pipeline.apply(
        cid, [final(cid, "u1", "Plan a trip to Kyoto in April"), final(cid, "a1", "Lovely!", role="agent")]
    )

    result = await service.new_chat(user.id, user.display_name, cid)

    assert result.saved is not None
    assert result.saved.id == cid
    assert result.saved.ended_at is not None
    assert result.saved.title == "Plan a trip to Kyoto in April"
    assert result.saved.end_reason == "new_chat"
    assert await utterances(cid) == [
        (1, "user", "Plan a trip to Kyoto in April", False),
        (2, "agent", "Lovely!", False),
    ]
    new = result.outcome.current
    assert new is not None
    assert new.id != cid
    assert new.room_name != view.conversation.room_name
    assert new.active
    assert await saved_ids(user.id) == [cid]
    assert await active_count(user.id) == 1
    assert service.agents.runtime.is_running(new.id)
    assert not service.agents.runtime.is_running(cid)


async def test_pending_interims_are_saved_as_interrupted_finals(service: ConversationService) -> None:
    user = await make_user()
    cid = (await service.open(user.id, user.display_name)).conversation.id
    await service.pipeline.apply(cid, [final(cid, "u1", "Where should I go in May?")])
    await service.pipeline.apply(cid, [interim(cid, "a1", "May is great for Lis", role="agent")])
    await service.pipeline.apply(cid, [interim(cid, "u2", "and what about", role="user")])

    await service.new_chat(user.id, user.display_name, cid)

    assert await utterances(cid) == [
        (1, "user", "Where should I go in May?", False),
        (2, "agent", "May is great for Lis", True),
        (3, "user", "and what about", True),
    ]
    assert service.pipeline.buffer.pending(cid) == []


async def test_a_conversation_where_the_user_never_spoke_is_deleted(service: ConversationService) -> None:
    user = await make_user()
    cid = (await service.open(user.id, user.display_name)).conversation.id
    await service.pipeline.apply(cid, [final(cid, "greet", "Hi! Where to?", role="agent")])

    result = await service.new_chat(user.id, user.display_name, cid)

    assert result.saved is None
    assert result.outcome.deleted_id == cid
    assert await queries.get_conversation(cid) is None
    assert await saved_ids(user.id) == []
    assert await active_count(user.id) == 1


@pytest.mark.parametrize(
    ("text", "title"),
    [
        ("  Hello   there  ", "Hello there"),
        ("Line one\nline two", "Line one line two"),
        (
            "I would like to plan a two week trip around southern Japan with kids next spring please",
            "I would like to plan a two week trip around southern Japan…",
        ),
        ("x" * 80, "x" * 59 + "…"),
    ],
)
def test_titles_are_the_first_user_utterance_cut_at_a_word(text: str, title: str) -> None:
    assert make_title(text) == title
    assert len(make_title(text)) <= TITLE_LENGTH


async def test_a_late_final_is_stored_in_the_old_conversation(service: ConversationService) -> None:
    user = await make_user()
    old = (await service.open(user.id, user.display_name)).conversation.id
    await service.pipeline.apply(old, [final(old, "u1", "Tell me about Oslo")])
    await service.pipeline.apply(old, [interim(old, "a1", "Oslo is", role="agent")])
    result = await service.new_chat(user.id, user.display_name, old)
    new = result.outcome.current
    assert new is not None

    # The agent's real final arrives after the save (e.g. from a worker still shutting down).
    stored = await service.ingest(old, [final(old, "a1", "Oslo is compact and walkable.", role="agent")])
    late = await service.ingest(old, [final(old, "a2", "Anything else?", role="agent"), interim(old, "a3", "x")])

    assert stored.stored == 1
    assert late.stored == 1
    assert await utterances(old) == [
        (1, "user", "Tell me about Oslo", False),
        (2, "agent", "Oslo is compact and walkable.", False),
        (3, "agent", "Anything else?", False),
    ]
    assert await utterances(new.id) == []
    assert service.pipeline.buffer.pending(old) == []


async def test_a_failed_save_changes_nothing_and_can_be_retried(service: ConversationService) -> None:
    user = await make_user()
    cid = (await service.open(user.id, user.display_name)).conversation.id
    await service.pipeline.apply(cid, [final(cid, "u1", "Rome or Florence?")])
    await service.pipeline.apply(cid, [interim(cid, "a1", "Both are", role="agent")])
    service.faults.arm("save")

    with pytest.raises(InjectedFault):
        await service.new_chat(user.id, user.display_name, cid)

    conversation = await queries.get_conversation(cid)
    assert conversation is not None
    assert conversation.active
    assert await utterances(cid) == [(1, "user", "Rome or Florence?", False)]
    assert [e.text for e in service.pipeline.buffer.pending(cid)] == ["Both are"]
    assert await active_count(user.id) == 1
    assert service.agents.runtime.is_running(cid)

    retried = await service.new_chat(user.id, user.display_name, cid)
    assert retried.saved is not None
    assert await utterances(cid) == [(1, "user", "Rome or Florence?", False), (2, "agent", "Both are", True)]


async def test_when_the_agent_cannot_start_the_save_still_stands(service: ConversationService) -> None:
    user = await make_user()
    cid = (await service.open(user.id, user.display_name)).conversation.id
    await service.pipeline.apply(cid, [final(cid, "u1", "Weekend in Paris")])
    service.faults.arm("agent_start")

    result = await service.new_chat(user.id, user.display_name, cid)

    assert result.saved is not None
    assert result.start is None
    new = result.outcome.current
    assert new is not None
    assert not service.agents.runtime.is_running(new.id)
    view = await service.view(new, result.start)
    assert view.agent_state == "unavailable"
    # Retry works once the agent can start.
    assert await service.ensure_agent(new, user.display_name) is not None
    assert service.agents.runtime.is_running(new.id)


async def test_ten_parallel_new_chats_save_once(service: ConversationService) -> None:
    user = await make_user()
    cid = (await service.open(user.id, user.display_name)).conversation.id
    await service.pipeline.apply(cid, [final(cid, "u1", "Double click!")])

    results = await asyncio.gather(*(service.new_chat(user.id, user.display_name, cid) for _ in range(10)))

    assert sum(1 for r in results if r.saved is not None) == 1
    assert await saved_ids(user.id) == [cid]
    assert await active_count(user.id) == 1
    currents = {r.outcome.current.id for r in results if r.outcome.current}
    assert len(currents) == 1


async def test_ten_parallel_new_chats_without_an_expected_id_still_leave_one_of_each(
    service: ConversationService,
) -> None:
    user = await make_user()
    cid = (await service.open(user.id, user.display_name)).conversation.id
    await service.pipeline.apply(cid, [final(cid, "u1", "Retry storm")])

    await asyncio.gather(*(service.new_chat(user.id, user.display_name, None) for _ in range(10)))

    assert await saved_ids(user.id) == [cid]
    assert await active_count(user.id) == 1
    async with connection() as conn:
        total = await conn.fetchval("SELECT count(*) FROM chat_session WHERE owner = $1", user.id)
    assert total == 2  # the saved one and the active one: the empty ones in between were deleted


async def test_order_and_text_are_kept_exactly(service: ConversationService) -> None:
    user = await make_user()
    cid = (await service.open(user.id, user.display_name)).conversation.id
    texts = ["yes", "yes", "  spaced  out ", "émoji 🚆 <b>tags</b>", "yes"]
    for n, text in enumerate(texts):
        await service.pipeline.apply(cid, [final(cid, f"u{n}", text, role="user" if n % 2 == 0 else "agent")])
    await service.new_chat(user.id, user.display_name, cid)
    assert [t for _, _, t, _ in await utterances(cid)] == texts


async def test_new_chat_reads_nothing_it_already_has(
    service: ConversationService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the save, the sidebar is read once (the tabs' and the new panel's), and neither the empty transcript of
    the conversation just opened nor its (nonexistent) title is read."""
    user = await make_user()
    cid = (await service.open(user.id, user.display_name)).conversation.id
    await service.pipeline.apply(cid, [final(cid, "u1", "Read it once")])
    log = log_statements(monkeypatch, queries, service_module)

    result = await service.new_chat(user.id, user.display_name, cid)
    view = await service.view(result.outcome.current, result.start, recent=result.recent)  # type: ignore[arg-type]
    await asyncio.sleep(0)  # asyncpg reports a statement on the loop's next turn

    assert [r.id for r in view.recent] == [cid]
    assert log.count(queries.RECENT_SAVED_SQL) == 1
    assert log.count(queries.LIST_UTTERANCES_SQL) == 0
    assert log.count(queries.CURRENT_TITLED_SQL) == 0
