"""History over HTTP against the real server: pages, search, owner-only access, export, share, continue."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from chatapp.conversations import queries
from chatapp.core.database import connection
from chatapp.history.service import saved_page
from tests.factories import make_saved
from tests.support import ITEM, NEXT, AppServer, csrf, htmx, person, signup

LOAD_MORE = re.compile(r'data-testid="load-more"|hx-get="(/history\?[^"]+)"')


async def walk_pages(client: httpx.AsyncClient, between: object = None) -> tuple[list[str], list[str]]:
    """Follow the list page by page as the browser's infinite scroll does; return ids and group headings."""
    page = await client.get("/history")
    html = page.text
    ids, headings = ITEM.findall(html), re.findall(r'data-testid="history-group"><h2>([^<]+)</h2>', html)
    while match := NEXT.search(html):
        if callable(between):
            await between()
        html = (await client.get(match.group(1).replace("&amp;", "&"), headers={"HX-Request": "true"})).text
        ids += ITEM.findall(html)
        headings += re.findall(r'data-testid="history-group"><h2>([^<]+)</h2>', html)
    return ids, headings


async def test_95_conversations_in_pages_of_20_newest_first_each_exactly_once(app_server: AppServer) -> None:
    async with person(app_server) as (client, user):
        now = datetime.now(UTC)
        made = [await make_saved(user, f"Trip {n}", now - timedelta(hours=7 * n)) for n in range(95)]
        ids, headings = await walk_pages(client)
        assert ids == [str(i) for i in made]
        # Group headings appear once each, in order, even across page boundaries.
        assert len(headings) == len(set(headings))
        assert headings[0] == "Today"
        first = await saved_page(user.id)
        assert len(first.items) == 20


async def test_saving_new_conversations_between_pages_neither_shifts_nor_repeats(app_server: AppServer) -> None:
    async with person(app_server) as (client, user):
        base = datetime.now(UTC) - timedelta(days=1)
        made = [await make_saved(user, f"Old {n}", base - timedelta(minutes=n)) for n in range(45)]

        async def someone_saves_more() -> None:
            await make_saved(user, "Brand new", datetime.now(UTC))

        ids, _ = await walk_pages(client, someone_saves_more)
        assert ids == [str(i) for i in made]


async def test_list_shows_title_time_duration_and_count(app_server: AppServer) -> None:
    async with person(app_server) as (client, user):
        await make_saved(
            user, "Alps <hiking>", datetime.now(UTC) - timedelta(minutes=30), [("user", "a"), ("agent", "b")], 12
        )
        html = (await client.get("/history")).text
        assert "Alps &lt;hiking&gt;" in html
        assert "12 min" in html
        assert "2 messages" in html
        assert "<hiking>" not in html


async def test_detail_page_shows_the_transcript_in_order(app_server: AppServer) -> None:
    async with person(app_server) as (client, user):
        lines = [("user", "Where to in June?"), ("agent", "Try <Norway>"), ("user", "Fjords!")]
        cid = await make_saved(user, "June", datetime.now(UTC), lines)
        async with connection() as conn:
            await conn.execute("UPDATE utterance SET interrupted = true WHERE session = $1 AND seq = 2", cid)
        html = (await client.get(f"/history/{cid}")).text
        # Agent replies are rendered Markdown (a paragraph here); user text is shown as typed.
        texts = re.findall(r'<div class="transcript-text(?: markdown)?" dir="auto">(?:<p>)?([^<]*)</', html)
        assert texts == ["Where to in June?", "Try &lt;Norway&gt;", "Fjords!"]
        assert html.count('data-testid="interrupted"') == 1
        assert 'data-testid="message-count">3<' in html


