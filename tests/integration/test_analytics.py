"""The analytics page against the real server and database: 0, 1, many and 10,000 conversations, numbers
checked against the data inserted, topics without stop words, hours in the user's time zone."""

from __future__ import annotations

import contextlib
import re
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx

from chatapp.accounts.service import User, get_user
from chatapp.conversations.events import Role
from chatapp.core.database import connection
from chatapp.history.analytics import DAYS, DURATION_BOUNDS, TOPIC_CONVERSATIONS, WEEKS, analytics
from tests.factories import make_conversation, make_saved, make_user
from tests.support import AppServer, client_ip, signup

ROW = re.compile(r"<tr><th scope=\"row\">([^<]+)</th><td>(\d+)</td></tr>")


@contextlib.asynccontextmanager
async def person(app_server: AppServer, tz: str | None = None) -> AsyncIterator[tuple[httpx.AsyncClient, User]]:
    cookies = {"tz": tz} if tz else None
    async with httpx.AsyncClient(
        base_url=app_server.url, headers={"X-Forwarded-For": client_ip()}, timeout=10, cookies=cookies
    ) as c:
        email = await signup(c)
        async with connection() as conn:
            user_id = await conn.fetchval("SELECT id FROM user_account WHERE email = $1", email)
        user = await get_user(user_id)
        assert user is not None
        yield c, user


def table(html: str, chart_id: str) -> dict[str, int]:
    """A chart's fallback table as {row label: number}."""
    match = re.search(rf'data-testid="{chart_id}-table">(.*?)</table>', html, re.S)
    assert match, f"no table for {chart_id}"
    return {label: int(n) for label, n in ROW.findall(match.group(1))}


def bucket(seconds: float) -> int:
    return sum(seconds >= b for b in DURATION_BOUNDS)


async def test_no_conversations_shows_a_friendly_empty_state_and_the_history_page_links_to_it(
    app_server: AppServer,
) -> None:
    async with person(app_server) as (client, user):
        await make_conversation(user)  # the active conversation is not saved, so it does not count
        history = await client.get("/history")
        assert 'href="/history/analytics"' in history.text
        page = await client.get("/history/analytics")
        assert page.status_code == 200
        assert 'data-testid="analytics-empty"' in page.text
        assert "<svg" not in page.text
        stats = await analytics(user.id, ZoneInfo("UTC"))
        assert (stats.conversations, stats.messages, stats.topics) == (0, 0, [])
        assert len(stats.days) == DAYS
        assert len(stats.weeks) == WEEKS
        assert sum(stats.hours) == 0


async def test_one_conversation_is_counted_once_everywhere(app_server: AppServer) -> None:
    zone = ZoneInfo("Asia/Tokyo")
    async with person(app_server, "Asia/Tokyo") as (client, user):
        started = datetime.now(UTC) - timedelta(hours=2)
        lines: list[tuple[Role, str]] = [
            ("user", "Plan a hiking trip"),
            ("agent", "Where?"),
            ("user", "Hiking the Alps"),
        ]
        await make_saved(user, "Hiking", started, lines, minutes=7)
        stats = await analytics(user.id, zone)
        local = started.astimezone(zone)
        assert (stats.conversations, stats.messages, stats.first_day) == (1, 3, local.date())
        assert [p.start for p in stats.days][-1] == datetime.now(zone).date()
        assert {p.start: (p.conversations, p.messages) for p in stats.days if p.conversations} == {local.date(): (1, 3)}
        assert [p.conversations for p in stats.weeks].count(1) == 1
        assert sum(p.messages for p in stats.weeks) == 3
        assert stats.durations == [0, 0, 1, 0, 0, 0]  # 7 minutes: the 5-15 min bucket
        assert stats.hours[local.hour] == 1
        assert sum(stats.hours) == 1
        assert [t.word for t in stats.topics][:1] == ["hiking"]

        page = await client.get("/history/analytics")
        assert page.status_code == 200
        assert 'data-testid="total-conversations">1<' in page.text
        assert table(page.text, "chart-durations")["5\u201315 min"] == 1
        assert table(page.text, "chart-hours")[f"{local.hour:02d}:00\u2013{(local.hour + 1) % 24:02d}:00"] == 1
        assert page.text.count('role="img"') == 7
        assert page.text.count("<title>") >= 8


