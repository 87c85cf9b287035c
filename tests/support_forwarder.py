"""Driving the real agent forwarder in tests: a feeder of committed messages and a forwarder for one app."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
from livekit.agents.llm import ChatMessage

from chatapp.conversations.agent_access import ingest_token
from chatapp.livekit.forwarder import TranscriptForwarder
from tests.support import SECRET_KEY

FINALS = 200


RATE = 50.0  # finals per second


@dataclass
class Feeder:
    """Feeds the real forwarder `FINALS` committed messages, alternating user and agent, at `RATE` per second,
    as a session's `conversation_item_added` would; `sent` is every item id the forwarder was given."""

    forwarder: TranscriptForwarder
    sent: list[str] = field(default_factory=list)
    texts: dict[str, str] = field(default_factory=dict)

    async def run(self, count: int = FINALS, started: asyncio.Event | None = None, at: int = 0) -> None:
        for n in range(count):
            role = "user" if n % 2 == 0 else "assistant"
            text = f"final number {n} of the chaos test"
            message = ChatMessage(role=role, content=[text])
            self.forwarder.on_item_added(message)
            item_id = f"{'user' if role == 'user' else 'agent'}-{message.id}"
            self.sent.append(item_id)
            self.texts[item_id] = text
            if started is not None and n == at:
                started.set()
            await asyncio.sleep(1 / RATE)


def forwarder_for(base_url: str, cid: uuid.UUID, client: httpx.AsyncClient | None = None) -> TranscriptForwarder:
    return TranscriptForwarder(
        f"{base_url}/api/conversations/{cid}/events",
        ingest_token(SECRET_KEY, cid),
        conversation_id=cid,
        client=client,
        initial_backoff=0.05,
        max_backoff=0.5,
        request_timeout=5.0,
        retry_for=120.0,
    )


@contextlib.asynccontextmanager
async def forwarding(forwarder: TranscriptForwarder) -> AsyncIterator[TranscriptForwarder]:
    forwarder.start()
    try:
        yield forwarder
    finally:
        await forwarder.aclose(timeout=1)
