"""Agent leases: which app process runs each active conversation's in-process agent.

One row per conversation that has (or had) a running agent. The holder renews `expires_at` every second;
a row whose lease ran out belongs to a process that died, and another process takes the agent over.
Expiry is judged by the database clock only, so the app processes' clocks never matter.
"""

from chatapp.core.migrations import sql_migration

ID = "2026-12-02T14:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "agent leases"

STATEMENTS = [
    """
    CREATE TABLE agent_lease (
        conversation uuid PRIMARY KEY REFERENCES chat_session (id) ON DELETE CASCADE,
        holder varchar(64) NOT NULL,
        expires_at timestamptz NOT NULL
    )
    """,
    "CREATE INDEX agent_lease_holder ON agent_lease (holder)",
]

forwards = sql_migration(ID, DESCRIPTION, STATEMENTS)
