"""The SQL of conversations and utterances (named statements and the functions that run them): the only code
that writes them.

Finals are stored idempotently by (conversation, item_id) with gapless per-conversation sequence numbers:
the conversation row is locked while a batch is numbered, so concurrent ingests for one conversation
serialise there and a repeated delivery never consumes a number.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import asyncpg

from chatapp.conversations.agent_access import room_name_for
from chatapp.conversations.events import Role, TranscriptEvent
from chatapp.core.database import connection

log = logging.getLogger(__name__)

CONVERSATION_COLUMNS = """
    id, owner, room_name, system_prompt, started_at, ended_at, title, last_activity_at, last_seq,
    end_reason, continued_from, archived_at, pinned_at, superseded, period, reopened_at, reopened_after_seq,
    title_source, deleted_at
"""

# The statements, as constants: several functions share them, and the New Chat benchmark's bare-SQL baseline runs
# exactly these.
SELECT_ACTIVE_SQL = f"SELECT {CONVERSATION_COLUMNS} FROM chat_session WHERE owner = $1 AND ended_at IS NULL"
# The sidebar: every saved pin (at most MAX_PINS, newest pin first), then the saved ones neither pinned nor archived,
# by last activity (a saved conversation's is its end: a reopened one moves up when it ends again).
MAX_PINS = 20
RECENT_SAVED_SQL = f"""
SELECT id, title, started_at, ended_at, message_count, pinned, false AS archived FROM (
    (SELECT id, title, started_at, ended_at, last_seq - superseded AS message_count, true AS pinned, pinned_at
     FROM chat_session
     WHERE owner = $1 AND pinned_at IS NOT NULL AND ended_at IS NOT NULL AND deleted_at IS NULL
     ORDER BY pinned_at DESC, id DESC LIMIT {MAX_PINS})
    UNION ALL
    (SELECT id, title, started_at, ended_at, last_seq - superseded, false, NULL FROM chat_session
     WHERE owner = $1 AND ended_at IS NOT NULL AND archived_at IS NULL AND pinned_at IS NULL AND deleted_at IS NULL
     ORDER BY ended_at DESC, id DESC LIMIT $2)
) recent
ORDER BY pinned_at DESC NULLS LAST, ended_at DESC, id DESC
"""
LIST_UTTERANCES_SQL = """
SELECT seq, item_id, role, text, interrupted, created_at, superseded_at IS NOT NULL AS superseded FROM utterance
WHERE session = $1 AND seq > $2 ORDER BY seq LIMIT $3
"""
LOCK_CONVERSATION_SQL = "SELECT last_seq, ended_at FROM chat_session WHERE id = $1 FOR UPDATE"
SELECT_EXISTING_SQL = (
    "SELECT item_id, seq, text, interrupted FROM utterance WHERE session = $1 AND item_id = ANY($2::text[])"
)
# The new finals and the conversation's last_seq ($8) in one round trip: the conversation row is already locked.
INSERT_FINALS_SQL = """
WITH inserted AS (
    INSERT INTO utterance (session, seq, item_id, role, text, is_final, interrupted, created_at)
    SELECT $1, u.seq, u.item_id, u.role, u.text, true, u.interrupted, u.created_at
    FROM unnest($2::int[], $3::text[], $4::text[], $5::text[], $6::bool[], $7::timestamptz[])
         AS u(seq, item_id, role, text, interrupted, created_at)
    ORDER BY u.seq
    RETURNING seq, item_id, role, text, interrupted, created_at
), advanced AS (
    UPDATE chat_session SET last_seq = $8, last_activity_at = now() WHERE id = $1
)
SELECT * FROM inserted
"""
UPDATE_LAST_SEQ_SQL = "UPDATE chat_session SET last_seq = $2, last_activity_at = now() WHERE id = $1"
# The transcript part concatenates the utterances' stored tsvectors (tsvector_agg) instead of re-parsing the text;
# replies replaced by Retry (superseded) are not part of it.
REFRESH_SEARCH_DOC_SQL = """
UPDATE chat_session s SET search_doc =
    setweight(to_tsvector('english', coalesce(s.title, '')), 'A')
    || setweight(coalesce(
        (SELECT tsvector_agg(u.tsv ORDER BY u.seq) FROM utterance u
         WHERE u.session = s.id AND u.superseded_at IS NULL),
        ''::tsvector), 'B')
WHERE s.id = $1 AND s.ended_at IS NOT NULL
"""
# PostgreSQL refuses a tsvector over 1 MB ("string is too long for tsvector"). When the full document would be
# larger, keep every word without positions (stripped: still found, ranked less finely, no "phrase" matches)...
REFRESH_SEARCH_DOC_STRIPPED_SQL = """
UPDATE chat_session s SET search_doc =
    setweight(to_tsvector('english', coalesce(s.title, '')), 'A')
    || coalesce((SELECT tsvector_agg(strip(u.tsv)) FROM utterance u WHERE u.session = s.id AND u.superseded_at IS NULL),
                ''::tsvector)
