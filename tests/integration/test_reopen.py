"""Reopening a saved conversation: it continues in place (same entry, id and title), the active one is ended first,
one active conversation per user at any time, and every way of ending ends it again without a new entry."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
import zipfile
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import pytest_asyncio

from chatapp.agents.inprocess import InProcessRuntime
from chatapp.conversations import queries
from chatapp.conversations.agent_access import room_name_for
from chatapp.conversations.pipeline import TranscriptPipeline
from chatapp.conversations.service import ConversationService
from chatapp.core.database import connection
from chatapp.core.faults import Faults
from chatapp.core.settings import Settings
from chatapp.history import service as history
from chatapp.history.reaper import reap_idle
from chatapp.livekit.routes import room_finished
from chatapp.profile.service import export_zip
from tests.factories import final, make_saved, make_user
from tests.fakes.llm import ScriptedLLM
from tests.support import SECRET_KEY, idle_for

KYOTO = [("user", "Plan five days in Kyoto"), ("agent", "Temples or food?")]
LONG_AGO = datetime(2026, 5, 1, tzinfo=UTC)


async def saved_ids(owner: uuid.UUID) -> list[uuid.UUID]:
    async with connection() as conn:
        rows = await conn.fetch("SELECT id FROM chat_session WHERE owner = $1 AND ended_at IS NOT NULL", owner)
    return sorted(r["id"] for r in rows)


async def active_ids(owner: uuid.UUID) -> list[uuid.UUID]:
    async with connection() as conn:
        rows = await conn.fetch("SELECT id FROM chat_session WHERE owner = $1 AND ended_at IS NULL", owner)
    return [r["id"] for r in rows]


async def answered(conversation_id: uuid.UUID) -> None:
    """The agent's reply to the last message is stored (so nothing more happens in the conversation)."""
    async with asyncio.timeout(5):
        while (await texts(conversation_id))[-1][1] != "agent":
            await asyncio.sleep(0.02)


async def texts(conversation_id: uuid.UUID) -> list[tuple[int, str, str]]:
    return [(u.seq, u.role, u.text) for u in await queries.list_utterances(conversation_id)]


async def test_reopening_continues_the_same_entry_after_ending_the_active_one(service: ConversationService) -> None:
    user = await make_user()
    kyoto = await make_saved(user, "Kyoto", LONG_AGO, lines=KYOTO)  # type: ignore[arg-type]
    active = (await service.open(user.id, user.display_name)).conversation
    await service.send_text(user.id, active.id, "Pack for Iceland", "u-ice")

    result = await service.reopen(user.id, kyoto, user.display_name)

    reopened = result.outcome.current
    assert reopened is not None
    assert reopened.id == kyoto
    assert reopened.active
    assert reopened.title == "Kyoto"
    assert reopened.period == 1
    assert reopened.room_name == room_name_for(kyoto, 1) == f"chat-{kyoto.hex}-1"
    assert reopened.last_activity_at > datetime.now(UTC) - timedelta(minutes=1)  # the reaper leaves it alone
    assert result.saved is not None
    assert result.saved.id == active.id
    assert await active_ids(user.id) == [kyoto]

    await service.send_text(user.id, kyoto, "Add a day in Nara", "u-nara")
    new_chat = await service.new_chat(user.id, user.display_name, kyoto)
    assert new_chat.saved is not None
    assert new_chat.saved.id == kyoto
    assert await saved_ids(user.id) == sorted([kyoto, active.id])  # no new entry
    lines = await texts(kyoto)
    assert lines[:3] == [(1, "user", KYOTO[0][1]), (2, "agent", KYOTO[1][1]), (3, "user", "Add a day in Nara")]
    saved = await queries.get_conversation(kyoto)
    assert saved is not None
    assert saved.title == "Kyoto"
    assert saved.end_reason == "new_chat"
    periods = await queries.list_periods(saved)
    assert [(p.n, p.room_name, p.after_seq) for p in periods] == [
        (0, f"chat-{kyoto.hex}", 0),
        (1, f"chat-{kyoto.hex}-1", 2),
    ]
    assert periods[0].ended_at == LONG_AGO + timedelta(minutes=5)
    assert periods[1].ended_at == saved.ended_at


async def test_an_empty_active_conversation_is_dropped_when_another_is_reopened(service: ConversationService) -> None:
    user = await make_user()
    kyoto = await make_saved(user, "Kyoto", LONG_AGO, lines=KYOTO)  # type: ignore[arg-type]
    empty = (await service.open(user.id, user.display_name)).conversation
    result = await service.reopen(user.id, kyoto, user.display_name)
    assert result.outcome.deleted_id == empty.id
    assert await queries.get_conversation(empty.id) is None


