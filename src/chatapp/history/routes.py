"""History pages: the list (paginated, searchable), a conversation's page, rename, delete, export, share,
continue, and the public read-only page behind a share link. What they show is history/views.py."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from typing import Annotated, Any

from jinja2_fragments.litestar import HTMXBlockTemplate
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import CacheControlHeader
from litestar.di import Provide
from litestar.enums import RequestEncodingType
from litestar.exceptions import HTTPException, NotFoundException
from litestar.params import Body, Parameter
from litestar.plugins.htmx import HTMXRequest
from litestar.response import Redirect, Template
from litestar.types import ExceptionHandlersMap

from chatapp.accounts.service import User
from chatapp.accounts.web import toast
from chatapp.conversations import queries
from chatapp.conversations.http import SERVICE, answered_as
from chatapp.conversations.service import ConversationService
from chatapp.core.validation import FORM_ONLY, checked_text
from chatapp.history import analytics, export, filters, sharing, views
from chatapp.history.deletion import Deletions
from chatapp.history.grouping import user_zone
from chatapp.history.listing import history_list
from chatapp.history.search import MAX_QUERY_LENGTH
from chatapp.history.service import (
    BadCursor,
    InvalidTitle,
    NothingToRestore,
    ShareRevoked,
    TooManyPins,
    UndoExpired,
    conversation_detail,
    deleted_notice,
    detail_page,
    rename,
    saved_conversation,
    set_archived,
    set_pinned,
    shared_page,
)

FormBody = Body(media_type=RequestEncodingType.URL_ENCODED)
FLAG_VALUES = {"true": True, "false": False}

# The history pages' domain errors, answered in the request's own format.
HISTORY_ERRORS: ExceptionHandlersMap = {
    BadCursor: answered_as(400, "Invalid cursor."),
    InvalidTitle: answered_as(422),
    TooManyPins: answered_as(409),
    UndoExpired: answered_as(410, "Too late to undo: the conversation was deleted for good."),
    NothingToRestore: answered_as(404, "Nothing to restore: no such deleted conversation."),
}


def _deletions(request: Request[Any, Any, Any]) -> Deletions:
    deletions: Deletions = request.app.state.deletions
    return deletions


def _check_filters(view: str, q: str) -> None:
    if view not in ("", "archived"):
        raise HTTPException(status_code=400, detail="Unknown view: use view=archived or leave it out.")
    if len(q) > MAX_QUERY_LENGTH:
        raise HTTPException(status_code=400, detail=f"Search for at most {MAX_QUERY_LENGTH} characters.")
    checked_text(q, "The search")


def _form_text(data: Mapping[str, Any], name: str) -> str:
    value = data.get(name)
    return value if isinstance(value, str) else ""


async def _listing(
    request: HTMXRequest, user: User, view: str, q: str, raw_filters: Mapping[str, Any], cursor: str | None
) -> dict[str, Any]:
    """The list's context for the view, search and history filters (read from `raw_filters`, a query string or
    form); 400 for a bad view or search (and, through HISTORY_ERRORS, a bad cursor)."""
    _check_filters(view, q)
    if q and request.app.state.faults.consume("slow_search"):
        await asyncio.sleep(1.5)  # test only: a search answered after the one typed next
    zone = user_zone(request.cookies.get("tz"))
    query = " ".join(checked_text(q, "The search").split())
    applied = filters.apply(raw_filters, zone)
    listing = await history_list(user.id, view, query, applied, cursor)
    return views.list_context(user, listing, zone, view, query, applied)


async def _set_flag(
    request: HTMXRequest,
    conversations: ConversationService,
    conversation_id: uuid.UUID,
    data: dict[str, Any],
    flag: str,
) -> Template | Redirect:
    """Set pinned/archived, tell every tab's sidebar, then show the list (from a row) or the page it came from.

    The list's one form (its rows' buttons post it) carries its view and filters, so the list comes back as it
    was, from page 1: the conversation has moved (to the top, or out of this view).
    """
    user: User = request.user
    value = FLAG_VALUES.get(_form_text(data, flag))
    if value is None:
        raise HTTPException(status_code=422, detail=f"{flag} must be true or false.")
    from_list = _form_text(data, "back") == "list"
    view, q = _form_text(data, "view"), _form_text(data, "q")
    if from_list:
        _check_filters(view, q)  # before changing anything
    conversation = await (set_pinned if flag == "pinned" else set_archived)(user.id, conversation_id, value)
    if conversation is None:
        raise NotFoundException()
    await conversations.publish_history(user.id)
    if not request.htmx:
        return views.flag_redirect(conversation_id, from_list, data)
    done = toast(views.FLAG_MESSAGES[(flag, value)], "success")
    if from_list:
        context = await _listing(request, user, view, q, data, None)
        return HTMXBlockTemplate(template_name="history.html", block_name="history_results", context=context, **done)
    return HTMXBlockTemplate(
        template_name="history_detail.html", block_name="flags", context={"conversation": conversation}, **done
    )


async def _after_delete(
    request: HTMXRequest, deleted: queries.Conversation, data: Mapping[str, Any]
) -> Template | Response[Any]:
    """A list row's delete (htmx) shows the list again with a toast that can undo it; from the conversation's
    page (or without JS) the person lands on the list, which offers the undo (views.deleted_notice)."""
    if not (request.htmx and _form_text(data, "back") == "list"):
        return views.go_to(request, f"/history?deleted={deleted.id}")
    view, q = _form_text(data, "view"), _form_text(data, "q")
    context = await _listing(request, request.user, view, q, data, None)
    headers = views.undo_toast(request, deleted)
    return HTMXBlockTemplate(
        template_name="history.html", block_name="history_results", context=context, headers=headers
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
    exception_handlers = HISTORY_ERRORS

    @get(["/", "/archived"], name="history")
    async def history_page(
        self,
        request: HTMXRequest,
        q: Annotated[str, Parameter(max_length=MAX_QUERY_LENGTH)] = "",
        cursor: str | None = None,
        group: Annotated[str, Parameter(max_length=40)] = "",
        deleted: Annotated[str, Parameter(max_length=40)] = "",
        view: Annotated[str, Parameter(max_length=20)] = "",
    ) -> Template:
        if request.url.path.rstrip("/").endswith("/archived"):
            view = "archived"
        # The history filters' fields (chatapp.history.filters) are read from the query string by name.
        context = await _listing(request, request.user, view, q, request.query_params, cursor)
        notice = await deleted_notice(request.user.id, deleted, _deletions(request).window)
        return views.list_page(request, context | {"previous_group": group, "deleted": notice}, cursor)

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
        page = await detail_page(user.id, conversation_id)
        if page is None:
            raise NotFoundException()
        if page.detail.conversation.active:
            return Redirect("/", status_code=303)
        return Template("history_detail.html", context=views.detail_context(user, page, request))

    @post("/{conversation_id:uuid}/rename", status_code=200, guards=FORM_ONLY)
    async def rename(
        self,
        request: HTMXRequest,
        conversations: ConversationService,
        conversation_id: uuid.UUID,
        data: Annotated[dict[str, Any], FormBody],
    ) -> Template | Response[Any] | Redirect:
        user: User = request.user
        conversation = await rename(user.id, conversation_id, _form_text(data, "title"))
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

    @post("/{conversation_id:uuid}/delete", status_code=200, guards=FORM_ONLY)
    async def delete(
        self,
        request: HTMXRequest,
        conversations: ConversationService,
        conversation_id: uuid.UUID,
        data: Annotated[dict[str, Any], FormBody],
    ) -> Template | Response[Any]:
        """Hide it now, restorable for CHATAPP_DELETE_UNDO_SECONDS (then purged): see history/deletion.py."""
        deleted = await _deletions(request).delete(request.user.id, conversation_id)
        if deleted is None:
            raise NotFoundException()
        await conversations.publish_history(request.user.id)
        return await _after_delete(request, deleted, data)

    @post("/{conversation_id:uuid}/restore", status_code=200, guards=FORM_ONLY)
    async def restore(
        self, request: HTMXRequest, conversations: ConversationService, conversation_id: uuid.UUID
    ) -> Response[Any]:
        """Undo a delete within its window: 404 for what is not the user's deleted conversation, 410 after it."""
        restored = await _deletions(request).undo(request.user.id, conversation_id)
        await conversations.publish_history(request.user.id)
        return views.restored(request, restored)

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
        return views.share_block(request, saved, token, "Share link created.")

    @post("/{conversation_id:uuid}/share/revoke", status_code=200, dependencies=OWNED_SAVED)
    async def revoke_share(self, request: HTMXRequest, saved: queries.Conversation) -> Template | Redirect:
        await sharing.revoke(saved.id)
        return views.share_block(request, saved, None, "Share link revoked.")

    @post("/{conversation_id:uuid}/continue", status_code=200, dependencies=OWNED_SAVED)
    async def continue_conversation(
        self, request: HTMXRequest, conversations: ConversationService, saved: queries.Conversation
    ) -> Response[Any]:
        """ "Continue here": this conversation is active again, in place (the active one is ended first, as New
        Chat ends it), and the chat page shows it."""
        user: User = request.user
        await conversations.reopen(user.id, saved.id, user.display_name)
        return views.go_to(request, f"/chat/{saved.id}")


class SharedController(Controller):
    """Anyone with the link sees the transcript, and nothing else: no account, no navigation, noindex."""

    include_in_schema = False  # an HTML page (see chatapp.core.openapi)
    exception_handlers = {ShareRevoked: answered_as(410, "This share link was revoked by its owner.")}

    @get("/s/{token:str}", name="shared")
    async def shared(self, request: Request[Any, Any, Any], token: str) -> Template:
        page = await shared_page(token)
        if page is None:
            raise NotFoundException()
        return Template("shared.html", context=views.detail_context(None, page, request), headers=views.SHARED_HEADERS)
