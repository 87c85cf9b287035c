"""Reopening: a saved conversation can be continued in place, in periods of its own.

`chat_session.period` counts the reopenings (0: never reopened), `reopened_at` is when the current period started
(null in period 0, which starts at `started_at`) and `reopened_after_seq` the last utterance before it. Each
finished earlier period is kept in `conversation_period` with its start, end, reason, LiveKit room and where its
utterances start (after `after_seq`), so exports say when it was reopened and a late event from an old room is
recognised as such. Saved lists order by the last activity, which for a saved conversation is the end of its last
period (`ended_at`): the listing indexes follow that order.
"""

from chatapp.core.migrations import sql_migration

ID = "2026-12-08T01:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "reopen periods, lists by last activity"

STATEMENTS = [
    """
    ALTER TABLE chat_session ADD COLUMN period integer NOT NULL DEFAULT 0, ADD COLUMN reopened_at timestamptz,
        ADD COLUMN reopened_after_seq integer NOT NULL DEFAULT 0
    """,
    """
    CREATE TABLE conversation_period (
        session uuid NOT NULL REFERENCES chat_session (id) ON DELETE CASCADE,
        n integer NOT NULL,
        room_name varchar(128) NOT NULL UNIQUE,
        started_at timestamptz NOT NULL,
        ended_at timestamptz NOT NULL,
        end_reason varchar(20),
        after_seq integer NOT NULL,
        PRIMARY KEY (session, n)
    )
    """,
    "DROP INDEX chat_session_listed",
    """
    CREATE INDEX chat_session_listed ON chat_session (owner, ended_at DESC, id DESC)
        WHERE ended_at IS NOT NULL AND archived_at IS NULL
    """,
    "DROP INDEX chat_session_archived",
    """
    CREATE INDEX chat_session_archived ON chat_session (owner, ended_at DESC, id DESC)
        WHERE archived_at IS NOT NULL
    """,
]

forwards = sql_migration(ID, DESCRIPTION, STATEMENTS)