WHERE s.id = $1 AND s.ended_at IS NOT NULL
"""
# ... and when even that is too large, the stripped words of the utterances that fit in a text budget, in order:
# the limit counts lexeme bytes (plus positions, gone here), never more than the words' own text, so 800 kB of text
# stays under it.
SEARCH_DOC_TEXT_BUDGET = 800_000
REFRESH_SEARCH_DOC_PREFIX_SQL = """
UPDATE chat_session s SET search_doc =
    setweight(to_tsvector('english', coalesce(s.title, '')), 'A')
    || coalesce((SELECT tsvector_agg(strip(p.tsv)) FROM (
           SELECT u.tsv, sum(octet_length(u.text)) OVER (ORDER BY u.seq) AS upto FROM utterance u
           WHERE u.session = s.id AND u.superseded_at IS NULL
       ) p WHERE p.upto <= $2), ''::tsvector)
WHERE s.id = $1 AND s.ended_at IS NOT NULL
"""
TOUCH_SQL = "UPDATE chat_session SET last_activity_at = now() WHERE id = $1 AND ended_at IS NULL"
LOCK_USER_SQL = "SELECT 1 FROM user_account WHERE id = $1 FOR UPDATE"
STILL_IDLE_SQL = """
SELECT last_activity_at < now() - make_interval(secs => $2) FROM chat_session WHERE id = $1 FOR UPDATE
"""
FIRST_USER_TEXT_SQL = "SELECT text FROM utterance WHERE session = $1 AND role = 'user' ORDER BY seq LIMIT 1"
# The title: one the user or the model chose stays; otherwise it is (made again from) the first message. Whoever
# wrote last between a rename and a model title is decided where they write (a model title never replaces a user's),
# so ending keeps exactly what they left, whichever came first. A title with no source (from before sources were
# recorded) is kept as it is.
MARK_ENDED_SQL = f"""
UPDATE chat_session SET ended_at = now(), end_reason = $2,
    title = CASE WHEN title IS NOT NULL AND title_source IS DISTINCT FROM 'first_message' THEN title ELSE $3 END,
    title_source = CASE WHEN title IS NOT NULL AND title_source IS DISTINCT FROM 'first_message'
                        THEN title_source ELSE 'first_message' END
