"""The agent worker's delivery of one conversation's transcript events to the app's ingest endpoint.

One ordered queue, sent in batches of at most 100 by one task. Nothing can hold the queue for long:
- 408, 429, 5xx and network errors are retried with exponential backoff for up to `retry_for` seconds (2 min)
  per batch; then that batch is dropped (an error with the counts) and the next one goes.
- 404 and 410: the conversation is gone (or past its late-final window): this and every later event dropped.
- 401 and 403: the app rejected the bearer token: the conversation's events are dropped, logged once as an error.
- 422: the app refused the batch's content: it is split and sent event by event, so only the bad event is
  dropped (logged with its item id), not the good ones around it.
- any other 4xx is a bug on our side (logged, dropped).
Retries can deliver a batch twice; the app ignores a final whose item id it already has. Interims superseded by
a later event for the same item are dropped before sending.

It knows nothing of sessions or assembly: `put` events and it delivers them. Logs carry counts and statuses,
never transcript text or the bearer token.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from chatapp.conversations.events import Role, utcnow

log = logging.getLogger(__name__)

MAX_BATCH = 100  # the ingest endpoint's limit
_RETRYABLE = {408, 429}
_GONE = {404, 410}
_TOKEN_REJECTED = {401, 403}


@dataclass(frozen=True, slots=True)
class WireEvent:
    """One transcript event as the ingest endpoint takes it."""

    item_id: str
    role: Role
    text: str
    final: bool
    interrupted: bool = False
    timestamp: datetime = field(default_factory=utcnow)

    def to_json(self) -> dict[str, Any]:
        return {
            "item_id": self.item_id,
            "role": self.role,
            "text": self.text,
            "final": self.final,
            "interrupted": self.interrupted,
            "timestamp": self.timestamp.isoformat(),
        }


class IngestClient:
    """Posts one conversation's events to its ingest URL with its bearer token, retrying as the module says."""

    def __init__(
        self,
        ingest_url: str,
        token: str,
        *,
        conversation_id: uuid.UUID | str = "",
        client: httpx.AsyncClient | None = None,
        batch_size: int = MAX_BATCH,
        initial_backoff: float = 0.2,
        max_backoff: float = 5.0,
        request_timeout: float = 10.0,
        retry_for: float = 120.0,
    ) -> None:
        self._url = ingest_url
        self._headers = {"Authorization": f"Bearer {token}"}
        self._cid = str(conversation_id)
        self._client = client
        self._owns_client = client is None
        self._batch_size = max(1, min(batch_size, MAX_BATCH))
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff
        self._request_timeout = request_timeout
        self._retry_for = retry_for
        self._queue: deque[WireEvent] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._sender: asyncio.Task[None] | None = None
        self.closed = False
        self._gone = False
        self.delivered = 0
        self.dropped = 0
        self.attempts = 0

    @property
    def pending(self) -> int:
        return len(self._queue)

    def put(self, event: WireEvent) -> None:
        """Queue `event` (synchronous: callers are session event handlers)."""
        if self._gone:
            self.dropped += 1
            return
        last = self._queue[-1] if self._queue else None
        if last is not None and not last.final and not event.final and last.item_id == event.item_id:
            self._queue[-1] = event  # a newer interim of the same utterance replaces the one still waiting
        else:
            self._queue.append(event)
        self._idle.clear()
        self._wake.set()

    def start(self) -> None:
        """Start the sending task (needs a running event loop); events queued before are sent first."""
        if self._sender is None:
            if self._client is None:
                self._client = httpx.AsyncClient(timeout=self._request_timeout)
            self._sender = asyncio.create_task(self._send_forever(), name=f"ingest-{self._cid}")

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far is acknowledged or dropped; False on timeout."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def aclose(self, timeout: float = 30.0) -> bool:
        """Deliver what is queued (up to `timeout`), then stop. True if all of it arrived."""
        if self.closed:
            return not self._queue
        self.start()
        delivered = await self.flush(timeout)
        if not delivered:
            log.error(
                "%d transcript event(s) for conversation %s could not be delivered before shutdown",
                len(self._queue),
                self._cid,
            )
        self.closed = True
        self._wake.set()
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
        if self._owns_client and self._client is not None:
            await self._client.aclose()
        return delivered

    async def _send_forever(self) -> None:
        while not self.closed:
            if not self._queue:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = self._take_batch()
            await self._deliver(batch)

    def _take_batch(self) -> list[WireEvent]:
        """The oldest events, without interims that a later queued event for the same item supersedes."""
        last = {event.item_id: index for index, event in enumerate(self._queue)}
        kept = [e for i, e in enumerate(self._queue) if e.final or last[e.item_id] == i]
        batch, rest = kept[: self._batch_size], kept[self._batch_size :]
        self._queue = deque(rest)
        return batch

    async def _deliver(self, batch: list[WireEvent]) -> None:
        """Send one batch until acknowledged, refused, or out of retry time; never raises for the app's answers."""
        assert self._client is not None
        body = {"events": [event.to_json() for event in batch]}
        delay = self._initial_backoff
        failures = 0
        give_up_at = time.monotonic() + self._retry_for
        while True:
            self.attempts += 1
            retry_after: float | None = None
            try:
                response = await self._client.post(self._url, json=body, headers=self._headers)
            except httpx.HTTPError as exc:
                reason = type(exc).__name__
            else:
                status = response.status_code
                if 200 <= status < 300:
                    self.delivered += len(batch)
                    if failures:
                        log.info("ingest for conversation %s recovered after %d retries", self._cid, failures)
                    return
                if status in _GONE:
                    log.warning(
                        "conversation %s is gone (HTTP %d): dropping %d event(s) and any later",
                        self._cid,
                        status,
                        len(batch),
                    )
                    self._drop(batch, gone=True)
                    return
                if status in _TOKEN_REJECTED:
                    log.error(
                        "ingest rejected the token for conversation %s (HTTP %d): dropping %d event(s) and "
                        "every later one; its transcript is not being stored",
                        self._cid,
                        status,
                        len(batch) + len(self._queue),
                    )
                    self._drop(batch, gone=True)
                    return
                if status == 422 and len(batch) > 1:
                    log.warning(
                        "ingest refused a batch of %d event(s) for %s (HTTP 422); sending them one by one",
                        len(batch),
                        self._cid,
                    )
                    for event in batch:
                        if not self._gone:
                            await self._deliver([event])
                        else:
                            self._drop([event])
                    return
                if status < 500 and status not in _RETRYABLE:
                    log.error(
                        "ingest refused %d event(s) for %s: HTTP %d; dropped (first item %s, %s, %s)",
                        len(batch),
                        self._cid,
                        status,
                        batch[0].item_id,
                        batch[0].role,
                        "final" if batch[0].final else "interim",
                    )
                    self._drop(batch)
                    return
                reason = f"HTTP {status}"
                retry_after = _retry_after(response)
            failures += 1
            pause = retry_after if retry_after is not None else delay * random.uniform(0.8, 1.2)
            if time.monotonic() + pause > give_up_at:
                log.error(
                    "ingest for conversation %s still failing (%s) after %d attempt(s) over %.0f s: dropped %d "
                    "event(s) (%d final), moving on to the next",
                    self._cid,
                    reason,
                    failures,
                    self._retry_for,
                    len(batch),
                    sum(event.final for event in batch),
                )
                self._drop(batch)
                return
            level = logging.WARNING if failures == 1 else logging.DEBUG
            log.log(level, "ingest for conversation %s failed (%s); retrying", self._cid, reason)
            await asyncio.sleep(pause)
            delay = min(delay * 2, self._max_backoff)

    def _drop(self, batch: list[WireEvent], *, gone: bool = False) -> None:
        self.dropped += len(batch)
        if gone:
            self._gone = True
            self.dropped += len(self._queue)
            self._queue.clear()


def _retry_after(response: httpx.Response) -> float | None:
    raw = response.headers.get("retry-after", "")
    return min(float(raw), 60.0) if raw.isdigit() else None
