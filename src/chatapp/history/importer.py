"""Import conversations: chatapp JSON exports (one file or a zip of many) and ChatGPT's `conversations.json`.

Everything in an upload is parsed and validated before anything is written, and the writes run in one
transaction, so a bad file changes nothing. Each conversation remembers its source ("chatapp:<id>",
"chatgpt:<id>"), unique per owner, so importing the same file again adds nothing.
"""

from __future__ import annotations

import hashlib
import io
import json
import uuid
import zipfile
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from chatapp.conversations import queries
from chatapp.conversations.agent_access import room_name_for
from chatapp.conversations.events import MAX_ITEM_ID_LENGTH, MAX_TEXT_LENGTH, Role
from chatapp.conversations.service import make_title
from chatapp.core.database import connection
from chatapp.core.validation import as_utc, has_control_characters
from chatapp.history.export import EXPORT_VERSION
from chatapp.history.service import MAX_TITLE_LENGTH

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_CONVERSATIONS = 1000
MAX_UTTERANCES = 5000
MAX_ZIP_ENTRIES = 1000
# Bounds what a zip may expand to (a zip bomb), checked as the entries are read, not from their headers.
MAX_UNZIPPED_BYTES = 50 * 1024 * 1024
MAX_SOURCE_ID_LENGTH = 200
CHATGPT_ROLES: dict[str, Role] = {"user": "user", "assistant": "agent"}


class UnimportableFile(ValueError):
    """The upload cannot be imported; the message says why (shown to the person, nothing was written)."""

    def __init__(self, message: str, status_code: int = 422) -> None:
        super().__init__(message)
        self.status_code = status_code


@dataclass(frozen=True)
class Line:
    item_id: str
    role: Role
    text: str
    interrupted: bool
    created_at: datetime
    superseded: bool = False  # a reply replaced by Retry (export version 2)


@dataclass(frozen=True)
class Imported:
    source: str
    title: str
    started_at: datetime
    ended_at: datetime
    lines: list[Line]
    own_id: uuid.UUID | None = None  # a chatapp export's conversation id: already there if the user still has it


@dataclass(frozen=True)
class Result:
    imported: int
    already_there: int
    empty: int

    @property
    def message(self) -> str:
        noun = "conversation" if self.imported == 1 else "conversations"
        text = f"Imported {self.imported} {noun}"
        notes = []
        if self.already_there:
            notes.append(f"{self.already_there} already there")
        if self.empty:
            notes.append(f"{self.empty} without messages skipped")
        return text + (f" ({', '.join(notes)})" if notes else "") + "."


def parse_upload(filename: str, data: bytes) -> list[Imported]:
    """Every conversation in the upload, validated; UnimportableFile for anything that cannot be imported."""
    if len(data) > MAX_UPLOAD_BYTES:
        raise UnimportableFile(f"The file is larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MB.", 413)
    if not data:
        raise UnimportableFile("The file is empty.")
    if data.startswith(b"PK\x03\x04") or data.startswith(b"PK\x05\x06"):
        conversations = _parse_zip(data)
    else:
        conversations = _parse_document(_load_json(data, filename or "the file"), filename or "the file")
    if len(conversations) > MAX_CONVERSATIONS:
        raise UnimportableFile(f"At most {MAX_CONVERSATIONS:,} conversations can be imported at once.", 413)
    return conversations


def _parse_zip(data: bytes) -> list[Imported]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        entries = [info for info in archive.infolist() if not info.is_dir()]
    except (zipfile.BadZipFile, OSError, ValueError):
        raise UnimportableFile("The zip file is damaged.") from None
    if len(entries) > MAX_ZIP_ENTRIES:
        raise UnimportableFile(f"The zip holds more than {MAX_ZIP_ENTRIES:,} files.", 413)
    conversations: list[Imported] = []
    budget = MAX_UNZIPPED_BYTES
    for info in entries:
        if not info.filename.lower().endswith(".json"):
            continue
        try:
            with archive.open(info) as member:
                content = member.read(budget + 1)  # the header's size may lie; the bytes read do not
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError, RuntimeError):
            raise UnimportableFile(f"{info.filename} in the zip cannot be read.") from None
        budget -= len(content)
        if budget < 0:
            raise UnimportableFile(f"The zip expands to more than {MAX_UNZIPPED_BYTES // (1024 * 1024)} MB.", 413)
        conversations += _parse_document(_load_json(content, info.filename), info.filename)
        if len(conversations) > MAX_CONVERSATIONS:
            raise UnimportableFile(f"At most {MAX_CONVERSATIONS:,} conversations can be imported at once.", 413)
    if not conversations:
        raise UnimportableFile("The zip holds no chatapp or ChatGPT JSON files.")
    return conversations


def _load_json(data: bytes, name: str) -> Any:
    try:
        return json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise UnimportableFile(f"{name} is not UTF-8 text.") from None
    except (ValueError, RecursionError):
        raise UnimportableFile(f"{name} is not valid JSON.") from None


