"""The import page: upload a chatapp export (JSON or zip) or ChatGPT's conversations.json."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.datastructures import CacheControlHeader, UploadFile
from litestar.enums import RequestEncodingType
from litestar.params import Body
from litestar.response import Template

from chatapp.accounts.limits import limit
from chatapp.accounts.service import User
from chatapp.conversations.http import SERVICE
from chatapp.conversations.service import ConversationService
from chatapp.history import importer

# The multipart body around the file: boundaries, headers and the CSRF field.
_ENVELOPE = 64 * 1024


def unimportable(request: Request[User, Any, Any], exc: importer.UnimportableFile) -> Template:
    """A file that cannot be imported changed nothing: the page again, saying why."""
    context = {"user": request.user, "limits": _limits(), "error": f"{exc} Nothing was imported."}
    return Template("import.html", context=context, status_code=exc.status_code)


class ImportController(Controller):
    path = "/history/import"
    include_in_schema = False  # HTML pages and htmx fragments: not an API (see chatapp.core.openapi)
    cache_control = CacheControlHeader(no_store=True)
    dependencies = SERVICE
    exception_handlers = {importer.UnimportableFile: unimportable}

    @get("/", name="history_import")
    async def page(self, request: Request[User, Any, Any]) -> Template:
        return Template("import.html", context={"user": request.user, "limits": _limits()})

    @post(
        "/",
        status_code=200,
        guards=[limit("import")],
        request_max_body_size=importer.MAX_UPLOAD_BYTES + _ENVELOPE,
    )
    async def upload(
        self,
        request: Request[User, Any, Any],
        conversations: ConversationService,
        data: Annotated[dict[str, Any], Body(media_type=RequestEncodingType.MULTI_PART)],
    ) -> Template:
        """Multipart on purpose (a file), so not behind the URL-encoded form guard; CSRF still applies."""
        user: User = request.user
        upload = data.get("file")
        context: dict[str, Any] = {"user": user, "limits": _limits()}
        if not isinstance(upload, UploadFile):
            return Template("import.html", context=context | {"error": "Choose a file to import."}, status_code=422)
        result = await importer.import_upload(user.id, upload.filename or "", upload)
        if result.imported:
            await conversations.publish_history(user.id)
        return Template("import.html", context=context | {"result": result.message})


def _limits() -> dict[str, int]:
    return {
        "megabytes": importer.MAX_UPLOAD_BYTES // (1024 * 1024),
        "conversations": importer.MAX_CONVERSATIONS,
        "messages": importer.MAX_UTTERANCES,
    }
