"""Reading saved conversations: keyset pages newest first, and one conversation with its transcript."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from chatapp.accounts.service import get_user
from chatapp.conversations import queries
from chatapp.core import tables
from chatapp.core.database import connection, transaction
from chatapp.core.validation import as_utc, control_character_message, has_control_characters
from chatapp.history import filters, sharing

PAGE_SIZE = 20


class BadCursor(ValueError):
    """The cursor was not made by us (or was mangled in transit)."""


# Whatever a crafted cursor can make decoding raise: bad base64 or JSON, wrong shapes, dates UTC cannot hold.
CURSOR_ERRORS = (
    binascii.Error,
    ValueError,
    TypeError,
    AttributeError,
    IndexError,
    KeyError,
    UnicodeDecodeError,
    OverflowError,
    RecursionError,
)


def encode_cursor(listed_at: datetime | None, conversation_id: uuid.UUID, shown_pins: Sequence[uuid.UUID] = ()) -> str:
    """The position after the last item, plus (main list only) the pinned ones page 1 showed on top."""
    assert listed_at is not None  # lists hold saved conversations only
    key: list[Any] = [listed_at.isoformat(), str(conversation_id)]
    if shown_pins:
        key.append(base64.urlsafe_b64encode(b"".join(p.bytes for p in shown_pins)).decode().rstrip("="))
    raw = json.dumps(key, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(cursor: str) -> tuple[datetime, uuid.UUID, frozenset[uuid.UUID]]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        started_at, conversation_id, *rest = json.loads(raw)
        if len(rest) > 1:
            raise ValueError("too many parts")
        pins = base64.urlsafe_b64decode(rest[0] + "=" * (-len(rest[0]) % 4)) if rest else b""
        if len(pins) % 16 or len(pins) > 16 * queries.MAX_PINS:
            raise ValueError("bad pins")
        shown = frozenset(uuid.UUID(bytes=pins[n : n + 16]) for n in range(0, len(pins), 16))
        return as_utc(datetime.fromisoformat(started_at)), uuid.UUID(conversation_id), shown
    except CURSOR_ERRORS:
        raise BadCursor("invalid cursor") from None


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    started_at, conversation_id, _ = _decode(cursor)
    return started_at, conversation_id


@dataclass(frozen=True)
class Page:
    items: list[queries.SavedSummary]
    next_cursor: str | None
    pinned: list[queries.SavedSummary] = field(default_factory=list)


_SUMMARY = "id, title, started_at, ended_at, last_seq - superseded AS message_count"
_FLAGS = "pinned_at IS NOT NULL AS pinned, archived_at IS NOT NULL AS archived"


def _keyset_page_sql(which: str) -> str:
    """One keyset page (newest first, after a cursor, within the history filters) of the conversations `which`
    selects; the filters' parameters are $5 on."""
    return f"""
SELECT {_SUMMARY}, {_FLAGS} FROM chat_session
WHERE owner = $1 AND {which} AND deleted_at IS NULL
  AND ($2::timestamptz IS NULL OR (ended_at, id) < ($2, $3::uuid))
  AND {filters.sql(5)}
ORDER BY ended_at DESC, id DESC
LIMIT $4
"""


