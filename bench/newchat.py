"""New Chat: the server time of POST /conversations/new for a conversation of 500 utterances.

Target from issue 25: p99 within 1.5x of the bare save SQL's (the median of 3 rounds), with the in-process agent
(offline model), over 200 runs. Baseline, in the
same run on the same database: the bare SQL statements the save needs, in one transaction with asyncpg, against a
similar 500-utterance conversation (and, beside it, every statement the whole request issues). The baseline's
statements are checked against PostgreSQL's own log of the app's requests in one warm-up run.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import math
import random
import re
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlencode

import asyncpg
import httpx

from bench.kit.cpu import CpuMeter
from bench.kit.http import HttpConnection, HttpReply, ingest_body
from bench.kit.machine import BenchEnv, env_float
from bench.kit.profile import profiled
from bench.kit.server import CHAT_PANEL_ID, AppServer, cookie_header, ingest_auth, open_chat, running_app, signup
from bench.kit.statements import (
    BEGIN,
    COMMIT,
    SESSION_READ,
    StatementLog,
    describe_statements,
    login_session_row,
    not_background,
    sql_key,
    statement_facts,
    statement_log,
    statement_mismatch,
)
from bench.kit.tables import Report, Row, ms, times, verdict
from bench.kit.text import sentence
from bench.kit.timing import LoopLag, percentile
from chatapp.accounts import session_store
from chatapp.conversations import queries
from chatapp.conversations.agent_access import room_name_for
from chatapp.conversations.events import TranscriptEvent
from chatapp.conversations.hub import NOTIFY_MANY_SQL
from chatapp.conversations.ownership import CLAIM, LEASE_SECONDS, ORPHANS, RELEASE, RENEW
from chatapp.conversations.service import make_title

T = TypeVar("T")

RUNS = int(env_float("BENCH_NEWCHAT_RUNS", 200))
UTTERANCES = int(env_float("BENCH_NEWCHAT_UTTERANCES", 500))
WARMUP = 3  # runs before the measured ones: first template renders, plan caches, agent imports
# Target (issue 25): New Chat's p99 within this ratio of its bare save SQL's, the median over ROUNDS rounds (the
# measured runs in ROUNDS consecutive thirds; within each, app and baseline alternate run by run).
SAVE_RATIO_TARGET = 1.5
ROUNDS = int(env_float("BENCH_ROUNDS", 3))
INGEST_BATCH = 100  # the ingest API's largest batch
GREETING_TIMEOUT = 5.0
QUIET_SECONDS = 0.5  # the logged run waits this long without a live event before each request
HEALTHZ_PER_RUN = 3
STREAM_TIMEOUT = httpx.Timeout(30.0, read=None)
RECENT_LIMIT = 10  # queries.recent_saved's default: the sidebar's length
NEW_CHAT_POST = "POST /conversations/new"
INTERIM_POST = "ingest POST of 1 interim"
GREETING = "Hi! I'm your travel-planning assistant. Where would you like to go, and when?"

# --- the bare SQL of the request, imported from conversations/queries.py ---------------------------------------------
# Each run still checks that the app sends exactly these (PostgreSQL's statement log of one New Chat) and that the
# baseline's search document is the one queries.refresh_search_doc writes.

LOCK_USER = queries.LOCK_USER_SQL
SELECT_ACTIVE = queries.SELECT_ACTIVE_SQL
LOCK_CONVERSATION = queries.LOCK_CONVERSATION_SQL
SELECT_EXISTING = queries.SELECT_EXISTING_SQL
INSERT_FINALS = queries.INSERT_FINALS_SQL
UPDATE_LAST_SEQ = queries.UPDATE_LAST_SEQ_SQL
FIRST_USER_TEXT = queries.FIRST_USER_TEXT_SQL
MARK_ENDED = queries.MARK_ENDED_SQL
REFRESH_SEARCH_DOC = queries.REFRESH_SEARCH_DOC_SQL
INSERT_ACTIVE = queries.INSERT_ACTIVE_SQL
RECENT_SAVED = queries.RECENT_SAVED_SQL
LIST_UTTERANCES = queries.LIST_UTTERANCES_SQL
# The New Chat button's rate-limit counter (accounts/limits.py: one atomic upsert per request, keyed by user).
RATE_LIMIT_HIT = session_store._HIT
# After the commit, overlapping: the tabs are told (the sidebar, then one NOTIFY statement for the flushed interim,
# the sidebar and 'ended'), and the next conversation's agent lease is claimed (then its agent starts).
NOTIFY_MANY = NOTIFY_MANY_SQL
CLAIM_LEASE = CLAIM
# After the reply (not the request's): the old agent winds down and its lease is released; the tab's stream ends.
RELEASE_LEASE = RELEASE
STREAM_SLOT_RELEASE = "DELETE FROM stream_slot WHERE id = $1"
# asyncpg runs refresh_search_doc's attempt in a savepoint, each named afresh: compared by what they are.
SAVEPOINT, RELEASE_SAVEPOINT = "SAVEPOINT", "RELEASE SAVEPOINT"
_SAVEPOINT_NAME = re.compile(r"^(SAVEPOINT|RELEASE SAVEPOINT) __asyncpg_savepoint_\w+__;$")
# queries.touch: a new conversation's agent streams its greeting as interims right after New Chat starts it, and the
# first interim notes activity. The app does that on its own while the request finishes; it is not the request's.
TOUCH = queries.TOUCH_SQL
# Untimed: fill the baseline's conversation the way five ingest batches would have.
FILL_CONVERSATION = """
    INSERT INTO utterance (session, seq, item_id, role, text, is_final, interrupted, created_at)
    SELECT $1, u.seq, 'base-' || u.seq, u.role, u.text, true, false, now()
    FROM unnest($2::int[], $3::text[], $4::text[]) AS u(seq, role, text)
