"""What the model says becomes a title only once cleaned: one short line, no label, quotes or control characters."""

from __future__ import annotations

import pytest

from chatapp.conversations.titles import clean_title


@pytest.mark.parametrize(
    ("raw", "title"),
    [
        ("Spring in Lisbon", "Spring in Lisbon"),
        ('"Spring in Lisbon."', "Spring in Lisbon"),
        ("\u201cSpring in Lisbon\u201d\n\nThis conversation is about a trip.", "Spring in Lisbon"),
        ("Title: Spring in Lisbon", "Spring in Lisbon"),
        ("**Spring in Lisbon**", "Spring in Lisbon"),
        ("\n\n  Spring\tin   Lisbon  \n", "Spring in Lisbon"),
        ("Spring\x00 in\u202e Lisbon", "Spring in Lisbon"),
        ("# Spring in Lisbon", "Spring in Lisbon"),
    ],
)
def test_model_output_is_cleaned(raw: str, title: str) -> None:
    assert clean_title(raw) == title


@pytest.mark.parametrize("raw", ["", "   ", '""', "\n\n", "Title:", "...", "**"])
def test_nothing_usable_gives_no_title(raw: str) -> None:
    assert clean_title(raw) is None


def test_a_huge_answer_is_cut_to_a_title_at_a_word_boundary() -> None:
    title = clean_title("word " * 5000)
    assert title is not None
    assert len(title) <= 60
    assert title.endswith("word…")
