"""Reading an import (a chatapp JSON export, a zip of them, or ChatGPT's `conversations.json`) into validated
conversations, in a process of its own: `python -m chatapp.history.import_parser`.

Why a process: `json.loads` builds every value of a document at once and holds the GIL while it does, so a 47 KB
zip that inflates to 46 MiB of `[],` became 16 million lists, 1.2 GiB and seconds in which the worker answered
nothing (a thread would not help). Here the file is read by a child that chatapp.history.importer starts per
import, with its own budgets:

- bytes: 20 MB uploaded, 50 MB once unzipped (counted as read, not taken from the zip's headers);
- entries: 1,000 files in a zip, 1,000 conversations, 5,000 messages each;
- JSON values: at most `MAX_JSON_VALUES` in the whole upload, counted before a document is parsed and as a zip
  entry inflates (an upper bound: every value after the first follows a `[`, `{` or `,`), so a bomb is refused
  before it is built, after inflating only what passes the budget (9 MB of `[],`);
- the process itself: `MEMORY_LIMIT` of address space (RLIMIT_AS), `CPU_SECONDS` of CPU, and a lower priority
  than the server, so whatever slips past the budgets fails in the child, not in the server.

The child reads everything and validates it before it answers, so the server inserts only a whole valid file
(in one transaction). Protocol: stdin carries one JSON line `{"filename": ...}` then the file's bytes; stdout
carries length-prefixed msgspec JSON frames, first an `Outcome`, then that many `Imported`. This module imports
nothing heavier than msgspec, so the child starts in about 0.1 s.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import struct
import sys
import traceback
import uuid
import zipfile
import zlib
from datetime import UTC, datetime
from typing import IO, Any

import msgspec

from chatapp.conversations.events import MAX_ITEM_ID_LENGTH, MAX_TEXT_LENGTH, Role
from chatapp.core.text_rules import as_utc, has_control_characters

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_CONVERSATIONS = 1000
MAX_UTTERANCES = 5000
MAX_ZIP_ENTRIES = 1000
# Bounds what a zip may expand to (a zip bomb), checked as the entries are read, not from their headers.
MAX_UNZIPPED_BYTES = 50 * 1024 * 1024
_UNZIP_CHUNK = 1024 * 1024
# A 20 MB ChatGPT export of 1,000 conversations with the metadata real ones carry holds about 300,000 values;
# 3 million parsed cost the child about 250 MiB.
MAX_JSON_VALUES = 3_000_000
MAX_SOURCE_ID_LENGTH = 200
MAX_TITLE_LENGTH = 200  # the title column's size, as chatapp.history.service says (a unit test keeps them equal)
EXPORT_VERSION = 2  # the newest chatapp export format read, as chatapp.history.export writes it (a unit test too)
MEMORY_LIMIT = 1024 * 1024 * 1024  # bytes of address space for the child
CPU_SECONDS = 60
PARSER_NICENESS = 10  # below the server's requests on a busy machine
CHATGPT_ROLES: dict[str, Role] = {"user": "user", "assistant": "agent"}


class UnimportableFile(ValueError):
    """The upload cannot be imported; the message says why (shown to the person, nothing was written)."""

    def __init__(self, message: str, status_code: int = 422) -> None:
        super().__init__(message)
        self.status_code = status_code


class Line(msgspec.Struct, frozen=True):
    item_id: str
    role: Role
    text: str
    interrupted: bool
    created_at: datetime
    superseded: bool = False  # a reply replaced by Retry (export version 2)


class Reopening(msgspec.Struct, frozen=True):
    """A period after the first (the conversation was reopened): when, and how many lines came before it."""

    n: int
    started_at: datetime
    after: int  # lines before the period's first one
    ended_at: datetime | None = None  # the previous period's end is the one before it in `ends`
    end_reason: str | None = None


class Imported(msgspec.Struct, frozen=True):
    source: str
    title: str  # empty: none given; the server names it after the first user message
    started_at: datetime
    ended_at: datetime
    lines: list[Line]
    own_id: uuid.UUID | None = None  # a chatapp export's conversation id: already there if the user still has it
    # A chatapp export's periods (when it was active: first, then each reopening); empty: one period.
    periods: list[Reopening] = []


class Outcome(msgspec.Struct, frozen=True):
    """The child's first frame: how many conversations follow, or why there are none."""

    conversations: int = 0
    error: str = ""
    status: int = 422


