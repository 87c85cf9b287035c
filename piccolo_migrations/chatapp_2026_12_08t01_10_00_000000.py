"""Who set a conversation's title, and deletes that can be undone.

`chat_session.title_source` says who chose the title: `first_message` (made from the user's first message, and
made again from it when the conversation ends), `model` (a short title the language model wrote after the first
exchange) or `user` (a rename, or a title an import brought). NULL: nobody yet. A model title never replaces a
user's, and a title the user chose is never replaced at the end of the conversation. Existing titles count as
the first message's when they are exactly what it made of it, else as the user's (renamed or imported).

`chat_session.deleted_at` marks a conversation deleted and still restorable (CHATAPP_DELETE_UNDO_SECONDS):
every list, search, analytics, the JSON API and share links leave it out; after the window it is purged, its
search document with it. The partial index finds what is due, for the purge sweep.
"""

from chatapp.core.migrations import sql_migration

ID = "2026-12-08T01:10:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "title source, undoable deletes"

STATEMENTS = [
    """
    ALTER TABLE chat_session ADD COLUMN title_source varchar(16)
        CHECK (title_source IN ('first_message', 'model', 'user'))
    """,
    """
    UPDATE chat_session s SET title_source = CASE
        WHEN first.line IS NOT NULL AND (s.title = first.line
             OR (right(s.title, 1) = '…' AND starts_with(first.line, left(s.title, -1))))
        THEN 'first_message' ELSE 'user' END
    FROM chat_session c
    LEFT JOIN LATERAL (
        SELECT btrim(regexp_replace(u.text, '\\s+', ' ', 'g')) AS line FROM utterance u
        WHERE u.session = c.id AND u.role = 'user' ORDER BY u.seq LIMIT 1
    ) first ON true
    WHERE s.id = c.id AND s.title IS NOT NULL
    """,
    "ALTER TABLE chat_session ADD COLUMN deleted_at timestamptz",
    "CREATE INDEX chat_session_deleted ON chat_session (deleted_at) WHERE deleted_at IS NOT NULL",
]

forwards = sql_migration(ID, DESCRIPTION, STATEMENTS)