async def test_reopened_and_left_without_a_word_it_is_saved_exactly_as_it_was(service: ConversationService) -> None:
    user = await make_user()
    kyoto = await make_saved(user, "Kyoto", LONG_AGO, lines=KYOTO)  # type: ignore[arg-type]
    before = await queries.get_conversation(kyoto)
    await service.reopen(user.id, kyoto, user.display_name)
    await service.new_chat(user.id, user.display_name, kyoto)
    after = await queries.get_conversation(kyoto)
    assert before is not None
    assert after is not None
    assert (after.ended_at, after.period, after.room_name, after.last_seq) == (
        before.ended_at,
        0,
        before.room_name,
        2,
    )
    assert len(await queries.list_periods(after)) == 1  # the empty period is gone: its place in the lists too


async def test_someone_elses_or_an_active_conversation_is_not_reopened(service: ConversationService) -> None:
    owner, stranger = await make_user(), await make_user()
    kyoto = await make_saved(owner, "Kyoto", LONG_AGO, lines=KYOTO)  # type: ignore[arg-type]
    mine = (await service.open(stranger.id, stranger.display_name)).conversation
    await service.send_text(stranger.id, mine.id, "Mine", "u-mine")
    try:
        await service.reopen(stranger.id, kyoto, stranger.display_name)
    except LookupError:
        pass
    else:
        raise AssertionError("reopened another user's conversation")
    assert await active_ids(stranger.id) == [mine.id]  # nothing changed: the transaction rolled back
    assert (await queries.get_conversation(kyoto)).ended_at is not None  # type: ignore[union-attr]
    again = await service.reopen(stranger.id, mine.id, stranger.display_name)  # already the active one
    assert again.outcome.current is not None
    assert again.outcome.current.id == mine.id
    assert not again.outcome.changed


async def test_one_active_conversation_when_two_tabs_reopen_and_start_new_chats_at_once(
    service: ConversationService,
) -> None:
    user = await make_user()
    a = await make_saved(user, "Andes", LONG_AGO, lines=[("user", "Trek in Peru")])
    b = await make_saved(user, "Baltic", LONG_AGO, lines=[("user", "Ferry to Riga")])
    await service.open(user.id, user.display_name)
    for _ in range(3):
        await asyncio.gather(
            service.reopen(user.id, a, user.display_name),
            service.reopen(user.id, b, user.display_name),
            service.new_chat(user.id, user.display_name),
        )
        assert len(await active_ids(user.id)) == 1
    await service.new_chat(user.id, user.display_name)
    assert set(await saved_ids(user.id)) == {a, b}


async def test_the_idle_reaper_and_the_save_api_end_a_reopened_conversation_again(
    service: ConversationService,
) -> None:
    user = await make_user()
    kyoto = await make_saved(user, "Kyoto", LONG_AGO, lines=KYOTO)  # type: ignore[arg-type]
    await service.reopen(user.id, kyoto, user.display_name)
    assert await reap_idle(service, 30) == 0 or await active_ids(user.id) == [kyoto]  # just reopened: not idle
    assert await active_ids(user.id) == [kyoto]
    await service.send_text(user.id, kyoto, "And Osaka?", "u-osaka")
    await answered(kyoto)
    await idle_for(kyoto, 45)
    await reap_idle(service, 30)
    reaped = await queries.get_conversation(kyoto)
    assert reaped is not None
    assert reaped.end_reason == "idle"
    assert reaped.period == 1
    assert await saved_ids(user.id) == [kyoto]

    await service.reopen(user.id, kyoto, user.display_name)
    saved = await service.save_client_copy(user.id, kyoto, [final(kyoto, "c-1", "One more: Kobe")])
    assert saved.saved
    assert saved.conversation.id == kyoto
    assert saved.conversation.period == 2
    assert await saved_ids(user.id) == [kyoto]
    assert (await texts(kyoto))[-1][1:] == ("user", "One more: Kobe")