async def test_many_conversations_numbers_match_the_inserted_data(app_server: AppServer) -> None:
    zone = ZoneInfo("America/New_York")  # DST: a fixed offset would put some of these in the wrong hour/day
    user = await make_user()
    now = datetime.now(UTC)
    made = []
    for n in range(80):
        started = now - timedelta(hours=53 * n + 1, minutes=n)  # spread over about 6 months, all hours
        minutes = (1, 3, 8, 20, 45, 90)[n % 6]
        lines: list[tuple[Role, str]] = [("user", f"Trip {n}")] + [("agent", "Sure.")] * (n % 4)
        await make_saved(user, f"Trip {n}", started, lines, minutes=minutes)
        made.append((started.astimezone(zone), minutes, len(lines)))
    stats = await analytics(user.id, zone)

    today = now.astimezone(zone).date()
    days: Counter[date] = Counter()
    day_messages: Counter[date] = Counter()
    weeks: Counter[date] = Counter()
    week_messages: Counter[date] = Counter()
    for local, _, count in made:
        days[local.date()] += 1
        day_messages[local.date()] += count
        monday = local.date() - timedelta(days=local.weekday())
        weeks[monday] += 1
        week_messages[monday] += count
    assert [p.start for p in stats.days] == [today - timedelta(days=DAYS - 1 - k) for k in range(DAYS)]
    assert [(p.conversations, p.messages) for p in stats.days] == [
        (days[p.start], day_messages[p.start]) for p in stats.days
    ]
    this_monday = today - timedelta(days=today.weekday())
    assert [p.start for p in stats.weeks] == [this_monday - timedelta(weeks=WEEKS - 1 - k) for k in range(WEEKS)]
    assert [(p.conversations, p.messages) for p in stats.weeks] == [
        (weeks[p.start], week_messages[p.start]) for p in stats.weeks
    ]
    assert stats.hours == [sum(local.hour == h for local, _, _ in made) for h in range(24)]
    assert stats.durations == [sum(bucket(m * 60) == b for _, m, _ in made) for b in range(6)]
    assert (stats.conversations, stats.messages) == (80, sum(c for _, _, c in made))
    assert stats.first_day == min(local for local, _, _ in made).date()


async def test_topics_are_readable_words_without_stop_words_short_or_numeric_lexemes(app_server: AppServer) -> None:
    user = await make_user()
    now = datetime.now(UTC)
    for n in range(6):
        lines: list[tuple[Role, str]] = [
            ("user", f"We are travelling to Kyoto by train in 2026, ok? It is {n} of them."),
            ("agent", "The trains in Kyoto are fast, and travelling there is easy."),
        ]
        if n < 2:
            lines.append(("user", "Also museums."))
        await make_saved(user, f"Kyoto {n}", now - timedelta(days=n), lines)
    stats = await analytics(user.id, ZoneInfo("UTC"))
    words = {t.word: t for t in stats.topics}
    assert {"travelling", "kyoto", "train"} <= set(words)
    assert words["travelling"].lexeme == "travel"  # shown as spoken, counted by its stem
    assert words["kyoto"].conversations == 6
    assert words["museums"].conversations == 2
    assert "fast" not in words  # said by the agent only
    assert set(words).isdisjoint({"we", "are", "to", "by", "in", "it", "is", "the", "ok", "2026", "of", "them"})
    assert all(len(t.lexeme) >= 3 and not re.search(r"\d", t.lexeme) for t in stats.topics)
    assert [t.conversations for t in stats.topics] == sorted((t.conversations for t in stats.topics), reverse=True)


async def test_hours_and_days_are_bucketed_in_the_time_zone_of_the_tz_cookie(app_server: AppServer) -> None:
    async with person(app_server, "Asia/Kolkata") as (client, user):
        started = (datetime.now(UTC) - timedelta(days=1)).replace(hour=23, minute=30, second=0, microsecond=0)
        await make_saved(user, "Late call", started)  # 23:30 UTC is 05:00 the next day in India (+05:30)
        page = await client.get("/history/analytics")
        hours = table(page.text, "chart-hours")
        assert hours["05:00\u201306:00"] == 1
        assert sum(hours.values()) == 1
        local_day = started.astimezone(ZoneInfo("Asia/Kolkata")).date()
        assert table(page.text, "chart-days")[f"{local_day:%a, %b %-d}"] == 1
        assert "Times in Asia/Kolkata" in page.text

        client.cookies.set("tz", "Not/AZone")  # an unknown zone is UTC, never an error
        page = await client.get("/history/analytics")
        assert page.status_code == 200
        assert table(page.text, "chart-hours")["23:00\u201300:00"] == 1


