"""Made-up travel-chat utterances with a skewed word choice, as in speech."""

from __future__ import annotations

import random

# Words for made-up travel-chat utterances, most frequent first (picked with a skew towards the front, as in speech).
_WORDS = """
    the and to a i we of in it is for you that on be with can at my this are have do so our will what would like
    about there if from just how or but me all an day get go some your near take by one time want train city old
    town museum walk see could two night morning evening week food dinner lunch breakfast coffee beach river bridge
    market square street station ticket tour guide visit plan book room view early late afternoon weekend flight
    airport bus tram ferry boat island mountain lake park garden church castle palace tower gallery restaurant cafe
    bar wine cheese bread fish seafood pasta pizza local famous quiet busy cheap expensive price budget euro pay card
    cash north south east west centre downtown neighbourhood area place spot corner hill coast sunset sunrise weather
    rain sun warm cold hot windy cloudy umbrella jacket shoes bag passport luggage suitcase backpack map phone charger
    photo camera picture friend family kids partner parents children together alone first second third last next
    better best good great nice lovely beautiful amazing interesting boring long short far close minutes hours days
    leave arrive stay return start finish open closed reservation booking cancel change check recommend suggest
    prefer think know need maybe perhaps really also still already never always usually often sometimes before after
    during while because since until around through across along between under over lisbon porto madrid barcelona
    paris rome florence venice vienna prague berlin amsterdam london dublin edinburgh athens istanbul kyoto tokyo
    seoul bangkok hanoi sydney montreal boston chicago canyon desert forest valley village harbour lighthouse
    cathedral monastery vineyard
"""
VOCABULARY: tuple[str, ...] = tuple(_WORDS.split())
# How strongly word choice leans to the front of VOCABULARY: index = floor(len * random() ** SKEW).
VOCABULARY_SKEW = 1.8


def sentence(rng: random.Random, min_words: int, max_words: int) -> str:
    """A made-up utterance of VOCABULARY words (not grammar, but the word mix and length of chat)."""
    count = rng.randint(min_words, max_words)
    words = [VOCABULARY[int(len(VOCABULARY) * rng.random() ** VOCABULARY_SKEW)] for _ in range(count)]
    text = " ".join(words)
    return text[:1].upper() + text[1:] + rng.choice(".?.!.")
