"""The transcript assembler both agent runtimes use: accumulate, strip, cap, report only what changed, one final."""

from __future__ import annotations

from chatapp.conversations.assembler import TranscriptAssembler, clean
from chatapp.conversations.events import MAX_TEXT_LENGTH


def test_streamed_pieces_accumulate_and_only_visible_changes_are_reported() -> None:
    reply = TranscriptAssembler("agent-1")
    reported = [reply.add(piece) for piece in [" ", "Lis", "bon", " ", "in May", "  \n"]]
    assert reported == [None, "Lis", "Lisbon", None, "Lisbon in May", None]
    assert reply.text == reply.reported == "Lisbon in May"
    assert reply.item_id == "agent-1"


def test_recognised_speech_replaces_its_segment_until_committed_then_segments_join() -> None:
    turn = TranscriptAssembler("user-1")
    assert turn.hear("hel", final=False) == "hel"
    assert turn.hear(" hello ", final=False) == "hello"
    assert turn.hear("hello", final=True) is None  # committed, but nothing visible changed
    assert turn.hear("how are", final=False) == "hello how are"
    assert turn.hear("   ", final=False) is None  # an empty recognition changes nothing
    assert turn.hear("how are you", final=True) == "hello how are you"
    assert turn.text == "hello how are you"


def test_text_is_cut_to_what_the_app_stores_and_the_cut_text_is_reported_once() -> None:
    reply = TranscriptAssembler("agent-1")
    assert reply.add("x" * MAX_TEXT_LENGTH) == "x" * MAX_TEXT_LENGTH
    assert reply.add("more words past the limit") is None
    assert reply.finish("y" * (MAX_TEXT_LENGTH + 5)) == "y" * MAX_TEXT_LENGTH
    assert clean(f"  {'z' * (MAX_TEXT_LENGTH + 1)}") == "z" * MAX_TEXT_LENGTH


def test_one_final_with_the_committed_text_or_else_what_was_reported() -> None:
    committed = TranscriptAssembler("a")
    committed.add("Lisbon")
    assert committed.finish("  Lisbon in May.  ") == "Lisbon in May."
    assert committed.finish("again") is None
    assert committed.add(" more") is None  # nothing is reported after the final
    assert committed.finished

    cut_off = TranscriptAssembler("b")
    cut_off.add("Lisbon in")
    assert cut_off.finish("   ") == "Lisbon in"

    silent = TranscriptAssembler("c")
    assert silent.finish() is None
    assert silent.finished