WHERE id = $1 RETURNING {CONVERSATION_COLUMNS}
"""
INSERT_ACTIVE_SQL = f"""
INSERT INTO chat_session (id, room_name, owner, system_prompt, continued_from) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (owner) WHERE ended_at IS NULL DO NOTHING
RETURNING {CONVERSATION_COLUMNS}
"""


@dataclass(frozen=True, slots=True)
class Conversation:
    id: uuid.UUID
    owner: uuid.UUID
    room_name: str
    system_prompt: str
    started_at: datetime
    ended_at: datetime | None
    title: str | None
    last_activity_at: datetime
    last_seq: int
    end_reason: str | None
    continued_from: uuid.UUID | None
    archived_at: datetime | None = None
    pinned_at: datetime | None = None
    superseded: int = 0
    # Reopenings: the current period's number, start (None in period 0: `started_at`) and the last utterance
    # before it.
    period: int = 0
    reopened_at: datetime | None = None
    reopened_after_seq: int = 0
    title_source: str | None = None  # "first_message", "model", "user"; None: nobody chose one yet
    deleted_at: datetime | None = None  # deleted, restorable until purged

    @property
    def active(self) -> bool:
        return self.ended_at is None

    @property
    def archived(self) -> bool:
        return self.archived_at is not None

    @property
    def pinned(self) -> bool:
        return self.pinned_at is not None

    @property
    def message_count(self) -> int:
        """Sequences are gapless, so the newest one is the number of stored utterances; replies replaced by
        Retry are kept but not counted."""
        return self.last_seq - self.superseded


@dataclass(frozen=True, slots=True)
class StoredUtterance:
    conversation_id: uuid.UUID
    seq: int
    item_id: str
    role: Role
    text: str
    interrupted: bool
    created_at: datetime
    # True when this completes an utterance stored earlier as interrupted: it keeps its old, lower seq.
    completed_late: bool = False
    # A reply replaced by Retry: kept in the transcript, no longer part of the conversation.
    superseded: bool = False


def _conversation(row: Any) -> Conversation:
    return Conversation(**dict(row))


def _utterance(conversation_id: uuid.UUID, row: Any) -> StoredUtterance:
    return StoredUtterance(
        conversation_id=conversation_id,
        seq=row["seq"],
        item_id=row["item_id"],
        role=row["role"],
        text=row["text"],
        interrupted=row["interrupted"],
        created_at=row["created_at"],
        superseded=bool(row.get("superseded", False)),
    )


async def get_active(owner: uuid.UUID) -> Conversation | None:
    async with connection() as conn:
        row = await conn.fetchrow(SELECT_ACTIVE_SQL, owner)
    return _conversation(row) if row else None


async def get_or_create_active(
    owner: uuid.UUID, system_prompt: str, continued_from: uuid.UUID | None = None
) -> tuple[Conversation, bool]:
    """The user's one active conversation, creating it if there is none. Returns (conversation, created).

    Safe under races (two tabs, two processes): the partial unique index admits one active row per user.
    """
    async with connection() as conn:
        while True:
            created = await insert_active(conn, owner, system_prompt, continued_from)
            if created is not None:
                return created, True
            row = await conn.fetchrow(SELECT_ACTIVE_SQL, owner)
            if row:  # else it ended between the two statements: try again
                return _conversation(row), False


@dataclass(frozen=True, slots=True)
class SavedSummary:
    id: uuid.UUID
    title: str | None
    started_at: datetime
    ended_at: datetime | None
    message_count: int
    pinned: bool = False
    archived: bool = False


async def recent_saved(owner: uuid.UUID, limit: int = 10) -> list[SavedSummary]:
    """The sidebar's list: pinned conversations on top, then the `limit` newest others that are not archived
    (partial indexes chat_session_pinned and chat_session_listed)."""
    async with connection() as conn:
        rows = await conn.fetch(RECENT_SAVED_SQL, owner, limit)
    return [SavedSummary(**dict(row)) for row in rows]


async def get_conversation(
    conversation_id: uuid.UUID, owner: uuid.UUID | None = None, *, include_deleted: bool = False
) -> Conversation | None:
    """The conversation, or None when unknown, deleted (even while it can still be restored, unless
    `include_deleted`) or (with `owner`) someone else's: callers answer 404 either way."""
    async with connection() as conn:
        row = await conn.fetchrow(f"SELECT {CONVERSATION_COLUMNS} FROM chat_session WHERE id = $1", conversation_id)
    if row is None or (owner is not None and row["owner"] != owner):
        return None
    if row["deleted_at"] is not None and not include_deleted:
        return None
    return _conversation(row)


async def list_utterances(conversation_id: uuid.UUID, after_seq: int = 0, limit: int = 10_000) -> list[StoredUtterance]:
    async with connection() as conn:
        rows = await conn.fetch(LIST_UTTERANCES_SQL, conversation_id, after_seq, limit)
    return [_utterance(conversation_id, row) for row in rows]


def unstorable(event: TranscriptEvent) -> str | None:
    """Why PostgreSQL would refuse this utterance (no NUL in text or id), or None. (An id too long for
    varchar(128) cannot exist: TranscriptEvent refuses it.)

    Ending a conversation checks its buffered interims with this, so one bad row cannot fail every save.
    """
    if "\x00" in event.item_id or "\x00" in event.text:
        return "NUL character"
    return None


class UnknownConversation(LookupError):
    """Finals for a conversation that does not exist (never did, or was empty and deleted)."""


class LeaseLost(RuntimeError):
    """An agent's finals under a lease generation that another claim replaced: refused (fencing)."""


# FOR SHARE: a takeover's claim (an UPDATE of this row) waits until these finals are committed, so a final either
# lands before the takeover or is refused after it. No row: the conversation ended and its lease was released,
# and an agent's last finals still land (New Chat flushes them as interrupted, the final completes them).
LEASE_GENERATION_SQL = "SELECT generation FROM agent_lease WHERE conversation = $1 FOR SHARE"


def _columns(events: Sequence[TranscriptEvent]) -> tuple[list[Any], ...]:
    """The finals' item ids, roles, texts, interrupted flags and times: the arrays INSERT_FINALS_SQL and
    STORE_OPEN_FINALS_SQL unnest, in that order."""
    return (
        [e.item_id for e in events],
        [e.role for e in events],
        [e.text for e in events],
        [e.interrupted for e in events],
        [e.timestamp for e in events],
    )


async def check_lease(conn: Any, conversation_id: uuid.UUID, generation: int) -> None:
    """Raise LeaseLost unless the conversation's agent lease is still of `generation` (or was released)."""
    current = await conn.fetchval(LEASE_GENERATION_SQL, conversation_id)
    if current is not None and current != generation:
        raise LeaseLost(str(conversation_id))


class ConversationClosed(LookupError):
    """Late finals for a conversation that ended longer ago than the grace window allows."""


