"""Reopening over HTTP: the chat panel swap and its address, the sidebar's current item, ingest per period, and
exports and imports that say when a conversation was reopened."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import httpx

from chatapp.conversations import queries
from chatapp.conversations.agent_access import ingest_token
from tests.factories import make_saved
from tests.support import SECRET_KEY, AppServer, csrf, event, htmx, open_conversation, person, type_text, wait_for

RESULT = re.compile(r'data-testid="import-result">([^<]+)<')


async def imported_from(client: httpx.AsyncClient, name: str, content: bytes) -> str:
    """Upload a file to the importer and return what it says it did."""
    response = await client.post(
        "/history/import",
        files={"file": (name, content, "application/octet-stream")},
        headers={"x-csrftoken": str(client.cookies.get("csrftoken"))},
    )
    match = RESULT.search(response.text)
    assert match, response.text[:2000]
    return match.group(1)


LINES = [("user", "Trek in Peru"), ("agent", "The Inca trail!")]
CURRENT = re.compile(r'<li data-testid="current-conversation" data-conversation-id="([0-9a-f-]{36})"')


async def test_a_sidebar_item_opens_the_conversation_in_the_chat_panel_to_continue_it(app_server: AppServer) -> None:
    async with person(app_server) as (client, user):
        andes = await make_saved(user, "Andes", datetime.now(UTC), LINES)  # type: ignore[arg-type]
        page = await client.get("/")
        assert f'hx-post="/conversations/{andes}/reopen"' in page.text
        assert CURRENT.search(page.text) is None  # nothing said yet in the active one: not listed

        response = await client.post(f"/conversations/{andes}/reopen", headers=htmx(client))
        assert response.status_code == 200
        assert response.headers["hx-push-url"] == f"/chat/{andes}"
        assert f'data-conversation-id="{andes}"' in response.text
        assert "The Inca trail!" in response.text
        current = CURRENT.search(response.text)
        assert current is not None
        assert current.group(1) == str(andes)
        assert 'aria-current="page"' in response.text
        assert (await client.get(f"/chat/{andes}")).status_code == 200

        await type_text(client, app_server, andes, "Is it crowded in June?")
        new_chat = await client.post("/conversations/new", data={"conversation_id": str(andes)}, headers=htmx(client))
        assert new_chat.headers["hx-replace-url"] == "/"
        saved = await queries.get_conversation(andes)
        assert saved is not None
        assert saved.ended_at is not None
        assert saved.title == "Andes"
        assert (await client.get(f"/chat/{andes}", follow_redirects=False)).headers["location"] == f"/history/{andes}"


async def test_the_current_conversation_shows_in_the_sidebar_from_its_first_message(app_server: AppServer) -> None:
    async with person(app_server) as (client, _):
        cid = await open_conversation(client)
        await type_text(client, app_server, cid, "Weekend in Vienna")
        page = await client.get("/")
        current = CURRENT.search(page.text)
        assert current is not None
        assert current.group(1) == str(cid)
        assert "Weekend in Vienna" in page.text[current.start() : current.start() + 400]


async def test_reopening_someone_elses_conversation_is_a_404_and_changes_nothing(app_server: AppServer) -> None:
    async with person(app_server) as (owner_client, owner), person(app_server) as (client, _):
        andes = await make_saved(owner, "Andes", datetime.now(UTC), LINES)  # type: ignore[arg-type]
        await owner_client.get("/")
        mine = await open_conversation(client)
        response = await client.post(f"/conversations/{andes}/reopen", headers=htmx(client))
        assert response.status_code == 404
        assert (await client.get(f"/chat/{andes}")).status_code == 404
        assert (await queries.get_conversation(mine)) is not None
        assert (await queries.get_conversation(andes)).ended_at is not None  # type: ignore[union-attr]


async def test_each_period_reports_with_its_own_token_and_an_old_one_never_writes_live(app_server: AppServer) -> None:
    async with person(app_server) as (client, user):
        andes = await make_saved(user, "Andes", datetime.now(UTC), LINES)  # type: ignore[arg-type]
        await client.get("/")
        await client.post(f"/conversations/{andes}/reopen", headers=csrf(client))
        url = f"/api/conversations/{andes}/events"
        body = {"events": [event("late-1", "A late word from the old room", role="agent")]}
        wrong = await client.post(
            f"{url}?period=1", json=body, headers={"Authorization": f"Bearer {ingest_token(SECRET_KEY, andes)}"}
        )
        assert wrong.status_code == 401  # period 0's token is not period 1's
        old = await client.post(url, json=body, headers={"Authorization": f"Bearer {ingest_token(SECRET_KEY, andes)}"})
        assert old.status_code == 200
        assert old.json()["stored"] == 1
        current = await client.post(
            f"{url}?period=1",
            json={"events": [event("now-1", "Hello again", role="user")]},
            headers={"Authorization": f"Bearer {ingest_token(SECRET_KEY, andes, 1)}"},
        )
        assert current.status_code == 200
        texts = [u.text for u in await queries.list_utterances(andes)]
        assert texts[:4] == ["Trek in Peru", "The Inca trail!", "A late word from the old room", "Hello again"]


async def test_exports_say_when_it_was_reopened_and_an_import_keeps_the_periods(app_server: AppServer) -> None:
    async with person(app_server) as (client, user):
        andes = await make_saved(user, "Andes", datetime(2026, 5, 1, tzinfo=UTC), LINES)  # type: ignore[arg-type]
        await client.get("/")
        await client.post(f"/conversations/{andes}/reopen", headers=csrf(client))
        await type_text(client, app_server, andes, "Two more days?\nOr three?")

        async def answered() -> bool:
            return (await queries.list_utterances(andes))[-1].role == "agent"

        await wait_for(answered)
        await client.post("/conversations/new", data={"conversation_id": str(andes)}, headers=htmx(client))

        document = (await client.get(f"/history/{andes}/export/json")).json()
        assert document["version"] == 2
        assert [(p["n"], p["first_seq"], p["end_reason"]) for p in document["periods"]] == [
            (0, 1, "new_chat"),
            (1, 3, "new_chat"),
        ]
        text = (await client.get(f"/history/{andes}/export/txt")).text
        assert text.index("The Inca trail!") < text.index("Reopened ") < text.index("    Two more days?\n    Or three?")
        api = (await client.get(f"/api/users/sessions/{andes}")).json()
        assert [p["first_seq"] for p in api["periods"]] == [1, 3]
        page = (await client.get(f"/history/{andes}")).text
        assert page.count('data-testid="reopened-divider"') == 1
        assert " · 5 min · " in page  # its active time: the months between the periods are not counted

    async with person(app_server) as (other, other_user):
        assert (await imported_from(other, "andes.json", json.dumps(document).encode())).startswith("Imported 1")
        copy = (await other.get("/api/users/sessions")).json()["items"][0]
        detail = await queries.get_conversation(copy["id"])
        assert detail is not None
        assert detail.owner == other_user.id
        periods = await queries.list_periods(detail)
        assert [(p.n, p.after_seq) for p in periods] == [(0, 0), (1, 2)]
        assert periods[1].started_at.isoformat() == document["periods"][1]["started_at"]