"""
VERIFY_SAVED = """
    SELECT s.ended_at IS NOT NULL AS ended, s.end_reason, s.last_seq, s.title, s.search_doc IS NOT NULL AS has_doc,
           (SELECT count(*) FROM utterance u WHERE u.session = s.id) AS stored,
           (SELECT count(*) FROM utterance u WHERE u.session = s.id AND u.interrupted) AS interrupted
    FROM chat_session s WHERE s.id = $1
"""

# ConversationService._end_active for New Chat, in order: the statements between BEGIN and COMMIT.
SAVE = (
    ("lock user", LOCK_USER),
    ("select active", SELECT_ACTIVE),
    ("lock conversation", LOCK_CONVERSATION),
    ("select existing items", SELECT_EXISTING),
    ("insert flushed interim + last_seq", INSERT_FINALS),
    ("select first user text", FIRST_USER_TEXT),
    ("mark ended + title", MARK_ENDED),
    ("savepoint", SAVEPOINT),
    ("refresh_search_doc", REFRESH_SEARCH_DOC),
    ("release savepoint", RELEASE_SAVEPOINT),
    ("insert next conversation", INSERT_ACTIVE),
)
# The baseline's timed steps: the store functions New Chat's save calls (bench/newchat.py Baseline.save).
SAVE_STEPS = (
    "lock user + select active",
    "store the flushed interim",
    "select first user text",
    "mark ended + title + search document",
    "insert next conversation",
)
# POST /conversations/new: the login session read, the rate-limit counter, the save's transaction, then the sidebar
# (recent_saved: sent to every tab and shown in the new panel) and the NOTIFY, overlapping the next agent's lease
# claim (AFTER_COMMIT: their order varies).
AFTER_COMMIT = (RECENT_SAVED, NOTIFY_MANY, CLAIM_LEASE)
REQUEST = (
    SESSION_READ,
    RATE_LIMIT_HIT,
    BEGIN,
    *(sql for _, sql in SAVE),
    COMMIT,
    *AFTER_COMMIT,
)
# Statements sent meanwhile that are not the request's: the old agent's lease released after the reply, the tab's
# stream slot freed as its stream ends, the new agent's greeting noting activity (touch), and the lease keeper's
# heartbeat (renew, look for orphans) every second.
NOT_THE_REQUEST = (RELEASE_LEASE, STREAM_SLOT_RELEASE, TOUCH, RENEW, ORPHANS)
# An ingest POST of finals (bearer token, no login session) to an open conversation: one autocommitted statement
# that stores them and sends their events (queries.store_open_finals).
STORE_OPEN_FINALS = queries.STORE_OPEN_FINALS_SQL
INGEST = (STORE_OPEN_FINALS,)
# The run's first batch holds the conversation's first user message: that POST also tells the person's tabs to
# list the conversation in the sidebar (the saved ones, the current one's title, one NOTIFY).
CURRENT_TITLED = queries.CURRENT_TITLED_SQL
INGEST_FIRST_USER_MESSAGE = (STORE_OPEN_FINALS, RECENT_SAVED, CURRENT_TITLED, NOTIFY_MANY)
NAMES = {
    sql_key(sql): name
    for name, sql in (
        ("session read", SESSION_READ),
        ("BEGIN", BEGIN),
        ("COMMIT", COMMIT),
        *SAVE,
        ("insert finals", INSERT_FINALS),  # at New Chat, the flushed interim
        ("store and notify finals", STORE_OPEN_FINALS),  # an ingest POST
        ("recent_saved", RECENT_SAVED),
        ("current conversation's title", CURRENT_TITLED),
        ("list_utterances", LIST_UTTERANCES),
        ("touch", TOUCH),
        ("rate-limit counter", RATE_LIMIT_HIT),
        ("NOTIFY", NOTIFY_MANY),
        ("claim agent lease", CLAIM_LEASE),
        ("release agent lease", RELEASE_LEASE),
    )
}


def savepoints_named_alike(statements: Sequence[str]) -> list[str]:
    """The logged statements with asyncpg's savepoint names left out (each savepoint gets a new one)."""
    return [_SAVEPOINT_NAME.sub(r"\1", s) for s in statements]