ENDED_LONG_AGO_SQL = "SELECT now() - ended_at > make_interval(secs => $2) FROM chat_session WHERE id = $1"


async def store_finals(
    conn: Any, conversation_id: uuid.UUID, events: Sequence[TranscriptEvent], late_grace: float | None = None
) -> list[StoredUtterance]:
    """Persist finals inside the caller's transaction; return those newly stored or completed, in order.

    A repeated item_id is ignored, except that a final completes an utterance stored earlier as
    interrupted (flushed mid-sentence by New Chat) when the real final arrives late with more text.
    With `late_grace` (seconds), finals for a conversation ended longer ago raise ConversationClosed.
    """
    locked = await conn.fetchrow(LOCK_CONVERSATION_SQL, conversation_id)
    if locked is None:
        raise UnknownConversation(str(conversation_id))
    if (
        late_grace is not None
        and locked["ended_at"] is not None
        and await conn.fetchval(ENDED_LONG_AGO_SQL, conversation_id, late_grace)
    ):
        raise ConversationClosed(str(conversation_id))
    last_seq: int = locked["last_seq"]
    unique: dict[str, TranscriptEvent] = {}
    for event in events:
        unique.setdefault(event.item_id, event)
    existing = {
        row["item_id"]: row
        for row in await conn.fetch(
            SELECT_EXISTING_SQL,
            conversation_id,
            list(unique),
        )
    }
    fresh = [event for item_id, event in unique.items() if item_id not in existing]
    stored: list[StoredUtterance] = []
    if fresh:
        seqs = list(range(last_seq + 1, last_seq + 1 + len(fresh)))
        rows = await conn.fetch(
            INSERT_FINALS_SQL,
            conversation_id,
            seqs,
            *_columns(fresh),
            seqs[-1],
        )
        stored.extend(_utterance(conversation_id, row) for row in rows)
    for item_id, row in existing.items():
        event = unique[item_id]
        if row["interrupted"] and (not event.interrupted or len(event.text) > len(row["text"])):
            updated = await conn.fetchrow(
                """
                UPDATE utterance SET text = $3, interrupted = $4 WHERE session = $1 AND item_id = $2
                RETURNING seq, item_id, role, text, interrupted, created_at
                """,
                conversation_id,
                item_id,
                event.text,
                event.interrupted,
            )
            stored.append(replace(_utterance(conversation_id, updated), completed_late=True))
    if not fresh:  # only repeats: still, the conversation was active just now (INSERT_FINALS_SQL does this too)
        await conn.execute(UPDATE_LAST_SEQ_SQL, conversation_id, last_seq)
    if stored and locked["ended_at"] is not None:
        await refresh_search_doc(conn, conversation_id)  # a late final must be findable too
    stored.sort(key=lambda u: u.seq)
    return stored


# The ingest API's one-statement write (store_open_finals): lock the conversation, look up the items, insert the new
# finals, advance last_seq and, with postgres channels, NOTIFY their live events ($8, the hub's channel; each payload
# is its head, the seq, its tail), all in one autocommitted statement: one round trip, and the events are sent when
# the rows commit, not after. It writes only to the current period of an open conversation with no interrupted
# utterance among the items (`written` false otherwise: store_finals' transaction handles those).
# The lock returns the row as last committed, but the item lookup sees the statement's snapshot: an item committed
# by a concurrent delivery while this one waited for the lock is invisible to it, and the INSERT then fails on
# utterance_item_unique (nothing is written, the caller falls back) rather than storing it twice. For the same
# reason `first_user_message` can be true for a user final right after another delivery's first one: the sidebar is
# then refreshed once more, which changes nothing.
STORE_OPEN_FINALS_SQL = """
WITH conversation AS (
    SELECT owner, last_seq, ended_at IS NULL AND deleted_at IS NULL AND period = $2 AS open
    FROM chat_session WHERE id = $1 FOR UPDATE
), incoming AS (
    SELECT * FROM unnest($3::text[], $4::text[], $5::text[], $6::bool[], $7::timestamptz[], $9::text[], $10::text[])
        WITH ORDINALITY AS u(item_id, role, text, interrupted, created_at, head, tail, n)
), existing AS (
    SELECT item_id, interrupted FROM utterance WHERE session = $1 AND item_id = ANY($3::text[])
), writable AS (
    SELECT last_seq FROM conversation WHERE open AND NOT EXISTS (SELECT FROM existing WHERE interrupted)
), fresh AS (
    SELECT i.*, w.last_seq + row_number() OVER (ORDER BY i.n) AS seq
    FROM writable w CROSS JOIN incoming i
    WHERE i.item_id NOT IN (SELECT item_id FROM existing)
), inserted AS (
    INSERT INTO utterance (session, seq, item_id, role, text, is_final, interrupted, created_at)
    SELECT $1, seq, item_id, role, text, true, interrupted, created_at FROM fresh ORDER BY seq
    RETURNING seq, item_id
), advanced AS (
    UPDATE chat_session SET last_seq = w.last_seq + (SELECT count(*) FROM fresh), last_activity_at = now()
    FROM writable w WHERE id = $1
), notified AS (
    SELECT pg_notify($8, head || seq || tail) FROM fresh WHERE $8::text IS NOT NULL ORDER BY seq
)
SELECT c.owner,
       EXISTS (SELECT FROM writable) AS written,
       (SELECT array_agg(seq ORDER BY seq) FROM inserted) AS seqs,
       (SELECT array_agg(item_id ORDER BY seq) FROM inserted) AS item_ids,
       CASE WHEN EXISTS (SELECT FROM fresh WHERE role = 'user')
            THEN NOT EXISTS (SELECT FROM utterance WHERE session = $1 AND role = 'user') END AS first_user_message,
       (SELECT count(*) FROM notified) AS notified
FROM conversation c
"""