# The statements, as constants so the benchmark's bare-SQL baseline runs exactly what the app runs.
# The main history list: saved and not archived (partial index chat_session_listed). Pinned ones are dropped by id
# in Python on later pages (the cursor names them), which costs at most MAX_PINS extra rows.
SAVED_PAGE_SQL = _keyset_page_sql("ended_at IS NOT NULL AND archived_at IS NULL")
# The Archived view (partial index chat_session_archived).
ARCHIVED_PAGE_SQL = _keyset_page_sql("archived_at IS NOT NULL")
# The main list's page 1: its pins and the newest other saved conversations in one round trip (the statement
# sees one snapshot, so the page leaves out exactly the pins it returns). `is_pin` first, then each part's order.
FIRST_PAGE_SQL = f"""
WITH pins AS (
    SELECT {_SUMMARY}, {_FLAGS}, pinned_at FROM chat_session
    WHERE owner = $1 AND pinned_at IS NOT NULL AND ended_at IS NOT NULL AND deleted_at IS NULL AND {filters.sql(3)}
    ORDER BY pinned_at DESC, id DESC
    LIMIT {queries.MAX_PINS}
), page AS (
    SELECT {_SUMMARY}, {_FLAGS} FROM chat_session
    WHERE owner = $1 AND ended_at IS NOT NULL AND archived_at IS NULL AND deleted_at IS NULL
      AND id NOT IN (SELECT id FROM pins)
      AND {filters.sql(3)}
    ORDER BY ended_at DESC, id DESC
    LIMIT $2
)
SELECT * FROM (
    SELECT true AS is_pin, id, title, started_at, ended_at, message_count, pinned, archived, pinned_at FROM pins
    UNION ALL
    SELECT false, id, title, started_at, ended_at, message_count, pinned, archived, NULL FROM page
) both_parts
ORDER BY is_pin DESC, pinned_at DESC, ended_at DESC, id DESC
"""
# The JSON API: every saved conversation (as before), optionally only archived / pinned ones or only others.
API_PAGE_SQL = f"""
SELECT {_SUMMARY}, {_FLAGS} FROM chat_session
WHERE owner = $1 AND ended_at IS NOT NULL AND deleted_at IS NULL
  AND ($2::timestamptz IS NULL OR (ended_at, id) < ($2, $3::uuid))
  AND ($5::bool IS NULL OR (archived_at IS NOT NULL) = $5)
  AND ($6::bool IS NULL OR (pinned_at IS NOT NULL) = $6)
ORDER BY ended_at DESC, id DESC
LIMIT $4
"""

View = Literal["main", "archived"]


def keyset_page_query(
    owner: uuid.UUID,
    after: tuple[datetime, uuid.UUID] | None,
    count: int,
    filter_params: Sequence[Any] | None = None,
    view: View = "main",
) -> tuple[Any, ...]:
    """The keyset page statement and its parameters, built in one place (the bench runs exactly these)."""
    sql = ARCHIVED_PAGE_SQL if view == "archived" else SAVED_PAGE_SQL
    chosen = filters.params_or_none(filter_params)
    return sql, owner, *(after or (None, None)), count, *chosen


def first_page_query(owner: uuid.UUID, count: int, filter_params: Sequence[Any] | None = None) -> tuple[Any, ...]:
    """The main list's page 1 with its pins: one statement and its parameters (the bench runs exactly these)."""
    chosen = filters.params_or_none(filter_params)
    return FIRST_PAGE_SQL, owner, count, *chosen


def _summary(row: Any) -> queries.SavedSummary:
    return queries.SavedSummary(
        row["id"],
        row["title"],
        row["started_at"],
        row["ended_at"],
        row["message_count"],
        row["pinned"],
        row["archived"],
    )


async def saved_page(
    owner: uuid.UUID,
    cursor: str | None = None,
    limit: int = PAGE_SIZE,
    filter_params: Sequence[Any] | None = None,
    view: View = "main",
) -> Page:
    """One page of a history list, newest first, within the history filters (`filters.apply(...).params`).

    A keyset on (ended_at, id), the last activity, means pages neither repeat nor skip items when conversations
    are saved meanwhile, and deep pages cost as much as the first. In the main list, page 1 also returns every pin (at
    most MAX_PINS) to show on top; the keyset part leaves out exactly those, by id, on every page (the cursor
    carries them). So pinning or unpinning between page fetches never shows an item twice or loses one: an
    item shown on top stays shown once, and every other item keeps its place in the date order.
    """
    after = _decode(cursor) if cursor else None
    pinned: list[queries.SavedSummary] = []
    async with connection() as conn:
        if after is None and view == "main":
            rows = await conn.fetch(*first_page_query(owner, limit + 1, filter_params))
            pinned = [_summary(row) for row in rows if row["is_pin"]]
            found = [_summary(row) for row in rows if not row["is_pin"]]
            shown = frozenset(p.id for p in pinned)
        else:
            shown = after[2] if after else frozenset()
            rows = await conn.fetch(
                *keyset_page_query(owner, after[:2] if after else None, limit + 1 + len(shown), filter_params, view)
            )
            found = [_summary(row) for row in rows if row["id"] not in shown][: limit + 1]
    items = found[:limit]
    next_cursor = None
    if len(found) > limit:
        next_cursor = encode_cursor(items[-1].ended_at, items[-1].id, sorted(shown))
    return Page(items, next_cursor, pinned)


