"""The offline demo model says what the configured prompt is for and is honest about what it cannot answer."""

from __future__ import annotations

from chatapp.agents.offline import OFF_TOPIC, OFFLINE_NOTICE, compose_reply, purpose
from chatapp.agents.product import greeting_instructions
from chatapp.core.settings import DEFAULT_SYSTEM_PROMPT

TRAVEL = ("system", DEFAULT_SYSTEM_PROMPT)
TUTOR = ("system", "You are a patient maths tutor for teenagers. Explain one step at a time.")


def test_purpose_is_derived_from_the_prompt() -> None:
    assert purpose(DEFAULT_SYSTEM_PROMPT) == "I'm Wayfarer, a friendly travel-planning assistant."
    assert purpose("You plan trips.") == "I plan trips."
    assert purpose(TUTOR[1]) == "I'm a patient maths tutor for teenagers."
    assert purpose("Answer in French.") == "I'm set up for this: \u201cAnswer in French.\u201d"
    assert purpose("") == "I'm an assistant."


def test_the_greeting_says_what_the_agent_is_for() -> None:
    travel = compose_reply([TRAVEL, ("system", greeting_instructions("Ada"))])
    assert travel.startswith("Hi! I'm Wayfarer, a friendly travel-planning assistant. Where would you like to go")
    assert OFFLINE_NOTICE in travel
    # Where the chat page already says the offline demo answers, its greeting does not say it again.
    quiet = compose_reply([TRAVEL, ("system", greeting_instructions("Ada"))], mention_offline=False)
    assert OFFLINE_NOTICE not in quiet
    assert quiet.startswith("Hi! I'm Wayfarer")
    tutor = compose_reply([TUTOR, ("system", greeting_instructions("Ada"))])
    assert tutor.startswith("Hi! I'm a patient maths tutor for teenagers. What can I help you with?")
    assert "go" not in tutor.split("?")[0].split()  # no travel talk for a tutor


def test_off_topic_questions_get_an_honest_answer_not_a_pretend_one() -> None:
    reply = compose_reply([TRAVEL, ("user", "What is the capital of France?")])
    assert reply.startswith(OFF_TOPIC)
    assert "France sounds" not in reply
    assert "configure a model to get real answers" in reply
    assert compose_reply([TRAVEL, ("user", "Who won the football last night?")]).startswith(OFF_TOPIC)


def test_travel_questions_are_still_played_along_with() -> None:
    assert "Lisbon sounds wonderful" in compose_reply([TRAVEL, ("user", "I want to plan a trip to Lisbon")])
    assert not compose_reply([TRAVEL, ("user", "What should I pack?")]).startswith(OFF_TOPIC)
    assert not compose_reply([TRAVEL, ("user", "Where should I go in spring?")]).startswith(OFF_TOPIC)


def test_a_non_travel_prompt_never_gets_trip_replies() -> None:
    reply = compose_reply([TUTOR, ("user", "I want a trip to Lisbon")])
    assert reply == f"{OFF_TOPIC} I'm a patient maths tutor for teenagers."
    assert compose_reply([TUTOR, ("user", "thanks!")]) == "You're welcome! Is there anything else I can help with?"