async def test_ten_thousand_conversations(app_server: AppServer) -> None:
    async with person(app_server) as (client, user):
        async with connection() as conn:
            await conn.execute(
                """
                INSERT INTO chat_session (id, room_name, owner, system_prompt, started_at, ended_at, title,
                                          last_activity_at, last_seq, end_reason, search_doc)
                SELECT id, 'chat-' || replace(id::text, '-', ''), $1, '', t, t + (n % 50) * interval '1 minute',
                       'Topic ' || (n % 7), t, n % 9, 'new_chat', to_tsvector('english', 'Topic ' || (n % 7))
                FROM (SELECT gen_random_uuid() AS id, n, now() - n * interval '17 minutes' AS t
                      FROM generate_series(1, 10000) AS n) AS s
                """,
                user.id,
            )
            await conn.execute(
                """
                INSERT INTO utterance (session, seq, item_id, role, text, created_at)
                SELECT id, r.seq, 'item-' || r.seq, r.role,
                       CASE WHEN r.role = 'agent' THEN 'Happy to help.'
                            WHEN last_seq % 2 = 0 THEN 'Gardening tomatoes'
                            ELSE 'Gardening roses' END, started_at
                FROM chat_session, (VALUES (1, 'user'), (2, 'agent')) AS r(seq, role) WHERE owner = $1
                """,
                user.id,
            )
        stats = await analytics(user.id, ZoneInfo("UTC"))
        assert stats.conversations == 10_000
        assert stats.messages == sum(n % 9 for n in range(1, 10_001))
        assert sum(stats.hours) == sum(stats.durations) == 10_000
        # 17-minute steps: the last 30 days hold every conversation started in them
        assert sum(p.conversations for p in stats.days) == sum(
            (datetime.now(UTC) - timedelta(minutes=17 * n)).date() >= stats.days[0].start for n in range(1, 10_001)
        )
        topics = {t.lexeme: t.conversations for t in stats.topics}
        assert topics["garden"] == TOPIC_CONVERSATIONS  # topics count the newest conversations only
        tomatoes = sum(n % 9 % 2 == 0 for n in range(1, TOPIC_CONVERSATIONS + 1))  # the newest are n = 1, 2, ...
        assert (topics["tomato"], topics["rose"]) == (tomatoes, TOPIC_CONVERSATIONS - tomatoes)
        assert "help" not in topics  # the agent's words are not the user's topics
        page = await client.get("/history/analytics")
        assert page.status_code == 200
        assert 'data-testid="total-conversations">10,000<' in page.text


async def test_someone_elses_conversations_never_count(app_server: AppServer) -> None:
    other = await make_user()
    await make_saved(other, "Secret plans", datetime.now(UTC) - timedelta(hours=1))
    me = await make_user()
    mine = await analytics(me.id, ZoneInfo("UTC"))
    assert mine.conversations == 0
    assert mine.topics == []


async def test_topics_follow_a_save_and_a_delete_although_the_server_caches_them(app_server: AppServer) -> None:
    async with person(app_server) as (client, user):
        now = datetime.now(UTC)
        await make_saved(user, "Sailing", now - timedelta(hours=3), [("user", "Sailing lessons")])
        first = table((await client.get("/history/analytics")).text, "chart-topics")
        assert set(first) == {"sailing (in 1 conversation)", "lessons (in 1 conversation)"}
        assert table((await client.get("/history/analytics")).text, "chart-topics") == first  # served from cache

        volcano = await make_saved(user, "Volcanoes", now - timedelta(hours=1), [("user", "Volcanoes of Iceland")])
        after_save = table((await client.get("/history/analytics")).text, "chart-topics")
        assert "volcanoes (in 1 conversation)" in after_save

        await client.get("/history")
        token = str(client.cookies.get("csrftoken"))
        deleted = await client.post(f"/history/{volcano}/delete", headers={"x-csrftoken": token})
        assert deleted.status_code == 303
        after_delete = table((await client.get("/history/analytics")).text, "chart-topics")
        assert after_delete == first
