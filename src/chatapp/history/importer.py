"""Import conversations: chatapp JSON exports (one file or a zip of many) and ChatGPT's `conversations.json`.

The file is read and validated by a child process (chatapp.history.import_parser: its budgets, and why a
process), at most `PARSERS_PER_PROCESS` at a time per server process; this module feeds it the upload and
writes what it answers in one transaction, a conversation at a time, so a bad file changes nothing and the
server never holds more than one parsed conversation. Each conversation remembers its source ("chatapp:<id>",
"chatgpt:<id>"), unique per owner, so importing the same file again adds nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

from chatapp.conversations import queries
from chatapp.conversations.agent_access import room_name_for
from chatapp.conversations.service import make_title
from chatapp.core.database import connection
from chatapp.history.import_parser import (
    FRAME_PREFIX,
    MAX_CONVERSATIONS,
    MAX_UPLOAD_BYTES,
    MAX_UTTERANCES,
    PARSER_NICENESS,
    Imported,
    Outcome,
    UnimportableFile,
    frame_length,
)

__all__ = ["MAX_CONVERSATIONS", "MAX_UPLOAD_BYTES", "MAX_UTTERANCES", "Result", "UnimportableFile", "import_upload"]

log = logging.getLogger(__name__)

PARSERS_PER_PROCESS = 1  # children reading a file at once per server process; more wait for a turn
TURN_WAIT = 60.0  # seconds an import waits for a turn before a 503
PARSE_TIMEOUT = 90.0  # seconds from starting the child to its answer (its own CPU limit is 60 s)
_CHUNK = 1024 * 1024  # bytes of the upload read and handed to the child at a time
_turns = asyncio.Semaphore(PARSERS_PER_PROCESS)
_outcome = msgspec.json.Decoder(Outcome)
_conversation = msgspec.json.Decoder(Imported)


class Upload(Protocol):
    """What the route hands over: Litestar's UploadFile (spooled to disk past 1 MB)."""

    async def read(self, size: int = -1) -> bytes: ...


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


async def import_upload(owner: uuid.UUID, filename: str, upload: Upload) -> Result:
    """Read the upload in a child process and save it; UnimportableFile (nothing written) when it cannot be."""
    try:
        async with asyncio.timeout(TURN_WAIT):
            await _turns.acquire()
    except TimeoutError:
        raise UnimportableFile("Too many imports are running; try again in a minute.", 503) from None
    try:
        async with _parser() as child:
            async with asyncio.timeout(PARSE_TIMEOUT):
                count = await _ask(child, filename, upload)
            return await save(owner, _conversations(child, count))
    except TimeoutError:
        raise UnimportableFile("Reading the file took too long.", 413) from None
    finally:
        _turns.release()


@contextlib.asynccontextmanager
async def _parser() -> AsyncIterator[asyncio.subprocess.Process]:
    """The child, killed on the way out unless it finished; its environment holds no secrets."""
    env = {name: os.environ[name] for name in ("PATH", "PYTHONPATH", "LANG", "LC_ALL") if name in os.environ}
    # Started at a lower priority (coreutils `nice`), so even its interpreter's start-up yields to requests.
    nice = [path, "-n", str(PARSER_NICENESS)] if (path := shutil.which("nice")) else []
    child = await asyncio.create_subprocess_exec(
        *nice,
        sys.executable,
        "-m",
        "chatapp.history.import_parser",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        yield child
    finally:
        if child.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                child.kill()
        await child.wait()


async def _ask(child: asyncio.subprocess.Process, filename: str, upload: Upload) -> int:
    """Hand the child the file, and return how many conversations it found (or raise its reason)."""
    assert child.stdin is not None
    try:
        child.stdin.write(json.dumps({"filename": filename}).encode() + b"\n")
        sent = 0
        while sent <= MAX_UPLOAD_BYTES and (chunk := await upload.read(_CHUNK)):
            child.stdin.write(chunk)
            await child.stdin.drain()
            sent += len(chunk)
        child.stdin.close()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the child stopped reading (it refused the file): its answer says why
    outcome = _outcome.decode(await _frame(child))
    if outcome.error:
        raise UnimportableFile(outcome.error, outcome.status)
    return outcome.conversations


async def _frame(child: asyncio.subprocess.Process) -> bytes:
    assert child.stdout is not None
    try:
        length = frame_length(await child.stdout.readexactly(FRAME_PREFIX))
        return await child.stdout.readexactly(length)
    except asyncio.IncompleteReadError:
        code = await child.wait()
        log.error("the import parser ended without answering (exit code %s)", code)
        raise UnimportableFile("The file could not be read.") from None


async def _conversations(child: asyncio.subprocess.Process, count: int) -> AsyncIterator[Imported]:
    for _ in range(count):
        yield _conversation.decode(await _frame(child))


INSERT_IMPORTED_SQL = """
INSERT INTO chat_session (id, room_name, owner, system_prompt, started_at, ended_at, title, last_activity_at,
                          last_seq, end_reason, import_source, superseded, title_source)
SELECT $1, $2, $3, '', $4, $5, $6, $5, $7, 'import', $8, $10, $11
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


async def save(owner: uuid.UUID, conversations: AsyncIterator[Imported]) -> Result:
    """Write the conversations (saved, searchable, original times and titles) in one transaction, each as it
    arrives; one without a title is named after its first user message."""
    imported = already = empty = 0
    async with connection() as conn, conn.transaction():
        async for c in conversations:
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
                c.title or _title_from(c),
                len(c.lines),
                c.source,
                c.own_id,
                sum(line.superseded for line in c.lines),
                "user" if c.title else "first_message",  # a title the file brings is kept like a rename
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
            await _periods(conn, new_id, c)
            await queries.refresh_search_doc(conn, new_id)
            imported += 1
    return Result(imported, already, empty)


INSERT_PERIODS_SQL = """
INSERT INTO conversation_period (session, n, room_name, started_at, ended_at, end_reason, after_seq)
SELECT $1, p.n, $2 || CASE WHEN p.n = 0 THEN '' ELSE '-' || p.n END, p.started_at, p.ended_at, p.end_reason, p.after
FROM unnest($3::int[], $4::timestamptz[], $5::timestamptz[], $6::text[], $7::int[])
     AS p(n, started_at, ended_at, end_reason, after)
"""
CURRENT_PERIOD_SQL = """
UPDATE chat_session SET period = $2, reopened_at = $3, reopened_after_seq = $4, room_name = $5 WHERE id = $1
"""


async def _periods(conn: Any, conversation_id: uuid.UUID, c: Imported) -> None:
    """A reopened conversation's periods as its export gave them: the earlier ones kept, the last one current."""
    if not c.periods:
        return
    *earlier, last = c.periods
    ends = [p.ended_at or c.periods[n + 1].started_at for n, p in enumerate(earlier)]
    await conn.execute(
        INSERT_PERIODS_SQL,
        conversation_id,
        room_name_for(conversation_id),
        [p.n for p in earlier],
        [p.started_at for p in earlier],
        ends,
        [p.end_reason for p in earlier],
        [p.after for p in earlier],
    )
    room = room_name_for(conversation_id, last.n)
    await conn.execute(CURRENT_PERIOD_SQL, conversation_id, last.n, last.started_at, last.after, room)


def _title_from(conversation: Imported) -> str:
    first = next((line.text for line in conversation.lines if line.role == "user"), "")
    return make_title(first or "Imported conversation")
