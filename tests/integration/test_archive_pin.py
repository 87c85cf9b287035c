"""Archive and pin against the real server: toggles, list membership, order, exact pages while pins change,
search marks, the JSON API's fields and filters, owner-only access, CSRF, the sidebar live, and the indexes."""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import httpx
from httpx_sse import aconnect_sse

from chatapp.accounts.service import User
from chatapp.conversations import queries
from chatapp.core.database import connection
from chatapp.history.service import ARCHIVED_PAGE_SQL, FIRST_PAGE_SQL, SAVED_PAGE_SQL
from tests.factories import make_saved
from tests.support import ITEM, NEXT, AppServer, event, htmx, ingest, open_conversation, person

PINNED_ITEM = re.compile(r'data-conversation-id="([0-9a-f-]{36})" class="history-item is-pinned"')


async def flags(cid: uuid.UUID) -> tuple[bool, bool]:
    async with connection() as conn:
        row = await conn.fetchrow("SELECT pinned_at, archived_at FROM chat_session WHERE id = $1", cid)
    return row["pinned_at"] is not None, row["archived_at"] is not None


async def pin(client: httpx.AsyncClient, cid: uuid.UUID, value: bool = True, **form: str) -> httpx.Response:
    return await client.post(f"/history/{cid}/pin", data={"pinned": str(value).lower(), **form}, headers=htmx(client))


async def archive(client: httpx.AsyncClient, cid: uuid.UUID, value: bool = True, **form: str) -> httpx.Response:
    data = {"archived": str(value).lower(), **form}
    return await client.post(f"/history/{cid}/archive", data=data, headers=htmx(client))


async def listed(client: httpx.AsyncClient, path: str = "/history") -> list[str]:
    return ITEM.findall((await client.get(path)).text)


async def some_saved(user: User, count: int) -> list[uuid.UUID]:
    """`count` saved conversations, newest first, an hour apart."""
    now = datetime.now(UTC)
    return [await make_saved(user, f"Trip {n:02d}", now - timedelta(hours=n)) for n in range(count)]


async def test_pin_puts_it_on_top_and_archive_moves_it_to_the_archived_view(app_server: AppServer) -> None:
    async with person(app_server) as (client, user):
        a, b, c, d = await some_saved(user, 4)
        response = await pin(client, c, back="list")
        assert response.status_code == 200
        assert response.headers["hx-trigger"]
        assert "Pinned." in response.headers["hx-trigger"]
        # The list row gets the refreshed list: the pinned one on top, marked, and not repeated below.
        assert ITEM.findall(response.text) == [str(c), str(a), str(b), str(d)]
        assert PINNED_ITEM.findall(response.text) == [str(c)]
        await pin(client, a)
        # Newest pin first, then the others by date.
        assert await listed(client) == [str(a), str(c), str(b), str(d)]
        assert await flags(a) == (True, False)

        archived = await archive(client, a, back="list")
        assert archived.status_code == 200
        assert ITEM.findall(archived.text) == [str(c), str(b), str(d)]
        assert await flags(a) == (False, True)  # archiving unpins
        assert await listed(client, "/history/archived") == [str(a)]
        assert await listed(client, "/history?view=archived") == [str(a)]
        page = (await client.get(f"/history/{a}")).text
        assert 'data-testid="archived-badge"' in page
        assert 'data-testid="pin-button"' not in page

        # From the detail page: the flags block comes back, with its toast.
        back = await archive(client, a, False)
        assert back.status_code == 200
        assert 'id="flags-block"' in back.text
        assert "Archive" in back.text
        assert await listed(client) == [str(c), str(a), str(b), str(d)]
        assert await listed(client, "/history/archived") == []
        assert "No archived conversations" in (await client.get("/history/archived")).text

        # Idempotent: pinning twice keeps the first pin time (a double click does not reorder).
        async with connection() as conn:
            first = await conn.fetchval("SELECT pinned_at FROM chat_session WHERE id = $1", c)
        assert (await pin(client, c)).status_code == 200
        async with connection() as conn:
            assert await conn.fetchval("SELECT pinned_at FROM chat_session WHERE id = $1", c) == first

        # Pinning an archived one brings it back.
        await archive(client, d)
        await pin(client, d)
        assert await flags(d) == (True, False)
        assert (await pin(client, d, False)).status_code == 200
        assert await flags(d) == (False, False)


