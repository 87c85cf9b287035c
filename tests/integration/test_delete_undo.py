"""Delete with Undo against the real server: a deleted conversation is hidden everywhere at once, Undo brings it
back within CHATAPP_DELETE_UNDO_SECONDS, then it is purged (utterances, share links, search document), and a purge
that fails is retried by the reaper's next round."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from chatapp.accounts.service import User
from chatapp.core.database import connection
from tests.factories import make_saved
from tests.support import ITEM, READY, AppServer, csrf, htmx, person, wait_for

WINDOW = 2.0  # seconds to undo, on this module's server


@pytest.fixture(scope="module")
def server(db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    app = AppServer.start(
        db,
        Path(tmp_path_factory.mktemp("undo")),
        ready_timeout=READY,
        CHATAPP_DELETE_UNDO_SECONDS=str(WINDOW),
        CHATAPP_REAPER_INTERVAL="1",
    )
    yield app
    app.stop()


async def row(cid: uuid.UUID) -> dict[str, object] | None:
    async with connection() as conn:
        found = await conn.fetchrow(
            """
            SELECT deleted_at, search_doc IS NOT NULL AS searchable,
                   (SELECT count(*) FROM utterance WHERE session = s.id) AS utterances,
                   (SELECT count(*) FROM share_link WHERE session = s.id) AS links
            FROM chat_session s WHERE id = $1
            """,
            cid,
        )
    return dict(found) if found else None


async def shared(client: httpx.AsyncClient, cid: uuid.UUID) -> str:
    created = await client.post(f"/history/{cid}/share", headers=htmx(client))
    url = re.search(r'value="(http[^"]+/s/[^"]+)"', created.text)
    assert url
    return "/s/" + url.group(1).rsplit("/s/", 1)[1]


async def seen(client: httpx.AsyncClient, cid: uuid.UUID, link: str) -> dict[str, bool]:
    """Where the conversation shows: every list, search, the sidebar, the JSON API, its page, export, share link."""
    api = (await client.get("/api/users/sessions/")).json()
    async with httpx.AsyncClient(base_url=str(client.base_url)) as stranger:
        share = (await stranger.get(link)).status_code
    return {
        "history": str(cid) in ITEM.findall((await client.get("/history")).text),
        "search": str(cid) in ITEM.findall((await client.get("/history", params={"q": "Zanzibar"})).text),
        "fragment": str(cid) in ITEM.findall((await client.get("/history", params={"q": "anzib"})).text),
        "sidebar": f'data-conversation-id="{cid}"' in (await client.get("/")).text.split('id="chat-panel"')[0],
        "api list": str(cid) in [item["id"] for item in api["items"]],
        "api detail": (await client.get(f"/api/users/sessions/{cid}")).status_code == 200,
        "page": (await client.get(f"/history/{cid}")).status_code == 200,
        "export": (await client.get(f"/history/{cid}/export/json")).status_code == 200,
        "share link": share == 200,
        "analytics": 'data-testid="total-conversations">1<' in (await client.get("/history/analytics")).text,
    }


async def saved_with_link(client: httpx.AsyncClient, user: User) -> tuple[uuid.UUID, str]:
    cid = await make_saved(user, "Zanzibar spice tour", datetime.now(UTC), [("user", "Spices of Zanzibar")])
    return cid, await shared(client, cid)


async def test_a_deleted_conversation_is_hidden_everywhere_and_undo_brings_it_all_back(server: AppServer) -> None:
    async with person(server) as (client, user):
        cid, link = await saved_with_link(client, user)
        everywhere = await seen(client, cid, link)
        assert all(everywhere.values()), everywhere

        # From a list row (htmx): the list comes back without it, with a toast that can undo.
        deleted = await client.post(f"/history/{cid}/delete", data={"back": "list"}, headers=htmx(client))
        assert deleted.status_code == 200
        assert str(cid) not in ITEM.findall(deleted.text)
        toast = json.loads(deleted.headers["hx-trigger"])["toast"]
        assert toast["undo"] == f"/history/{cid}/restore"
        assert toast["ttl"] == WINDOW * 1000
        hidden = await seen(client, cid, link)
        assert not any(hidden.values()), hidden
        stored = await row(cid)
        assert stored is not None
        assert stored["deleted_at"] is not None

        restored = await client.post(f"/history/{cid}/restore", headers={**csrf(client), "Accept": "application/json"})
        assert restored.status_code == 200, restored.text
        assert restored.json()["restored"] is True
        back = await seen(client, cid, link)
        assert all(back.values()), back
        stored = await row(cid)
        assert stored == {"deleted_at": None, "searchable": True, "utterances": 1, "links": 1}


async def test_after_the_window_it_is_purged_with_its_search_document_and_undo_is_refused(server: AppServer) -> None:
    async with person(server) as (client, user):
        cid, _ = await saved_with_link(client, user)
        # From the conversation's page: the list offers the undo (a notice, which the page's script makes a toast).
        deleted = await client.post(f"/history/{cid}/delete", headers=htmx(client))
        assert deleted.headers["hx-redirect"] == f"/history?deleted={cid}"
        listing = await client.get(f"/history?deleted={cid}")
        assert 'data-testid="deleted-notice"' in listing.text
        assert f'data-undo-url="/history/{cid}/restore"' in listing.text
        assert "Zanzibar spice tour" in listing.text  # named in the notice, not listed
        assert str(cid) not in ITEM.findall(listing.text)

        async def purged() -> bool:
            return await row(cid) is None

        await wait_for(purged, WINDOW + 5)
        async with connection() as conn:
            assert await conn.fetchval("SELECT count(*) FROM utterance WHERE session = $1", cid) == 0
            assert await conn.fetchval("SELECT count(*) FROM share_link WHERE session = $1", cid) == 0
        late = await client.post(f"/history/{cid}/restore", headers={**csrf(client), "Accept": "application/json"})
        assert late.status_code == 404
        assert "no such deleted conversation" in late.json()["detail"]
        assert "deleted=" not in (await client.get(f"/history?deleted={cid}")).text.split("<form")[0]


async def test_a_failed_purge_is_retried_and_undo_after_the_window_is_410(server: AppServer) -> None:
    async with person(server) as (client, user), httpx.AsyncClient(base_url=server.url) as admin:
        cid, _ = await saved_with_link(client, user)
        # Every purge fails for now (the timer's, and the reaper's rounds): the row outlives its window.
        await admin.post("/_test/faults", json={"name": "purge", "times": 1000})
        try:
            await client.post(f"/history/{cid}/delete", headers=htmx(client))
            await asyncio.sleep(WINDOW + 2.0)
            stored = await row(cid)
            assert stored is not None
            assert stored["deleted_at"] is not None
            late = await client.post(f"/history/{cid}/restore", headers={**csrf(client), "Accept": "application/json"})
            assert late.status_code == 410
            assert late.json()["detail"] == "Too late to undo: the conversation was deleted for good."
            assert not (await seen(client, cid, "/s/none"))["history"]
        finally:
            await admin.post("/_test/faults/clear")

        async def purged() -> bool:
            return await row(cid) is None

        await wait_for(purged, 5.0)  # the reaper's next round (every second here) purges it


async def test_another_users_conversation_is_404_for_delete_and_undo_and_both_need_csrf(server: AppServer) -> None:
    async with person(server) as (owner_client, owner), person(server) as (intruder, _):
        cid = await make_saved(owner, "Private", datetime.now(UTC))
        assert (await intruder.post(f"/history/{cid}/delete", headers=htmx(intruder))).status_code == 404
        assert (await row(cid) or {}).get("deleted_at") is None
        assert (await owner_client.post(f"/history/{cid}/delete")).status_code == 403  # no CSRF token
        assert (await row(cid) or {}).get("deleted_at") is None
        assert (await owner_client.post(f"/history/{cid}/delete", headers=htmx(owner_client))).status_code == 204
        assert (await intruder.post(f"/history/{cid}/restore", headers=htmx(intruder))).status_code == 404
        assert (await owner_client.post(f"/history/{cid}/restore")).status_code == 403
        assert (await row(cid) or {}).get("deleted_at") is not None
        # Without JS, the notice's Undo form restores and opens the conversation again.
        form = await owner_client.post(f"/history/{cid}/restore", headers=csrf(owner_client))
        assert form.status_code == 303
        assert form.headers["location"] == f"/history/{cid}"
        assert (await row(cid) or {}).get("deleted_at") is None
