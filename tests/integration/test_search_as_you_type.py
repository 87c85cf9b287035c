"""Search as you type: the word being typed is a prefix, a title is found by a fragment or with a typo, and the
page says how many conversations match."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from chatapp.history.search import search
from tests.factories import make_saved, make_user
from tests.support import ITEM, AppServer, person

COUNT = re.compile(r'data-testid="result-count">([^<]*)</p>')


async def test_every_keystroke_of_a_word_finds_its_conversation(db: str) -> None:
    user = await make_user()
    now = datetime.now(UTC)
    reykjavik = await make_saved(user, "Northern lights", now, [("user", "A long weekend in Reykjavik in March")])
    await make_saved(user, "Lisbon", now - timedelta(hours=1), [("user", "Three days in Lisbon")])

    for n in range(2, len("Reykjavik") + 1):
        typed = "Reykjavik"[:n]
        found = await search(user.id, typed)
        assert [h.item.id for h in found.hits] == [reykjavik], typed
        assert "<mark>Reykjavik</mark>" in found.hits[0].snippet, typed
    # Earlier words are whole words; only the last one is still being typed.
    assert [h.item.id for h in (await search(user.id, "long weekend in Reykj")).hits] == [reykjavik]
    assert (await search(user.id, "lon weekend")).hits == []
    # A stop word may be the start of a longer word ("to" is how "Tokyo" begins).
    tokyo = await make_saved(user, "Japan", now - timedelta(hours=2), [("user", "Two weeks around Tokyo")])
    assert [h.item.id for h in (await search(user.id, "to")).hits] == [tokyo]
    # A finished phrase or an exclusion is not a prefix.
    assert (await search(user.id, '"weekend in Reykj"')).hits == []
    assert [h.item.id for h in (await search(user.id, "days -Reykjavik")).hits] != [reykjavik]


async def test_a_title_is_found_by_a_fragment_and_despite_a_typo(db: str) -> None:
    user = await make_user()
    now = datetime.now(UTC)
    trip = await make_saved(user, "Weekend in Reykjavik", now, [("user", "Northern lights and hot springs")])
    await make_saved(user, "Kyoto in spring", now - timedelta(hours=1), [("user", "Temples and gardens")])

    for typed in ("javik", "Reykjavk", "Rekjavik", "reykjavic", "weekend reykjavic"):
        found = await search(user.id, typed)
        assert [h.item.id for h in found.hits] == [trip], typed
        assert found.total == 1, typed
    lisbon = await make_saved(user, "Lisbon food tour", now - timedelta(hours=2), [("user", "Pastries")])
    assert [h.item.id for h in (await search(user.id, "Lisbn")).hits] == [lisbon]
    assert (await search(user.id, "Oslo")).hits == []
    await make_saved(user, "Hotel Borg", now - timedelta(hours=3), [("user", "A room with a view")])
    assert (await search(user.id, "hostel")).hits == []  # similar, but another word
    assert (await search(user.id, "Oslo")).total == 0


async def test_the_page_says_how_many_conversations_match(app_server: AppServer) -> None:
    async with person(app_server) as (client, user):
        now = datetime.now(UTC)
        for n in range(23):
            await make_saved(user, f"Trip {n}", now - timedelta(hours=n), [("user", f"Hotel number {n}")])
        await make_saved(user, "Elsewhere", now - timedelta(days=3), [("user", "A campsite by the lake")])

        page = (await client.get("/history", params={"q": "hot"})).text
        count = COUNT.search(page)
        assert count is not None
        assert count.group(1) == "23 conversations match “hot”"
        assert len(ITEM.findall(page)) == 20
        fragment = await client.get(
            "/history", params={"q": "campsi"}, headers={"HX-Request": "true", "HX-Target": "history-results"}
        )
        assert (
            'id="result-count" class="result-count muted" role="status" data-testid="result-count" hx-swap-oob="true"'
            in (fragment.text)
        )
        assert "1 conversation matches “campsi”" in fragment.text
        assert len(ITEM.findall(fragment.text)) == 1
        unsearched = COUNT.search((await client.get("/history")).text)
        assert unsearched is not None
        assert unsearched.group(1) == ""
