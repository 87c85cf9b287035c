"""History: full-text search documents and shareable read-only links.

`chat_session.search_doc` holds a saved conversation's title (weight A) and transcript (weight B); it is
written when the conversation is saved, renamed or receives a late final, so searches rank conversations
(10,000 per user) instead of utterances (millions). `utterance.tsv` is stored, unindexed, to pick and
highlight the best snippet inside the few conversations shown on a page.
"""

from chatapp.core.migrations import sql_migration

ID = "2026-11-29T15:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "history search and share links"

STATEMENTS = [
    "ALTER TABLE chat_session ADD COLUMN search_doc tsvector",
    "CREATE INDEX chat_session_search ON chat_session USING gin (search_doc)",
    "ALTER TABLE utterance ADD COLUMN tsv tsvector GENERATED ALWAYS AS (to_tsvector('english', text)) STORED",
    """
    CREATE TABLE share_link (
        token varchar(64) PRIMARY KEY,
        session uuid NOT NULL REFERENCES chat_session (id) ON DELETE CASCADE,
        created_at timestamptz NOT NULL DEFAULT now(),
        revoked_at timestamptz
    )
    """,
    "CREATE UNIQUE INDEX share_link_one_live ON share_link (session) WHERE revoked_at IS NULL",
]


forwards = sql_migration(ID, DESCRIPTION, STATEMENTS)
