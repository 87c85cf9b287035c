"""What a person can do to their own account: rename, change the password, download everything, delete it all."""

from __future__ import annotations

import hashlib
import io
import uuid
import zipfile
from typing import Any

from chatapp.accounts import service as accounts
from chatapp.accounts.service import AccountError, User
from chatapp.accounts.sessions import owner_prefix
from chatapp.core.database import connection, transaction
from chatapp.core.tables import UserAccount
from chatapp.core.validation import control_character_message, has_control_characters
from chatapp.history import export
from chatapp.history.service import conversation_detail

# The session store's namespace (PostgresStore("session") in app.py) in front of each session id.
SESSION_KEY_PREFIX = "session:"
# The download is built in memory: past this much JSON it is refused instead of filling the server's memory.
MAX_EXPORT_BYTES = 100 * 1024 * 1024


class ExportTooLarge(ValueError):
    pass


def checked_display_name(raw: str) -> str:
    """The name as stored (whitespace collapsed), or AccountError with the same rules as sign-up."""
    name = " ".join(raw.split())
    if has_control_characters(raw):
        raise AccountError({"display_name": control_character_message("Your name")})
    if not name:
        raise AccountError({"display_name": "Enter the name the agent should call you."})
    if len(name) > accounts.MAX_DISPLAY_NAME_LENGTH:
        raise AccountError({"display_name": f"Use at most {accounts.MAX_DISPLAY_NAME_LENGTH} characters."})
    return name


def session_tag_of(key: str) -> str:
    """The hub's name for a login session (see sessions.session_tag) from its store key."""
    return hashlib.sha256(key.removeprefix(SESSION_KEY_PREFIX).encode()).hexdigest()[:32]


async def rename(user: User, raw_name: str) -> User:
    """Store the new name, in the account and in every login session's cached copy of the user."""
    name = checked_display_name(raw_name)
    async with transaction(), connection() as conn:
        await UserAccount.update({UserAccount.display_name: name}).where(UserAccount.id == user.id)
        # The cached copies are JSON inside bytea: jsonb_set in place, which the query builder cannot say.
        await conn.execute(
            """
            UPDATE http_session SET value = convert_to(
                jsonb_set(convert_from(value, 'UTF8')::jsonb, '{display_name}', to_jsonb($2::text))::text, 'UTF8')
            WHERE starts_with(key, $1)
            """,
            SESSION_KEY_PREFIX + owner_prefix(user.id),
            name,
        )
    return User(user.id, user.email, name)


async def _check_password(user: User, password: str) -> None:
    if await accounts.authenticate(user.email, password) is None:
        raise AccountError({"current_password": "That is not your current password."})


async def change_password(user: User, current: str, new: str) -> list[str]:
    """Re-authenticate, store the new hash and end every login session of the user (the caller gives its own
    a fresh one). Returns the ended session keys, so their open streams can be ended too."""
    if len(new) < accounts.MIN_PASSWORD_LENGTH:
        raise AccountError({"new_password": f"Use at least {accounts.MIN_PASSWORD_LENGTH} characters."})
    if len(new) > accounts.MAX_PASSWORD_LENGTH:
        raise AccountError({"new_password": f"Use at most {accounts.MAX_PASSWORD_LENGTH} characters."})
    await _check_password(user, current)
    password_hash = await accounts.hash_password(new)
    async with transaction(), connection() as conn:
        await UserAccount.update({UserAccount.password_hash: password_hash}).where(UserAccount.id == user.id)
        return await _delete_sessions(conn, user.id)


# The user's sessions by the id prefix (indexed); sessions written before ids carried the user id have no "."
# and are found by the user id in their JSON (a scan, but only on a password change or an account deletion).
DELETE_SESSIONS_SQL = """
DELETE FROM http_session
WHERE starts_with(key, $1)
   OR (starts_with(key, $2) AND strpos(key, '.') = 0 AND strpos(convert_from(value, 'UTF8'), $3) > 0)
RETURNING key
"""


async def _delete_sessions(conn: Any, user_id: uuid.UUID) -> list[str]:
    rows = await conn.fetch(
        DELETE_SESSIONS_SQL,
        SESSION_KEY_PREFIX + owner_prefix(user_id),
        SESSION_KEY_PREFIX,
        f'"user_id":"{user_id}"',
    )
    return [row["key"] for row in rows]


async def confirm_deletion(user: User, confirmation: str) -> None:
    """Deleting needs the account's email typed out, or its password."""
    if confirmation.strip().lower() == user.email:
        return
    if confirmation and await accounts.authenticate(user.email, confirmation) is not None:
        return
    raise AccountError({"confirm": "Type your email address (or your password) to confirm."})


async def delete_account(user_id: uuid.UUID) -> list[str]:
    """The account, its conversations (utterances, share links, leases cascade) and its login sessions, at once."""
    async with transaction(), connection() as conn:
        keys = await _delete_sessions(conn, user_id)
        await UserAccount.delete().where(UserAccount.id == user_id)
    return keys


async def export_zip(user_id: uuid.UUID) -> bytes:
    """Every saved conversation as its JSON export (the README's format), one file each, in one zip; a saved one
    reopened and active right now too (it was saved before)."""
    async with connection() as conn:
        ids = await conn.fetch(
            "SELECT id FROM chat_session WHERE owner = $1 AND (ended_at IS NOT NULL OR period > 0)"
            " AND deleted_at IS NULL ORDER BY started_at, id",
            user_id,
        )
    buffer = io.BytesIO()
    total = 0
    names: set[str] = set()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for row in ids:
            detail = await conversation_detail(user_id, row["id"])
            if detail is None:  # deleted meanwhile
                continue
            document = export.as_json(detail).encode()
            total += len(document)
            if total > MAX_EXPORT_BYTES:
                raise ExportTooLarge(f"Your data is larger than {MAX_EXPORT_BYTES // (1024 * 1024)} MB of JSON.")
            name = export.filename(detail, "json")
            if name in names:
                name = name.removesuffix(".json") + f"-{detail.conversation.id.hex[:8]}.json"
            names.add(name)
            archive.writestr(name, document)
    return buffer.getvalue()
