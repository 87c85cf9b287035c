"""Search as you type: titles are also found by substring and by similarity (a typo still finds them).

pg_trgm ships with PostgreSQL's contrib modules (the embedded server's, and Debian's `postgresql` package) and is
a trusted extension, so a database owner without superuser rights can create it. The GIN trigram index on titles
serves both `title ILIKE '%…%'` and the strict word-similarity operator `<<%` of the search statement.
"""

from chatapp.core.migrations import sql_migration

ID = "2026-12-03T11:23:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "title trigram index for search as you type"

STATEMENTS = [
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    "CREATE INDEX chat_session_title_trgm ON chat_session USING gin (title gin_trgm_ops)",
]

forwards = sql_migration(ID, DESCRIPTION, STATEMENTS)
