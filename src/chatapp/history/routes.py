"""History pages: the list (paginated, searchable), a conversation's page, rename, delete, export, share,
continue, and the public read-only page behind a share link."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from jinja2_fragments.litestar import HTMXBlockTemplate
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import CacheControlHeader
from litestar.di import Provide
from litestar.enums import RequestEncodingType
from litestar.exceptions import HTTPException, NotFoundException
from litestar.params import Body, Parameter
from litestar.plugins.htmx import ClientRedirect, HTMXRequest
from litestar.response import Redirect, Template

from chatapp.accounts.service import User
from chatapp.accounts.web import toast
from chatapp.conversations import queries
from chatapp.conversations.http import SERVICE
from chatapp.conversations.service import ConversationService
from chatapp.conversations.views import MessageView
from chatapp.core.validation import FORM_ONLY, checked_text
from chatapp.history import analytics, export, filters, sharing
from chatapp.history.grouping import duration_label, group_label, user_zone
from chatapp.history.search import MAX_QUERY_LENGTH, search
from chatapp.history.service import (
    BadCursor,
    InvalidTitle,
    TooManyPins,
    conversation_detail,
    delete,
    rename,
    saved_conversation,
    saved_page,
    set_archived,
    set_pinned,
)

FormBody = Body(media_type=RequestEncodingType.URL_ENCODED)


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


def _rows(items: list[Any], zone: Any, snippets: list[str] | None = None) -> list[HistoryRow]:
    now = datetime.now(UTC)
    return [
        HistoryRow(
            id=item.id,
            title=item.title or "Untitled conversation",
            started_at=item.started_at.astimezone(zone),
            duration=duration_label(item.started_at, item.ended_at),
            message_count=item.message_count,
            group=group_label(item.started_at, now, zone),
            snippet=snippets[n] if snippets else "",
            pinned=item.pinned,
            archived=item.archived,
        )
        for n, item in enumerate(items)
    ]


FLAG_VALUES = {"true": True, "false": False}
FLAG_MESSAGES = {
    ("pinned", True): "Pinned.",
    ("pinned", False): "Unpinned.",
    ("archived", True): "Archived.",
    ("archived", False): "Moved back to History.",
}


async def _listing(
    request: HTMXRequest, user: User, view: str, q: str, raw_filters: Mapping[str, Any], cursor: str | None
) -> dict[str, Any]:
    """What the list shows for the view, search and history filters (read from `raw_filters`, a query string or
    form): the page's context, or 400 for a bad view or cursor."""
    _check_filters(view, q)
    zone = user_zone(request.cookies.get("tz"))
    query = " ".join(checked_text(q, "The search").split())
    applied = filters.apply(raw_filters, zone)
    pinned_rows: list[HistoryRow] = []
    try:
        if applied.error:
            rows, next_cursor = [], None
        elif query:
            # Search covers archived conversations too (marked), whichever view it was typed in.
            page = await search(user.id, query, cursor, applied.params)
            rows = _rows([h.item for h in page.hits], zone, [h.snippet for h in page.hits])
            next_cursor = page.next_cursor
        else:
            listing = await saved_page(
                user.id, cursor, filter_params=applied.params, view="archived" if view else "main"
            )
            rows = _rows(listing.items, zone)
            pinned_rows = _rows(listing.pinned, zone)
            next_cursor = listing.next_cursor
    except BadCursor:
        raise HTTPException(status_code=400, detail="Invalid cursor.") from None
    more = ({"view": view} if view else {}) | {"q": query} | applied.values
    if next_cursor:
        more |= {"cursor": next_cursor, "group": rows[-1].group}
    return {
        "user": user,
        "rows": rows,
        "pinned_rows": pinned_rows,
        "next_cursor": next_cursor,
        "more": more,
        "previous_group": "",
        "q": query,
        "filters": filters.FILTERS,
        "filter_values": applied.values,
        "view": view,
        "searching": bool(query),
        "filtered": applied.active,
        "range_error": applied.error,
        "deleted": False,
    }


