"""Archive and pin saved conversations.

`archived_at` takes a conversation out of the main history list and the chat page's Recent sidebar (the
Archived view lists them); `pinned_at` keeps it on top of both. A conversation is never both: archiving unpins.
Each list query has its partial index, so every first page is an index scan that stops after a page:
- the main list (saved, not archived; pinned ones are left out by id, at most 20 per user),
- the pinned section (newest pin first),
- the Archived view.
"""

from chatapp.core.migrations import sql_migration

ID = "2026-12-02T15:10:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "archive and pin"

STATEMENTS = [
    "ALTER TABLE chat_session ADD COLUMN archived_at timestamptz, ADD COLUMN pinned_at timestamptz",
    """
    ALTER TABLE chat_session ADD CONSTRAINT chat_session_pinned_or_archived
        CHECK (archived_at IS NULL OR pinned_at IS NULL)
    """,
    """
    CREATE INDEX chat_session_listed ON chat_session (owner, started_at DESC, id DESC)
        WHERE ended_at IS NOT NULL AND archived_at IS NULL
    """,
    "CREATE INDEX chat_session_pinned ON chat_session (owner, pinned_at DESC, id DESC) WHERE pinned_at IS NOT NULL",
    """
    CREATE INDEX chat_session_archived ON chat_session (owner, started_at DESC, id DESC)
        WHERE archived_at IS NOT NULL
    """,
]

forwards = sql_migration(ID, DESCRIPTION, STATEMENTS)