def new_chat_mismatch(observed: Sequence[str]) -> str:
    """Why the baseline does not run what the app sent for New Chat ("" when it does): in order up to COMMIT,
    then the overlapping AFTER_COMMIT statements in any order. The new agent may already have sent its first
    statuses and words (more NOTIFY statements, the same SQL) by the time the reply is read: those are not counted."""
    expected = [sql_key(sql) for sql in REQUEST]
    head = len(expected) - len(AFTER_COMMIT)
    seen = list(observed)
    tail = sorted(seen[head:])
    while tail.count(sql_key(NOTIFY_MANY)) > 1:
        tail.remove(sql_key(NOTIFY_MANY))
    if seen[:head] == expected[:head] and tail == sorted(expected[head:]):
        return ""
    return statement_mismatch(NEW_CHAT_POST, seen, REQUEST, NAMES)


def conversation_texts(count: int) -> list[tuple[str, str]]:
    """(role, text) for seq 1..count: the agent's greeting, then user and agent turns; the last one is the
    user's unfinished sentence (an interim at save time)."""
    rng = random.Random(500)
    texts = [("agent", GREETING)]
    for seq in range(2, count + 1):
        role = "user" if seq % 2 == 0 else "agent"
        texts.append((role, sentence(rng, 4, 24) if role == "user" else sentence(rng, 12, 48)))
    return texts


# --- the baseline ------------------------------------------------------------------------------------------------


@dataclass
class Baseline:
    """A second user whose conversations the bare SQL saves, one per run, on one warm asyncpg connection."""

    conn: asyncpg.Connection
    user_id: uuid.UUID
    session_key: str
    conversation_id: uuid.UUID
    texts: list[tuple[str, str]]
    title: str
    last_saved: uuid.UUID | None = None

    @classmethod
    async def create(cls, dsn: str, texts: list[tuple[str, str]]) -> Baseline:
        conn = await asyncpg.connect(dsn)
        tag = uuid.uuid4().hex[:8]
        email = f"bench-newchat-baseline-{tag}@example.com"
        user_id = await conn.fetchval(
            "INSERT INTO user_account (email, display_name, password_hash) VALUES ($1, 'Bench Baseline', 'x') "
            "RETURNING id",
            email,
        )
        session_key = await login_session_row(conn, f"bench-baseline-{tag}", user_id, email, "Bench Baseline")
        conversation_id = uuid.uuid4()
        await conn.execute(
            "INSERT INTO chat_session (id, room_name, owner, system_prompt) VALUES ($1, $2, $3, '')",
            conversation_id,
            room_name_for(conversation_id),
            user_id,
        )
        first_user = next(text for role, text in texts if role == "user")
        return cls(conn, user_id, session_key, conversation_id, texts, make_title(first_user))

    async def fill(self) -> None:
        """Untimed: the active conversation gets every utterance but the last (which is flushed at save)."""
        stored = self.texts[:-1]
        async with self.conn.transaction():
            await self.conn.execute(
                FILL_CONVERSATION,
                self.conversation_id,
                list(range(1, len(stored) + 1)),
                [role for role, _ in stored],
                [text for _, text in stored],
            )
            await self.conn.execute(UPDATE_LAST_SEQ, self.conversation_id, len(stored))

    async def save(self, run: int) -> tuple[float, float, dict[str, float]]:
        """The request as bare SQL (REQUEST): returns (save transaction seconds, whole-request SQL seconds,
        seconds per statement)."""
        conn = self.conn
        steps: dict[str, float] = {}

        async def step(name: str, call: Callable[[], Awaitable[Any]]) -> Any:
            started = time.perf_counter()
            result = await call()
            steps[name] = time.perf_counter() - started
            return result

        cid, uid = self.conversation_id, self.user_id
        role, text = self.texts[-1]
        item = f"base-interim-{run}"
        started = time.perf_counter()
        await step("session read", lambda: conn.fetchval(SESSION_READ, self.session_key))
        limit_key = f"rate_limit:new_chat:user:{uid}"
        await step("rate-limit counter", lambda: conn.fetchrow(RATE_LIMIT_HIT, limit_key, 60.0))
        save_started = time.perf_counter()
        async with conn.transaction():
            # The app's own store functions on this bare connection: what New Chat's save runs, without HTTP.
            await step("lock user + select active", lambda: queries.lock_active(conn, uid))
            flushed = TranscriptEvent(cid, item, role, text, final=True, interrupted=True)  # type: ignore[arg-type]
            await step("store the flushed interim", lambda: queries.store_finals(conn, cid, [flushed]))
            await step("select first user text", lambda: queries.first_user_text(conn, cid))
            await step(
                "mark ended + title + search document", lambda: queries.mark_ended(conn, cid, "new_chat", self.title)
            )
            following = await step("insert next conversation", lambda: queries.insert_active(conn, uid, ""))
        if following is None:
            raise RuntimeError(f"baseline save {run}: the user already had an active conversation")
        next_id = following.id
        save_seconds = time.perf_counter() - save_started
        # One after the other (the app overlaps the claim with the other two): a baseline no faster than the app's
        # SQL could be. NOTIFY on a channel of the bench's own, with as many payloads as the app sends.
        await step("recent_saved (tabs and panel)", lambda: conn.fetch(RECENT_SAVED, uid, RECENT_LIMIT))
        payloads = [f"bench-{run}-{n}" for n in range(3)]
        await step("NOTIFY", lambda: conn.execute(NOTIFY_MANY, "bench_newchat", payloads))
        holder = f"bench-{self.session_key[:8]}"
        await step("claim agent lease", lambda: conn.fetchrow(CLAIM_LEASE, next_id, holder, LEASE_SECONDS))
        full_seconds = time.perf_counter() - started
        # Untimed, at once: no app process may ever adopt this user's conversation when the lease runs out.
        await conn.execute(RELEASE_LEASE, next_id)
        saved = await conn.fetchrow(VERIFY_SAVED, cid)
        if not (saved["ended"] and saved["last_seq"] == len(self.texts) and saved["has_doc"]):
            raise RuntimeError(f"baseline save {run} did not save: {dict(saved)}")
        self.last_saved, self.conversation_id = cid, next_id
        return save_seconds, full_seconds, steps

    async def search_doc_differs(self) -> str:
        """Whether the last saved conversation's search document differs from what the app's own
        queries.refresh_search_doc writes for it ("" when the same); the app's UPDATE is rolled back."""
        if self.last_saved is None:
            return "no baseline save to compare"
        doc = "SELECT search_doc::text FROM chat_session WHERE id = $1"
        ours = await self.conn.fetchval(doc, self.last_saved)
        transaction = self.conn.transaction()
        await transaction.start()
        try:
            await queries.refresh_search_doc(self.conn, self.last_saved)
            apps = await self.conn.fetchval(doc, self.last_saved)
        finally:
            await transaction.rollback()
        if ours is None or ours != apps:
            return "the baseline's search document differs from queries.refresh_search_doc's for the same conversation"
        return ""

    async def close(self) -> None:
        await self.conn.close()


