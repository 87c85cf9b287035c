"""Agent replies as safe HTML: CommonMark (plus tables and strikethrough) through markdown-it-py, then nh3.

markdown-it runs with raw HTML disabled, so any `<script>` the model writes comes out as text; nh3 is the
second wall: only the tags Markdown produces survive, with no event handlers, and links keep only http(s) and
mailto URLs. Images are not rendered at all (a reply could otherwise make every reader's browser fetch a
tracking pixel): `![alt](url)` shows as a plain link instead. http(s) links open in a new tab with
rel="nofollow noopener noreferrer". An unclosed code fence (an interim mid-reply) simply runs to the end of
the text, and the sanitizer always returns balanced markup, so a half-written reply never breaks the page.

User text is never rendered as Markdown: templates escape it and keep its white-space.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import nh3
from markdown_it import MarkdownIt
from markdown_it.renderer import RendererHTML
from markdown_it.token import Token
from markdown_it.utils import EnvType, OptionsDict
from markupsafe import Markup

LINK_REL = "nofollow noopener noreferrer"
TAGS = {
    "p", "br", "hr", "strong", "em", "s", "del", "code", "pre", "blockquote", "ul", "ol", "li",
    "h1", "h2", "h3", "h4", "h5", "h6", "a", "table", "thead", "tbody", "tr", "th", "td",
}  # fmt: skip
ATTRIBUTES = {"a": {"href", "title"}, "ol": {"start"}}
_ALIGN = {"align-left", "align-center", "align-right"}
ALIGN_CLASSES = {"th": _ALIGN, "td": _ALIGN}
URL_SCHEMES = {"http", "https", "mailto"}
CACHE_SIZE = 1024  # interims re-render the growing reply once per stream; finals render on every page view


def _external(href: str) -> bool:
    return href.lower().startswith(("http://", "https://"))


def _link_open(self: RendererHTML, tokens: list[Token], idx: int, options: OptionsDict, env: EnvType) -> str:
    token = tokens[idx]
    token.attrSet("rel", LINK_REL)
    if _external(str(token.attrGet("href") or "")):
        token.attrSet("target", "_blank")
    return self.renderToken(tokens, idx, options, env)


def _cell_open(self: RendererHTML, tokens: list[Token], idx: int, options: OptionsDict, env: EnvType) -> str:
    """Table alignment as a class: the CSP forbids inline styles."""
    token = tokens[idx]
    style = str(token.attrGet("style") or "")
    if style.startswith("text-align:"):
        token.attrs.pop("style", None)
        token.attrSet("class", "align-" + style.removeprefix("text-align:"))
    return self.renderToken(tokens, idx, options, env)


def _parser() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False, "breaks": True})
    md.enable(["table", "strikethrough"])
    md.disable("image")
    md.add_render_rule("link_open", _link_open)
    md.add_render_rule("th_open", _cell_open)
    md.add_render_rule("td_open", _cell_open)
    return md


_MD = _parser()
_CLEANER = nh3.Cleaner(
    tags=TAGS,
    attributes=ATTRIBUTES,
    allowed_classes=ALIGN_CLASSES,  # the only class values kept (nh3 wants `class` left out of `attributes`)
    link_rel=None,
    url_schemes=URL_SCHEMES,
    url_relative="deny",  # a reply's relative link would point into this app: no use, only risk
    # Links keep only the rel/target the renderer set, and target only on http(s) links.
    tag_attribute_values={"a": {"rel": {LINK_REL}, "target": {"_blank"}}},
    clean_content_tags={"script", "style"},
)


def _sanitize(html: str) -> str:
    cleaned: str = _CLEANER.clean(html)
    return cleaned


@lru_cache(maxsize=CACHE_SIZE)
def render_markdown(text: str) -> Markup:
    """The agent's Markdown as sanitized HTML, ready to put in a template."""
    return Markup(_sanitize(_MD.render(text)).strip())  # noqa: S704 - sanitized by nh3 just above


def markdown_filter(value: Any) -> Markup:
    """The Jinja filter `markdown`."""
    return render_markdown(str(value or ""))
