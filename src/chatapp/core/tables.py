"""The schema. Migrations in piccolo_migrations/ (SQL) create it; these classes are how the query builder
names it for plain CRUD. Columns only the raw SQL uses (search documents) are not declared here.

Words: a *conversation* is what a person has with the agent; a *login session* (`http_session`) is a signed-in
browser; an *AgentSession* is livekit-agents' object. The database kept its first names for conversations
(table `chat_session`, column `session` in `utterance` and `share_link`): the Python names here say
`conversation`, and the raw SQL uses the table's names."""

from __future__ import annotations

from piccolo.columns import (
    UUID,
    BigSerial,
    Boolean,
    Bytea,
    ForeignKey,
    Integer,
    OnDelete,
    Text,
    Timestamptz,
    Varchar,
)
from piccolo.table import Table


class UserAccount(Table, tablename="user_account"):
    """A person who signs in. `email` is stored lower-cased and unique; the password as an argon2 hash."""

    id = UUID(primary_key=True)
    email = Varchar(length=320, unique=True)
    display_name = Varchar(length=80)
    password_hash = Text()
    created_at = Timestamptz()


class Conversation(Table, tablename="chat_session"):
    """One conversation. Active while `ended_at` is null (at most one per user); saved once it is set."""

    id = UUID(primary_key=True)
    room_name = Varchar(length=128, unique=True)
    owner = ForeignKey(references=UserAccount, null=False, on_delete=OnDelete.cascade)
    system_prompt = Text()
    started_at = Timestamptz()
    ended_at = Timestamptz(null=True, default=None)
    title = Varchar(length=200, null=True, default=None)
    # Who chose the title: "first_message", "model" or "user" (a user's title is never replaced); NULL: nobody yet.
    title_source = Varchar(length=16, null=True, default=None)
    last_activity_at = Timestamptz()
    # Sequence of the newest final utterance; sequences are gapless, so this less `superseded` is the message count.
    last_seq = Integer(default=0)
    superseded = Integer(default=0)  # replies replaced by Retry (kept, marked superseded)
    end_reason = Varchar(length=20, null=True, default=None)
    continued_from = UUID(null=True, default=None)
    archived_at = Timestamptz(null=True, default=None)  # off the main list (never together with pinned_at)
    pinned_at = Timestamptz(null=True, default=None)  # on top of the lists
    deleted_at = Timestamptz(null=True, default=None)  # deleted, restorable until purged (CHATAPP_DELETE_UNDO_SECONDS)
    # Reopening: the current period (0 until reopened), when it started, and the last utterance before it.
    period = Integer(default=0)
    reopened_at = Timestamptz(null=True, default=None)
    reopened_after_seq = Integer(default=0)
    # Earlier periods are rows of `conversation_period` (composite key, raw SQL only: conversations/queries.py).


class Utterance(Table, tablename="utterance"):
    """A final utterance. `item_id` makes deliveries idempotent; `seq` orders them without gaps."""

    id = BigSerial(primary_key=True)
    conversation = ForeignKey(references=Conversation, null=False, on_delete=OnDelete.cascade, db_column_name="session")
    seq = Integer()
    item_id = Varchar(length=128)
    role = Varchar(length=10)
    text = Text()
    is_final = Boolean(default=True)
    interrupted = Boolean(default=False)
    created_at = Timestamptz()
    received_at = Timestamptz()
    superseded_at = Timestamptz(null=True, default=None)  # replaced by Retry: kept, no longer current


class ShareLink(Table, tablename="share_link"):
    """A read-only link to one saved conversation; revoking keeps the row so old links stay dead."""

    token = Varchar(length=64, primary_key=True)
    conversation = ForeignKey(references=Conversation, null=False, on_delete=OnDelete.cascade, db_column_name="session")
    created_at = Timestamptz()
    revoked_at = Timestamptz(null=True, default=None)


class HttpSession(Table, tablename="http_session"):
    """Server-side store for login sessions and rate-limit counters, shared by every app process."""

    key = Varchar(length=200, primary_key=True)
    value = Bytea()
    expires_at = Timestamptz(null=True, default=None)
