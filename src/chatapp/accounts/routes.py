"""Sign-up, login and logout pages: thin handlers over accounts.service."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlsplit

from litestar import Controller, Request, get, post
from litestar.enums import RequestEncodingType
from litestar.params import Body
from litestar.response import Redirect, Template

from chatapp.accounts import service
from chatapp.accounts.limits import clear_login_failures, count_login_attempt, device_cookie, limit
from chatapp.accounts.sessions import rotate_session, session_for, session_tag
from chatapp.core.validation import FORM_ONLY, has_control_characters

FormBody = Body(media_type=RequestEncodingType.URL_ENCODED)


def safe_next(target: str | None) -> str:
    """Only same-site paths: an open redirect after login would help phishing."""
    if not target or has_control_characters(target):  # a NUL or newline cannot go into a Location header
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return "/"
    return target


def _form(data: dict[str, Any], name: str) -> str:
    value = data.get(name, "")
    return value if isinstance(value, str) else ""


LOGIN_FAILED = "That email and password do not match an account."


def _form_page(
    template: str, values: dict[str, str], errors: dict[str, str] | None = None, status_code: int = 200
) -> Template:
    """The sign-up or login form, with what was typed and the messages beside their fields."""
    context = {"next": safe_next(values.get("next")), "errors": errors or {}, "values": values}
    return Template(template, context=context, status_code=status_code)


def _logged_in(request: Request[Any, Any, Any], user: service.User, next_path: str) -> Redirect:
    """A fresh session id for the new login (no fixation), a device cookie naming this browser as the account's
    (so guesses from elsewhere cannot lock it out), then on to where the person was going."""
    rotate_session(request)
    request.set_session(session_for(user))
    cookie = device_cookie(request.app.state.settings, user.email)
    return Redirect(safe_next(next_path), status_code=303, cookies=[cookie])


class AccountController(Controller):
    include_in_schema = False  # HTML pages and htmx fragments: not an API (see chatapp.core.openapi)

    @get("/signup", name="signup")
    async def signup_page(self, next: str | None = None) -> Template:
        return Template("signup.html", context={"next": safe_next(next), "errors": {}, "values": {}})

    @post("/signup", status_code=303, guards=[*FORM_ONLY, limit("signup")])
    async def signup(
        self, request: Request[Any, Any, Any], data: Annotated[dict[str, Any], FormBody]
    ) -> Template | Redirect:
        values = {k: _form(data, k) for k in ("email", "display_name", "next")}
        try:
            user = await service.create_user(values["email"], values["display_name"], _form(data, "password"))
        except service.AccountError as exc:  # the form again, with what was typed: not an error page
            return _form_page("signup.html", values, exc.errors, 422)
        return _logged_in(request, user, values["next"])

    @get("/login", name="login")
    async def login_page(self, next: str | None = None) -> Template:
        return Template("login.html", context={"next": safe_next(next), "errors": {}, "values": {}})

    @post("/login", status_code=303, guards=[*FORM_ONLY, limit("login")])
    async def login(
        self, request: Request[Any, Any, Any], data: Annotated[dict[str, Any], FormBody]
    ) -> Template | Redirect:
        values = {"email": _form(data, "email"), "next": _form(data, "next")}
        counter = await count_login_attempt(request, service.login_key(values["email"]))
        user = await service.authenticate(values["email"], _form(data, "password"))
        if user is None:
            return _form_page("login.html", values, {"form": LOGIN_FAILED}, 401)
        await clear_login_failures(request, counter)
        return _logged_in(request, user, values["next"])

    @post("/logout", status_code=303)
    async def logout(self, request: Request[Any, Any, Any]) -> Redirect:
        # Open streams of this login would otherwise keep showing the conversation after logout.
        await request.app.state.conversations.hub.end_login_session(request.user.id, session_tag(request))
        request.clear_session()
        return Redirect("/login", status_code=303)