def _parse_document(document: Any, name: str) -> list[Imported]:
    if isinstance(document, dict) and document.get("format") == "chatapp.conversation":
        return [_chatapp(document, name)]
    if isinstance(document, list) and all(isinstance(c, dict) and "mapping" in c for c in document):
        return [_chatgpt(c, f"{name}, conversation {n + 1}") for n, c in enumerate(document)]
    if isinstance(document, dict) and "mapping" in document:
        return [_chatgpt(document, name)]
    raise UnimportableFile(f"{name} is neither a chatapp export nor a ChatGPT conversations.json.")


def _text(raw: Any, where: str, *, required: bool = True) -> str:
    if not isinstance(raw, str):
        raise UnimportableFile(f"{where}: the text must be a string.")
    if has_control_characters(raw):
        raise UnimportableFile(f"{where}: the text must not contain control characters.")
    if len(raw) > MAX_TEXT_LENGTH:
        raise UnimportableFile(f"{where}: a message is longer than {MAX_TEXT_LENGTH:,} characters.")
    if required and not raw.strip():
        raise UnimportableFile(f"{where}: a message is empty.")
    return raw


def _title(raw: Any, where: str) -> str:
    if raw is None:
        return ""
    if not isinstance(raw, str) or has_control_characters(raw):
        raise UnimportableFile(f"{where}: the title must be text without control characters.")
    title = " ".join(raw.split())
    if len(title) > MAX_TITLE_LENGTH:
        raise UnimportableFile(f"{where}: the title is longer than {MAX_TITLE_LENGTH} characters.")
    return title


def _time(raw: Any, where: str) -> datetime:
    """ISO 8601 (chatapp) or seconds since the epoch (ChatGPT), in UTC."""
    try:
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            return datetime.fromtimestamp(raw, tz=UTC)
        if isinstance(raw, str):
            return as_utc(datetime.fromisoformat(raw))
    except (ValueError, OverflowError, OSError):
        pass
    raise UnimportableFile(f"{where}: a time is missing or not a valid time.")


def _source_id(raw: Any, where: str) -> str:
    if not isinstance(raw, str) or not raw or len(raw) > MAX_SOURCE_ID_LENGTH or has_control_characters(raw):
        raise UnimportableFile(f"{where}: the conversation id is missing or invalid.")
    return raw


def _finish(source: str, title: str, started: datetime, ended: datetime | None, lines: list[Line]) -> Imported:
    if len(lines) > MAX_UTTERANCES:
        raise UnimportableFile(f"{source}: more than {MAX_UTTERANCES:,} messages in one conversation.", 413)
    last = max([started, *(line.created_at for line in lines)])
    first_user = next((line.text for line in lines if line.role == "user"), "")
    return Imported(
        source=source,
        title=title or make_title(first_user or "Imported conversation"),
        started_at=started,
        ended_at=max(ended or last, started),
        lines=lines,
    )


