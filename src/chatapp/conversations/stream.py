"""The one SSE stream a tab holds: its conversation's transcript and status, plus the user's own events.

On (re)connect it replays every final after the client's cursor from the database, then goes live, so
a dropped connection loses nothing; finals carry their sequence number as the SSE id and are sent once
each, in sequence order. Writers publish after their own commits, so seq N+1 can reach the hub before N
(concurrent requests, or a large final still arriving in NOTIFY parts): a final that skips ahead of the
cursor first fills the gap from the database, and the late N is then a duplicate.
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import AsyncGenerator

from sse_starlette import ServerSentEvent

from chatapp.conversations import queries
from chatapp.conversations.buffer import TranscriptBuffer
from chatapp.conversations.hub import LISTENER_QUEUE_SIZE, Hub, Listener
from chatapp.conversations.live_events import Ended, Final, History, Interim, LiveEvent, Logout, Ping, State, Titled
from chatapp.conversations.stream_slots import StreamSlots
from chatapp.conversations.views import Fragments, MessageView

RETRY_MS = 2000
# Ends that a tab follows to the user's next conversation; after any other it stays, says why, and disconnects.
FOLLOWED = ("new_chat", "api")
# A ping the page's script sees (an SSE comment never reaches it): its watchdog reconnects a silent stream.
PING_EVENT = ServerSentEvent(data="alive", event="ping")
EMPTY: deque[LiveEvent] = deque(maxlen=0)  # shared, never appended to: an idle stream holds no deque of its own


async def conversation_events(
    hub: Hub,
    buffer: TranscriptBuffer,
    fragments: Fragments,
    listener: Listener,
    after: int,
    session: str = "",
    slots: StreamSlots | None = None,
    slot: uuid.UUID | None = None,
) -> AsyncGenerator[ServerSentEvent, None]:
    """The events of `listener`'s conversation after `after`, then live, until the listener is closed.

    `session` names the login session (accounts.sessions.session_tag): its logout ends this stream. `slot`, in
    `slots`, is renewed while the stream runs and given back when it ends. One generator, no context managers:
    each idle stream holds it for its whole life."""
    if slots is not None and slot is not None:
        slots.hold(slot)
    # Listen before reading the replay, so nothing published in between is missed (the cursor dedupes).
    hub.add(listener)
    try:
        conversation_id = listener.conversation_id
        cursor = after
        for utterance in await queries.list_utterances(conversation_id, after_seq=after):
            yield _message(fragments, MessageView.of_utterance(utterance), utterance.seq)
            cursor = utterance.seq
        for interim in buffer.pending(conversation_id):
            yield _message(fragments, MessageView.of_interim(interim), None)
        if (current := hub.agent_states.get(conversation_id)) is not None:
            yield _status(fragments, conversation_id, *current)
        ahead: deque[LiveEvent] = EMPTY  # taken from the inbox already, not yet handled (a deque once needed)
        while not listener.overflowed:
            event = ahead.popleft() if ahead else await listener.get()
            if listener.overflowed:
                return
            match event:
                case Final() if event.conversation_id == conversation_id:
                    seq = event.seq
                    if seq <= cursor:
                        if event.late:  # completes an interrupted bubble: replace it, keep the cursor
                            yield _message(fragments, MessageView.of_event(event), None)
                        continue
                    if seq > cursor + 1:
                        # Every seq below this one is committed already (numbering locks the conversation).
                        for utterance in await queries.list_utterances(conversation_id, after_seq=cursor):
                            yield _message(fragments, MessageView.of_utterance(utterance), utterance.seq)
                            cursor = utterance.seq
                        if seq <= cursor:
                            continue
                    cursor = seq
                    yield _message(fragments, MessageView.of_event(event), cursor)
                case Interim() if event.conversation_id == conversation_id:
                    if ahead is EMPTY:
                        ahead = deque()
                    while not listener.empty() and len(ahead) < LISTENER_QUEUE_SIZE:  # still bounded
                        ahead.append(listener.get_nowait())
                    if not superseded(event, ahead):
                        yield _message(fragments, MessageView.of_event(event), None)
                case State() if event.conversation_id == conversation_id:
                    yield _status(fragments, conversation_id, event.state, event.detail)
                case Ended() if event.conversation_id == conversation_id:
                    yield ServerSentEvent(data=_ended_fragment(fragments, event), event="control")
                    if event.reason not in FOLLOWED:
                        # The tab stays on the ended conversation: its EventSource closes (sse-close) instead of
                        # reconnecting, so no "Reconnecting…" follows the notice (the account may be gone too).
                        yield ServerSentEvent(data="", event="closed")
                    return
                case Logout() if event.session == session:
                    return
                case Titled() if event.conversation_id == conversation_id:
                    title = fragments.block("conversation_title", template="_live.html", title=event.text)
                    yield ServerSentEvent(data=title, event="control")
                case History():
                    yield ServerSentEvent(
                        data=fragments.block("history_list", recent=event.recent, current=event.current, oob=True),
                        event="control",
                    )
                case Ping():
                    yield PING_EVENT
    finally:
        hub.discard(listener)
        if slots is not None and slot is not None:
            slots.release(slot)


def superseded(interim: Interim, ahead: deque[LiveEvent]) -> bool:
    """A newer interim of the same utterance is already waiting: rendering this one (agent Markdown costs
    milliseconds) would only be replaced at once. A stream that falls behind a fast reply thus skips stale
    interims instead of falling further behind; the latest interim before the final is always shown."""
    return any(
        isinstance(e, Interim) and e.conversation_id == interim.conversation_id and e.item_id == interim.item_id
        for e in ahead
    )


def _ended_fragment(fragments: Fragments, event: Ended) -> str:
    """New Chat elsewhere: follow it to the new conversation. Ended for being idle (or the room closing):
    say so and let the person start again, rather than opening agents for a tab nobody is looking at."""
    if event.reason in FOLLOWED:
        return fragments.block("panel_refresh", template="_live.html")
    return fragments.block("panel_saved", template="_live.html", reason=event.reason)


def _message(fragments: Fragments, view: MessageView, seq: int | None) -> ServerSentEvent:
    return ServerSentEvent(data=fragments.message(view), event="message", id=str(seq) if seq else None, retry=RETRY_MS)


def _status(fragments: Fragments, conversation_id: uuid.UUID, state: str, detail: str) -> ServerSentEvent:
    html = fragments.block("agent_status", agent_state=state, agent_detail=detail, conversation_id=conversation_id)
    return ServerSentEvent(data=html, event="status")
