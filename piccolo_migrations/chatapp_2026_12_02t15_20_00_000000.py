"""Imported conversations remember where they came from, so importing the same file twice adds nothing.

`import_source` is e.g. "chatapp:<export id>" or "chatgpt:<conversation id>", unique per owner; conversations
made in the app have none.
"""

from chatapp.core.migrations import sql_migration

ID = "2026-12-02T15:20:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "import sources"

STATEMENTS = [
    "ALTER TABLE chat_session ADD COLUMN import_source text",
    """
    CREATE UNIQUE INDEX chat_session_import_source ON chat_session (owner, import_source)
    WHERE import_source IS NOT NULL
    """,
]

forwards = sql_migration(ID, DESCRIPTION, STATEMENTS)