@dataclass(frozen=True, slots=True)
class OpenFinals:
    """What store_open_finals wrote: the new finals in seq order (repeats left out), the conversation's owner,
    and whether one of them is the user's first message (then the sidebar shows the conversation)."""

    owner: uuid.UUID
    stored: list[StoredUtterance]
    first_user_message: bool


async def store_open_finals(
    conversation_id: uuid.UUID,
    period: int,
    events: Sequence[TranscriptEvent],
    channel: str | None = None,
    payloads: Sequence[tuple[str, str]] = (),
) -> OpenFinals | None:
    """Store the finals (distinct item ids) of `period` of an open conversation in one autocommitted statement
    (STORE_OPEN_FINALS_SQL), notifying `channel` of each new one (`payloads`: its (head, tail) around the seq) in
    the same commit. None when it wrote nothing because store_finals' transaction must do it: an unknown, ended
    or deleted conversation, another period, a late completion of an interrupted utterance, or a concurrent
    delivery of the same item."""
    heads = [head for head, _ in payloads] if channel else [""] * len(events)
    tails = [tail for _, tail in payloads] if channel else [""] * len(events)
    async with connection() as conn:
        try:
            row = await conn.fetchrow(
                STORE_OPEN_FINALS_SQL,
                conversation_id,
                period,
                *_columns(events),
                channel,
                heads,
                tails,
            )
        except asyncpg.UniqueViolationError:
            return None
    if row is None or not row["written"]:
        return None
    by_item = {e.item_id: e for e in events}
    stored = [
        StoredUtterance(
            conversation_id,
            seq,
            item_id,
            by_item[item_id].role,
            by_item[item_id].text,
            by_item[item_id].interrupted,
            by_item[item_id].timestamp,
        )
        for seq, item_id in zip(row["seqs"] or (), row["item_ids"] or (), strict=True)
    ]
    return OpenFinals(row["owner"], stored, bool(row["first_user_message"]))


async def lock_transcript(conn: Any, conversation_id: uuid.UUID) -> list[StoredUtterance]:
    """Lock the conversation (as storing finals does) and read all of its utterances, inside the caller's
    transaction. Raises UnknownConversation."""
    if await conn.fetchrow(LOCK_CONVERSATION_SQL, conversation_id) is None:
        raise UnknownConversation(str(conversation_id))
    rows = await conn.fetch(LIST_UTTERANCES_SQL, conversation_id, 0, 2**31 - 1)
    return [_utterance(conversation_id, row) for row in rows]


MOVE_UTTERANCES_SQL = """
UPDATE utterance u SET seq = m.new_seq FROM unnest($2::int[], $3::int[]) AS m(old_seq, new_seq)
WHERE u.session = $1 AND u.seq = m.old_seq
"""


async def store_in_order(
    conn: Any, conversation_id: uuid.UUID, order: Sequence[StoredUtterance | TranscriptEvent]
) -> int:
    """Make the transcript `order` (every stored utterance, locked by lock_transcript, with new finals among
    them): the utterances after an insertion move up, the new ones take their places. Returns how many were
    added. Used by the save API for what only the client's copy had; live streams do not see it (the
    conversation ends right after, and its tabs move on)."""
    moved_old: list[int] = []
    moved_new: list[int] = []
    fresh: list[tuple[int, TranscriptEvent]] = []
    for seq, item in enumerate(order, start=1):
        if isinstance(item, TranscriptEvent):
            fresh.append((seq, item))
        elif item.seq != seq:
            moved_old.append(item.seq)
            moved_new.append(seq)
    if not fresh:
        return 0
    if moved_old:
        # Out of the way first (above every number in use), then to their places: seq is unique at every row.
        aside = [seq + len(order) + max(moved_old) for seq in moved_old]
        await conn.execute(MOVE_UTTERANCES_SQL, conversation_id, moved_old, aside)
        await conn.execute(MOVE_UTTERANCES_SQL, conversation_id, aside, moved_new)
    await conn.fetch(
        INSERT_FINALS_SQL,
        conversation_id,
        [seq for seq, _ in fresh],
        [e.item_id for _, e in fresh],
        [e.role for _, e in fresh],
        [e.text for _, e in fresh],
        [e.interrupted for _, e in fresh],
        [e.timestamp for _, e in fresh],
        len(order),
    )
    await refresh_search_doc(conn, conversation_id)  # a saved conversation's search document (else nothing)
    return len(fresh)


