"""The live-event wire format: one msgspec tagged union, built by every producer and matched by every consumer.

Events travel as JSON through the hub's channel (PostgreSQL NOTIFY, payloads under 8000 bytes), so the wire
names stay short: the tag is `k`, and each field has a one- or two-letter `rename`. Decoding with the union
type validates an event whole (ids, roles, states, timestamps), so a consumer never sees a half-formed one.
`origin` is the publishing process (hub.PROCESS_ID): it tells a process its own events from the others'.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

import msgspec

from chatapp.conversations.events import AgentState, Role, TranscriptEvent

# A bound on the parts of one event (a final of MAX_TEXT_LENGTH characters needs some 25): a forged part
# must not make a process reserve room for millions.
MAX_PARTS = 1000
# Python name -> wire name, for every event's fields (a name not listed travels as it is).
WIRE_NAMES = {
    "origin": "o",
    "conversation_id": "c",
    "user_id": "u",
    "seq": "s",
    "item_id": "i",
    "role": "r",
    "reason": "r",
    "text": "t",
    "interrupted": "x",
    "created_at": "ts",
    "timestamp": "ts",
    "late": "lt",
    "superseded": "sp",
    "state": "st",
    "detail": "d",
    "data": "d",
    "session": "sh",
}


class _Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="k", omit_defaults=True, rename=WIRE_NAMES):
    origin: str = ""


class Final(_Event, frozen=True, tag="final"):
    """A stored utterance. `late` marks a late completion (or a reply Retry just superseded): streams replace that
    bubble although its seq is behind their cursor."""

    conversation_id: uuid.UUID
    seq: int
    item_id: str
    role: Role
    text: str
    interrupted: bool
    created_at: datetime
    late: bool = False
    superseded: bool = False


class Interim(_Event, frozen=True, tag="interim"):
    """The whole text so far of an utterance in progress; replaces the one before."""

    conversation_id: uuid.UUID
    item_id: str
    role: Role
    text: str
    timestamp: datetime

    @classmethod
    def of(cls, event: TranscriptEvent) -> Interim:
        return cls(event.conversation_id, event.item_id, event.role, event.text, event.timestamp)

    def transcript_event(self) -> TranscriptEvent:
        return TranscriptEvent(self.conversation_id, self.item_id, self.role, self.text, False, False, self.timestamp)


class State(_Event, frozen=True, tag="state"):
    """What the agent is doing (the status line)."""

    conversation_id: uuid.UUID
    state: AgentState
    detail: str = ""


class Ended(_Event, frozen=True, tag="ended"):
    """The conversation was saved or deleted: its tabs move on, and its agent stops wherever it runs."""

    conversation_id: uuid.UUID
    user_id: uuid.UUID
    reason: str


class Recent(msgspec.Struct, frozen=True):
    """One saved conversation in the sidebar."""

    id: uuid.UUID
    title: str | None
    pinned: bool = False


class History(_Event, frozen=True, tag="history"):
    """The user's conversations changed (saved, renamed, or the active one got its title): every tab redraws its
    sidebar, the active conversation (`current`) on top."""

    user_id: uuid.UUID
    recent: list[Recent] = []
    current: Recent | None = None


class Reopened(_Event, frozen=True, tag="reopened"):
    """A saved conversation is active again: every process's buffer takes its interims again."""

    conversation_id: uuid.UUID


class Titled(_Event, frozen=True, tag="titled"):
    """The model titled a conversation: every tab of the user shows the new title (the chat header of the tab
    that shows it; the sidebar follows from the History event published with it)."""

    conversation_id: uuid.UUID
    user_id: uuid.UUID
    text: str


class Logout(_Event, frozen=True, tag="logout"):
    """A login session ended: its streams (`session` is accounts.sessions.session_tag) end in every process."""

    user_id: uuid.UUID
    session: str


class AgentText(_Event, frozen=True, tag="agent.text"):
    """Typed text for the agent that runs in process `to` (see ownership.py); never shown to streams."""

    conversation_id: uuid.UUID
    to: str
    text: str


class AgentInterrupt(_Event, frozen=True, tag="agent.interrupt"):
    """The Stop button, for the agent that runs in process `to`."""

    conversation_id: uuid.UUID
    to: str


class AgentRetry(_Event, frozen=True, tag="agent.retry"):
    """Retry, for the agent that runs in process `to`: it replaces the agent's last reply (see supervisor.py)."""

    conversation_id: uuid.UUID
    to: str


class ListenerChange(_Event, frozen=True, tag="listener"):
    """Local only: this process's LISTEN connection was lost (`up` False) or is back."""

    up: bool


class Wake(_Event, frozen=True, tag="wake"):
    """Local only: wakes a stream that is being ended, so it sees `overflowed` at once."""


class Ping(_Event, frozen=True, tag="ping"):
    """Local only: time for a stream's keep-alive ping (one timer for all of a process's streams, Hub.keep_streams)."""


class Part(_Event, frozen=True, tag="part"):
    """Piece `n` of `of` of one encoded event too large for a NOTIFY (see hub.encode)."""

    id: str
    n: Annotated[int, msgspec.Meta(ge=0)]
    of: Annotated[int, msgspec.Meta(ge=1, le=MAX_PARTS)]
    data: str


Command = AgentText | AgentInterrupt | AgentRetry
LiveEvent = (
    Final
    | Interim
    | State
    | Ended
    | Reopened
    | History
    | Titled
    | Logout
    | AgentText
    | AgentInterrupt
    | AgentRetry
    | ListenerChange
    | Wake
    | Ping
)
Wire = LiveEvent | Part

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Wire)

DecodeError = msgspec.DecodeError  # raised by decode for malformed JSON and for an invalid event alike


def encode(event: Wire) -> bytes:
    return _encoder.encode(event)


def decode(raw: bytes | str) -> Wire:
    return _decoder.decode(raw)


def with_origin(event: LiveEvent, origin: str) -> LiveEvent:
    return msgspec.structs.replace(event, origin=origin)