async def test_late_finals_of_the_old_room_stay_in_their_period_and_never_end_the_new_one(
    service: ConversationService,
) -> None:
    user = await make_user()
    active = (await service.open(user.id, user.display_name)).conversation
    await service.send_text(user.id, active.id, "Plan Lisbon", "u-1")
    await service.new_chat(user.id, user.display_name, active.id)  # saved; its agent may still report
    await service.reopen(user.id, active.id, user.display_name)
    await service.send_text(user.id, active.id, "And Porto?", "u-2")

    result = await service.ingest(active.id, [final(active.id, "late-agent", "Lisbon: trams!", role="agent")], 0)
    assert result.stored == 1
    conversation = await queries.get_conversation(active.id)
    assert conversation is not None
    assert conversation.active
    first_new = next(u for u in await queries.list_utterances(active.id) if u.item_id == "u-2")
    late = next(u for u in await queries.list_utterances(active.id) if u.item_id == "late-agent")
    assert late.seq < first_new.seq
    assert conversation.reopened_after_seq == late.seq

    assert not await room_finished(service, f"chat-{active.id.hex}")  # the old room closing ends nothing
    assert await active_ids(user.id) == [active.id]
    assert await room_finished(service, f"chat-{active.id.hex}-1")  # the current room's does


async def test_lists_order_by_last_activity_and_keyset_pages_neither_repeat_nor_skip(
    service: ConversationService,
) -> None:
    user = await make_user()
    ids = [
        await make_saved(user, f"Trip {n}", LONG_AGO + timedelta(days=n), lines=[("user", f"Trip {n}")])
        for n in range(5)
    ]
    oldest = ids[0]
    await service.reopen(user.id, oldest, user.display_name)
    await service.send_text(user.id, oldest, "Still going", "u-again")
    await service.new_chat(user.id, user.display_name, oldest)

    recent = await queries.recent_saved(user.id)
    assert [r.id for r in recent] == [oldest, *reversed(ids[1:])]  # continued today: on top
    seen: list[uuid.UUID] = []
    cursor = None
    while True:
        page = await history.saved_page(user.id, cursor, limit=2)
        seen += [i.id for i in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == [r.id for r in recent]
    api_seen: list[uuid.UUID] = []
    cursor = None
    while True:
        api = await history.api_page(user.id, cursor, 2)
        api_seen += [i.id for i in api.items]
        if api.next_cursor is None:
            break
        cursor = api.next_cursor
    assert api_seen == seen


@pytest_asyncio.fixture(loop_scope="session")
async def recorded(pipeline: TranscriptPipeline) -> AsyncIterator[tuple[ConversationService, ScriptedLLM]]:
    """The real service whose agent runs on a recording model, so tests see exactly what it is sent."""
    settings = Settings.from_env({"CHATAPP_SECRET_KEY": SECRET_KEY, "CHATAPP_DATA_DIR": "/nonexistent"})
    model = ScriptedLLM(["Fushimi Inari at dawn.", "Nara is an hour away."])
    runtime = InProcessRuntime(sink=pipeline, llm_factory=lambda: model, greet=True)
    yield ConversationService(settings, pipeline, runtime, pipeline.hub, Faults()), model
    await runtime.aclose()


async def test_the_agent_knows_the_transcript_and_leaves_an_old_last_question_alone(
    recorded: tuple[ConversationService, ScriptedLLM],
) -> None:
    service, model = recorded
    user = await make_user()
    lines = [*KYOTO, ("agent", "(a reply replaced by Retry)"), ("user", "Which temple first?")]
    kyoto = await make_saved(user, "Kyoto", LONG_AGO, lines=lines)  # type: ignore[arg-type]
    async with connection() as conn:
        await conn.execute("UPDATE utterance SET superseded_at = now() WHERE session = $1 AND seq = 3", kyoto)
    await service.reopen(user.id, kyoto, user.display_name)
    await asyncio.sleep(0.5)
    assert model.contexts == []  # no answer to the question left before it was saved, and no greeting

    await service.send_text(user.id, kyoto, "Is Nara close?", "u-nara")
    await _wait(lambda: len(model.contexts) == 1)
    assert model.contexts[0][1:] == [
        ("user", "Plan five days in Kyoto"),
        ("assistant", "Temples or food?"),
        ("user", "Which temple first?"),
        ("user", "Is Nara close?"),
    ]


async def _wait(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def test_the_account_download_keeps_a_reopened_conversation_while_it_is_active(
    service: ConversationService,
) -> None:
    user = await make_user()
    kyoto = await make_saved(user, "Kyoto", LONG_AGO, lines=KYOTO)  # type: ignore[arg-type]
    await service.reopen(user.id, kyoto, user.display_name)
    with zipfile.ZipFile(io.BytesIO(await export_zip(user.id))) as archive:
        [name] = archive.namelist()
        document = json.loads(archive.read(name))
    assert document["id"] == str(kyoto)
    assert [p["n"] for p in document["periods"]] == [0, 1]
    assert document["periods"][1]["ended_at"] is None  # active right now