# --- the app -----------------------------------------------------------------------------------------------------


@dataclass
class Tab:
    """The chat tab's SSE stream on the conversation being filled and saved, as the browser keeps it open: it
    receives every final and, at New Chat, the flushed interim, the history list and the 'ended' control."""

    client: httpx.AsyncClient
    messages: int = 0
    controls: int = 0
    errors: list[str] = field(default_factory=list)
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    last_event: float = 0.0  # time.monotonic() of the last event received

    async def quiet(self, for_seconds: float = QUIET_SECONDS, timeout: float = 10.0) -> None:
        """Wait until no event has arrived for `for_seconds` (the agent has finished what it was saying)."""
        deadline = time.monotonic() + timeout
        while True:
            still = self.last_event + for_seconds - time.monotonic()
            if still <= 0 or time.monotonic() >= deadline:
                return
            await asyncio.sleep(still)

    async def open(self, conversation_id: uuid.UUID, last_seq: int) -> None:
        """Connect after `last_seq` (what the page already shows), as a tab that has seen everything so far."""
        await self.close()
        self.messages = self.controls = 0
        self.connected.clear()
        self.ended.clear()
        self.task = asyncio.create_task(self._read(conversation_id, last_seq))
        await asyncio.wait_for(self.connected.wait(), timeout=10)

    async def _read(self, conversation_id: uuid.UUID, last_seq: int) -> None:
        from httpx_sse import aconnect_sse

        path = f"/conversations/{conversation_id}/stream"
        try:
            async with aconnect_sse(self.client, "GET", path, headers={"Last-Event-ID": str(last_seq)}) as source:
                if source.response.status_code != 200:
                    self.errors.append(f"stream {conversation_id}: HTTP {source.response.status_code}")
                    return
                self.connected.set()
                async for event in source.aiter_sse():
                    self.last_event = time.monotonic()
                    if event.event == "message":
                        self.messages += 1
                    elif event.event == "control":
                        self.controls += 1
        except httpx.HTTPError as exc:
            self.errors.append(f"stream {conversation_id}: {type(exc).__name__}: {exc}")
        finally:
            self.connected.set()
            self.ended.set()

    async def wait_for_messages(self, count: int, timeout: float = 10.0) -> bool:
        deadline = time.perf_counter() + timeout
        while self.messages < count and not self.ended.is_set():
            if time.perf_counter() > deadline:
                return False
            await asyncio.sleep(0.005)
        return self.messages >= count

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None


