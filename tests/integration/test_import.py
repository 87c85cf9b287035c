"""Importing conversations over HTTP against the real server: chatapp exports (JSON and zip), ChatGPT's
conversations.json, idempotence, and bad files that change nothing."""

from __future__ import annotations

import hashlib
import io
import json
import re
import uuid
import zipfile
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from chatapp.core.database import connection
from tests.factories import chatgpt_conversation, make_saved
from tests.support import AppServer, person

RESULT = re.compile(r'data-testid="import-result">([^<]+)<')
ERROR = re.compile(r'data-testid="import-error">([^<]+)<')


async def upload(client: httpx.AsyncClient, name: str, content: bytes) -> httpx.Response:
    return await client.post(
        "/history/import",
        files={"file": (name, content, "application/octet-stream")},
        headers={"x-csrftoken": str(client.cookies.get("csrftoken"))},
    )


def result_of(response: httpx.Response) -> str:
    match = RESULT.search(response.text)
    assert match, response.text[:2000]
    return match.group(1)


def error_of(response: httpx.Response) -> str:
    match = ERROR.search(response.text)
    assert match, response.text[:2000]
    return match.group(1)


async def saved_of(user_id: uuid.UUID) -> list[Any]:
    async with connection() as conn:
        return list(
            await conn.fetch(
                "SELECT id, title, started_at, ended_at, last_seq, import_source, search_doc IS NOT NULL AS indexed"
                " FROM chat_session WHERE owner = $1 ORDER BY started_at",
                user_id,
            )
        )


