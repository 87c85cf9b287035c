"""What the history pages show: list rows, the list's and a conversation page's context, and the responses
their handlers render (a block for htmx, the page or a redirect otherwise)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from jinja2_fragments.litestar import HTMXBlockTemplate
from litestar import MediaType, Request, Response
from litestar.plugins.htmx import ClientRedirect, HTMXRequest
from litestar.response import Redirect, Template

from chatapp.accounts.service import User
from chatapp.accounts.web import toast, toast_header
from chatapp.conversations import queries
from chatapp.conversations.views import MessageView
from chatapp.history import export, filters
from chatapp.history.grouping import duration_label, group_label, short_datetime, user_zone
from chatapp.history.listing import Listing
from chatapp.history.service import DetailPage

FLAG_MESSAGES = {
    ("pinned", True): "Pinned.",
    ("pinned", False): "Unpinned.",
    ("archived", True): "Archived.",
    ("archived", False): "Moved back to History.",
}
# The public page behind a share link: never indexed, never cached, and it tells no other site where it was.
SHARED_HEADERS = {"X-Robots-Tag": "noindex, nofollow", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}


@dataclass(frozen=True)
class HistoryRow:
    """One list item with what the page shows about it."""

    id: uuid.UUID
    title: str
    started_at: datetime
    duration: str
    message_count: int
    group: str
    snippet: str = ""
    pinned: bool = False
    archived: bool = False
    started_label: str = ""  # started_at as the row shows it (grouping.short_datetime)


def rows(items: Sequence[queries.SavedSummary], zone: ZoneInfo, snippets: Sequence[str] = ()) -> list[HistoryRow]:
    now = datetime.now(UTC)
    return [
        HistoryRow(
            id=item.id,
            title=item.title or "Untitled conversation",
            started_at=(started_at := item.started_at.astimezone(zone)),
            started_label=short_datetime(started_at),
            duration=duration_label(item.started_at, item.ended_at),
            message_count=item.message_count,
            group=group_label(item.ended_at or item.started_at, now, zone),  # by last activity, as listed
            snippet=snippets[n] if snippets else "",
            pinned=item.pinned,
            archived=item.archived,
        )
        for n, item in enumerate(items)
    ]


def list_context(
    user: User, listing: Listing, zone: ZoneInfo, view: str, query: str, applied: filters.Applied
) -> dict[str, Any]:
    """The list's context: its rows, pins on top, and the Load more link carrying the view, search and filters."""
    shown = rows(listing.items, zone, listing.snippets)
    more = ({"view": view} if view else {}) | {"q": query} | applied.values
    if listing.next_cursor:
        more |= {"cursor": listing.next_cursor, "group": shown[-1].group}
    return {
        "user": user,
        "rows": shown,
        "pinned_rows": rows(listing.pinned, zone),
        "next_cursor": listing.next_cursor,
        "more": more,
        "previous_group": "",
        "q": query,
        "filters": filters.FILTERS,
        "filter_values": applied.values,
        "view": view,
        "searching": bool(query),
        "total": listing.total,
        "filtered": applied.active,
        "range_error": applied.error,
        "deleted": False,
    }


def list_page(request: HTMXRequest, context: dict[str, Any], cursor: str | None) -> Template:
    """The next rows (infinite scroll), the results (a search or filter typed in), or the whole page."""
    # HTML said once: Litestar would otherwise guess it from the template's name (mimetypes) on every response.
    if request.htmx and cursor:
        return HTMXBlockTemplate(
            template_name="history.html", block_name="history_rows", context=context, media_type=MediaType.HTML
        )
    if request.htmx and request.htmx.target == "history-results":
        # 200 even for a bad range: htmx swaps no 4xx, and the error belongs next to the fields (OOB).
        return HTMXBlockTemplate(
            template_name="history.html",
            block_names=["history_results", "range_error", "result_count"],
            context=context | {"oob": True},
            media_type=MediaType.HTML,
        )
    status = 400 if context["range_error"] else 200
    return Template("history.html", context=context, status_code=status, media_type=MediaType.HTML)


def flag_redirect(conversation_id: uuid.UUID, from_list: bool, form: Mapping[str, Any]) -> Redirect:
    """Without JS, after pinning or archiving: back to the conversation's page, or to the list as it was (the
    list's form, which its rows' buttons post, carries its view, search and filters)."""
    if not from_list:
        return Redirect(f"/history/{conversation_id}", status_code=303)
    params = {
        name: value if isinstance(value := form.get(name), str) else "" for name in ("view", "q", *filters.FIELDS)
    }
    query = urlencode({k: v for k, v in params.items() if v})
    return Redirect(f"/history{'?' + query if query else ''}", status_code=303)


def go_to(request: HTMXRequest, url: str) -> Response[Any]:
    """After a change that leaves the current page: htmx follows HX-Redirect (a 204), a plain form a 303."""
    if not request.htmx:
        return Redirect(url, status_code=303)
    response = ClientRedirect(url)
    response.status_code = 204
    return response


def undo_toast(request: Request[Any, Any, Any], deleted: queries.Conversation) -> dict[str, str]:
    """Headers for a toast saying what was deleted, with an Undo button (static/app.js) for as long as the window
    lasts. (An HX-Trigger header, JSON with non-ASCII escaped: the title is the user's text.)"""
    seconds = request.app.state.deletions.window
    message = f"Deleted “{deleted.title or 'Untitled conversation'}”."
    return toast_header(message, "success", undo=f"/history/{deleted.id}/restore", ttl=int(seconds * 1000))


def restored(request: HTMXRequest, conversation: queries.Conversation) -> Response[Any]:
    """Undone: the page's script refreshes the list (htmx or fetch); a plain form goes to the conversation."""
    if request.headers.get("accept", "").startswith("application/json"):
        return Response({"id": str(conversation.id), "title": conversation.title, "restored": True})
    if not request.htmx:
        return Redirect(f"/history/{conversation.id}", status_code=303)
    return Response(None, status_code=204, headers=toast_header("Restored.", "success"))


def share_block(
    request: HTMXRequest, conversation: queries.Conversation, token: str | None, message: str
) -> Template | Redirect:
    if not request.htmx:
        return Redirect(f"/history/{conversation.id}", status_code=303)
    return HTMXBlockTemplate(
        template_name="history_detail.html",
        block_name="share",
        context={"conversation": conversation, "share_url": share_url(request, token)},
        **toast(message, "success"),
    )


def share_url(request: Request[Any, Any, Any], token: str | None) -> str | None:
    """CHATAPP_PUBLIC_URL, else the address served; never the request's Host header, which anyone can forge."""
    if token is None:
        return None
    settings = request.app.state.settings
    return f"{settings.public_url or settings.served_url}/s/{token}"


def detail_context(user: User | None, page: DetailPage, request: Request[Any, Any, Any]) -> dict[str, Any]:
    """A conversation's page, for its owner or (user None) for anyone with a share link."""
    zone = user_zone(request.cookies.get("tz"))
    conversation = page.detail.conversation
    return {
        "user": user,
        "conversation": conversation,
        "messages": [MessageView.of_utterance(u) for u in page.detail.utterances],
        "reopened": page.detail.reopened_before(),
        "started_at": conversation.started_at.astimezone(zone),
        "zone": zone,
        "duration": duration_label(conversation.started_at, page.detail.active_until()),
        "share_url": share_url(request, page.share_token),
        "origin": page.origin,
        "speaker": page.speaker,
        "exporters": export.EXPORTERS.values(),
    }