def _check_filters(view: str, q: str) -> None:
    if view not in ("", "archived"):
        raise HTTPException(status_code=400, detail="Unknown view: use view=archived or leave it out.")
    if len(q) > MAX_QUERY_LENGTH:
        raise HTTPException(status_code=400, detail=f"Search for at most {MAX_QUERY_LENGTH} characters.")
    checked_text(q, "The search")


def _form_text(data: dict[str, Any], name: str) -> str:
    value = data.get(name)
    return value if isinstance(value, str) else ""


async def _set_flag(
    request: HTMXRequest,
    conversations: ConversationService,
    conversation_id: uuid.UUID,
    data: dict[str, Any],
    flag: str,
) -> Template | Redirect:
    """Set pinned/archived, tell every tab's sidebar, then show the list (from a row) or the page it came from.

    A row's form carries the list's view and filters, so the list comes back as it was, from page 1: the
    conversation has moved (to the top, or out of this view).
    """
    user: User = request.user
    value = FLAG_VALUES.get(_form_text(data, flag))
    if value is None:
        raise HTTPException(status_code=422, detail=f"{flag} must be true or false.")
    from_list = _form_text(data, "back") == "list"
    view, q = _form_text(data, "view"), _form_text(data, "q")
    if from_list:
        _check_filters(view, q)  # before changing anything
    setter = set_pinned if flag == "pinned" else set_archived
    try:
        conversation = await setter(user.id, conversation_id, value)
    except TooManyPins as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from None
    if conversation is None:
        raise NotFoundException()
    await conversations.publish_history(user.id)
    if not request.htmx:
        if not from_list:
            return Redirect(f"/history/{conversation_id}", status_code=303)
        params = {"view": view, "q": q} | {name: _form_text(data, name) for name in filters.FIELDS}
        query = urlencode({k: v for k, v in params.items() if v})
        return Redirect(f"/history{'?' + query if query else ''}", status_code=303)
    done = toast(FLAG_MESSAGES[(flag, value)], "success")
    if from_list:
        context = await _listing(request, user, view, q, data, None)
        return HTMXBlockTemplate(template_name="history.html", block_name="history_results", context=context, **done)
    return HTMXBlockTemplate(
        template_name="history_detail.html", block_name="flags", context={"conversation": conversation}, **done
    )


async def owned_saved(request: Request[User, Any, Any], conversation_id: uuid.UUID) -> queries.Conversation:
    """The route's conversation when it is the user's and saved; 404 for unknown, another user's or active."""
    conversation = await saved_conversation(request.user.id, conversation_id)
    if conversation is None:
        raise NotFoundException()
    return conversation


OWNED_SAVED = {"saved": Provide(owned_saved)}