def api_page_query(
    owner: uuid.UUID,
    after: tuple[datetime, uuid.UUID] | None,
    count: int,
    archived: bool | None = None,
    pinned: bool | None = None,
) -> tuple[Any, ...]:
    """The JSON API's page statement and its parameters (the bench runs exactly these)."""
    return API_PAGE_SQL, owner, *(after or (None, None)), count, archived, pinned


async def api_page(
    owner: uuid.UUID,
    cursor: str | None,
    limit: int,
    archived: bool | None = None,
    pinned: bool | None = None,
) -> Page:
    """The JSON API's pages: one keyset over every saved conversation, filtered, so flags never reorder it."""
    after = decode_cursor(cursor) if cursor else None
    async with connection() as conn:
        rows = await conn.fetch(*api_page_query(owner, after, limit + 1, archived, pinned))
    items = [queries.SavedSummary(**dict(row)) for row in rows[:limit]]
    next_cursor = encode_cursor(items[-1].ended_at, items[-1].id) if len(rows) > limit else None
    return Page(items, next_cursor)


@dataclass(frozen=True)
class Detail:
    conversation: queries.Conversation
    utterances: list[queries.StoredUtterance]
    # The conversation's active periods (the first, then one per reopening), oldest first.
    periods: list[queries.Period] = field(default_factory=list)

    def active_until(self) -> datetime | None:
        """The end as if its periods had followed each other without a gap: what "how long" shows."""
        c = self.conversation
        if len(self.periods) < 2 or c.ended_at is None:
            return c.ended_at
        return c.started_at + sum((p.ended_at - p.started_at for p in self.periods if p.ended_at), timedelta())

    def reopened_before(self) -> dict[int, queries.Period]:
        """seq of the first utterance of each reopened period -> that period: where "Reopened …" goes."""
        return {p.after_seq + 1: p for p in self.periods if p.n > 0}


async def conversation_detail(owner: uuid.UUID, conversation_id: uuid.UUID) -> Detail | None:
    """The owner's conversation with every utterance in order; None for anyone else (answered as 404)."""
    conversation = await queries.get_conversation(conversation_id, owner=owner)
    if conversation is None:
        return None
    return Detail(
        conversation, await queries.list_utterances(conversation_id), await queries.list_periods(conversation)
    )


@dataclass(frozen=True)
class DetailPage:
    """A conversation's page: its transcript, and for its owner its live share link and what it continued."""

    detail: Detail
    share_token: str | None = None
    origin: queries.Conversation | None = None
    # On a shared page, the owner's display name: their turns are theirs, not the reader's "You".
    speaker: str | None = None


async def detail_page(owner: uuid.UUID, conversation_id: uuid.UUID) -> DetailPage | None:
    """The owner's conversation page; None for anyone else (404). An active one has no page (its handler sends the
    person to the chat), so nothing more is read for it."""
    detail = await conversation_detail(owner, conversation_id)
    if detail is None or detail.conversation.active:
        return None if detail is None else DetailPage(detail)
    conversation = detail.conversation
    token = await sharing.live_token(conversation.id)
    origin = None
    if conversation.continued_from is not None:  # shown to its owner only: a share link reveals nothing else
        origin = await queries.get_conversation(conversation.continued_from, owner=owner)
    return DetailPage(detail, token, origin)


class ShareRevoked(LookupError):
    """A link its owner revoked (answered 410), as opposed to one that never existed (404)."""


async def shared_page(token: str) -> DetailPage | None:
    """The saved conversation behind a live share link, transcript only; None for a link that never existed."""
    conversation_id = await sharing.shared_conversation_id(token)
    conversation = await queries.get_conversation(conversation_id) if conversation_id else None
    detail = await conversation_detail(conversation.owner, conversation.id) if conversation else None
    if detail is None:
        if await sharing.was_revoked(token):
            raise ShareRevoked(token)
        return None
    owner = await get_user(detail.conversation.owner)
    return DetailPage(detail, speaker=owner.display_name if owner else None)


MAX_TITLE_LENGTH = 200


class InvalidTitle(ValueError):
    pass