@dataclass
class AppUser:
    """The signed-up user whose active conversation is filled through the ingest API and saved by New Chat."""

    app: AppServer
    conversation_id: uuid.UUID
    cookie: str
    csrf: str
    http: HttpConnection
    ingest: HttpConnection
    texts: list[tuple[str, str]]
    tab: Tab
    greeting_waits: list[float] = field(default_factory=list)
    missing_greetings: int = 0
    probe: Probe | None = None  # set for the one run whose requests PostgreSQL's statement log records

    async def _send(self, what: str, call: Callable[[], Awaitable[T]], ignore: Sequence[str] = ()) -> T:
        if self.probe is None:
            return await call()
        # The logged run's requests go out while the agent is silent, so the log holds the request's statements
        # rather than those of a reply being streamed and stored meanwhile (the measured runs do not wait).
        await self.tab.quiet()
        return await self.probe.send(what, call, ignore)

    async def wait_for_greeting(self, db: asyncpg.Connection) -> int:
        """The new conversation's agent greets first (streamed by the offline model); wait for its final so
        each saved conversation has exactly the same content. Returns the conversation's last_seq."""
        started = time.perf_counter()
        deadline = started + GREETING_TIMEOUT
        while True:
            last_seq = int(await db.fetchval("SELECT last_seq FROM chat_session WHERE id = $1", self.conversation_id))
            if last_seq >= 1:
                self.greeting_waits.append(time.perf_counter() - started)
                return last_seq
            if time.perf_counter() > deadline:
                self.missing_greetings += 1
                return last_seq
            await asyncio.sleep(0.02)

    async def fill(self, run: int, last_seq: int) -> None:
        """Ingest the rest of the conversation in batches of 100 finals, then one interim (the user is still
        talking when they press New Chat), with the agent's bearer token."""
        path = f"/api/conversations/{self.conversation_id}/events"
        auth = {"Authorization": ingest_auth(self.conversation_id)}
        finals = [
            {"item_id": f"run{run}-{seq}", "role": role, "text": text, "final": True}
            for seq, (role, text) in enumerate(self.texts[:-1], start=1)
            if seq > last_seq
        ]
        for start in range(0, len(finals), INGEST_BATCH):
            batch = finals[start : start + INGEST_BATCH]
            post = functools.partial(self.ingest.post_json, path, ingest_body(batch), auth)
            what = f"ingest POST of {len(batch)} finals"
            status, reply = await (self._send(what, post) if start == 0 else post())
            if status != 200 or json.loads(reply).get("stored") != len(batch):
                raise RuntimeError(f"ingest for run {run} failed: {status} {reply[:300]!r}")
        role, text = self.texts[-1]
        interim = [{"item_id": f"run{run}-interim", "role": role, "text": text, "final": False}]
        post = functools.partial(self.ingest.post_json, path, ingest_body(interim), auth)
        status, reply = await self._send(INTERIM_POST, post)
        if status != 200:
            raise RuntimeError(f"interim for run {run} failed: {status} {reply[:300]!r}")

    async def healthz(self) -> float:
        started = time.perf_counter()
        reply = await self.http.request("GET", "/healthz")
        elapsed = time.perf_counter() - started
        if reply.status != 200:
            raise RuntimeError(f"/healthz answered {reply.status}")
        return elapsed

    async def new_chat(self) -> tuple[float, int, str, bytes]:
        """The browser's New Chat click: an htmx form POST. Returns (round trip, status, HX-Trigger, body)."""
        body = urlencode({"conversation_id": str(self.conversation_id)}).encode()
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "HX-Request": "true",
            "HX-Current-URL": f"{self.app.url}/",
            "HX-Target": "chat-panel",
            "HX-Trigger": "new-chat-button",
            "x-csrftoken": self.csrf,
            "Cookie": self.cookie,
        }

        async def post() -> tuple[float, HttpReply]:
            started = time.perf_counter()
            reply = await self.http.request("POST", "/conversations/new", body, headers)
            return time.perf_counter() - started, reply

        elapsed, reply = await self._send(NEW_CHAT_POST, post, ignore=NOT_THE_REQUEST)
        return elapsed, reply.status, reply.headers.get("hx-trigger", ""), reply.body


