"""The agent-reply renderer: Markdown features come out as HTML, and no payload survives as live markup."""

from __future__ import annotations

import re

import pytest

from chatapp.conversations.rendering import LINK_REL, render_markdown

PAYLOADS = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    '<a href="javascript:alert(1)">x</a>',
    "[click](javascript:alert(1))",
    "[click](JaVaScRiPt:alert(1))",
    "[click](  javascript:alert(1))",
    "[click](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "[click](vbscript:msgbox(1))",
    "![x](javascript:alert(1))",
    '<svg onload="alert(1)"></svg>',
    '<iframe src="https://example.com"></iframe>',
    "<style>body{display:none}</style>",
    '[x](https://ok.example "t" onmouseover="alert(1)")',
    "<div onclick=alert(1)>raw html</div>",
    "```\n</code></pre><script>alert(1)</script>",
]
LIVE_MARKUP = re.compile(r"<(script|img|svg|iframe|style|div)\b|\son\w+\s*=|javascript:|vbscript:|data:", re.I)


def test_markdown_features_render() -> None:
    html = str(render_markdown("**bold** _em_ ~~gone~~ `code`\n\n- one\n- two\n\n1. first\n\n> quoted"))
    for tag in ("<strong>bold</strong>", "<em>em</em>", "<s>gone</s>", "<code>code</code>", "<ul>", "<ol>"):
        assert tag in html
    assert "<blockquote>" in html


def test_code_blocks_and_tables() -> None:
    html = str(render_markdown("```python\nprint('<b>')\n```\n\n| a | b |\n|:-|-:|\n| 1 | 2 |"))
    assert "<pre><code>print('&lt;b&gt;')\n</code></pre>" in html
    assert '<th class="align-left">a</th>' in html
    assert '<td class="align-right">2</td>' in html
    assert "style=" not in html  # the CSP forbids inline styles


def test_unclosed_code_fence_stays_balanced() -> None:
    """An interim mid-reply: the fence runs to the end of the text and the markup is still closed."""
    html = str(render_markdown("Here:\n```js\nconst a = 1;\n<div>"))
    assert html.endswith("</code></pre>")
    assert "&lt;div&gt;" in html


def test_links_open_external_pages_safely() -> None:
    html = str(render_markdown("[site](https://example.com/a?b=1) and [mail](mailto:a@example.com)"))
    assert f'<a href="https://example.com/a?b=1" rel="{LINK_REL}" target="_blank">site</a>' in html
    assert f'<a href="mailto:a@example.com" rel="{LINK_REL}">mail</a>' in html  # no new tab for mailto


def test_relative_links_lose_their_target_and_images_are_not_rendered() -> None:
    html = str(render_markdown("[out](/logout) ![pixel](https://tracker.example/p.gif)"))
    assert "/logout" not in html
    assert "<img" not in html
    assert 'href="https://tracker.example/p.gif"' in html  # shown as a plain link, never fetched


@pytest.mark.parametrize("payload", PAYLOADS)
def test_payloads_stay_inert(payload: str) -> None:
    html = str(render_markdown(payload))
    # Whatever is left is escaped text: no live tag, no handler attribute, no script URL in an attribute.
    assert not LIVE_MARKUP.search(re.sub(r"&lt;.*?&gt;|\[.*?\]\(.*?\)", "", html, flags=re.S)), html
    for attribute in re.findall(r"<\w+([^>]*)>", html):
        assert not re.search(r"\son\w+=|javascript:|data:|vbscript:", attribute, re.I), html


def test_repeated_interims_are_cached() -> None:
    text = "Growing reply with a [link](https://example.com)"
    assert render_markdown(text) is render_markdown(text)


def test_a_stream_skips_interims_a_newer_one_already_replaces() -> None:
    import uuid
    from collections import deque
    from datetime import UTC, datetime

    from chatapp.conversations.live_events import Final, Interim, LiveEvent, State
    from chatapp.conversations.stream import superseded

    c1, c2, now = uuid.uuid4(), uuid.uuid4(), datetime.now(UTC)

    def interim_of(c: uuid.UUID, i: str, t: str) -> Interim:
        return Interim(conversation_id=c, item_id=i, role="agent", text=t, timestamp=now)

    def ahead(*events: LiveEvent) -> deque[LiveEvent]:
        return deque(events)

    interim = interim_of(c1, "a1", "Hel")
    assert superseded(interim, ahead(State(conversation_id=c1, state="speaking"), interim_of(c1, "a1", "Hello")))
    final = Final(
        conversation_id=c1, seq=1, item_id="a1", role="agent", text="Hello.", interrupted=False, created_at=now
    )
    assert not superseded(interim, ahead(final))
    assert not superseded(interim, ahead(interim_of(c1, "u7", "other")))
    assert not superseded(interim, ahead(interim_of(c2, "a1", "other chat")))
    assert not superseded(interim, deque())
