"""The account page: change the name or the password, download all my data, delete the account."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import CacheControlHeader
from litestar.response import Redirect, Template

from chatapp.accounts.limits import limit
from chatapp.accounts.routes import FormBody, _form
from chatapp.accounts.service import AccountError, User
from chatapp.accounts.sessions import rotate_session, session_for, session_tag
from chatapp.conversations.http import SERVICE, answered_as
from chatapp.conversations.service import ConversationService
from chatapp.core.validation import FORM_ONLY
from chatapp.profile import service

NOTICES = {"name": "Your name was changed.", "password": "Your password was changed. Other devices were logged out."}


def _page(user: User, *, errors: dict[str, str] | None = None, done: str = "", status_code: int = 200) -> Template:
    return Template(
        "account.html",
        context={"user": user, "errors": errors or {}, "notice": NOTICES.get(done, "")},
        status_code=status_code,
    )


def form_errors(request: Request[User, Any, Any], exc: AccountError) -> Template:
    """A change the form's rules refuse: the page again, the messages beside their fields."""
    return _page(request.user, errors=exc.errors, status_code=422)


class AccountSettingsController(Controller):
    path = "/account"
    include_in_schema = False  # HTML pages and htmx fragments: not an API (see chatapp.core.openapi)
    cache_control = CacheControlHeader(no_store=True)
    dependencies = SERVICE
    exception_handlers = {
        AccountError: form_errors,
        service.ExportTooLarge: answered_as(413, lambda exc: f"{exc} Export conversations one by one instead."),
    }

    @get("/", name="account")
    async def page(self, request: Request[User, Any, Any], done: str = "") -> Template:
        return _page(request.user, done=done)

    @post("/name", status_code=303, guards=[*FORM_ONLY, limit("account")])
    async def rename(
        self, request: Request[User, Any, Any], data: Annotated[dict[str, Any], FormBody]
    ) -> Template | Redirect:
        user = await service.rename(request.user, _form(data, "display_name"))
        request.set_session(session_for(user))
        return Redirect("/account?done=name", status_code=303)

    @post("/password", status_code=303, guards=[*FORM_ONLY, limit("account")])
    async def change_password(
        self,
        request: Request[User, Any, Any],
        conversations: ConversationService,
        data: Annotated[dict[str, Any], FormBody],
    ) -> Template | Redirect:
        user: User = request.user
        ended = await service.change_password(user, _form(data, "current_password"), _form(data, "new_password"))
        await _end_streams(conversations, user, ended, keep=session_tag(request))
        rotate_session(request)  # this browser stays logged in, under a new session id
        request.set_session(session_for(user))
        return Redirect("/account?done=password", status_code=303)

    @get("/export.zip", name="account_export")
    async def download(self, request: Request[User, Any, Any]) -> Response[bytes]:
        data = await service.export_zip(request.user.id)
        name = f"chatapp-export-{datetime.now(UTC):%Y-%m-%d}.zip"
        return Response(
            data, media_type="application/zip", headers={"Content-Disposition": f'attachment; filename="{name}"'}
        )

    @post("/delete", status_code=200, guards=[*FORM_ONLY, limit("account")])
    async def delete(
        self,
        request: Request[User, Any, Any],
        conversations: ConversationService,
        data: Annotated[dict[str, Any], FormBody],
    ) -> Template:
        user: User = request.user
        await service.confirm_deletion(user, _form(data, "confirm"))
        # Stop the agent of the active conversation first; the rows go with the account below.
        await conversations.end(user.id, None, "account_deleted")
        ended = await service.delete_account(user.id)
        await _end_streams(conversations, user, ended, keep=None)
        request.clear_session()
        return Template("account_deleted.html", context={"user": None})


async def _end_streams(conversations: ConversationService, user: User, keys: list[str], keep: str | None) -> None:
    """Open live streams of the ended login sessions stop too, in every process (like a logout)."""
    for key in keys:
        tag = service.session_tag_of(key)
        if tag != keep:
            await conversations.hub.end_login_session(user.id, tag)