class _Budget:
    """What the whole upload may still hold: JSON values, and bytes once unzipped."""

    def __init__(self) -> None:
        self.values = MAX_JSON_VALUES
        self.unzipped = MAX_UNZIPPED_BYTES

    def spend_values(self, data: bytes, documents: int = 0) -> None:
        """Every value after a document's first follows a `[`, `{` or `,` (in strings too: an upper bound)."""
        self.values -= documents + data.count(b"[") + data.count(b"{") + data.count(b",")
        if self.values < 0:
            raise UnimportableFile(
                f"The file holds more than {MAX_JSON_VALUES:,} JSON values; split it into smaller imports.", 413
            )

    def unzip(self, member: IO[bytes]) -> bytes:
        """A zip entry, counted as it inflates (the header's size may lie; the bytes read do not): a bomb is
        stopped at the first budget it passes, before the rest of it is inflated."""
        parts: list[bytes] = []
        while part := member.read(_UNZIP_CHUNK):
            self.unzipped -= len(part)
            if self.unzipped < 0:
                raise UnimportableFile(f"The zip expands to more than {MAX_UNZIPPED_BYTES // (1024 * 1024)} MB.", 413)
            self.spend_values(part)
            parts.append(part)
        return b"".join(parts)


def parse_upload(filename: str, data: bytes) -> list[Imported]:
    """Every conversation in the upload, validated; UnimportableFile for anything that cannot be imported."""
    if len(data) > MAX_UPLOAD_BYTES:
        raise UnimportableFile(f"The file is larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MB.", 413)
    if not data:
        raise UnimportableFile("The file is empty.")
    budget = _Budget()
    if data.startswith(b"PK\x03\x04") or data.startswith(b"PK\x05\x06"):
        conversations = _parse_zip(data, budget)
    else:
        name = filename or "the file"
        conversations = _parse_document(_load_json(data, name, budget), name)
    if len(conversations) > MAX_CONVERSATIONS:
        raise UnimportableFile(f"At most {MAX_CONVERSATIONS:,} conversations can be imported at once.", 413)
    return conversations


def _parse_zip(data: bytes, budget: _Budget) -> list[Imported]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        entries = [info for info in archive.infolist() if not info.is_dir()]
    except (zipfile.BadZipFile, OSError, ValueError):
        raise UnimportableFile("The zip file is damaged.") from None
    if len(entries) > MAX_ZIP_ENTRIES:
        raise UnimportableFile(f"The zip holds more than {MAX_ZIP_ENTRIES:,} files.", 413)
    conversations: list[Imported] = []
    for info in entries:
        if not info.filename.lower().endswith(".json"):
            continue
        try:
            with archive.open(info) as member:
                content = budget.unzip(member)
        except UnimportableFile:
            raise
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError, RuntimeError):
            raise UnimportableFile(f"{info.filename} in the zip cannot be read.") from None
        conversations += _parse_document(_load_json(content, info.filename, budget, counted=True), info.filename)
        if len(conversations) > MAX_CONVERSATIONS:
            raise UnimportableFile(f"At most {MAX_CONVERSATIONS:,} conversations can be imported at once.", 413)
    if not conversations:
        raise UnimportableFile("The zip holds no chatapp or ChatGPT JSON files.")
    return conversations


def _load_json(data: bytes, name: str, budget: _Budget, *, counted: bool = False) -> Any:
    """The document, once its values fit the budget (`counted`: as it was unzipped)."""
    budget.spend_values(b"" if counted else data, documents=1)
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
    return Imported(source=source, title=title, started_at=started, ended_at=max(ended or last, started), lines=lines)


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
    periods = _periods(document.get("periods"), [_seq(u) for u in ordered], name)
    return msgspec.structs.replace(imported, own_id=own_id, periods=periods)


