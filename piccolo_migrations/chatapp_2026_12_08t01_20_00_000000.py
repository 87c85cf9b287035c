"""Fencing tokens for agent leases: each lease row carries a generation, new whenever another holder (or the same
one after its lease ran out) claims it. The agent's writes name the generation they were started under and are
refused once the row names another, so an app host that was cut off and comes back writes nothing for a
conversation taken over meanwhile.

Expand only: the column has a default from a sequence, so the previous release (which neither sets nor reads
it) keeps working against this schema while hosts are upgraded one by one.
"""

from chatapp.core.migrations import sql_migration

ID = "2026-12-08T01:20:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "agent lease generations"

STATEMENTS = [
    "CREATE SEQUENCE agent_lease_generation AS bigint",
    "ALTER TABLE agent_lease ADD COLUMN generation bigint NOT NULL DEFAULT nextval('agent_lease_generation')",
]

forwards = sql_migration(ID, DESCRIPTION, STATEMENTS)