async def refresh_search_doc(conn: Any, conversation_id: uuid.UUID) -> None:
    """Rebuild a saved conversation's search document: title (weight A) and transcript (weight B).

    A transcript too large for one tsvector (1 MB of distinct lexemes plus 4 bytes of positions each: some
    50,000 to 90,000 distinct words, depending on their length) must not fail the save that calls this: each
    attempt runs in a savepoint and a smaller document replaces the one that did not fit.
    """
    attempts: list[tuple[str, tuple[Any, ...]]] = [
        (REFRESH_SEARCH_DOC_SQL, (conversation_id,)),
        (REFRESH_SEARCH_DOC_STRIPPED_SQL, (conversation_id,)),
    ]
    for sql, args in attempts:
        try:
            async with conn.transaction():
                await conn.execute(sql, *args)
        except asyncpg.ProgramLimitExceededError:
            log.warning("search document of conversation %s too large; trying a smaller one", conversation_id)
            continue
        return
    await conn.execute(REFRESH_SEARCH_DOC_PREFIX_SQL, conversation_id, SEARCH_DOC_TEXT_BUDGET)


async def touch(conversation_id: uuid.UUID) -> None:
    """Note activity (an interim) so the idle reaper does not end a conversation someone is speaking in."""
    async with connection() as conn:
        await conn.execute(TOUCH_SQL, conversation_id)


@dataclass(frozen=True, slots=True)
class EndOutcome:
    """What ending did. `ended` is the conversation as saved (None when it was empty and deleted, or when
    there was nothing to end); `current` is the user's active conversation afterwards, if any."""

    ended: Conversation | None
    deleted_id: uuid.UUID | None
    current: Conversation | None
    flushed: list[StoredUtterance]
    changed: bool


async def lock_active(conn: Any, owner: uuid.UUID) -> Conversation | None:
    """The user's active conversation, after taking the user's row lock: ends (and pins) are serialised per
    user inside the caller's transaction."""
    await conn.execute(LOCK_USER_SQL, owner)
    row = await conn.fetchrow(SELECT_ACTIVE_SQL, owner)
    return _conversation(row) if row else None


async def still_idle(conn: Any, conversation_id: uuid.UUID, idle_seconds: float) -> bool:
    return bool(await conn.fetchval(STILL_IDLE_SQL, conversation_id, idle_seconds))


async def first_user_text(conn: Any, conversation_id: uuid.UUID) -> str | None:
    text: str | None = await conn.fetchval(FIRST_USER_TEXT_SQL, conversation_id)
    return text


async def delete_conversation(conn: Any, conversation_id: uuid.UUID) -> None:
    await conn.execute("DELETE FROM chat_session WHERE id = $1", conversation_id)


async def mark_ended(conn: Any, conversation_id: uuid.UUID, reason: str, title: str) -> Conversation:
    """Save the conversation (ended_at, reason, title) and build its search document."""
    saved = await conn.fetchrow(MARK_ENDED_SQL, conversation_id, reason, title)
    await refresh_search_doc(conn, conversation_id)
    return _conversation(saved)


async def insert_active(
    conn: Any, owner: uuid.UUID, system_prompt: str, continued_from: uuid.UUID | None = None
) -> Conversation | None:
    """A new active conversation, or None when the user already has one (the partial unique index)."""
    new_id = uuid.uuid4()
    row = await conn.fetchrow(
        INSERT_ACTIVE_SQL,
        new_id,
        room_name_for(new_id),
        owner,
        system_prompt,
        continued_from,
    )
    return _conversation(row) if row else None


