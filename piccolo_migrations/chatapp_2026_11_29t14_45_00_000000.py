"""Initial schema: accounts, conversations, utterances and the shared session store.

Written as SQL because it needs what Piccolo's auto-migrations cannot express: a partial unique index (one
active conversation per user), a descending composite index for keyset pagination and CHECK constraints.
"""

from chatapp.core.migrations import sql_migration

ID = "2026-11-29T14:45:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "initial schema"

STATEMENTS = [
    """
    CREATE TABLE user_account (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        email varchar(320) NOT NULL UNIQUE CHECK (email = lower(email)),
        display_name varchar(80) NOT NULL,
        password_hash text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now()
    )
    """,
    """
    CREATE TABLE chat_session (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        room_name varchar(128) NOT NULL UNIQUE,
        owner uuid NOT NULL REFERENCES user_account (id) ON DELETE CASCADE,
        system_prompt text NOT NULL DEFAULT '',
        started_at timestamptz NOT NULL DEFAULT now(),
        ended_at timestamptz,
        title varchar(200),
        last_activity_at timestamptz NOT NULL DEFAULT now(),
        last_seq integer NOT NULL DEFAULT 0 CHECK (last_seq >= 0),
        end_reason varchar(20),
        continued_from uuid REFERENCES chat_session (id) ON DELETE SET NULL
    )
    """,
    # History lists page by (started_at, id) newest first.
    "CREATE INDEX chat_session_user_started ON chat_session (owner, started_at DESC, id DESC)",
    # At most one active conversation per user, enforced by the database across all app processes.
    "CREATE UNIQUE INDEX chat_session_one_active ON chat_session (owner) WHERE ended_at IS NULL",
    # The idle reaper scans active conversations by last activity.
    "CREATE INDEX chat_session_active_idle ON chat_session (last_activity_at) WHERE ended_at IS NULL",
    """
    CREATE TABLE utterance (
        id bigserial PRIMARY KEY,
        session uuid NOT NULL REFERENCES chat_session (id) ON DELETE CASCADE,
        seq integer NOT NULL CHECK (seq > 0),
        item_id varchar(128) NOT NULL,
        role varchar(10) NOT NULL CHECK (role IN ('user', 'agent')),
        text text NOT NULL,
        is_final boolean NOT NULL DEFAULT true,
        interrupted boolean NOT NULL DEFAULT false,
        created_at timestamptz NOT NULL DEFAULT now(),
        received_at timestamptz NOT NULL DEFAULT now(),
        CONSTRAINT utterance_item_unique UNIQUE (session, item_id),
        CONSTRAINT utterance_seq_unique UNIQUE (session, seq)
    )
    """,
    """
    CREATE TABLE http_session (
        key varchar(200) PRIMARY KEY,
        value bytea NOT NULL,
        expires_at timestamptz
    )
    """,
    "CREATE INDEX http_session_expires ON http_session (expires_at) WHERE expires_at IS NOT NULL",
]


forwards = sql_migration(ID, DESCRIPTION, STATEMENTS)
