"""The one product agent; it knows only its conversation, so any runtime (in-process, LiveKit) can run it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from livekit.agents import Agent, llm

from chatapp.agents.runtime import ConversationInfo

# Stored roles are the app's ("user"/"agent"); the model speaks "user"/"assistant".
_ROLES: dict[str, Literal["user", "assistant"]] = {
    "user": "user",
    "agent": "assistant",
    "assistant": "assistant",
}


def history_context(history: Iterable[tuple[str, str]]) -> llm.ChatContext:
    """Earlier turns as a chat context, so a continued conversation picks up where it left off."""
    ctx = llm.ChatContext.empty()
    for role, text in history:
        model_role = _ROLES.get(role)
        if model_role is not None and text.strip():
            ctx.add_message(role=model_role, content=text)
    return ctx


def greeting_instructions(user_display_name: str = "") -> str:
    """What the agent is told when it speaks first in a new conversation."""
    who = f" The person's name is {user_display_name}." if user_display_name.strip() else ""
    return (
        "Greet the person warmly in one or two short sentences, say you can help plan a trip, "
        f"and ask where they would like to go.{who}"
    )


class TravelAgent(Agent):
    """A friendly travel-planning assistant whose instructions are the conversation's system prompt."""

    def __init__(self, *, instructions: str, chat_ctx: llm.ChatContext | None = None) -> None:
        super().__init__(instructions=instructions, chat_ctx=chat_ctx)

    @classmethod
    def for_conversation(cls, conversation: ConversationInfo) -> TravelAgent:
        """The agent for `conversation`, seeded with its earlier turns when it is being continued."""
        chat_ctx = history_context(conversation.history) if conversation.history else None
        return cls(instructions=conversation.system_prompt, chat_ctx=chat_ctx)