# Retry: the agent's replies after the user's last current message are marked superseded (kept), and counted.
SUPERSEDE_SQL = """
WITH marked AS (
    UPDATE utterance SET superseded_at = now()
    WHERE session = $1 AND role = 'agent' AND superseded_at IS NULL
      AND seq > coalesce((SELECT max(seq) FROM utterance
                          WHERE session = $1 AND role = 'user' AND superseded_at IS NULL), 0)
    RETURNING seq, item_id, role, text, interrupted, created_at, true AS superseded
), counted AS (
    UPDATE chat_session SET superseded = superseded + (SELECT count(*) FROM marked), last_activity_at = now()
    WHERE id = $1
)
SELECT * FROM marked ORDER BY seq
"""
# The reply a Retry button names is the conversation's last current utterance, and the agent's.
LAST_CURRENT_SQL = """
SELECT seq, role FROM utterance WHERE session = $1 AND superseded_at IS NULL ORDER BY seq DESC LIMIT 1
"""


async def last_current(conversation_id: uuid.UUID) -> tuple[int, str] | None:
    """The seq and role of the conversation's newest utterance that is not superseded."""
    async with connection() as conn:
        row = await conn.fetchrow(LAST_CURRENT_SQL, conversation_id)
    return (row["seq"], row["role"]) if row else None


async def supersede_last_reply(conversation_id: uuid.UUID) -> list[StoredUtterance]:
    """Mark the agent's replies after the user's last message superseded (under the conversation's row lock, like
    every write of its utterances); return them as they now stand."""
    async with connection() as conn, conn.transaction():
        await conn.execute(LOCK_CONVERSATION_SQL, conversation_id)
        rows = await conn.fetch(SUPERSEDE_SQL, conversation_id)
    return [_utterance(conversation_id, row) for row in rows]


# Reopening, in the caller's transaction under the user's lock (after the active conversation was ended): the
# period that ended is kept in conversation_period, and the conversation is active again in a new period with a
# room of its own. last_activity_at is now, or the idle reaper would end it at once.
LOCK_SAVED_SQL = """
SELECT period FROM chat_session WHERE id = $1 AND owner = $2 AND ended_at IS NOT NULL AND deleted_at IS NULL
FOR UPDATE
"""
REOPEN_SQL = f"""
WITH closed AS (
    INSERT INTO conversation_period (session, n, room_name, started_at, ended_at, end_reason, after_seq)
    SELECT id, period, room_name, coalesce(reopened_at, started_at), ended_at, end_reason, reopened_after_seq
    FROM chat_session WHERE id = $1
    RETURNING session
)
UPDATE chat_session SET period = period + 1, reopened_at = now(), reopened_after_seq = last_seq, room_name = $2,
    ended_at = NULL, end_reason = NULL, last_activity_at = now(), archived_at = NULL
WHERE id = (SELECT session FROM closed)
RETURNING {CONVERSATION_COLUMNS}
"""
_QUALIFIED = ", ".join(f"s.{c.strip()}" for c in CONVERSATION_COLUMNS.split(","))
# A reopened period in which the user said nothing is undone when it ends: the conversation is saved as it was
# (same end, same place in the lists), as an empty new conversation is dropped.
UNDO_REOPEN_SQL = f"""
WITH previous AS (DELETE FROM conversation_period WHERE session = $1 AND n = $2 RETURNING *)
UPDATE chat_session s SET period = p.n, room_name = p.room_name, ended_at = p.ended_at, end_reason = p.end_reason,
    reopened_at = CASE WHEN p.n = 0 THEN NULL ELSE p.started_at END, reopened_after_seq = p.after_seq,
    last_seq = s.reopened_after_seq, last_activity_at = p.ended_at,
    superseded = (SELECT count(*) FROM utterance u
                  WHERE u.session = $1 AND u.seq <= s.reopened_after_seq AND u.superseded_at IS NOT NULL)
FROM previous p WHERE s.id = $1
RETURNING {_QUALIFIED}
"""
DELETE_AFTER_SQL = "DELETE FROM utterance WHERE session = $1 AND seq > $2"
SPOKE_SINCE_SQL = "SELECT EXISTS (SELECT 1 FROM utterance WHERE session = $1 AND role = 'user' AND seq > $2)"
PERIODS_SQL = """
SELECT n, room_name, started_at, ended_at, end_reason, after_seq FROM conversation_period WHERE session = $1 ORDER BY n
"""


@dataclass(frozen=True, slots=True)
class Period:
    """One active stretch of a conversation: the first, then one per reopening. `after_seq`: its utterances are
    those after this sequence number (up to the next period's)."""

    n: int
    room_name: str
    started_at: datetime
    ended_at: datetime | None
    end_reason: str | None
    after_seq: int


async def reopen(conn: Any, owner: uuid.UUID, conversation_id: uuid.UUID) -> Conversation | None:
    """Make the owner's saved conversation active again in a new period; None when it is not theirs or not
    saved. The caller holds the user's lock and has ended the active conversation."""
    period = await conn.fetchval(LOCK_SAVED_SQL, conversation_id, owner)
    if period is None:
        return None
    row = await conn.fetchrow(REOPEN_SQL, conversation_id, room_name_for(conversation_id, period + 1))
    return _conversation(row)