@dataclass
class Probe:
    """The statements the app sent for each request of one run (the last warm-up), from PostgreSQL's log."""

    log: StatementLog
    seen: dict[str, list[str]] = field(default_factory=dict)

    async def send(self, what: str, call: Callable[[], Awaitable[T]], ignore: Sequence[str]) -> T:
        result, seen = await self.log.capture(call, ignore)
        self.seen[what] = savepoints_named_alike(not_background(seen))
        return result

    def mismatches(self) -> list[str]:
        """Requests for which the baseline does not run exactly the statements the app sent."""
        found = [new_chat_mismatch(self.seen.get(NEW_CHAT_POST, []))]
        found += [
            statement_mismatch(what, seen, INGEST_FIRST_USER_MESSAGE, NAMES)
            for what, seen in self.seen.items()
            if "finals" in what  # only a run's first batch is logged
        ]
        return [problem for problem in found if problem]


def check_saved(row: Any, expected: int) -> str:
    """Why a saved conversation is not what New Chat should have written ("" when it is)."""
    if row is None:
        return "conversation row is gone"
    problems = []
    if not row["ended"] or row["end_reason"] != "new_chat":
        problems.append(f"ended={row['ended']} reason={row['end_reason']}")
    if row["last_seq"] != expected or row["stored"] != expected:
        problems.append(f"last_seq={row['last_seq']} stored={row['stored']} (expected {expected})")
    if row["interrupted"] != 1:
        problems.append(f"{row['interrupted']} interrupted utterances (expected the 1 flushed interim)")
    if not row["title"] or not row["has_doc"]:
        problems.append(f"title={row['title']!r} search_doc={'set' if row['has_doc'] else 'missing'}")
    return "; ".join(problems)


@dataclass
class Results:
    app: list[float] = field(default_factory=list)
    base_save: list[float] = field(default_factory=list)
    base_full: list[float] = field(default_factory=list)
    base_steps: dict[str, list[float]] = field(default_factory=dict)
    healthz: list[float] = field(default_factory=list)
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    probe: Probe | None = None
    disagreements: list[str] = field(default_factory=list)


async def run(env: BenchEnv) -> Report:
    report = Report(f"newchat: POST /conversations/new for a conversation of {UTTERANCES} utterances ({RUNS} runs)")
    import httpx_sse  # noqa: F401  (imported here, not during the first measured run)

    texts = conversation_texts(UTTERANCES)
    client = httpx.AsyncClient(timeout=30.0)
    db = await asyncpg.connect(env.dsn)
    baseline = await Baseline.create(env.dsn, texts)
    try:
        async with running_app(env) as app:
            client.base_url = httpx.URL(app.url)
            setup_started = time.perf_counter()
            await signup(client, f"bench-newchat-{uuid.uuid4().hex[:8]}@example.com", "Bench NewChat")
            user = AppUser(
                app,
                await open_chat(client),
                cookie_header(client),
                client.cookies["csrftoken"],
                HttpConnection(app.host, app.port),
                HttpConnection(app.host, app.port),
                texts,
                Tab(
                    httpx.AsyncClient(base_url=app.url, cookies=client.cookies, timeout=httpx.Timeout(30.0, read=None))
                ),
            )
            report.notes.append(f"setup (sign up, open the chat): {time.perf_counter() - setup_started:.1f} s")
            results = Results()
            meter = CpuMeter({"app": app.pid}, env.dsn)
            try:
                for run_index in range(WARMUP - 1):
                    await _one_run(run_index, False, user, baseline, db, results)
                # The last warm-up run's requests with PostgreSQL's statement log on (not measured: logging
                # every statement costs time).
                async with statement_log(env) as log:
                    user.probe = Probe(log) if log is not None else None
                    await _one_run(WARMUP - 1, False, user, baseline, db, results)
                    results.probe, user.probe = user.probe, None
                await meter.start()
                measured_started = time.perf_counter()
                # BENCH_PYSPY_DIR: the measured runs on the app (fills and greetings too: filter the stacks by
                # the handler, e.g. `grep new_chat`, before summarising).
                with LoopLag() as lag:
                    async with profiled(app.pid, "newchat"):
                        for run_index in range(WARMUP, WARMUP + RUNS):
                            await _one_run(run_index, True, user, baseline, db, results)
                cpu = await meter.stop()
                measured = time.perf_counter() - measured_started
                results.disagreements = results.probe.mismatches() if results.probe else []
                if difference := await baseline.search_doc_differs():
                    results.disagreements.append(difference)
            finally:
                await user.tab.close()
                await user.tab.client.aclose()
                await user.http.close()
                await user.ingest.close()
            _report(report, results, user, cpu, lag, measured, app.log_problems())
    finally:
        await baseline.close()
        await db.close()
        await client.aclose()
    return report