async def saved_conversation(owner: uuid.UUID, conversation_id: uuid.UUID) -> queries.Conversation | None:
    """The owner's saved conversation; None for unknown, someone else's, or still active (all 404)."""
    conversation = await queries.get_conversation(conversation_id, owner=owner)
    return conversation if conversation is not None and not conversation.active else None


async def rename(owner: uuid.UUID, conversation_id: uuid.UUID, title: str) -> queries.Conversation | None:
    if has_control_characters(title):
        raise InvalidTitle(control_character_message("The title"))
    title = " ".join(title.split())
    if not title:
        raise InvalidTitle("Enter a title.")
    if len(title) > MAX_TITLE_LENGTH:
        raise InvalidTitle(f"Use at most {MAX_TITLE_LENGTH} characters.")
    async with transaction(), connection() as conn:
        rows = await (
            tables.Conversation.update({tables.Conversation.title: title, tables.Conversation.title_source: "user"})
            .where(_owned_saved(owner, conversation_id))
            .returning(*tables.Conversation.all_columns())
        )
        if not rows:
            return None
        await queries.refresh_search_doc(conn, conversation_id)  # the title is searched too
    return queries.Conversation(**rows[0])


def _owned_saved(owner: uuid.UUID, conversation_id: uuid.UUID) -> Any:
    """The query builder's condition for "this conversation, if it is the owner's and saved"."""
    return (
        (tables.Conversation.id == conversation_id)
        & (tables.Conversation.owner == owner)
        & tables.Conversation.ended_at.is_not_null()
        & tables.Conversation.deleted_at.is_null()
    )


class NothingToRestore(LookupError):
    """Undo of a conversation that is not the user's deleted one (someone else's, never deleted, or purged)."""


class UndoExpired(LookupError):
    """Undo after the window: the conversation is gone for good (or about to be purged), so it cannot come back."""


# Deleting marks the row (deleted_at, by the database clock); every read leaves marked rows out. Undo clears the
# mark while the window lasts; the purge deletes what is past it (utterances, share links and the search document
# go with the row). Undo and purge each decide in one statement, so they cannot both win.
SOFT_DELETE_SQL = f"""
UPDATE chat_session SET deleted_at = now()
WHERE id = $1 AND owner = $2 AND ended_at IS NOT NULL AND deleted_at IS NULL
RETURNING {queries.CONVERSATION_COLUMNS}
"""
UNDO_DELETE_SQL = f"""
UPDATE chat_session SET deleted_at = NULL
WHERE id = $1 AND owner = $2 AND deleted_at IS NOT NULL AND deleted_at > now() - make_interval(secs => $3)
RETURNING {queries.CONVERSATION_COLUMNS}
"""
DELETED_EXISTS_SQL = "SELECT true FROM chat_session WHERE id = $1 AND owner = $2 AND deleted_at IS NOT NULL"
PURGE_DUE_SQL = """
DELETE FROM chat_session WHERE id IN (
    SELECT id FROM chat_session WHERE deleted_at <= now() - make_interval(secs => $1) ORDER BY deleted_at LIMIT $2
)
"""
PURGE_BATCH = 500


async def delete(owner: uuid.UUID, conversation_id: uuid.UUID) -> queries.Conversation | None:
    """Delete the owner's saved conversation, restorable for the undo window; None for unknown, someone else's,
    active or already deleted (404)."""
    async with connection() as conn:
        row = await conn.fetchrow(SOFT_DELETE_SQL, conversation_id, owner)
    return queries.Conversation(**dict(row)) if row else None


async def undo_delete(owner: uuid.UUID, conversation_id: uuid.UUID, window: float) -> queries.Conversation:
    """Bring back a conversation deleted less than `window` seconds ago. NothingToRestore for one that is not the
    owner's deleted one (404, whoever's it is); UndoExpired when the window has passed (410)."""
    async with connection() as conn:
        row = await conn.fetchrow(UNDO_DELETE_SQL, conversation_id, owner, window)
        if row is None and await conn.fetchval(DELETED_EXISTS_SQL, conversation_id, owner):
            raise UndoExpired(str(conversation_id))
    if row is None:
        raise NothingToRestore(str(conversation_id))
    return queries.Conversation(**dict(row))


@dataclass(frozen=True)
class DeletedNotice:
    """What the list says after a delete from a conversation's page: which one, and where Undo posts."""

    id: uuid.UUID
    title: str
    undo_url: str
    seconds: float