async def test_every_history_route_is_404_for_another_user(app_server: AppServer) -> None:
    async with person(app_server) as (_, owner), person(app_server) as (intruder, _):
        cid = await make_saved(owner, "Private", datetime.now(UTC))
        gets = [
            f"/history/{cid}",
            f"/history/{cid}/export/json",
            f"/history/{cid}/export/md",
            f"/history/{cid}/export/txt",
        ]
        for path in [*gets, f"/history/{uuid.uuid4()}"]:
            assert (await intruder.get(path)).status_code == 404, path
        posts = ["rename", "delete", "share", "share/revoke", "continue"]
        for action in posts:
            response = await intruder.post(
                f"/history/{cid}/{action}", data={"title": "Mine now"}, headers=htmx(intruder)
            )
            assert response.status_code == 404, action
        conversation = await queries.get_conversation(cid)
        assert conversation is not None
        assert conversation.title == "Private"
        async with connection() as conn:
            assert await conn.fetchval("SELECT count(*) FROM share_link WHERE session = $1", cid) == 0


async def test_rename_validates_and_updates(app_server: AppServer) -> None:
    async with person(app_server) as (client, user):
        cid = await make_saved(user, "Before", datetime.now(UTC))
        too_long = await client.post(f"/history/{cid}/rename", data={"title": "x" * 201}, headers=htmx(client))
        assert too_long.status_code == 422
        blank = await client.post(f"/history/{cid}/rename", data={"title": "   "}, headers=htmx(client))
        assert blank.status_code == 422
        ok = await client.post(f"/history/{cid}/rename", data={"title": "  After  <i>it</i> "}, headers=htmx(client))
        assert ok.status_code == 200
        assert 'id="title-block"' in ok.text
        assert "After &lt;i&gt;it&lt;/i&gt;" in ok.text
        assert "Renamed." in ok.headers["hx-trigger"]
        conversation = await queries.get_conversation(cid)
        assert conversation is not None
        assert conversation.title == "After <i>it</i>"


async def test_delete_removes_the_conversation(app_server: AppServer) -> None:
    async with person(app_server) as (client, user):
        cid = await make_saved(user, "Bye", datetime.now(UTC))
        response = await client.post(f"/history/{cid}/delete", headers=htmx(client))
        assert response.status_code == 204
        assert response.headers["hx-redirect"] == f"/history?deleted={cid}"
        assert await queries.get_conversation(cid) is None  # hidden at once, restorable for the undo window
        assert (await client.get(f"/history/{cid}")).status_code == 404


async def test_search_finds_ranks_highlights_and_escapes(app_server: AppServer) -> None:
    async with person(app_server) as (client, user):
        now = datetime.now(UTC)
        in_title = await make_saved(user, "Kyoto temples", now - timedelta(days=3), [("user", "Let us plan it")])
        in_text = await make_saved(
            user, "Japan", now - timedelta(days=1), [("user", "What about <b>Kyoto</b> & Osaka?"), ("agent", "Sure")]
        )
        await make_saved(user, "Paris", now, [("user", "Croissants")])
        html = (await client.get("/history", params={"q": "kyoto"})).text
        ids = ITEM.findall(html)
        assert ids == [str(in_title), str(in_text)]  # the title match ranks first
        assert "<mark>Kyoto</mark>" in html
        # ts_headline drops what its parser takes for tags; everything left is escaped.
        assert "<mark>Kyoto</mark>  &amp; Osaka" in html
        assert "<b>" not in html
        # Stemming: "temple" finds "temples"; a date range narrows; no match says so.
        assert ITEM.findall((await client.get("/history", params={"q": "temple"})).text) == [str(in_title)]
        day = (now - timedelta(days=1)).date().isoformat()
        ranged = (await client.get("/history", params={"q": "kyoto", "from": day, "to": day})).text
        assert ITEM.findall(ranged) == [str(in_text)]
        assert "No conversations match" in (await client.get("/history", params={"q": "zanzibar"})).text
        assert (await client.get("/history", params={"from": "yesterday"})).status_code == 400