async def _one_run(
    run_index: int, measured: bool, user: AppUser, baseline: Baseline, db: asyncpg.Connection, results: Results
) -> None:
    last_seq = await user.wait_for_greeting(db)
    await user.tab.open(user.conversation_id, last_seq)
    await user.fill(run_index, last_seq)
    # Every final and the interim reached the tab, so the app is idle again when New Chat is timed.
    if not await user.tab.wait_for_messages(UTTERANCES - last_seq):
        raise RuntimeError(f"run {run_index}: the tab got {user.tab.messages} of {UTTERANCES - last_seq} messages")
    await baseline.fill()
    floor = [await user.healthz() for _ in range(HEALTHZ_PER_RUN)]
    # Alternate which goes first, so neither always runs right after the other's writes.
    if run_index % 2 == 0:
        app_seconds, status, _trigger, body = await user.new_chat()
        base_save, base_full, steps = await baseline.save(run_index)
    else:
        base_save, base_full, steps = await baseline.save(run_index)
        app_seconds, status, _trigger, body = await user.new_chat()

    saved_id = user.conversation_id
    match = CHAT_PANEL_ID.search(body.decode(errors="replace"))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(user.tab.ended.wait(), timeout=5)
    problem = ""
    if status != 200:
        problem = f"HTTP {status}: {body[:200]!r}"
    elif 'Saved · <a href="/history/'.encode() not in body:
        problem = "no 'Saved · Open' line in the sidebar"
    elif not match or uuid.UUID(match.group(1)) == saved_id:
        problem = "the reply does not show a new conversation"
    elif not user.tab.ended.is_set() or not user.tab.controls:
        problem = f"the open tab was not told (stream ended: {user.tab.ended.is_set()}, controls: {user.tab.controls})"
    else:
        problem = check_saved(await db.fetchrow(VERIFY_SAVED, saved_id), UTTERANCES)
    if match and uuid.UUID(match.group(1)) != saved_id:
        user.conversation_id = uuid.UUID(match.group(1))
    if problem:
        results.failures.append(f"run {run_index}: {problem}")
        if user.conversation_id == saved_id:
            raise RuntimeError(f"New Chat run {run_index} failed and left no next conversation: {problem}")
    if not measured:
        return
    if not problem:
        results.ok += 1
    results.app.append(app_seconds)
    results.base_save.append(base_save)
    results.base_full.append(base_full)
    for name, seconds in steps.items():
        results.base_steps.setdefault(name, []).append(seconds)
    results.healthz += floor


