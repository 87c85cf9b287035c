"""Which language model the agent talks to: the configured OpenAI-compatible one, else the offline demo."""

from __future__ import annotations

from typing import Any

from livekit.agents import llm
from livekit.agents.types import NOT_GIVEN
from livekit.plugins import openai

from chatapp.agents.offline import OfflineResponder
from chatapp.core.settings import Settings

# Local OpenAI-compatible servers (Ollama, llama.cpp, vLLM) need no key, but the OpenAI client insists on one.
_NO_KEY = "not-needed"


def build_llm(settings: Settings, *, page_says_offline: bool = False) -> llm.LLM[Any]:
    """A new LLM for one conversation (the caller owns it and closes it). `page_says_offline`: the chat page
    already tells that the offline demo answers (the in-process agent's), so its greeting need not say it too."""
    if not settings.llm_configured:
        return OfflineResponder(mention_offline=not page_says_offline)
    return openai.LLM(
        model=settings.llm_model,
        base_url=settings.llm_base_url or NOT_GIVEN,
        api_key=settings.llm_api_key or _NO_KEY,
    )