async def test_export_formats(app_server: AppServer) -> None:
    async with person(app_server) as (client, user):
        lines = [("user", "Plan *Lisbon*"), ("agent", "Sure: 3 days.")]
        cid = await make_saved(user, "Lisbon plan", datetime(2026, 5, 4, 10, 0, tzinfo=UTC), lines)
        as_json = await client.get(f"/history/{cid}/export/json")
        assert as_json.headers["content-disposition"] == 'attachment; filename="chatapp-2026-05-04-lisbon-plan.json"'
        document = json.loads(as_json.text)
        assert document["format"] == "chatapp.conversation"
        assert document["id"] == str(cid)
        assert [(u["seq"], u["role"], u["text"]) for u in document["utterances"]] == [
            (1, "user", "Plan *Lisbon*"),
            (2, "agent", "Sure: 3 days."),
        ]
        text = (await client.get(f"/history/{cid}/export/txt")).text
        assert "You:\n    Plan *Lisbon*\n" in text
        assert "Agent:\n    Sure: 3 days.\n" in text
        markdown = await client.get(f"/history/{cid}/export/md")
        assert markdown.headers["content-type"].startswith("text/markdown")
        assert "# Lisbon plan" in markdown.text
        assert r"Plan \*Lisbon\*" in markdown.text
        assert (await client.get(f"/history/{cid}/export/pdf")).status_code == 404


async def test_share_links_show_only_the_transcript_and_can_be_revoked(app_server: AppServer) -> None:
    async with person(app_server) as (client, user):
        cid = await make_saved(user, "Shared trip", datetime.now(UTC), [("user", "Road trip in Iceland")])
        other = await make_saved(user, "Not shared", datetime.now(UTC))
        created = await client.post(f"/history/{cid}/share", headers=htmx(client))
        assert created.status_code == 200
        url = re.search(r'value="(http[^"]+/s/[^"]+)"', created.text)
        assert url
        path = "/s/" + url.group(1).rsplit("/s/", 1)[1]
        assert len(path) > 40  # 32 random bytes
        # Creating again gives the same live link.
        again = await client.post(f"/history/{cid}/share", headers=htmx(client))
        assert path in again.text
        async with httpx.AsyncClient(base_url=app_server.url) as stranger:
            page = await stranger.get(path)
            assert page.status_code == 200
            assert "Road trip in Iceland" in page.text
            assert page.headers["x-robots-tag"].startswith("noindex")
            assert '<meta name="robots" content="noindex' in page.text
            assert "<form" not in page.text
            links = re.findall(r'<a [^>]*href="([^"]*)"', page.text)
            assert links == ["#main"]  # the skip link; no way to reach anything else
            assert str(other) not in page.text
            assert (await stranger.get(f"/history/{cid}")).status_code == 303  # still needs a login
            revoked = await client.post(f"/history/{cid}/share/revoke", headers=htmx(client))
            assert revoked.status_code == 200
            assert (await stranger.get(path)).status_code == 410  # revoked: the page says so
            assert (await stranger.get("/s/not-a-token")).status_code == 404


async def test_continue_here_reopens_the_conversation_itself_without_javascript(app_server: AppServer) -> None:
    async with person(app_server) as (client, user):
        cid = await make_saved(user, "Andes", datetime.now(UTC), [("user", "Trek in Peru"), ("agent", "Inca trail!")])
        page = await client.get(f"/history/{cid}")
        assert f'action="/history/{cid}/continue"' in page.text
        assert "Continue here" in page.text
        response = await client.post(f"/history/{cid}/continue", headers=csrf(client))
        assert response.status_code == 303
        assert response.headers["location"] == f"/chat/{cid}"
        active = await queries.get_active(user.id)
        assert active is not None
        assert active.id == cid
        assert active.continued_from is None
        assert active.message_count == 2
        assert active.period == 1
        chat = await client.get(f"/chat/{cid}")
        assert chat.status_code == 200
        assert "Inca trail!" in chat.text


async def test_active_conversation_is_not_a_history_page(app_server: AppServer) -> None:
    async with person(app_server) as (client, user):
        await client.get("/")
        active = await queries.get_active(user.id)
        assert active is not None
        response = await client.get(f"/history/{active.id}")
        assert response.status_code == 303
        assert (await client.get(f"/history/{active.id}/export/json")).status_code == 404


@pytest.mark.parametrize("cursor", ["garbage", "eyJ4IjoxfQ"])
async def test_bad_cursors_are_400(client: httpx.AsyncClient, cursor: str) -> None:
    await signup(client)
    assert (await client.get("/history", params={"cursor": cursor})).status_code == 400
    assert (await client.get("/history", params={"cursor": cursor, "q": "x"})).status_code == 400