async def said_nothing_since_reopening(conn: Any, conversation: Conversation) -> bool:
    """A reopened conversation whose current period has no user utterance (an agent's words alone count as none)."""
    return conversation.period > 0 and not await conn.fetchval(
        SPOKE_SINCE_SQL, conversation.id, conversation.reopened_after_seq
    )


async def undo_reopen(conn: Any, conversation: Conversation) -> Conversation:
    """End an empty reopened period by undoing it: its utterances (agent words only) go, the conversation is
    saved exactly as before it was reopened."""
    await conn.execute(
        "DELETE FROM utterance WHERE session = $1 AND seq > $2", conversation.id, conversation.reopened_after_seq
    )
    row = await conn.fetchrow(UNDO_REOPEN_SQL, conversation.id, conversation.period - 1)
    return _conversation(row)


async def list_periods(conversation: Conversation, conn: Any | None = None) -> list[Period]:
    """Every period of the conversation, the current one last (ended_at None while it is active)."""
    if conn is None:
        async with connection() as own:
            rows = await own.fetch(PERIODS_SQL, conversation.id)
    else:
        rows = await conn.fetch(PERIODS_SQL, conversation.id)
    periods = [Period(**dict(row)) for row in rows]
    start = conversation.reopened_at if conversation.period else conversation.started_at
    current = Period(
        conversation.period,
        conversation.room_name,
        start or conversation.started_at,
        conversation.ended_at,
        conversation.end_reason,
        conversation.reopened_after_seq,
    )
    return [*periods, current]


# Late finals of an earlier period (its agent still reporting after the conversation was reopened): stored in that
# period's place, judged by that period's end for the grace window.
PERIOD_ENDED_LONG_AGO_SQL = """
SELECT now() - ended_at > make_interval(secs => $3) FROM conversation_period WHERE session = $1 AND n = $2
"""
SHIFT_PERIODS_SQL = """
WITH later AS (UPDATE conversation_period SET after_seq = after_seq + $3 WHERE session = $1 AND n > $2)
UPDATE chat_session SET reopened_after_seq = reopened_after_seq + $3 WHERE id = $1
"""


async def store_earlier_period_finals(
    conn: Any, conversation: Conversation, period: int, events: Sequence[TranscriptEvent], late_grace: float
) -> int:
    """Store an earlier period's late finals at the end of that period (what came after moves up), inside the
    caller's transaction; none are live messages of the current period. Returns how many were new. Raises
    ConversationClosed after the grace window (or for a period that does not exist)."""
    transcript = await lock_transcript(conn, conversation.id)
    if await conn.fetchval(PERIOD_ENDED_LONG_AGO_SQL, conversation.id, period, late_grace) is not False:
        raise ConversationClosed(str(conversation.id))
    known = {u.item_id for u in transcript}
    fresh: dict[str, TranscriptEvent] = {}
    for event in events:
        if event.final and event.item_id not in known:
            fresh.setdefault(event.item_id, event)
    if not fresh:
        return 0
    periods = await list_periods(conversation, conn)
    boundary = next(p.after_seq for p in periods if p.n == period + 1)
    order: list[StoredUtterance | TranscriptEvent] = [*transcript[:boundary], *fresh.values(), *transcript[boundary:]]
    added = await store_in_order(conn, conversation.id, order)
    await conn.execute(SHIFT_PERIODS_SQL, conversation.id, period, added)
    return added


CURRENT_TITLED_SQL = """
SELECT s.id, coalesce(s.title, (SELECT u.text FROM utterance u WHERE u.session = s.id AND u.role = 'user'
                               ORDER BY u.seq LIMIT 1)) AS title
FROM chat_session s WHERE s.owner = $1 AND s.ended_at IS NULL
"""
FIRST_USER_MESSAGE_SQL = """
SELECT NOT EXISTS (SELECT 1 FROM utterance WHERE session = $1 AND role = 'user' AND seq < $2)
"""


async def current_titled(owner: uuid.UUID) -> tuple[uuid.UUID, str] | None:
    """The user's active conversation and its title (else its first message), once the user said something:
    from then on the sidebar shows it."""
    async with connection() as conn:
        row = await conn.fetchrow(CURRENT_TITLED_SQL, owner)
    return (row["id"], row["title"]) if row and row["title"] else None


async def is_first_user_message(conversation_id: uuid.UUID, seq: int) -> bool:
    async with connection() as conn:
        return bool(await conn.fetchval(FIRST_USER_MESSAGE_SQL, conversation_id, seq))