def _rounds_row(label: str, app: list[float], save: list[float]) -> Row:
    """p99 ÷ the save SQL's p99 in each round (a consecutive share of the runs), judged on the median."""
    size = max(1, len(app) // ROUNDS)
    rounds = [(app[i : i + size], save[i : i + size]) for i in range(0, size * ROUNDS, size)]
    ratios = [percentile(a, 99) / percentile(b, 99) for a, b in rounds if a and b]
    ratio = statistics.median(ratios) if ratios else math.nan
    return Row(
        f"{label}, p99, median of {len(ratios)} rounds of {size} runs (their ratios {', '.join(map(times, ratios))})",
        ms(statistics.median(percentile(a, 99) for a, _ in rounds if a)),
        f"save SQL {ms(statistics.median(percentile(b, 99) for _, b in rounds if b))}",
        times(ratio),
        f"≤ {SAVE_RATIO_TARGET:g}x save SQL",
        verdict(ratio <= SAVE_RATIO_TARGET),
    )


def _report(
    report: Report,
    results: Results,
    user: AppUser,
    cpu: dict[str, float],
    lag: LoopLag,
    measured: float,
    problems: list[str],
) -> None:
    app, save, full = results.app, results.base_save, results.base_full

    def row(name: str, p: float, target: float | None = None) -> Row:
        value, base = percentile(app, p), percentile(save, p)
        return Row(
            name,
            ms(value),
            f"save SQL {ms(base)}",
            times(value / base),
            f"< {ms(target)}" if target else "—",
            verdict(value < target) if target else "—",
        )

    label = f"POST /conversations/new round trip, {UTTERANCES} utterances"
    p50_full, p99_full = percentile(full, 50), percentile(full, 99)
    probe = results.probe
    report.rows += [
        row(f"{label}, p50", 50),
        row(f"{label}, p99", 99),
        _rounds_row(label, app, save),
        row(f"{label}, max", 100),
        Row(
            "same, p50 / p99 beside every SQL statement the request issues",
            f"{ms(percentile(app, 50))} / {ms(percentile(app, 99))}",
            f"request SQL {ms(p50_full)} / {ms(p99_full)}",
            f"{times(percentile(app, 50) / p50_full)} / {times(percentile(app, 99) / p99_full)}",
        ),
        Row(
            "saves verified (200, toast, tab told, 500 utterances with the flushed interim, title, search doc)",
            f"{results.ok} / {len(app)}",
            "—",
            "—",
            "all",
            verdict(results.ok == len(app) and not results.failures),
        ),
        Row(
            "app vs SQL disagreements (statements logged for the app's requests; search_doc)",
            str(len(results.disagreements)) if probe else f"{len(results.disagreements)} (statements not logged)",
            "—",
            "—",
            "0",
            verdict(not results.disagreements),
        ),
    ]
    floor50, floor99 = percentile(results.healthz, 50), percentile(results.healthz, 99)
    steps = {name: percentile(values, 50) for name, values in results.base_steps.items()}
    in_save = sum(steps.get(name, 0.0) for name in SAVE_STEPS)
    refresh_step = "mark ended + title + search document"
    refresh = steps.get(refresh_step, float("nan"))
    slowest = sorted(((v, k) for k, v in steps.items() if k != refresh_step), reverse=True)[:3]
    save_trips = len(SAVE) + 2  # and BEGIN, COMMIT
    report.notes += [
        f"round trip = the bench's light HTTP client on loopback, request written → reply read; it includes the HTTP "
        f"and auth floor: GET /healthz (one SELECT 1) took p50 {ms(floor50)} / p99 {ms(floor99)} on the same "
        f"connection ({len(results.healthz)} samples), so the server's own time is about round trip - "
        f"{ms(floor50)} (p50 ≈ {ms(percentile(app, 50) - floor50)})",
        f"each run: the user's active conversation gets {UTTERANCES} utterances — the agent's real greeting, then "
        f"{UTTERANCES - 2} finals through the ingest API in batches of {INGEST_BATCH} with the agent's bearer token, "
        "then 1 interim still pending in the server's buffer — while the chat tab's SSE stream is open and has "
        "received all of it; then New Chat is posted as htmx does (HX-Request, x-csrftoken, conversation_id) and "
        f"the tab's stream must get the 'ended' control; {WARMUP} warm-up runs not counted",
        f"save SQL = the app's own store functions New Chat's save calls (lock_active, store_finals, "
        f"first_user_text, mark_ended with refresh_search_doc, insert_active: {len(SAVE)} statements, {save_trips} "
        f"round trips with BEGIN and COMMIT) in one transaction on one warm asyncpg connection, against a second "
        "user's conversation with the same "
        f"{UTTERANCES} texts; request SQL = every statement of the request: "
        + describe_statements([sql_key(sql) for sql in REQUEST], NAMES),
        _statements_note(probe),
        f"save SQL per store function, p50: mark_ended with refresh_search_doc {ms(refresh)} "
        f"({100 * refresh / in_save:.0f}% of the save's time; tsvector_agg over the stored tsv of {UTTERANCES} "
        "utterances), then " + ", ".join(f"{name} {ms(value)}" for value, name in slowest),
        f"waiting for each new conversation's greeting (offline model, streamed): p50 "
        f"{ms(percentile(user.greeting_waits, 50))}; greetings missing after {GREETING_TIMEOUT:g} s: "
        f"{user.missing_greetings}",
        f"measured phase {measured:.0f} s; CPU during it: {CpuMeter.describe(cpu)}; bench event-loop lag "
        f"{lag.describe()}",
    ]
    report.notes += results.disagreements
    if results.failures:
        report.notes.append(f"{len(results.failures)} failed run(s), first: {results.failures[0]}")
    if cpu.get("other", 0.0) > 25:
        report.notes.append(
            f"WARNING: other processes used {cpu['other']:.0f}% CPU during the measurements; the numbers are "
            "slower than on a quiet machine"
        )
    report.notes.append(
        f"the app logged {len(problems)} error line(s), first: {problems[0][:300]}"
        if problems
        else "the app logged no errors"
    )


def _statements_note(probe: Probe | None) -> str:
    """What PostgreSQL logged for the probe run's requests, and whether the baseline runs just that."""
    if probe is None:
        return (
            "statements per request not checked against the app: that needs the bench's embedded database (it "
            "switches on log_statement around one run's requests)"
        )
    seen = "; ".join(f"{what}: {describe_statements(statements, NAMES)}" for what, statements in probe.seen.items())
    new_chat = ", ".join(statement_facts(probe.seen.get(NEW_CHAT_POST, [])))
    ingest = [s for what, statements in probe.seen.items() if what != NEW_CHAT_POST for s in statements]
    session = "read" if any("http_session" in s for s in ingest) else "do not read"
    same = "" if probe.mismatches() else "; the bench's SQL is exactly these statements"
    return (
        f"statements PostgreSQL logged (log_statement = 'all') for the requests of warm-up run {WARMUP}, each one "
        f"round trip: {seen} (not counted: the new agent's own '{NAMES[sql_key(TOUCH)]}' of its conversation as "
        "its greeting streams in, and what follows the reply: the old agent's lease released, the tab's stream "
        f"slot freed) — New Chat: {new_chat}; the ingest POSTs (bearer token) {session} a login "
        f"session{same}"
    )
