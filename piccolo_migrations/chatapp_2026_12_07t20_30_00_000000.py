"""Stream slots: one row per open live stream, so the per-user cap on streams holds across app processes.

A stream takes a slot when it opens (counted and inserted under a per-user advisory lock, so concurrent opens
on several processes cannot overshoot) and deletes it when it closes; its process renews the slot's lease
while it is open, so the slots of a process that died expire by themselves. Expiry is judged by the database
clock only.
"""

from chatapp.core.migrations import sql_migration

ID = "2026-12-07T20:30:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "stream slots"

STATEMENTS = [
    """
    CREATE TABLE stream_slot (
        id uuid PRIMARY KEY,
        owner uuid NOT NULL REFERENCES user_account (id) ON DELETE CASCADE,
        holder varchar(64) NOT NULL,
        expires_at timestamptz NOT NULL
    )
    """,
    "CREATE INDEX stream_slot_owner ON stream_slot (owner, expires_at)",
    "CREATE INDEX stream_slot_expires ON stream_slot (expires_at)",
]

forwards = sql_migration(ID, DESCRIPTION, STATEMENTS)
