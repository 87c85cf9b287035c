"""The login-session store's deletes (Piccolo's query builder): by key, by namespace, and expired rows."""

from __future__ import annotations

import uuid

from chatapp.accounts.session_store import PostgresStore


async def test_delete_all_takes_the_namespace_literally(db: str) -> None:
    """A namespace's LIKE wildcards (_ and %) match only themselves: a look-alike namespace keeps its rows."""
    tag = uuid.uuid4().hex[:8]
    # Unescaped, "a_b%<tag>:%" would match "axbz<tag>:k" (_ is any character, % any text).
    mine, lookalike = PostgresStore(f"a_b%{tag}"), PostgresStore(f"axbz{tag}")
    for store in (mine, lookalike):
        await store.set("k", b"v", expires_in=60)
    await mine.delete_all()
    assert await mine.get("k") is None
    assert await lookalike.get("k") == b"v"


async def test_delete_and_delete_expired(db: str) -> None:
    store = PostgresStore(f"t{uuid.uuid4().hex[:8]}")
    await store.set("gone", b"1", expires_in=60)
    await store.set("kept", b"2", expires_in=60)
    await store.delete("gone")
    assert await store.get("gone") is None
    assert await store.get("kept") == b"2"
    await store.set("old", b"3", expires_in=-1)  # already expired
    assert await store.delete_expired() >= 1
    assert not await store.exists("old")
    assert await store.get("kept") == b"2"