class HistoryController(Controller):
    include_in_schema = False  # HTML pages and htmx fragments: not an API (see chatapp.core.openapi)
    path = "/history"
    cache_control = CacheControlHeader(no_store=True)  # private pages, never from the cache after logout
    dependencies = SERVICE

    @get(["/", "/archived"], name="history")
    async def history_page(
        self,
        request: HTMXRequest,
        q: Annotated[str, Parameter(max_length=MAX_QUERY_LENGTH)] = "",
        cursor: str | None = None,
        group: Annotated[str, Parameter(max_length=40)] = "",
        deleted: bool = False,
        view: Annotated[str, Parameter(max_length=20)] = "",
    ) -> Template:
        user: User = request.user
        if request.url.path.rstrip("/").endswith("/archived"):
            view = "archived"
        # The history filters' fields (chatapp.history.filters) are read from the query string by name.
        context = await _listing(request, user, view, q, request.query_params, cursor) | {
            "previous_group": group,
            "deleted": deleted,
        }
        if request.htmx and cursor:
            return HTMXBlockTemplate(template_name="history.html", block_name="history_rows", context=context)
        if request.htmx and request.htmx.target == "history-results":
            # 200 even for a bad range: htmx swaps no 4xx, and the error belongs next to the fields (OOB).
            return HTMXBlockTemplate(
                template_name="history.html",
                block_names=["history_results", "range_error"],
                context=context | {"oob": True},
            )
        return Template("history.html", context=context, status_code=400 if context["range_error"] else 200)

    @post("/{conversation_id:uuid}/pin", status_code=200, guards=FORM_ONLY)
    async def pin(
        self,
        request: HTMXRequest,
        conversations: ConversationService,
        conversation_id: uuid.UUID,
        data: Annotated[dict[str, Any], FormBody],
    ) -> Template | Redirect:
        """Pin (pinned=true) or unpin (pinned=false): from a list row or from the conversation's page."""
        return await _set_flag(request, conversations, conversation_id, data, "pinned")

    @post("/{conversation_id:uuid}/archive", status_code=200, guards=FORM_ONLY)
    async def archive(
        self,
        request: HTMXRequest,
        conversations: ConversationService,
        conversation_id: uuid.UUID,
        data: Annotated[dict[str, Any], FormBody],
    ) -> Template | Redirect:
        """Archive (archived=true) or bring back (archived=false)."""
        return await _set_flag(request, conversations, conversation_id, data, "archived")

    @get("/analytics", name="history_analytics")
    async def analytics_page(self, request: Request[User, Any, Any]) -> Template:
        """Charts of the user's saved conversations, in their time zone; plain HTML and SVG, no script."""
        user: User = request.user
        zone = user_zone(request.cookies.get("tz"))
        stats = await analytics.analytics(user.id, zone)
        context = {
            "user": user,
            "stats": stats,
            "charts": analytics.charts(stats),
            "zone_name": zone.key,
            "days": analytics.DAYS,
            "weeks": analytics.WEEKS,
        }
        return Template("analytics.html", context=context)

    @get("/{conversation_id:uuid}", name="history_detail")
    async def detail(self, request: Request[User, Any, Any], conversation_id: uuid.UUID) -> Template | Redirect:
        user: User = request.user
        detail = await conversation_detail(user.id, conversation_id)
        if detail is None:
            raise NotFoundException()
        if detail.conversation.active:
            return Redirect("/", status_code=303)
        return Template("history_detail.html", context=await _detail_context(user, detail, request))

    @post("/{conversation_id:uuid}/rename", status_code=200, guards=FORM_ONLY)
    async def rename(
        self,
        request: HTMXRequest,
        conversations: ConversationService,
        conversation_id: uuid.UUID,
        data: Annotated[dict[str, Any], FormBody],
    ) -> Template | Response[Any] | Redirect:
        user: User = request.user
        title = data.get("title")
        try:
            conversation = await rename(user.id, conversation_id, title if isinstance(title, str) else "")
        except InvalidTitle as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from None
        if conversation is None:
            raise NotFoundException()
        await conversations.publish_history(user.id)
        if not request.htmx:
            return Redirect(f"/history/{conversation_id}", status_code=303)
        return HTMXBlockTemplate(
            template_name="history_detail.html",
            block_name="title_block",
            context={"conversation": conversation, "oob": True},  # oob: with a <title> the tab follows
            **toast("Renamed.", "success"),
        )

    @post("/{conversation_id:uuid}/delete", status_code=200)
    async def delete(
        self, request: HTMXRequest, conversations: ConversationService, conversation_id: uuid.UUID
    ) -> Response[Any]:
        user: User = request.user
        if not await delete(user.id, conversation_id):
            raise NotFoundException()
        await conversations.publish_history(user.id)
        return _go_to(request, "/history?deleted=true")

    @get("/{conversation_id:uuid}/export/{fmt:str}", name="history_export")
    async def export(self, request: Request[User, Any, Any], conversation_id: uuid.UUID, fmt: str) -> Response[str]:
        exporter = export.EXPORTERS.get(fmt)
        if exporter is None:
            raise NotFoundException()
        detail = await conversation_detail(request.user.id, conversation_id)
        if detail is None or detail.conversation.active:
            raise NotFoundException()
        return Response(
            exporter.render(detail),
            media_type=exporter.media_type,
            headers={"Content-Disposition": f'attachment; filename="{export.filename(detail, exporter.extension)}"'},
        )

    @post("/{conversation_id:uuid}/share", status_code=200, dependencies=OWNED_SAVED)
    async def share(self, request: HTMXRequest, saved: queries.Conversation) -> Template | Redirect:
        token = await sharing.create(saved.id)
        return _share_block(request, saved, token, "Share link created.")

    @post("/{conversation_id:uuid}/share/revoke", status_code=200, dependencies=OWNED_SAVED)
    async def revoke_share(self, request: HTMXRequest, saved: queries.Conversation) -> Template | Redirect:
        await sharing.revoke(saved.id)
        return _share_block(request, saved, None, "Share link revoked.")

    @post("/{conversation_id:uuid}/continue", status_code=200, dependencies=OWNED_SAVED)
    async def continue_conversation(
        self, request: HTMXRequest, conversations: ConversationService, saved: queries.Conversation
    ) -> Response[Any]:
        """Start a new active conversation whose agent knows this one; this one stays as it was."""
        user: User = request.user
        await conversations.new_chat(user.id, user.display_name, continue_from=saved.id)
        return _go_to(request, "/")