MAX_PERIODS = 1000


def _periods(raw: object, seqs: list[int], name: str) -> list[Reopening]:
    """An export's periods (since reopening): numbered 0, 1, … in order, each with its start, end and first
    message; a file without them (older exports) is one period. What came before a period's first_seq are its
    earlier periods' lines."""
    if raw is None:
        return []
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_PERIODS or not all(isinstance(p, dict) for p in raw):
        raise UnimportableFile(f"{name}: periods must be a list of 1 to {MAX_PERIODS:,} objects.")
    periods: list[Reopening] = []
    for n, p in enumerate(raw):
        where = f"{name}, period {n}"
        first_seq = p.get("first_seq")
        if p.get("n") != n or not isinstance(first_seq, int) or isinstance(first_seq, bool):
            raise UnimportableFile(f"{where}: n must count from 0 and first_seq must be a number.")
        reason = p.get("end_reason")
        ended = _time(p["ended_at"], where) if p.get("ended_at") is not None else None
        after = sum(1 for seq in seqs if seq < first_seq)
        periods.append(
            Reopening(
                n, _time(p.get("started_at"), where), after, ended, reason[:20] if isinstance(reason, str) else None
            )
        )
    return periods if len(periods) > 1 else []


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
    if len({line.item_id for line in lines}) != len(lines):  # a node named like another's digest
        raise UnimportableFile(f"{where}: two messages would be stored under the same id.")
    return _finish(source, _title(conversation.get("title"), where), started, ended, lines)


# ---- the child process and its frames ----

_LENGTH = struct.Struct(">I")
_encoder = msgspec.json.Encoder()


def write_frame(out: IO[bytes], message: msgspec.Struct) -> None:
    payload = _encoder.encode(message)
    out.write(_LENGTH.pack(len(payload)))
    out.write(payload)


def frame_length(prefix: bytes) -> int:
    (length,) = _LENGTH.unpack(prefix)
    return int(length)


FRAME_PREFIX = _LENGTH.size


def _limit_this_process() -> None:
    """The limits above, or tighter ones the process already has (a container's `ulimit`)."""
    import resource

    for kind, soft, hard in (
        (resource.RLIMIT_AS, MEMORY_LIMIT, MEMORY_LIMIT),
        (resource.RLIMIT_CPU, CPU_SECONDS, CPU_SECONDS + 5),
    ):
        _, current = resource.getrlimit(kind)
        if current != resource.RLIM_INFINITY:
            soft, hard = min(soft, current), min(hard, current)
        with contextlib.suppress(ValueError, OSError):  # a platform without it: the value budget still holds
            resource.setrlimit(kind, (soft, hard))
    os.nice(max(0, PARSER_NICENESS - os.nice(0)))  # when `nice` did not start it so already


def main() -> int:
    """Read the request from stdin, answer on stdout (see the module docstring)."""
    _limit_this_process()
    source, out = sys.stdin.buffer, sys.stdout.buffer
    conversations: list[Imported] = []
    refused: Outcome | None = None
    out_of_memory = False
    try:
        filename = str(json.loads(source.readline())["filename"])
        conversations = parse_upload(filename, source.read(MAX_UPLOAD_BYTES + 1))
    except UnimportableFile as exc:
        refused = Outcome(error=str(exc), status=exc.status_code)
    except MemoryError:
        out_of_memory = True  # answered below, once the except block has let go of what was built
    except Exception as exc:  # a bug: say where, never what (the message could quote the file)
        where = "".join(traceback.format_tb(exc.__traceback__))
        sys.stderr.write(f"import parser failed: {type(exc).__name__}\n{where}")
        return 1
    if out_of_memory:
        refused = Outcome(error="Reading the file needs more memory than an import may use.", status=413)
    write_frame(out, refused or Outcome(conversations=len(conversations)))
    for conversation in conversations:
        write_frame(out, conversation)
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
