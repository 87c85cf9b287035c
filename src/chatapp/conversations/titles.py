"""Titles from the model: after a conversation's first exchange (the user's first message and the agent's answer)
a short title is asked of the language model in the background, and shown live in every tab.

Who chose a title is recorded (`chat_session.title_source`), and each writer decides in its own statement, so the
outcome does not depend on timing: the first agent answer after a user message claims the conversation for a
title (`first_message`, from NULL: exactly one claim however many processes store finals); the model's title
replaces only a `first_message` one, so a rename made before it arrives wins; a rename replaces anything; ending
the conversation keeps a model's or user's title and makes the first message's otherwise (queries.MARK_ENDED_SQL).
Without a configured model (the offline demo) nothing is claimed and the first message names the conversation.
A model that fails or says nothing usable leaves the first message's title; nothing it said is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence

from chatapp.conversations import queries
from chatapp.conversations.hub import Hub
from chatapp.conversations.live_events import History, Recent, Titled
from chatapp.conversations.service import TITLE_LENGTH, make_title
from chatapp.core.database import connection

log = logging.getLogger(__name__)

# (first user message, the agent's answer) -> what the model said; raises on failure.
TitleModel = Callable[[str, str], Awaitable[str]]
TITLE_TIMEOUT = 30.0  # seconds for the model's whole answer
SETTLED_CACHE = 10_000  # conversations known titled, per process: their later replies cost no statement

# One statement decides: the conversation is still untitled, not deleted, and a user message came before this reply.
CLAIM_SQL = """
WITH target AS (
    SELECT id, title_source IS NULL AND deleted_at IS NULL AS open,
           EXISTS (SELECT 1 FROM utterance u WHERE u.session = $1 AND u.role = 'user' AND u.seq < $2) AS asked
    FROM chat_session WHERE id = $1
), claimed AS (
    UPDATE chat_session s SET title_source = 'first_message' FROM target t
    WHERE s.id = t.id AND t.open AND t.asked AND s.title_source IS NULL
    RETURNING s.id
)
SELECT EXISTS (SELECT 1 FROM claimed) AS claimed, NOT coalesce((SELECT open FROM target), false) AS settled
"""
FIRST_EXCHANGE_SQL = """
WITH asked AS (
    SELECT seq, text FROM utterance WHERE session = $1 AND role = 'user' AND superseded_at IS NULL ORDER BY seq LIMIT 1
)
SELECT asked.text AS asked,
       (SELECT text FROM utterance u WHERE u.session = $1 AND u.role = 'agent' AND u.superseded_at IS NULL
          AND u.seq > asked.seq ORDER BY u.seq LIMIT 1) AS answered
FROM asked
"""
# A rename (title_source 'user') since the claim wins: the model's title is then dropped.
SET_MODEL_TITLE_SQL = """
UPDATE chat_session SET title = $2, title_source = 'model'
WHERE id = $1 AND title_source = 'first_message' AND deleted_at IS NULL
RETURNING owner, ended_at IS NOT NULL AS saved
"""

# Quotes a model wraps titles in (straight, curly, guillemets), and the dashes after a "Title" label.
_QUOTES = "\"'`\u201c\u201d\u2018\u2019\u00ab\u00bb\u201e"
_LABEL = re.compile(r"^\s*(title|subject|topic)\s*[:\-\u2013\u2014]\s*", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069]")


def clean_title(raw: str, limit: int = TITLE_LENGTH) -> str | None:
    """What the model said, as a title: its first non-empty line without a "Title:" label, surrounding quotes,
    Markdown emphasis or a final full stop, control characters removed, on one line and cut like the first
    message's title. None when nothing is left."""
    line = next((part for part in raw.splitlines() if part.strip(" \t*#_" + _QUOTES)), "")
    line = _LABEL.sub("", _CONTROL.sub(" ", line.strip(" \t*#_")))
    line = line.strip().strip(_QUOTES).strip()
    line = line.rstrip(".。").rstrip()
    if not line.strip(_QUOTES + " .,;:!?-*#_"):
        return None
    return make_title(line, limit)


class ModelTitles:
    """This process's title requests: claimed after a first exchange, run in the background, written if still
    wanted, then published to the owner's tabs."""

    def __init__(self, hub: Hub, model: TitleModel) -> None:
        self.hub = hub
        self.model = model
        self._settled: OrderedDict[uuid.UUID, None] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()

    def stored(self, conversation_id: uuid.UUID, utterances: Sequence[queries.StoredUtterance]) -> None:
        """The pipeline's hook: an agent answer was stored. Never waits: everything runs in a task of its own."""
        replies = [u.seq for u in utterances if u.role == "agent" and not u.completed_late]
        if not replies or conversation_id in self._settled:
            return
        task = asyncio.create_task(self._title(conversation_id, max(replies)), name="chatapp-model-title")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _title(self, conversation_id: uuid.UUID, reply_seq: int) -> None:
        try:
            async with connection() as conn:
                claim = await conn.fetchrow(CLAIM_SQL, conversation_id, reply_seq)
                exchange = await conn.fetchrow(FIRST_EXCHANGE_SQL, conversation_id) if claim["claimed"] else None
            if claim["claimed"] or claim["settled"]:
                self._settle(conversation_id)
            if exchange is None or not exchange["answered"]:
                return
            raw = await asyncio.wait_for(self.model(exchange["asked"], exchange["answered"]), TITLE_TIMEOUT)
        except Exception as exc:  # the type only: a message could quote what was said
            log.warning("no model title for conversation %s: %s", conversation_id, type(exc).__name__)
            return
        title = clean_title(raw)
        if title is None:
            log.info("the model gave no usable title for conversation %s", conversation_id)
            return
        await self.apply(conversation_id, title)

    async def apply(self, conversation_id: uuid.UUID, title: str) -> bool:
        """Write the model's title unless the user renamed meanwhile; tell the owner's tabs. False when dropped."""
        try:
            async with connection() as conn, conn.transaction():
                row = await conn.fetchrow(SET_MODEL_TITLE_SQL, conversation_id, title)
                if row is not None and row["saved"]:
                    await queries.refresh_search_doc(conn, conversation_id)  # the title is searched too
        except Exception as exc:
            log.warning("storing the model title of conversation %s failed: %s", conversation_id, type(exc).__name__)
            return False
        if row is None:
            return False  # renamed (or deleted) meanwhile: the user's choice stands
        owner = row["owner"]
        recent = await queries.recent_saved(owner)
        history = History(user_id=owner, recent=[Recent(r.id, r.title, r.pinned) for r in recent])
        await self.hub.publish_many([Titled(conversation_id=conversation_id, user_id=owner, text=title), history])
        return True

    def _settle(self, conversation_id: uuid.UUID) -> None:
        self._settled[conversation_id] = None
        while len(self._settled) > SETTLED_CACHE:
            self._settled.popitem(last=False)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