async def test_toggles_work_without_javascript(app_server: AppServer) -> None:
    async with person(app_server) as (client, user):
        a, b = await some_saved(user, 2)
        token = client.cookies.get("csrftoken")
        page = (await client.get("/history/archived")).text
        assert 'name="_csrf_token"' in page
        form_csrf = re.search(r'name="_csrf_token" value="([^"]+)"', (await client.get("/history")).text)
        assert form_csrf
        assert token
        plain = {"_csrf_token": form_csrf.group(1)}
        from_list = await client.post(
            f"/history/{b}/archive", data={**plain, "archived": "true", "back": "list", "q": "", "from": "2026-01-01"}
        )
        assert from_list.status_code == 303
        assert from_list.headers["location"] == "/history?from=2026-01-01"
        from_archived = await client.post(
            f"/history/{b}/archive", data={**plain, "archived": "false", "back": "list", "view": "archived"}
        )
        assert from_archived.headers["location"] == "/history?view=archived"
        from_detail = await client.post(f"/history/{a}/pin", data={**plain, "pinned": "true"})
        assert from_detail.status_code == 303
        assert from_detail.headers["location"] == f"/history/{a}"
        assert await flags(a) == (True, False)
        assert await flags(b) == (False, False)


async def test_chat_sidebar_shows_pins_first_and_hides_archived(app_server: AppServer) -> None:
    async with person(app_server) as (client, user):
        made = await some_saved(user, 12)
        await pin(client, made[11])
        await archive(client, made[0])
        recent = await queries.recent_saved(user.id)
        assert [r.id for r in recent] == [made[11], *made[1:11]]
        assert [r.pinned for r in recent] == [True] + [False] * 10
        sidebar = (await client.get("/")).text.split('id="history-list"')[1].split("</ul>")[0]
        assert re.findall(r'data-conversation-id="([0-9a-f-]{36})"', sidebar)[:2] == [str(made[11]), str(made[1])]
        assert 'data-pinned="true"' in sidebar
        assert str(made[0]) not in sidebar


async def walk(client: httpx.AsyncClient, between: Callable[[int], Awaitable[None]]) -> list[str]:
    html = (await client.get("/history")).text
    ids = ITEM.findall(html)
    fetched = 1
    while match := NEXT.search(html):
        await between(fetched)
        html = (await client.get(match.group(1).replace("&amp;", "&"), headers={"HX-Request": "true"})).text
        ids += ITEM.findall(html)
        fetched += 1
    return ids


async def test_pages_stay_exact_while_pins_change_between_fetches(app_server: AppServer) -> None:
    async with person(app_server) as (client, user):
        made = await some_saved(user, 50)
        for n in (30, 45):  # pinned before page 1: shown on top of it
            await pin(client, made[n])

        async def change_pins(fetched: int) -> None:
            if fetched == 1:
                await pin(client, made[45], False)  # shown on top; its date place is still ahead: not again
                await pin(client, made[35])  # not shown yet: it comes in its date place, marked
                await pin(client, made[3])  # already shown in its date place: not again
            if fetched == 2:
                await pin(client, made[30], False)
                await pin(client, made[47])
                await archive(client, made[48])  # leaves the list before it was shown: rightly gone

        ids = await walk(client, change_pins)
        assert len(ids) == len(set(ids)), "an item was shown twice"
        assert set(ids) == {str(m) for m in made} - {str(made[48])}
        assert ids[:2] == [str(made[45]), str(made[30])]


async def test_pins_are_capped(app_server: AppServer) -> None:
    async with person(app_server) as (client, user):
        made = await some_saved(user, queries.MAX_PINS + 1)
        for cid in made[: queries.MAX_PINS]:
            assert (await pin(client, cid)).status_code == 200
        refused = await pin(client, made[-1])
        assert refused.status_code == 409
        assert "at most 20" in refused.text
        assert await flags(made[-1]) == (False, False)
        assert (await pin(client, made[0])).status_code == 200  # re-pinning a pinned one is not a new pin
        assert PINNED_ITEM.findall((await client.get("/history")).text) == [str(m) for m in reversed(made[:20])]