async def deleted_notice(owner: uuid.UUID, deleted: str, window: float) -> DeletedNotice | None:
    """The notice for `?deleted=<id>`, while that conversation of the owner's can still be restored."""
    try:
        conversation_id = uuid.UUID(deleted)
    except ValueError:
        return None
    conversation = await queries.get_conversation(conversation_id, owner, include_deleted=True)
    if conversation is None or conversation.deleted_at is None:
        return None
    title = conversation.title or "Untitled conversation"
    return DeletedNotice(conversation.id, title, f"/history/{conversation.id}/restore", window)


async def purge_deleted(window: float) -> int:
    """Delete for good every conversation deleted more than `window` seconds ago; return how many. The sweep
    calls this every round, so a purge that failed (a crash, an outage) is only late, never lost."""
    purged = 0
    async with connection() as conn:
        while True:
            status = await conn.execute(PURGE_DUE_SQL, window, PURGE_BATCH)
            count = int(status.split()[-1])
            purged += count
            if count < PURGE_BATCH:
                return purged


class TooManyPins(ValueError):
    pass


PIN_SQL = f"""
UPDATE chat_session SET pinned_at = coalesce(pinned_at, now()), archived_at = NULL
WHERE id = $1 AND owner = $2 AND ended_at IS NOT NULL AND deleted_at IS NULL
RETURNING {queries.CONVERSATION_COLUMNS}
"""
UNPIN_SQL = f"""
UPDATE chat_session SET pinned_at = NULL WHERE id = $1 AND owner = $2 AND ended_at IS NOT NULL AND deleted_at IS NULL
RETURNING {queries.CONVERSATION_COLUMNS}
"""
ARCHIVE_SQL = f"""
UPDATE chat_session SET archived_at = coalesce(archived_at, now()), pinned_at = NULL
WHERE id = $1 AND owner = $2 AND ended_at IS NOT NULL AND deleted_at IS NULL
RETURNING {queries.CONVERSATION_COLUMNS}
"""
UNARCHIVE_SQL = f"""
UPDATE chat_session SET archived_at = NULL WHERE id = $1 AND owner = $2 AND ended_at IS NOT NULL AND deleted_at IS NULL
RETURNING {queries.CONVERSATION_COLUMNS}
"""
SAVED_EXISTS_SQL = (
    "SELECT true FROM chat_session WHERE id = $1 AND owner = $2 AND ended_at IS NOT NULL AND deleted_at IS NULL"
)
OTHER_PINS_SQL = (
    "SELECT count(*) FROM chat_session WHERE owner = $1 AND pinned_at IS NOT NULL AND deleted_at IS NULL AND id <> $2"
)


async def set_pinned(owner: uuid.UUID, conversation_id: uuid.UUID, pinned: bool) -> queries.Conversation | None:
    """Pin (which also brings an archived one back) or unpin; idempotent, so a double click or two tabs agree.

    None for unknown, someone else's or still active (404). The user's row lock serialises pinning, so two
    requests at once cannot pass MAX_PINS together.
    """
    async with connection() as conn, conn.transaction():
        if pinned:
            await conn.execute(queries.LOCK_USER_SQL, owner)
            if await conn.fetchval(OTHER_PINS_SQL, owner, conversation_id) >= queries.MAX_PINS:
                if not await conn.fetchval(SAVED_EXISTS_SQL, conversation_id, owner):
                    return None  # the cap is no reason to reveal or refuse what is not theirs
                raise TooManyPins(f"You can pin at most {queries.MAX_PINS} conversations. Unpin one first.")
        row = await conn.fetchrow(PIN_SQL if pinned else UNPIN_SQL, conversation_id, owner)
    return queries.Conversation(**dict(row)) if row else None


async def set_archived(owner: uuid.UUID, conversation_id: uuid.UUID, archived: bool) -> queries.Conversation | None:
    """Archive (which also unpins: an archived conversation is off every list a pin would keep it on top of)
    or bring back; idempotent. None for unknown, someone else's or still active (404)."""
    async with connection() as conn:
        row = await conn.fetchrow(ARCHIVE_SQL if archived else UNARCHIVE_SQL, conversation_id, owner)
    return queries.Conversation(**dict(row)) if row else None