def _chatapp(document: dict[str, Any], name: str) -> Imported:
    version = document.get("version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= EXPORT_VERSION:
        raise UnimportableFile(
            f"{name}: export format version {version!r} is not one this app reads (1 to {EXPORT_VERSION})."
        )
    try:
        own_id = uuid.UUID(str(document.get("id")))
    except ValueError:
        raise UnimportableFile(f"{name}: the conversation id is not a UUID.") from None
    raw_lines = document.get("utterances")
    if not isinstance(raw_lines, list):
        raise UnimportableFile(f"{name}: utterances must be a list.")
    if len(raw_lines) > MAX_UTTERANCES:
        raise UnimportableFile(f"{name}: more than {MAX_UTTERANCES:,} messages in one conversation.", 413)
    started = _time(document.get("started_at"), name)
    ended = _time(document["ended_at"], name) if document.get("ended_at") is not None else None
    lines: list[Line] = []
    seen: set[str] = set()
    ordered = sorted((u for u in raw_lines if isinstance(u, dict)), key=_seq)
    if len(ordered) != len(raw_lines):
        raise UnimportableFile(f"{name}: every utterance must be an object.")
    for index, u in enumerate(ordered):
        where = f"{name}, message {index + 1}"
        role, item_id = u.get("role"), u.get("item_id")
        if role not in ("user", "agent"):
            raise UnimportableFile(f"{where}: role must be 'user' or 'agent'.")
        if not isinstance(item_id, str) or not item_id or len(item_id) > MAX_ITEM_ID_LENGTH or item_id in seen:
            raise UnimportableFile(f"{where}: item_id is missing, too long or repeated.")
        if has_control_characters(item_id):
            raise UnimportableFile(f"{where}: item_id must not contain control characters.")
        seen.add(item_id)
        lines.append(
            Line(
                item_id,
                role,
                _text(u.get("text"), where),
                bool(u.get("interrupted")),
                _time(u.get("created_at"), where),
                bool(u.get("superseded")) and role == "agent",
            )
        )
    imported = _finish(f"chatapp:{own_id}", _title(document.get("title"), name), started, ended, lines)
    return Imported(**{**imported.__dict__, "own_id": own_id})


def _chatgpt_item_id(node_id: str) -> str:
    """The node id names the utterance; one that cannot be stored as it is (too long, control characters) by its
    digest, so every node keeps a distinct id."""
    item_id = f"chatgpt-{node_id}"
    if len(item_id) > MAX_ITEM_ID_LENGTH or has_control_characters(item_id):
        item_id = "chatgpt-" + hashlib.sha256(node_id.encode("utf-8", "surrogatepass")).hexdigest()
    return item_id


def _seq(utterance: dict[str, Any]) -> int:
    seq = utterance.get("seq")
    return seq if isinstance(seq, int) else 0


def _chatgpt(conversation: dict[str, Any], where: str) -> Imported:
    """The main branch: from `current_node` up the parent chain (edits and regenerations are side branches)."""
    mapping = conversation.get("mapping")
    if not isinstance(mapping, dict):
        raise UnimportableFile(f"{where}: mapping must be an object.")
    raw_id = conversation.get("conversation_id") or conversation.get("id")
    if raw_id is None:  # older exports: name it by what it holds, so a repeated import still matches
        raw_id = hashlib.sha256(
            json.dumps([conversation.get("title"), conversation.get("create_time")]).encode()
        ).hexdigest()
    source = f"chatgpt:{_source_id(raw_id, where)}"
    started = _time(conversation.get("create_time"), where)
    ended = _time(conversation["update_time"], where) if conversation.get("update_time") is not None else None
    node_id = conversation.get("current_node")
    if node_id is None:  # no current node: the branch ending at the last leaf
        leaves = [k for k, n in mapping.items() if isinstance(n, dict) and not n.get("children")]
        node_id = leaves[-1] if leaves else None
    chain: list[tuple[str, dict[str, Any]]] = []
    visited: set[str] = set()
    while node_id is not None:
        node = mapping.get(node_id) if isinstance(node_id, str) else None
        if not isinstance(node, dict) or node_id in visited or len(visited) > MAX_UTTERANCES * 4:
            raise UnimportableFile(f"{where}: the message tree is broken.")
        visited.add(node_id)
        chain.append((node_id, node))
        node_id = node.get("parent")
    lines: list[Line] = []
    for node_id, node in reversed(chain):
        message = node.get("message")
        if not isinstance(message, dict):
            continue
        author = message.get("author")
        author_role = author.get("role") if isinstance(author, dict) else None
        role = CHATGPT_ROLES.get(author_role) if isinstance(author_role, str) else None
        content = message.get("content")
        parts = content.get("parts") if isinstance(content, dict) else None
        if role is None or not isinstance(parts, list):
            continue  # system and tool messages, or content without text parts
        text = "\n".join(p for p in parts if isinstance(p, str)).strip()
        if not text:
            continue
        line_where = f"{where}, message {len(lines) + 1}"
        created = message.get("create_time")
        lines.append(
            Line(
                _chatgpt_item_id(node_id),
                role,
                _text(text, line_where),
                False,
                _time(created, line_where) if created is not None else (lines[-1].created_at if lines else started),
            )
        )
    return _finish(source, _title(conversation.get("title"), where), started, ended, lines)


INSERT_IMPORTED_SQL = """
INSERT INTO chat_session (id, room_name, owner, system_prompt, started_at, ended_at, title, last_activity_at,
                          last_seq, end_reason, import_source, superseded)
SELECT $1, $2, $3, '', $4, $5, $6, $5, $7, 'import', $8, $10
WHERE NOT EXISTS (SELECT 1 FROM chat_session WHERE id = $9::uuid AND owner = $3)
ON CONFLICT (owner, import_source) WHERE import_source IS NOT NULL DO NOTHING
RETURNING id
"""
INSERT_LINES_SQL = """
INSERT INTO utterance (session, seq, item_id, role, text, interrupted, created_at, superseded_at)
SELECT $1, u.seq, u.item_id, u.role, u.text, u.interrupted, u.created_at, CASE WHEN u.superseded THEN now() END
FROM unnest($2::int[], $3::text[], $4::text[], $5::text[], $6::bool[], $7::timestamptz[], $8::bool[])
     AS u(seq, item_id, role, text, interrupted, created_at, superseded)
"""


async def save(owner: uuid.UUID, conversations: list[Imported]) -> Result:
    """Write the conversations (saved, searchable, original times and titles) in one transaction."""
    imported = already = empty = 0
    async with connection() as conn, conn.transaction():
        for c in conversations:
            if not c.lines:
                empty += 1
                continue
            new_id = uuid.uuid4()
            row_id = await conn.fetchval(
                INSERT_IMPORTED_SQL,
                new_id,
                room_name_for(new_id),
                owner,
                c.started_at,
                c.ended_at,
                c.title,
                len(c.lines),
                c.source,
                c.own_id,
                sum(line.superseded for line in c.lines),
            )
            if row_id is None:
                already += 1
                continue
            await conn.execute(
                INSERT_LINES_SQL,
                new_id,
                list(range(1, len(c.lines) + 1)),
                [line.item_id for line in c.lines],
                [line.role for line in c.lines],
                [line.text for line in c.lines],
                [line.interrupted for line in c.lines],
                [line.created_at for line in c.lines],
                [line.superseded for line in c.lines],
            )
            await queries.refresh_search_doc(conn, new_id)
            imported += 1
    return Result(imported, already, empty)
