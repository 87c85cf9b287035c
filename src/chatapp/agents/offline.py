"""A built-in, deterministic demo model, so the app is usable end to end before a real LLM is configured."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from typing import Any

from livekit.agents import llm, utils
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, APIConnectOptions, NotGivenOr

OFFLINE_NOTICE = "(I'm the offline demo model — set CHATAPP_LLM_BASE_URL to use a real one.)"
OFF_TOPIC = "I'm the offline demo, so I can't really answer that; configure a model to get real answers."

_GREETINGS = {
    "hi",
    "hello",
    "hey",
    "hiya",
    "howdy",
    "greetings",
    "yo",
    "hola",
    "bonjour",
    "morning",
    "evening",
}
_TRIP_WORDS = {
    "trip", "trips", "travel", "travelling", "traveling", "visit", "visiting", "weekend", "days", "day",
    "week", "weeks", "vacation", "holiday", "holidays", "getaway", "itinerary", "journey", "fly", "flight",
    "go", "going", "tour", "explore",
}  # fmt: skip
# Capitalised words that are not places: sentence openers, pronouns, days and months.
_NOT_PLACES = {
    "I", "I'm", "I'd", "I'll", "I've", "My", "We", "We're", "Our", "The", "A", "An", "Can", "Could",
    "Would", "What", "Where", "When", "How", "Which", "Please", "Thanks", "Thank", "Hi", "Hello", "Hey",
    "Maybe", "And", "But", "Or", "So", "Also", "Let's", "Help", "Plan", "Any", "Is", "Are", "Do", "Does",
    "It", "This", "That",
    "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday", "January", "February",
    "March", "April", "May", "June", "July", "August", "September", "October", "November", "December",
}  # fmt: skip
# Words that keep a question on a travel assistant's topic even without a trip word.
_TOPIC_WORDS = {
    "pack", "packing", "luggage", "budget", "hotel", "hotels", "hostel", "itinerary", "transport", "train",
    "trains", "bus", "visa", "passport", "stay", "sightseeing", "destination", "destinations", "plan",
}  # fmt: skip
_QUESTION_WORDS = {
    "what", "who", "whom", "whose", "when", "why", "how", "which", "is", "are", "was", "were", "does", "do",
    "did", "can", "could", "will", "should", "tell", "explain",
}  # fmt: skip
_SYSTEM = {"system", "developer"}
_FIRST_SENTENCE = re.compile(r"^\s*(.+?[.!?])(?:\s|$)", re.DOTALL)
_YOU_ARE = re.compile(r"^you(?:'re| are)\s+(.+?)[.!?]?$", re.IGNORECASE)
_YOU_VERB = re.compile(r"^you\s+(.+?)[.!?]?$", re.IGNORECASE)
_WORD = re.compile(r"[A-Za-zÀ-ÿ'\u2019-]+")
_NAME = r"[A-ZÀ-Þ][a-zà-ÿ'\u2019-]+"
_PLACE = re.compile(rf"\b({_NAME}(?:\s+(?:de|da|do|del|la|le)?\s*{_NAME})*)")
_CONTRACTION = re.compile(r"['\u2019](d|ll|ve|re|m|s|t)$")
_SENTENCE_END = re.compile(r"(^|[.!?])\s*$")
_DURATION = re.compile(
    r"\b(?:(?:\d+|a|one|two|three|four|five|six|seven|ten)\s+(?:days?|nights?|weeks?)|(?:a\s+)?(?:long\s+)?weekend)\b",
    re.IGNORECASE,
)


def _words(text: str) -> list[str]:
    return [w.lower().strip("'\u2019-") for w in _WORD.findall(text)]


def find_destination(text: str, *, allow_opener: bool = True) -> str | None:
    """The first capitalised run of words that looks like a place ("Lisbon", "New York"), if any.

    A capitalised word opening a sentence is usually just an opener ("Sounds good"), so such a run is only
    used when nothing else matches and `allow_opener` is true (the caller knows the text is about a trip).
    """
    openers: list[str] = []
    for match in _PLACE.finditer(text):
        words = [w for w in match.group(1).split() if w not in _NOT_PLACES and not _CONTRACTION.search(w)]
        if not words or not words[0][0].isupper():
            continue
        if _SENTENCE_END.search(text[: match.start()]) and words[0] == match.group(1).split()[0]:
            openers.append(" ".join(words))
            continue
        return " ".join(words)
    return openers[0] if openers and allow_opener else None


def _about_trip(words: list[str]) -> bool:
    return bool(_TRIP_WORDS.intersection(words))


def _is_greeting(words: list[str]) -> bool:
    return bool(words) and len(words) <= 4 and (words[0] in _GREETINGS or " ".join(words[:2]) == "good morning")


def purpose(system_prompt: str) -> str:
    """What the agent is for, in its own words, from the prompt's first sentence.

    "You are Wayfarer, a friendly travel-planning assistant. ..." gives "I'm Wayfarer, a friendly
    travel-planning assistant."; "You plan trips." gives "I plan trips."; anything else is quoted briefly.
    """
    match = _FIRST_SENTENCE.match(" ".join(system_prompt.split()) + " ")
    first = match.group(1) if match else system_prompt.strip()
    if not first:
        return "I'm an assistant."
    if you_are := _YOU_ARE.match(first):
        return f"I'm {you_are.group(1)}."
    if you_verb := _YOU_VERB.match(first):
        return f"I {you_verb.group(1)}."
    return f"I'm set up for this: \u201c{first[:120]}\u201d"


def is_travel(system_prompt: str) -> bool:
    """Whether the prompt is about travel, so the demo's trip-planning replies fit it."""
    return bool(_TRIP_WORDS.intersection(_words(system_prompt)) or "trip" in system_prompt.lower())