async def test_bad_input_is_refused_and_changes_nothing(app_server: AppServer) -> None:
    async with person(app_server) as (client, user):
        (cid,) = await some_saved(user, 1)
        for data in ({"pinned": "yes"}, {}, {"pinned": ["true", "false"]}):
            response = await client.post(f"/history/{cid}/pin", data=data, headers=htmx(client))
            assert response.status_code == 422, data
        bad_view = await archive(client, cid, back="list", view="trash")
        assert bad_view.status_code == 400
        assert (await archive(client, cid, back="list", q="x" * 201)).status_code == 400
        assert (await pin(client, cid, back="list", q="bad\x07")).status_code == 422
        assert (await client.get("/history?view=trash")).status_code == 400
        assert await flags(cid) == (False, False)
        as_json = await client.post(f"/history/{cid}/pin", json={"pinned": "true"}, headers=htmx(client))
        assert as_json.status_code in (400, 415)
        assert await flags(cid) == (False, False)
        active = await open_conversation(client)
        assert (await pin(client, active)).status_code == 404
        assert (await archive(client, active)).status_code == 404


async def test_another_users_conversation_is_404_and_untouched(app_server: AppServer) -> None:
    async with person(app_server) as (owner, owner_user), person(app_server) as (intruder, intruder_user):
        (cid,) = await some_saved(owner_user, 1)
        await some_saved(intruder_user, queries.MAX_PINS)
        for mine in await queries.recent_saved(intruder_user.id):
            await pin(intruder, mine.id)
        # Even with the intruder's pins full, the answer is 404, not "too many pins".
        assert (await pin(intruder, cid)).status_code == 404
        assert (await archive(intruder, cid)).status_code == 404
        assert (await pin(intruder, uuid.uuid4())).status_code == 404
        assert await flags(cid) == (False, False)
        assert await listed(owner) == [str(cid)]


async def test_csrf_is_required(app_server: AppServer) -> None:
    async with person(app_server) as (client, user):
        (cid,) = await some_saved(user, 1)
        for path, data in (
            (f"/history/{cid}/pin", {"pinned": "true"}),
            (f"/history/{cid}/archive", {"archived": "true"}),
        ):
            assert (await client.post(path, data=data)).status_code == 403
            assert (await client.post(path, data={**data, "_csrf_token": "forged"})).status_code == 403
        assert await flags(cid) == (False, False)


async def test_search_finds_archived_ones_marked_and_marks_pins(app_server: AppServer) -> None:
    async with person(app_server) as (client, user):
        now = datetime.now(UTC)
        kept = await make_saved(user, "Kyoto temples", now)
        tidied = await make_saved(user, "Kyoto food", now - timedelta(hours=1))
        other = await make_saved(user, "Lisbon", now - timedelta(hours=2))
        await pin(client, kept)
        await archive(client, tidied)
        html = (await client.get("/history", params={"q": "kyoto"})).text
        assert set(ITEM.findall(html)) == {str(kept), str(tidied)}
        rows = {cid: row for cid, row in re.findall(r'data-conversation-id="([0-9a-f-]{36})"(.*?)</li>', html, re.S)}
        assert 'data-testid="pinned-badge"' in rows[str(kept)]
        assert 'data-testid="archived-badge"' in rows[str(tidied)]
        assert "Unarchive" in rows[str(tidied)]
        assert ITEM.findall((await client.get("/history", params={"q": "lisbon"})).text) == [str(other)]


async def test_json_api_has_the_flags_and_filters_and_old_clients_see_everything(app_server: AppServer) -> None:
    async with person(app_server) as (client, user):
        a, b, c = await some_saved(user, 3)
        await pin(client, c)
        await archive(client, b)
        everything = (await client.get("/api/users/sessions")).json()
        assert [i["id"] for i in everything["items"]] == [str(a), str(b), str(c)]  # date order, nothing hidden
        assert [(i["pinned"], i["archived"]) for i in everything["items"]] == [
            (False, False),
            (False, True),
            (True, False),
        ]
        only = {
            query: [i["id"] for i in (await client.get(f"/api/users/sessions?{query}")).json()["items"]]
            for query in ("archived=true", "archived=false", "pinned=true", "pinned=false&archived=false")
        }
        assert only == {
            "archived=true": [str(b)],
            "archived=false": [str(a), str(c)],
            "pinned=true": [str(c)],
            "pinned=false&archived=false": [str(a)],
        }
        first = (await client.get("/api/users/sessions", params={"limit": 1, "archived": "false"})).json()
        second = (
            await client.get(
                "/api/users/sessions", params={"limit": 1, "archived": "false", "cursor": first["next_cursor"]}
            )
        ).json()
        assert [i["id"] for i in first["items"] + second["items"]] == [str(a), str(c)]
        detail = (await client.get(f"/api/users/sessions/{c}")).json()
        assert detail["pinned"] is True
        assert detail["archived"] is False
        bad = await client.get("/api/users/sessions?archived=maybe")
        assert bad.status_code == 400
        assert bad.json()["status_code"] == 400


