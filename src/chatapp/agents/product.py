"""The one product agent; it knows only its conversation, so any runtime (in-process, LiveKit) can run it."""

from __future__ import annotations

from collections.abc import AsyncIterable, Iterable
from typing import Any, Literal

from livekit.agents import Agent, ModelSettings, llm

from chatapp.conversations.agent_runtime import ConversationInfo

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


def merge_system_messages(chat_ctx: llm.ChatContext) -> llm.ChatContext:
    """A copy of `chat_ctx` where each run of consecutive system messages is one message.

    Bookkeeping items the provider never sees (agent config updates, handoffs) do not break a run.
    """
    merged = chat_ctx.copy()
    items: list[llm.ChatItem] = []
    system_at: int | None = None  # index in `items` of the system message the run so far is folded into
    for item in merged.items:
        if isinstance(item, llm.ChatMessage) and item.role == "system" and system_at is not None:
            last = items[system_at]
            assert isinstance(last, llm.ChatMessage)
            text = "\n\n".join(t for t in (last.text_content, item.text_content) if t)
            items[system_at] = last.model_copy(update={"content": [text]})
            continue
        if isinstance(item, llm.ChatMessage):
            system_at = len(items) if item.role == "system" else None
        elif item.type in ("function_call", "function_call_output"):
            system_at = None
        items.append(item)
    merged.items = items
    return merged


def greeting_instructions(user_display_name: str = "") -> str:
    """What the agent is told when it speaks first in a new conversation."""
    who = f" The person's name is {user_display_name}." if user_display_name.strip() else ""
    return (
        "Greet the person warmly in one or two short sentences, say briefly what you can help with, "
        f"and ask what they would like to do.{who}"
    )


class TravelAgent(Agent):
    """A friendly travel-planning assistant whose instructions are the conversation's system prompt."""

    def __init__(self, *, instructions: str, chat_ctx: llm.ChatContext | None = None) -> None:
        super().__init__(instructions=instructions, chat_ctx=chat_ctx)

    async def llm_node(
        self, chat_ctx: llm.ChatContext, tools: list[llm.Tool], model_settings: ModelSettings
    ) -> AsyncIterable[Any]:
        """The default model call on a context whose adjacent system messages are joined into one.

        `generate_reply(instructions=...)` (the greeting) appends a second system message after the agent's
        instructions, and many local models' chat templates reject two system messages in a row.
        """
        async for chunk in Agent.default.llm_node(self, merge_system_messages(chat_ctx), tools, model_settings):
            yield chunk

    @classmethod
    def for_conversation(cls, conversation: ConversationInfo) -> TravelAgent:
        """The agent for `conversation`, seeded with its earlier turns when it is being continued."""
        chat_ctx = history_context(conversation.history) if conversation.history else None
        return cls(instructions=conversation.system_prompt, chat_ctx=chat_ctx)
