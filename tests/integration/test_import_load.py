"""Imports against a real `chatapp serve` (one worker) while a watcher process requests /healthz every 10 ms and
samples the worker's memory: a 47 KB zip that expands into millions of JSON values, ten of them at once (one
account's hourly quota), and a legitimate 20 MB import of 1,000 conversations. None may delay another request by
more than 100 ms or grow the worker by more than 100 MiB."""

from __future__ import annotations

import asyncio
import io
import json
import re
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from chatapp.core.database import connection
from tests.support import READY, AppServer, person
from tests.support_load import Watched, Watcher

LONGEST_WAIT = 0.1  # seconds another request may wait
EXTRA_MEMORY_MIB = 100
RESULT = re.compile(r'data-testid="import-result">([^<]+)<')
ERROR = re.compile(r'data-testid="import-error">([^<]+)<')


@pytest.fixture(scope="module")
def server(db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    """A server of the module's own, so its memory is the imports' doing."""
    server = AppServer.start(db, Path(tmp_path_factory.mktemp("import-load")), ready_timeout=READY)
    yield server
    server.stop()


def zip_bomb() -> bytes:
    """47 KB that inflate to 46 MiB (under the 50 MB cap) of `[],`: 16 million lists once parsed."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("conversations.json", b"[" + b"[]," * 16_000_000 + b"[]]")
    return buffer.getvalue()


WORDS = [
    *("fjord", "glacier", "ferry", "hostel", "itinerary", "budget", "rail", "pass", "museum", "harbour", "lagoon"),
    *("trail", "summit", "village", "market", "sunrise", "coastline", "vineyard", "cathedral", "festival"),
    *("lantern", "canyon", "monastery", "island", "bridge", "tram", "souvenir"),
]


def chatgpt_export(conversations: int = 1000, size: int = 19_500_000) -> bytes:
    """A ChatGPT conversations.json of `conversations` with ten messages each and the metadata real exports carry,
    about `size` bytes."""
    messages = 10
    text_length = size // (conversations * messages) - 450  # what each node's JSON around the text takes
    documents: list[dict[str, Any]] = []
    for n in range(conversations):
        t = 1_700_000_000.0 + n * 3600
        mapping: dict[str, Any] = {"root": {"id": "root", "message": None, "parent": None, "children": ["m0"]}}
        for m in range(messages):
            words = " ".join(WORDS[(n * 7 + m * 3 + k) % len(WORDS)] for k in range(text_length // 6))
            node_id = f"m{m}"
            mapping[node_id] = {
                "id": node_id,
                "message": {
                    "id": node_id,
                    "author": {"role": "user" if m % 2 == 0 else "assistant", "name": None, "metadata": {}},
                    "create_time": t + m * 10,
                    "update_time": None,
                    "content": {"content_type": "text", "parts": [words[:text_length]]},
                    "status": "finished_successfully",
                    "end_turn": m % 2 == 1,
                    "weight": 1.0,
                    "metadata": {"model_slug": "gpt-4o", "finish_details": {"type": "stop"}, "citations": []},
                    "recipient": "all",
                },
                "parent": "root" if m == 0 else f"m{m - 1}",
                "children": [f"m{m + 1}"] if m + 1 < messages else [],
            }
        documents.append(
            {
                "title": f"Trip {n}",
                "create_time": t,
                "update_time": t + 600,
                "mapping": mapping,
                "current_node": f"m{messages - 1}",
                "id": f"load-{n}",
                "conversation_id": f"load-{n}",
            }
        )
    return json.dumps(documents).encode()


async def upload(client: httpx.AsyncClient, name: str, content: bytes) -> httpx.Response:
    return await client.post(
        "/history/import",
        files={"file": (name, content, "application/octet-stream")},
        headers={"x-csrftoken": str(client.cookies.get("csrftoken"))},
        timeout=300,
    )


async def saved_count(user_id: uuid.UUID) -> int:
    async with connection() as conn:
        return int(await conn.fetchval("SELECT count(*) FROM chat_session WHERE owner = $1", user_id))


def assert_unharmed(watched: Watched | None) -> None:
    assert watched is not None
    print(watched.summary())
    assert watched.failures == [], watched.summary()
    assert watched.longest_wait < LONGEST_WAIT, watched.summary()
    assert watched.extra_mib < EXTRA_MEMORY_MIB, watched.summary()


async def test_a_47_kb_zip_bomb_is_refused_without_stalling_or_growing_the_worker(server: AppServer) -> None:
    bomb = zip_bomb()
    assert len(bomb) < 48_000
    async with person(server) as (client, user):
        with Watcher(server.url, server.process.pid) as watcher:
            response = await upload(client, "bomb.zip", bomb)
            await asyncio.sleep(0.2)
        assert response.status_code == 413, response.text[:500]
        error = ERROR.search(response.text)
        assert error
        assert "more than 3,000,000 JSON values" in error.group(1)
        assert "Nothing was imported." in error.group(1)
        assert await saved_count(user.id) == 0
    assert_unharmed(watcher.result)


async def test_ten_zip_bombs_at_once_stall_nothing(server: AppServer) -> None:
    """One account's hourly quota of imports, all at once, all on the one worker."""
    bomb = zip_bomb()
    async with person(server) as (client, user):
        with Watcher(server.url, server.process.pid) as watcher:
            responses = await asyncio.gather(*(upload(client, f"bomb-{n}.zip", bomb) for n in range(10)))
            await asyncio.sleep(0.2)
        assert [r.status_code for r in responses] == [413] * 10
        assert await saved_count(user.id) == 0
    assert_unharmed(watcher.result)


async def test_a_20_mb_import_of_1000_conversations_stalls_nothing(server: AppServer) -> None:
    document = chatgpt_export()
    assert 19_000_000 < len(document) < 20 * 1024 * 1024
    async with person(server) as (client, user):
        with Watcher(server.url, server.process.pid) as watcher:
            response = await upload(client, "conversations.json", document)
            await asyncio.sleep(0.2)
        assert response.status_code == 200, response.text[:500]
        result = RESULT.search(response.text)
        assert result
        assert result.group(1) == "Imported 1000 conversations."
        assert await saved_count(user.id) == 1000
    assert_unharmed(watcher.result)