async def test_a_toggle_updates_every_open_tabs_sidebar_live(client: httpx.AsyncClient, app_server: AppServer) -> None:
    async with person(app_server) as (tab, user):
        (cid,) = await some_saved(user, 1)
        chat = await open_conversation(tab)
        connected = asyncio.Event()
        sidebars: list[str] = []

        async def read() -> None:
            async with aconnect_sse(tab, "GET", f"/conversations/{chat}/stream") as source:
                async for sse in source.aiter_sse():
                    connected.set()
                    if sse.event == "control" and 'id="history-list"' in sse.data:
                        sidebars.append(sse.data)
                        if len(sidebars) == 2:
                            return

        reader = asyncio.create_task(asyncio.wait_for(read(), 15))
        warm_up = event(f"w-{uuid.uuid4().hex[:12]}", "warming up", role="agent", final=False)
        while not connected.is_set():
            assert (await ingest(tab, chat, [warm_up])).status_code == 200
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(connected.wait()), 0.2)
        await pin(tab, cid)
        await archive(tab, cid)
        await reader
        assert f'data-conversation-id="{cid}" data-pinned="true"' in sidebars[0]
        assert str(cid) not in sidebars[1]


async def test_each_list_query_starts_with_an_index_scan_on_its_partial_index(app_server: AppServer) -> None:
    """At a realistic size (a few thousand conversations, some archived, a few pinned) each list's first page
    reads its partial index (the paged lists in order, with no sort) and no other rows of the user."""
    async with person(app_server) as (_, user):
        async with connection() as conn:
            await conn.execute(
                """
                INSERT INTO chat_session (id, room_name, owner, system_prompt, started_at, ended_at, title,
                                          last_activity_at, last_seq, archived_at, pinned_at)
                SELECT gen_random_uuid(), 'explain-' || gen_random_uuid(), $1, '', now() - n * interval '1 hour',
                       now() - n * interval '1 hour' + interval '5 minutes', 'Trip ' || n, now(), 1,
                       CASE WHEN n % 20 = 0 THEN now() END, CASE WHEN n % 1000 = 1 THEN now() END
                FROM generate_series(1, 5000) AS n
                """,
                user.id,
            )
            await conn.execute("ANALYZE chat_session")
            plans = {
                name: "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN {sql}", *args))
                for name, sql, args in (
                    ("chat_session_listed", SAVED_PAGE_SQL, (user.id, None, None, 26, None, None)),
                    ("chat_session_archived", ARCHIVED_PAGE_SQL, (user.id, None, None, 21, None, None)),
                    ("chat_session_pinned", FIRST_PAGE_SQL, (user.id, 21, None, None)),
                )
            }
        for index in ("chat_session_listed", "chat_session_archived"):
            assert f"Index Scan using {index}" in plans[index], plans[index]
            assert "Sort" not in plans[index], plans[index]
        # At most 20 pins a user: reading them through their partial index is what matters; whether the planner
        # then sorts those few rows (a bitmap scan) or reads them in order depends on the table's statistics.
        assert "on chat_session_pinned" in plans["chat_session_pinned"] or (
            "Index Scan using chat_session_pinned" in plans["chat_session_pinned"]
        ), plans["chat_session_pinned"]
        # Page 1 of the main list is its pins and its first rows in one statement: both parts use their index.
        assert "Index Scan using chat_session_listed" in plans["chat_session_pinned"], plans["chat_session_pinned"]


async def test_the_archived_view_pages_by_date_each_exactly_once(app_server: AppServer) -> None:
    async with person(app_server) as (client, user):
        made = await some_saved(user, 25)
        for cid in made:
            await archive(client, cid)
        html = (await client.get("/history/archived")).text
        ids = ITEM.findall(html)
        while match := NEXT.search(html):
            assert "view=archived" in match.group(1)
            html = (await client.get(match.group(1).replace("&amp;", "&"), headers={"HX-Request": "true"})).text
            ids += ITEM.findall(html)
        assert ids == [str(m) for m in made]
        assert await listed(client) == []
