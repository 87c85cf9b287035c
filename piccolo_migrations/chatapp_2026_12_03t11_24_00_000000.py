"""Retry keeps what was said: a reply replaced by "Retry" stays stored, marked superseded.

`utterance.superseded_at` marks a replaced reply (NULL: current). `chat_session.superseded` counts them, so a
conversation's message count (`last_seq - superseded`: sequences are gapless) stays one column read in every list,
and its search document leaves them out.
"""

from chatapp.core.migrations import sql_migration

ID = "2026-12-03T11:24:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "superseded replies"

STATEMENTS = [
    "ALTER TABLE utterance ADD COLUMN superseded_at timestamptz",
    "ALTER TABLE chat_session ADD COLUMN superseded integer NOT NULL DEFAULT 0 CHECK (superseded >= 0)",
]

forwards = sql_migration(ID, DESCRIPTION, STATEMENTS)
