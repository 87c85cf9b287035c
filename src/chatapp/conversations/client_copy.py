"""Which entries of a client's copy of a transcript the server lacks, and where they go: matched by order.

A client (the original design's `saveCurrentSession`) posts the conversation as it saw it, each message
stamped with the browser's clock, which may be off by seconds or minutes. So times never decide a match:
an entry named by an id the server already has is matched by that id, and the rest of the two sequences of
(role, text) are aligned (difflib's longest matching blocks, one to one and in order, so a repeated "yes"
maps to its own counterpart). An unmatched entry goes right after the server utterance its nearest matched predecessor
maps to (at the start when none does), stamped between that neighbour's time and the next one's, so the
transcript's order is also the order of its times. The browser's own time is not kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from difflib import SequenceMatcher

from chatapp.conversations.events import TranscriptEvent
from chatapp.conversations.queries import StoredUtterance


def merge_client_copy(
    client: Sequence[TranscriptEvent],
    server: Sequence[StoredUtterance],
    started: datetime,
    now: datetime,
    period_start: int = 0,
) -> list[StoredUtterance | TranscriptEvent]:
    """The transcript as it should stand: the server's utterances in order, and the client's entries the server
    lacks in their places, with times from their server neighbours (`started` before the first, `now` after
    the last). In a reopened conversation the current period starts at server index `period_start`: what the
    client had goes into it, never among an earlier period's utterances (those were saved already)."""
    matched = _match(client, server)
    missing: dict[int, list[TranscriptEvent]] = {}  # server index -> what goes right after it (-1: before all)
    anchor, seen = -1, {u.item_id for u in server}
    for index, event in enumerate(client):
        if index in matched:
            anchor = matched[index]
        elif event.item_id not in seen:  # the same entry twice in one copy is one entry
            seen.add(event.item_id)
            missing.setdefault(max(anchor, period_start - 1), []).append(event)
    merged: list[StoredUtterance | TranscriptEvent] = []
    for after in range(-1, len(server)):
        if after >= 0:
            merged.append(server[after])
        if events := missing.get(after):
            low = server[after].created_at if after >= 0 else min(started, server[0].created_at if server else now)
            high = max(low, server[after + 1].created_at if after + 1 < len(server) else now)
            step = (high - low) / (len(events) + 1)
            merged += [replace(e, timestamp=low + step * (n + 1)) for n, e in enumerate(events)]
    return merged


def _key(role: str, text: str) -> tuple[str, str]:
    """What must be equal for two entries to be the same message: the role and the words (spacing and case
    aside)."""
    return role, " ".join(text.split()).casefold()


def _match(client: Sequence[TranscriptEvent], server: Sequence[StoredUtterance]) -> dict[int, int]:
    """Client index -> server index of every entry the two share: by id first (an id the server has, including
    the ids an earlier save of this copy gave its entries), then the rest by aligning (role, text) in order, one
    to one (difflib's longest matching blocks)."""
    by_id = {u.item_id: n for n, u in enumerate(server)}
    matched = {i: by_id[e.item_id] for i, e in enumerate(client) if e.item_id in by_id}
    theirs = [i for i in range(len(client)) if i not in matched]
    ours = [n for n in range(len(server)) if n not in set(matched.values())]
    aligner = SequenceMatcher(
        None,
        [_key(client[i].role, client[i].text) for i in theirs],
        [_key(server[n].role, server[n].text) for n in ours],
        autojunk=False,
    )
    for block in aligner.get_matching_blocks():
        matched.update((theirs[block.a + k], ours[block.b + k]) for k in range(block.size))
    return matched