def zipped(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


async def test_a_chatapp_export_imports_once_with_its_times_title_and_search(app_server: AppServer) -> None:
    started = datetime(2025, 3, 4, 10, 0, tzinfo=UTC)
    async with person(app_server) as (alice, alice_user), person(app_server) as (bob, bob_user):
        original = await make_saved(
            alice_user,
            "Lisbon tram plans",
            started,
            [("user", "Which tram climbs to the castle?"), ("agent", "Tram 28.")],
        )
        exported = (await alice.get(f"/history/{original}/export/json")).content

        first = await upload(bob, "lisbon.json", exported)
        assert first.status_code == 200
        assert result_of(first) == "Imported 1 conversation."
        again = await upload(bob, "lisbon.json", exported)
        assert result_of(again) == "Imported 0 conversations (1 already there)."

        [row] = await saved_of(bob_user.id)
        assert (row["title"], row["started_at"], row["ended_at"]) == (
            "Lisbon tram plans",
            started,
            started + timedelta(minutes=5),
        )
        assert row["last_seq"] == 2
        assert row["import_source"] == f"chatapp:{original}"
        assert row["indexed"]
        found = await bob.get("/history", params={"q": "castle"})
        assert str(row["id"]) in found.text
        detail = json.loads((await bob.get(f"/history/{row['id']}/export/json")).content)
        assert [(u["role"], u["text"], u["created_at"]) for u in detail["utterances"]] == [
            (u["role"], u["text"], u["created_at"]) for u in json.loads(exported)["utterances"]
        ]
        # Alice still has the conversation the export came from: importing it adds nothing.
        own = await upload(alice, "lisbon.json", exported)
        assert result_of(own) == "Imported 0 conversations (1 already there)."
        assert len(await saved_of(alice_user.id)) == 1


async def test_a_zip_of_exports_imports_each_once(app_server: AppServer) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    async with person(app_server) as (alice, alice_user), person(app_server) as (bob, bob_user):
        ids = [await make_saved(alice_user, f"Trip {n}", now - timedelta(days=n)) for n in range(3)]
        files = {f"{n}.json": (await alice.get(f"/history/{i}/export/json")).content for n, i in enumerate(ids)}
        archive = zipped({**files, "notes/readme.txt": b"not a conversation"})
        assert result_of(await upload(bob, "all.zip", archive)) == "Imported 3 conversations."
        assert result_of(await upload(bob, "all.zip", archive)) == "Imported 0 conversations (3 already there)."
        assert sorted(r["title"] for r in await saved_of(bob_user.id)) == ["Trip 0", "Trip 1", "Trip 2"]


async def test_chatgpt_conversations_json_imports_the_main_branch(app_server: AppServer) -> None:
    async with person(app_server) as (client, user):
        empty = chatgpt_conversation("c0ffee-2", "Only a system prompt")
        empty["mapping"] = {"root": {"id": "root", "message": None, "parent": None, "children": []}}
        empty["current_node"] = "root"
        document = json.dumps([chatgpt_conversation(), empty]).encode()
        response = await upload(client, "conversations.json", document)
        assert result_of(response) == "Imported 1 conversation (1 without messages skipped)."
        [row] = await saved_of(user.id)
        assert row["title"] == "Packing for Iceland"
        assert row["import_source"] == "chatgpt:c0ffee-1"
        assert row["started_at"] == datetime.fromtimestamp(1_700_000_000, tz=UTC)
        assert row["ended_at"] == datetime.fromtimestamp(1_700_000_060, tz=UTC)
        async with connection() as conn:
            lines = await conn.fetch(
                "SELECT seq, role, text, created_at FROM utterance WHERE session = $1 ORDER BY seq", row["id"]
            )
        assert [(u["role"], u["text"]) for u in lines] == [
            ("user", "What should I pack for Iceland in March?"),
            ("agent", "Layers, a waterproof shell and crampons."),
            ("user", "And for the Blue Lagoon?"),
            ("agent", "A swimsuit and conditioner."),
        ]
        assert lines[0]["created_at"] == datetime.fromtimestamp(1_700_000_010, tz=UTC)
        assert result_of(await upload(client, "conversations.json", document)).startswith(
            "Imported 0 conversations (1 already there"
        )
        assert "Iceland" in (await client.get("/history", params={"q": "crampons"})).text


def _bomb() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("big.json", b" " * (51 * 1024 * 1024))
    return buffer.getvalue()


def _corrupt_zip() -> bytes:
    """A well-formed zip whose deflated bytes are garbage (zlib fails while reading, not while opening)."""
    data = bytearray(zipped({"a.json": json.dumps([chatgpt_conversation()]).encode() * 20}))
    start = 30 + len("a.json")
    data[start : start + 40] = b"\xff" * 40
    return bytes(data)


def _renamed(conversation: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    """`conversation` with node `old` called `new` (its key, id, and its parent's and children's links)."""
    mapping = conversation["mapping"]
    mapping[new] = mapping.pop(old)
    mapping[new]["id"] = new
    for node in mapping.values():
        node["parent"] = new if node["parent"] == old else node["parent"]
        node["children"] = [new if c == old else c for c in node["children"]]
    if conversation["current_node"] == old:
        conversation["current_node"] = new
    return conversation


def _digest_twin() -> dict[str, Any]:
    """A node id too long to store (so stored by its SHA-256) and another node named that digest."""
    long_id = "n" * 200
    twin = _renamed(chatgpt_conversation("digest-twin"), "u1", long_id)
    return _renamed(twin, "a1", hashlib.sha256(long_id.encode()).hexdigest())


def _bad_files() -> list[tuple[str, str, bytes, int, str]]:
    good = chatgpt_conversation("good-one")
    control = chatgpt_conversation("ctl")
    control["mapping"]["u1"]["message"]["content"]["parts"] = ["bell \x07 here"]
    long_text = chatgpt_conversation("long")
    long_text["mapping"]["u2"]["message"]["content"]["parts"] = ["x" * 10_001]
    loop = chatgpt_conversation("loop")
    loop["mapping"]["root"]["parent"] = "a2"
    many = [chatgpt_conversation(f"c{n}") for n in range(1001)]
    return [
        ("not json", "x.json", b"{not json", 422, "not valid JSON"),
        ("not utf-8", "x.json", b'{"a": "\xff"}', 422, "not UTF-8"),
        ("other json", "x.json", b'{"hello": 1}', 422, "neither a chatapp export nor a ChatGPT"),
        ("control characters", "c.json", json.dumps([good, control]).encode(), 422, "control characters"),
        ("text too long", "l.json", json.dumps([good, long_text]).encode(), 422, "longer than 10,000"),
        ("broken tree", "t.json", json.dumps([good, loop]).encode(), 422, "message tree is broken"),
        ("node id equal to another's digest", "h.json", json.dumps([good, _digest_twin()]).encode(), 422, "same id"),
        (
            "over-long conversation id",
            "i.json",
            json.dumps([good, chatgpt_conversation("c" * 201)]).encode(),
            422,
            "conversation id is missing or invalid",
        ),
        ("too many conversations", "m.json", json.dumps(many).encode(), 413, "At most 1,000 conversations"),
        ("damaged zip", "d.zip", b"PK\x03\x04garbage", 422, "damaged"),
        ("garbage inside a zip", "z.zip", _corrupt_zip(), 422, "cannot be read"),
        (
            "good then bad in a zip",
            "g.zip",
            zipped({"a.json": json.dumps([good]).encode(), "b.json": b"["}),
            422,
            "b.json",
        ),
        ("zip bomb", "bomb.zip", _bomb(), 413, "expands to more than 50 MB"),
        ("too many zip entries", "n.zip", zipped({f"{n}.txt": b"" for n in range(1001)}), 413, "more than 1,000 files"),
        ("empty", "e.json", b"", 422, "empty"),
    ]


@pytest.mark.parametrize(
    ("name", "filename", "content", "status", "message"),
    _bad_files(),
    ids=lambda v: v if isinstance(v, str) and len(v) < 40 else "",
)
async def test_bad_files_get_a_clear_error_and_change_nothing(
    app_server: AppServer, name: str, filename: str, content: bytes, status: int, message: str
) -> None:
    async with person(app_server) as (client, user):
        response = await upload(client, filename, content)
        assert response.status_code == status, response.text[:500]
        assert message in error_of(response)
        assert "Nothing was imported." in error_of(response)
        assert await saved_of(user.id) == []


async def test_uploads_over_20_mb_are_refused_before_parsing(app_server: AppServer) -> None:
    async with person(app_server) as (client, user):
        response = await upload(client, "huge.json", b" " * (21 * 1024 * 1024))
        assert response.status_code == 413
        assert await saved_of(user.id) == []


async def test_an_import_without_the_csrf_token_is_refused(app_server: AppServer) -> None:
    async with person(app_server) as (client, user):
        response = await client.post(
            "/history/import", files={"file": ("c.json", json.dumps([chatgpt_conversation()]))}
        )
        assert response.status_code == 403
        assert await saved_of(user.id) == []


async def test_chatgpt_node_ids_that_cannot_be_stored_as_they_are_get_distinct_ids(app_server: AppServer) -> None:
    conversation = chatgpt_conversation("odd-ids")
    mapping = conversation["mapping"]
    for old, new in (("u1", "n" * 200 + "1"), ("a1", "n" * 200 + "2"), ("u2", "bell\x07")):
        mapping[new] = mapping.pop(old)
        for node in mapping.values():
            node["parent"] = new if node["parent"] == old else node["parent"]
            node["children"] = [new if c == old else c for c in node["children"]]
    async with person(app_server) as (client, user):
        response = await upload(client, "conversations.json", json.dumps([conversation]).encode())
        assert result_of(response) == "Imported 1 conversation."
        [row] = await saved_of(user.id)
        assert row["last_seq"] == 4