def _go_to(request: HTMXRequest, url: str) -> Response[Any]:
    """After a change that leaves the current page: htmx follows HX-Redirect (a 204), a plain form a 303."""
    if not request.htmx:
        return Redirect(url, status_code=303)
    response = ClientRedirect(url)
    response.status_code = 204
    return response


def _share_block(
    request: HTMXRequest, conversation: queries.Conversation, token: str | None, message: str
) -> Template | Redirect:
    if not request.htmx:
        return Redirect(f"/history/{conversation.id}", status_code=303)
    return HTMXBlockTemplate(
        template_name="history_detail.html",
        block_name="share",
        context={"conversation": conversation, "share_url": _share_url(request, token)},
        **toast(message, "success"),
    )


def _share_url(request: Request[Any, Any, Any], token: str | None) -> str | None:
    if token is None:
        return None
    settings = request.app.state.settings
    base = settings.public_url or str(request.base_url).rstrip("/")
    return f"{base}/s/{token}"


async def _detail_context(user: User | None, detail: Any, request: Request[Any, Any, Any]) -> dict[str, Any]:
    zone = user_zone(request.cookies.get("tz"))
    conversation = detail.conversation
    token = await sharing.live_token(conversation.id) if user else None
    return {
        "user": user,
        "conversation": conversation,
        "messages": [MessageView.of_utterance(u) for u in detail.utterances],
        "started_at": conversation.started_at.astimezone(zone),
        "zone": zone,
        "duration": duration_label(conversation.started_at, conversation.ended_at),
        "share_url": _share_url(request, token),
        "origin": await _origin(user, conversation),
        "exporters": export.EXPORTERS.values(),
    }


async def _origin(user: User | None, conversation: queries.Conversation) -> queries.Conversation | None:
    """The saved conversation this one continued, shown to its owner only (a share link reveals nothing else)."""
    if user is None or conversation.continued_from is None:
        return None
    return await queries.get_conversation(conversation.continued_from, owner=user.id)


class SharedController(Controller):
    """Anyone with the link sees the transcript, and nothing else: no account, no navigation, noindex."""

    include_in_schema = False  # an HTML page (see chatapp.core.openapi)

    @get("/s/{token:str}", name="shared")
    async def shared(self, request: Request[Any, Any, Any], token: str) -> Template:
        conversation_id = await sharing.shared_conversation_id(token)
        detail = await conversation_detail_any(conversation_id) if conversation_id else None
        if detail is None:
            if await sharing.was_revoked(token):
                raise HTTPException(status_code=410, detail="This share link was revoked by its owner.")
            raise NotFoundException()
        context = await _detail_context(None, detail, request)
        return Template(
            "shared.html",
            context=context,
            headers={
                "X-Robots-Tag": "noindex, nofollow",
                "Referrer-Policy": "no-referrer",
                "Cache-Control": "no-store",
            },
        )


async def conversation_detail_any(conversation_id: uuid.UUID) -> Any:
    conversation = await queries.get_conversation(conversation_id)
    if conversation is None:
        return None
    return await conversation_detail(conversation.owner, conversation_id)
