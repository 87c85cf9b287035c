"""The LiveKit agent runtime: each conversation is a LiveKit room with the agent worker dispatched into it.

start: create the room (with empty and departure timeouts, so rooms never linger), dispatch the agent by name
with the conversation's ingest URL and token, and mint the browser's participant token. stop: delete the room,
which ends the agent's job; it runs in the background, so saving never waits for LiveKit. Every call has a
deadline (CHATAPP_LIVEKIT_TIMEOUT); a LiveKit outage becomes an AgentStartError with a message for the panel.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid

import aiohttp
from livekit import api

from chatapp.conversations import queries
from chatapp.conversations.agent_access import ingest_token, room_name_for
from chatapp.conversations.agent_runtime import AgentStartError, ConversationInfo, StartInfo
from chatapp.core.settings import Settings
from chatapp.livekit.metadata import DispatchMetadata
from chatapp.livekit.tokens import browser_url, participant_token

log = logging.getLogger(__name__)

UNREACHABLE = "Voice is unavailable: LiveKit could not be reached. Your messages are still saved; try Retry."
REFUSED = "Voice is unavailable: LiveKit refused the app's credentials. Your messages are still saved."
# A dispatch no worker has taken this long after it was made is not going to be: LiveKit gives up after ~5 s.
STRANDED_AFTER = 10.0
_FAILURES = (api.TwirpError, aiohttp.ClientError, TimeoutError, OSError)


def describe(exc: BaseException) -> str:
    """An error for the log: its kind and status, never a message that could quote a token or a URL."""
    if isinstance(exc, api.TwirpError):
        return f"{exc.code} (HTTP {exc.status})"
    return type(exc).__name__


def ingest_base_url(settings: Settings) -> str:
    """Where the worker reaches this app: CHATAPP_INGEST_URL, else CHATAPP_PUBLIC_URL, else the served address."""
    return settings.ingest_url or settings.public_url or settings.served_url


class LiveKitRuntime:
    """The `AgentRuntime` that runs each conversation's agent as a LiveKit agent job."""

    answers_typed_text = False  # the browser sends typed text to the agent over the room's lk.chat itself

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._api: api.LiveKitAPI | None = None
        self._running: dict[uuid.UUID, str] = {}
        self._starting: dict[uuid.UUID, asyncio.Future[None]] = {}
        self._stopping: set[asyncio.Task[None]] = set()
        self._closed = False

    def _client(self) -> api.LiveKitAPI:
        if self._api is None:  # created on first use: aiohttp wants a running event loop
            s = self._settings
            self._api = api.LiveKitAPI(
                s.livekit_url,
                s.livekit_api_key,
                s.livekit_api_secret,
                timeout=aiohttp.ClientTimeout(total=s.livekit_timeout),
            )
        return self._api

    def join_info(self, room: str, identity: str, name: str = "") -> StartInfo:
        """What the browser needs to join `room`, with a freshly minted participant token."""
        token = participant_token(self._settings, room=room, identity=identity, name=name)
        return StartInfo(mode="voice", livekit_url=browser_url(self._settings), participant_token=token)

    def _join_info(self, conversation: ConversationInfo) -> StartInfo:
        identity = str(conversation.user_id or conversation.id)
        return self.join_info(conversation.room_name, identity, conversation.user_display_name)

    def dispatch_metadata(self, conversation: ConversationInfo) -> DispatchMetadata:
        base = ingest_base_url(self._settings)
        return DispatchMetadata(
            conversation_id=conversation.id,
            ingest_url=f"{base}/api/conversations/{conversation.id}/events"
            + (f"?period={conversation.period}" if conversation.period else ""),
            ingest_token=ingest_token(self._settings.secret_key, conversation.id, conversation.period),
            system_prompt=conversation.system_prompt,
            user_identity=str(conversation.user_id) if conversation.user_id else "",
            user_name=conversation.user_display_name,
            history=conversation.history,
            answer_last=conversation.answer_last,
        )

    async def start(self, conversation: ConversationInfo) -> StartInfo:
        if self._closed:
            raise AgentStartError("the agent runtime is shut down")
        if conversation.id in self._running:
            return self._join_info(conversation)
        if (pending := self._starting.get(conversation.id)) is not None:
            await asyncio.shield(pending)
            return self._join_info(conversation)
        started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._starting[conversation.id] = started
        try:
            async with asyncio.timeout(self._settings.livekit_timeout):
                await self._open_room(conversation)
        except _FAILURES as exc:
            log.warning("LiveKit room for conversation %s could not be opened: %s", conversation.id, describe(exc))
            refused = isinstance(exc, api.TwirpError) and exc.status in {401, 403}
            error = AgentStartError("LiveKit room not opened", detail=REFUSED if refused else UNREACHABLE)
            started.set_exception(error)
            started.exception()  # retrieved here; concurrent waiters get it through shield
            raise error from exc
        else:
            self._running[conversation.id] = conversation.room_name
            started.set_result(None)
        finally:
            self._starting.pop(conversation.id, None)
        log.info("LiveKit room opened for conversation %s", conversation.id)
        return self._join_info(conversation)

    async def forget_if_gone(self, conversation_id: uuid.UUID, room: str) -> bool:
        """Whether the running conversation's agent must be started again, and then forget it here, so the
        next `start` does: its room has gone from the server (a self-hosted server that restarts keeps no
        rooms), or the server could not give its dispatch to any worker (none was registered yet, as after such
        a restart), which it does not retry. Asked when a browser needs to (re)join or waits for the agent, not
        on every page view. AgentStartError when LiveKit cannot be asked."""
        if conversation_id not in self._running:
            return False
        try:
            async with asyncio.timeout(self._settings.livekit_timeout):
                gone = await self._room_gone(room)
                stranded = not gone and await self._drop_stranded_dispatch(room)
        except _FAILURES as exc:
            log.warning("LiveKit room for conversation %s could not be checked: %s", conversation_id, describe(exc))
            raise AgentStartError("LiveKit room not checked", detail=UNREACHABLE) from exc
        if gone or stranded:
            log.warning(
                "LiveKit %s for conversation %s; starting it again",
                "room is gone from the server" if gone else "dispatch found no worker",
                conversation_id,
            )
            self._running.pop(conversation_id, None)
        return gone or stranded

    async def _room_gone(self, room: str) -> bool:
        found = await self._client().room.list_rooms(api.ListRoomsRequest(names=[room]))
        return not any(r.name == room for r in found.rooms)

    async def _drop_stranded_dispatch(self, room: str) -> bool:
        """Delete our dispatches of `room` that no worker took within STRANDED_AFTER seconds; True if any."""
        lk = self._client()
        stranded = [
            d
            for d in await lk.agent_dispatch.list_dispatch(room)
            if d.agent_name == self._settings.agent_name
            and not d.state.jobs
            and time.time() - d.state.created_at / 1e9 > STRANDED_AFTER
        ]
        for dispatch in stranded:
            await lk.agent_dispatch.delete_dispatch(dispatch.id, room)
        return bool(stranded)

    async def _open_room(self, conversation: ConversationInfo) -> None:
        """Create the room and dispatch the agent, unless it is already there (an earlier app process did it)."""
        lk = self._client()
        s = self._settings
        room = conversation.room_name
        await lk.room.create_room(
            api.CreateRoomRequest(
                name=room,
                empty_timeout=s.livekit_empty_timeout,
                departure_timeout=s.livekit_departure_timeout,
                metadata=json.dumps({"conversation_id": str(conversation.id)}),
            )
        )
        dispatches = await lk.agent_dispatch.list_dispatch(room)
        if any(d.agent_name == s.agent_name for d in dispatches):
            return
        await lk.agent_dispatch.create_dispatch(
            api.CreateAgentDispatchRequest(
                agent_name=s.agent_name, room=room, metadata=self.dispatch_metadata(conversation).to_json()
            )
        )

    async def send_text(self, conversation_id: uuid.UUID, text: str) -> None:
        """Typed text reaches a LiveKit agent over the room's `lk.chat` stream, from the browser. Text posted to
        the app instead (the browser could not join the room) is stored, but the agent does not hear it."""
        log.debug("typed text for conversation %s stored without reaching the LiveKit agent", conversation_id)

    async def interrupt(self, conversation_id: uuid.UUID) -> bool:
        """Not supported in voice mode: the agent runs in a LiveKit worker, which the app cannot reach (in a
        room, the person interrupts by speaking). The chat page hides its Stop button in voice mode."""
        log.debug(
            "stop for conversation %s ignored: LiveKit agents cannot be interrupted from the app", conversation_id
        )
        return False

    async def stop(self, conversation_id: uuid.UUID) -> None:
        if (pending := self._starting.get(conversation_id)) is not None:
            with contextlib.suppress(Exception):  # a failed start leaves nothing running, but maybe a room
                await asyncio.shield(pending)
        room = self._running.pop(conversation_id, None) or await _ended_room(conversation_id)
        task = asyncio.create_task(self._delete_room(conversation_id, room), name=f"livekit-delete-{room}")
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    async def _delete_room(self, conversation_id: uuid.UUID, room: str) -> None:
        try:
            async with asyncio.timeout(self._settings.livekit_timeout):
                await self._client().room.delete_room(api.DeleteRoomRequest(room=room))
        except api.TwirpError as exc:
            if exc.code == api.TwirpErrorCode.NOT_FOUND or exc.status == 404:
                log.debug("LiveKit room for conversation %s was already gone", conversation_id)
                return
            self._delete_failed(conversation_id, exc)
        except _FAILURES as exc:
            self._delete_failed(conversation_id, exc)
        else:
            log.info("LiveKit room for conversation %s deleted", conversation_id)

    def _delete_failed(self, conversation_id: uuid.UUID, exc: BaseException) -> None:
        log.warning(
            "deleting the LiveKit room for conversation %s failed: %s; it closes itself after its timeouts",
            conversation_id,
            describe(exc),
        )

    async def wait_stopped(self) -> None:
        """Wait for the room deletions still in flight (each is bounded by the LiveKit timeout)."""
        while self._stopping:
            await asyncio.gather(*list(self._stopping), return_exceptions=True)

    def is_running(self, conversation_id: uuid.UUID) -> bool:
        return conversation_id in self._running

    async def aclose(self) -> None:
        """App shutdown: finish pending deletions and close the HTTP session. Rooms of active conversations are
        left running: their conversations are still active, and a browser rejoins after the app restarts."""
        self._closed = True
        await self.wait_stopped()
        if self._api is not None:
            await self._api.aclose()
            self._api = None


async def _ended_room(conversation_id: uuid.UUID) -> str:
    """The room of the period that just ended, for a stop on a process that did not start it: the conversation's
    room, or the previous period's when it was reopened meanwhile (or period 0's when it was deleted)."""
    try:
        conversation = await queries.get_conversation(conversation_id)
    except Exception:  # no database at hand: the first period's name (a room missed closes after its timeouts)
        log.debug("room of conversation %s looked up without the database", conversation_id)
        conversation = None
    if conversation is None:
        return room_name_for(conversation_id)
    if conversation.active:
        return room_name_for(conversation_id, max(0, conversation.period - 1))
    return conversation.room_name
