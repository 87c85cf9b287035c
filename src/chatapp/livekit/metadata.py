"""What the app tells the agent worker at dispatch: the one contract between the app and `chatapp agent`."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

# Dispatch metadata travels through LiveKit; keep it well under its size limits. Earlier turns beyond this
# are dropped oldest first (the transcript itself stays in the app's database).
MAX_HISTORY_CHARS = 16_000
MAX_HISTORY_TURNS = 40


class BadMetadata(ValueError):
    """The dispatch metadata is not ours or is incomplete; the worker refuses the job."""


@dataclass(frozen=True)
class DispatchMetadata:
    """The conversation an agent job serves and where (and with which bearer token) it reports."""

    conversation_id: uuid.UUID
    ingest_url: str
    ingest_token: str = field(repr=False)
    system_prompt: str
    user_identity: str = ""
    user_name: str = ""
    history: tuple[tuple[str, str], ...] = ()
    # The last history item is a user message nobody answered (typed while the room had no agent, as after a
    # LiveKit server restart): answer it. Never a reopened conversation's old last question (the app decides).
    answer_last: bool = False

    def to_json(self) -> str:
        return json.dumps(
            {
                "v": 1,
                "conversation_id": str(self.conversation_id),
                "ingest_url": self.ingest_url,
                "ingest_token": self.ingest_token,
                "system_prompt": self.system_prompt,
                "user_identity": self.user_identity,
                "user_name": self.user_name,
                "history": [list(turn) for turn in trim_history(self.history)],
                "answer_last": self.answer_last,
            },
            ensure_ascii=False,
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, raw: str) -> DispatchMetadata:
        try:
            data: Any = json.loads(raw)
            history = tuple((str(role), str(text)) for role, text in data.get("history", []))
            return cls(
                conversation_id=uuid.UUID(data["conversation_id"]),
                ingest_url=str(data["ingest_url"]),
                ingest_token=str(data["ingest_token"]),
                system_prompt=str(data.get("system_prompt", "")),
                user_identity=str(data.get("user_identity", "")),
                user_name=str(data.get("user_name", "")),
                history=history,
                answer_last=data.get("answer_last") is True,
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BadMetadata(f"unusable dispatch metadata ({type(exc).__name__})") from None


def trim_history(history: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """The most recent turns that fit the metadata budget, oldest first."""
    kept: list[tuple[str, str]] = []
    size = 0
    for role, text in reversed(history[-MAX_HISTORY_TURNS:]):
        size += len(text)
        if size > MAX_HISTORY_CHARS:
            break
        kept.append((role, text))
    return tuple(reversed(kept))
