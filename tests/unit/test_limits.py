"""Limit settings, the 429 message, the argon2 gate and the interim buffer's caps (no server needed)."""

from __future__ import annotations

import asyncio
import threading
import uuid
from datetime import timedelta

import pytest

from chatapp.accounts.limits import HashGate, Overloaded, RateLimited
from chatapp.conversations.buffer import TranscriptBuffer
from chatapp.conversations.events import TranscriptEvent, utcnow
from chatapp.core.settings import Rate, Settings, SettingsError


@pytest.mark.parametrize(
    ("raw", "rate"),
    [
        ("5", Rate(5, 60)),
        ("60/minute", Rate(60, 60)),
        ("20/hour", Rate(20, 3600)),
        ("10/15min", Rate(10, 900)),
        ("3 / 30s", Rate(3, 30)),
        ("1/day", Rate(1, 86400)),
    ],
)
def test_rates_read_from_the_environment(raw: str, rate: Rate) -> None:
    settings = Settings.from_env({"CHATAPP_SECRET_KEY": "k" * 40, "CHATAPP_LOGIN_FAILURE_LIMIT": raw})
    assert settings.login_failure_limit == rate


@pytest.mark.parametrize("raw", ["0", "ten", "5/fortnight", "5/0min", "-1"])
def test_bad_rates_are_refused_with_the_setting_name(raw: str) -> None:
    with pytest.raises(SettingsError, match="CHATAPP_MESSAGE_RATE_LIMIT"):
        Settings.from_env({"CHATAPP_SECRET_KEY": "k" * 40, "CHATAPP_MESSAGE_RATE_LIMIT": raw})


def test_defaults_are_far_above_what_a_person_does() -> None:
    settings = Settings.from_env({"CHATAPP_SECRET_KEY": "k" * 40})
    assert settings.message_rate_limit == Rate(60, 60)
    assert settings.dictation_rate_limit == Rate(600, 60)
    assert settings.new_chat_rate_limit == Rate(20, 60)
    assert settings.auth_rate_limit == Rate(10, 60)
    assert settings.signup_rate_limit == Rate(20, 3600)
    assert settings.login_failure_limit == Rate(10, 900)


def test_the_429_says_how_long_to_wait() -> None:
    exc = RateLimited("Too many attempts.", 41.2)
    assert exc.status_code == 429
    assert exc.detail == "Too many attempts. Try again in 42 seconds."
    assert exc.headers == {"Retry-After": "42"}
    assert RateLimited("Too many attempts.", 0).detail == "Too many attempts. Try again in 1 second."
    assert RateLimited("Too many attempts.", 900).detail == "Too many attempts. Try again in 15 minutes."


async def test_the_hash_gate_bounds_concurrent_work_and_refuses_after_the_wait() -> None:
    gate = HashGate(concurrency=1, wait=0.3)
    release = threading.Event()
    started = threading.Event()

    def slow() -> str:
        started.set()
        release.wait(5)
        return "done"

    first = asyncio.create_task(gate.run(slow))
    await asyncio.to_thread(started.wait, 5)
    with pytest.raises(Overloaded) as refused:
        await gate.run(lambda: "never")
    assert refused.value.status_code == 503
    assert refused.value.headers == {"Retry-After": "2"}
    # A waiter that gets the slot within the wait is served.
    waiter = asyncio.create_task(gate.run(lambda: "served"))
    await asyncio.sleep(0.01)
    release.set()
    assert await first == "done"
    assert await waiter == "served"
    assert await gate.run(lambda: "free again") == "free again"


def interim(conversation_id: uuid.UUID, item_id: str, seconds: int = 0) -> TranscriptEvent:
    return TranscriptEvent(
        conversation_id=conversation_id,
        item_id=item_id,
        role="user",
        text=f"words of {item_id}",
        final=False,
        interrupted=False,
        timestamp=utcnow() + timedelta(seconds=seconds),
    )


def test_interims_per_conversation_are_capped_dropping_the_oldest() -> None:
    buffer = TranscriptBuffer(max_per_conversation=3, max_total=100)
    cid = uuid.uuid4()
    for n in range(5):
        assert buffer.apply_interim(interim(cid, f"item-{n}", n))
    assert [e.item_id for e in buffer.pending(cid)] == ["item-2", "item-3", "item-4"]
    # Updating an item already pending does not count as another one.
    assert buffer.apply_interim(interim(cid, "item-2", 10))
    assert [e.item_id for e in buffer.pending(cid)] == ["item-3", "item-4", "item-2"]
    assert buffer.total() == 3
    buffer.finish(cid, "item-3")
    assert buffer.total() == 2
    buffer.forget(cid)
    assert buffer.total() == 0


def test_interims_in_total_are_capped_refusing_new_items() -> None:
    buffer = TranscriptBuffer(max_per_conversation=10, max_total=4)
    first, second, third = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    for n in range(2):
        assert buffer.apply_interim(interim(first, f"a-{n}"))
        assert buffer.apply_interim(interim(second, f"b-{n}"))
    assert not buffer.apply_interim(interim(third, "c-0"))
    assert buffer.pending(third) == []
    assert third not in buffer.conversations()
    assert buffer.apply_interim(interim(first, "a-0", 5))  # an update of a pending item still lands
    buffer.finish(first, "a-1")
    assert buffer.apply_interim(interim(third, "c-0"))
    assert buffer.total() == 4


def test_hashing_bounds_come_from_the_environment() -> None:
    settings = Settings.from_env(
        {"CHATAPP_SECRET_KEY": "k" * 40, "CHATAPP_HASH_CONCURRENCY": "3", "CHATAPP_HASH_WAIT_SECONDS": "0.5"}
    )
    assert (settings.hash_concurrency, settings.hash_wait_seconds) == (3, 0.5)
    with pytest.raises(SettingsError, match="CHATAPP_HASH_CONCURRENCY"):
        Settings.from_env({"CHATAPP_SECRET_KEY": "k" * 40, "CHATAPP_HASH_CONCURRENCY": "0"})
