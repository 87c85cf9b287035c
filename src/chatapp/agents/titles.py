"""The language model's side of titles: one short request after a conversation's first exchange (see
conversations/titles.py for when, and who wins). Only with a configured OpenAI-compatible model; the offline demo
keeps the first message as the title."""

from __future__ import annotations

from livekit.agents import APIConnectOptions, llm
from livekit.agents.types import NOT_GIVEN
from livekit.plugins import openai

from chatapp.conversations.titles import TitleModel
from chatapp.core.settings import Settings

INSTRUCTIONS = (
    "You name conversations for a history list. Reply with a title of at most six words for the conversation "
    "below, in its language: no quotes, no final full stop, nothing else."
)
# What the model is shown of each side, and how much of its answer is read: a title is a few words.
EXCERPT_CHARS = 1500
MAX_ANSWER_CHARS = 400
_NO_KEY = "not-needed"  # local OpenAI-compatible servers need no key, but the client insists on one


def model_titles(settings: Settings) -> TitleModel | None:
    """The title request for the configured model; None with the offline demo model."""
    if not settings.llm_configured:
        return None
    model = openai.LLM(
        model=settings.llm_model,
        base_url=settings.llm_base_url or NOT_GIVEN,
        api_key=settings.llm_api_key or _NO_KEY,
    )

    async def title(asked: str, answered: str) -> str:
        ctx = llm.ChatContext.empty()
        ctx.add_message(role="system", content=INSTRUCTIONS)
        exchange = f"The person wrote:\n{asked[:EXCERPT_CHARS]}\n\nThe assistant answered:\n{answered[:EXCERPT_CHARS]}"
        ctx.add_message(role="user", content=exchange)
        said: list[str] = []
        size = 0
        options = APIConnectOptions(max_retry=0, timeout=20.0)
        async with model.chat(chat_ctx=ctx, conn_options=options) as stream:
            async for chunk in stream:
                if chunk.delta is not None and chunk.delta.content:
                    said.append(chunk.delta.content)
                    size += len(chunk.delta.content)
                    if size >= MAX_ANSWER_CHARS:
                        break
        return "".join(said)[:MAX_ANSWER_CHARS]

    return title