def _greeting(with_notice: bool, system_prompt: str) -> str:
    ask = "Where would you like to go, and when?" if is_travel(system_prompt) else "What can I help you with?"
    reply = f"Hi! {purpose(system_prompt)} {ask}"
    return f"{reply} {OFFLINE_NOTICE}" if with_notice else reply


def _is_question(text: str, words: list[str]) -> bool:
    return text.rstrip().endswith("?") or (bool(words) and words[0] in _QUESTION_WORDS)


def _trip_reply(text: str, destination: str | None) -> str:
    duration = _DURATION.search(text)
    if destination and duration:
        length = duration.group(0).lower()
        length = length if not length.endswith("weekend") or length.startswith("a ") else f"a {length}"
        return (
            f"{length.capitalize()} in {destination} sounds great! What's your rough budget, "
            "and do you prefer food, history, nature or nightlife?"
        )
    if destination:
        return (
            f"{destination} sounds wonderful! How many days do you have, and what do you enjoy most — "
            "food, history, nature or nightlife?"
        )
    return "A trip sounds great! Where are you thinking of going, and how many days do you have?"


def compose_reply(messages: Sequence[tuple[str, str]], *, mention_offline: bool = True) -> str:
    """The demo model's whole reply to a conversation given as (role, text) pairs, oldest first.

    Greets when the last turn is not the user's (the agent was asked to speak first), saying what it is for
    (from the system prompt); mentions that it is the offline demo model only in its first greeting. It plays
    along with trip planning when the prompt is about travel, and says honestly that it cannot answer
    anything else rather than pretending to. Without `mention_offline` (the chat page already says so) it never
    mentions it.
    """
    noticed = not mention_offline or any(role == "assistant" and OFFLINE_NOTICE in text for role, text in messages)
    start = next((i for i, (role, _) in enumerate(messages) if role not in _SYSTEM), len(messages))
    system_prompt = " ".join(text for _, text in messages[:start])
    turns = messages[start:]  # leading system messages are the instructions, not a turn
    last_user = next((text for role, text in reversed(turns) if role == "user"), None)
    if not turns or turns[-1][0] != "user" or last_user is None:
        return _greeting(not noticed, system_prompt)
    words = _words(last_user)
    if _is_greeting(words):
        return _greeting(not noticed, system_prompt)
    travel = is_travel(system_prompt)
    if any(w.startswith("thank") for w in words):
        more = "for your trip" if travel else "I can help with"
        return f"You're welcome! Is there anything else {more}?"
    if not travel:
        return f"{OFF_TOPIC} {purpose(system_prompt)}"
    about_trip = _about_trip(words)
    on_topic = about_trip or bool(_TOPIC_WORDS.intersection(words))
    if _is_question(last_user, words) and not on_topic:
        return f"{OFF_TOPIC} I can help sketch a trip, though: where would you like to go?"
    destination = find_destination(last_user, allow_opener=about_trip)
    if destination or about_trip:
        earlier = (
            find_destination(t, allow_opener=_about_trip(_words(t))) for r, t in reversed(turns[:-1]) if r == "user"
        )
        return _trip_reply(last_user, destination or next((d for d in earlier if d), None))
    return (
        "I can help with destinations, itineraries, budgets, getting around and what to pack. "
        "Where would you like to go, and when?"
    )


class OfflineResponder(llm.LLM[Any]):
    """Streams `compose_reply` word by word, like a real model would, with a small delay between words.
    `mention_offline`: whether its first greeting says it is the offline demo (not where the page says so)."""

    def __init__(self, *, word_delay: float = 0.02, mention_offline: bool = True) -> None:
        super().__init__()
        self.word_delay = word_delay
        self.mention_offline = mention_offline

    @property
    def model(self) -> str:
        return "offline-demo"

    @property
    def provider(self) -> str:
        return "chatapp"

    def chat(
        self,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool] | None = None,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        parallel_tool_calls: NotGivenOr[bool] = NOT_GIVEN,
        tool_choice: NotGivenOr[llm.ToolChoice] = NOT_GIVEN,
        extra_kwargs: NotGivenOr[dict[str, Any]] = NOT_GIVEN,
    ) -> OfflineStream:
        return OfflineStream(self, chat_ctx=chat_ctx, tools=tools or [], conn_options=conn_options)


class OfflineStream(llm.LLMStream):
    """One reply: one ChatChunk per word."""

    _llm: OfflineResponder

    async def _run(self) -> None:
        messages = [(m.role, m.text_content or "") for m in self.chat_ctx.messages()]
        chunk_id = utils.shortuuid("offline_")
        reply = compose_reply(messages, mention_offline=self._llm.mention_offline)
        for i, word in enumerate(reply.split()):
            delta = llm.ChoiceDelta(role="assistant", content=word if i == 0 else f" {word}")
            self._event_ch.send_nowait(llm.ChatChunk(id=chunk_id, delta=delta))
            await asyncio.sleep(self._llm.word_delay)
