"""One utterance as it is being said, assembled into the text the transcript shows.

Both agent runtimes report the same way: an interim with the whole text so far each time what is visible changes,
then one final. The in-process agent and the LiveKit worker's forwarder both assemble through this class, so the
rules live once: pieces accumulate, the text is stripped and cut to MAX_TEXT_LENGTH (what the app stores), an
interim is reported only when its text changed, and there is at most one final.
"""

from __future__ import annotations

from chatapp.conversations.events import MAX_TEXT_LENGTH


def clean(text: str) -> str:
    """Text as the transcript keeps it: stripped, at most MAX_TEXT_LENGTH characters."""
    return text.strip()[:MAX_TEXT_LENGTH]


class TranscriptAssembler:
    """One utterance (an agent reply, or a user's spoken turn) under one item id.

    Its text is committed segments joined by spaces (speech recognition's finished segments) followed by the
    current segment (text streamed piece by piece, or recognition's latest guess for what is being said).
    """

    def __init__(self, item_id: str) -> None:
        self.item_id = item_id
        self._segments: list[str] = []
        self._current = ""
        self.reported = ""  # the text of the last interim reported
        self.finished = False

    @property
    def text(self) -> str:
        """Everything said so far, as the transcript would show it."""
        return clean(" ".join([*self._segments, self._current]))

    def add(self, piece: str) -> str | None:
        """More streamed text (the next words of a reply): the interim to report, or None if nothing visible
        changed."""
        self._current += piece
        return self._changed()

    def hear(self, transcript: str, *, final: bool) -> str | None:
        """Speech recognised so far in the current segment (`final`: the segment is done and the next begins):
        the interim to report, or None if nothing visible changed. Empty recognitions are ignored."""
        heard = transcript.strip()
        if not heard:
            return None
        if final:
            self._segments.append(heard)
            self._current = ""
        else:
            self._current = heard
        return self._changed()

    def finish(self, text: str = "") -> str | None:
        """The utterance is over: its final text (`text` as committed, or else what was reported), or None when
        it said nothing or was already finished."""
        if self.finished:
            return None
        self.finished = True
        return clean(text) or self.reported or None

    def _changed(self) -> str | None:
        text = self.text
        if self.finished or not text or text == self.reported:
            return None
        self.reported = text
        return text
