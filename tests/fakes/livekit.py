"""A fake LiveKit server API: Twirp over HTTP with the real protobuf messages, as `livekit-api` speaks it.

It checks every request's bearer JWT with the API key and secret (and the grants the call needs), keeps rooms
and agent dispatches, records each call, and can be told to fail (a Twirp error, a 5xx) or to be slow. It has
no WebRTC: `/rtc` (what livekit-client connects to) is refused, as an unreachable media server would be.

It runs on 127.0.0.1 in a thread with its own event loop, so an app server subprocess can use it while the
test's own event loop is busy awaiting that app.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from aiohttp import web
from google.protobuf.json_format import MessageToJson
from google.protobuf.message import Message
from livekit import api
from livekit.api.access_token import Claims
from livekit.protocol.webhook import WebhookEvent

from chatapp.core.settings import Settings
from tests.support import SECRET_KEY

API_KEY = "fake-api-key"
API_SECRET = "fake-api-secret-long-enough-for-hs256-0123456789"  # PyJWT warns below 32 bytes
RUNTIME_TIMEOUT = 0.5  # seconds: the LiveKit timeout of make_settings (the runtime unit tests)
APP_TIMEOUT = 1.0  # seconds: the LiveKit timeout of the voice_app server

_STATUS = {
    "invalid_argument": 400,
    "malformed": 400,
    "unauthenticated": 401,
    "permission_denied": 403,
    "not_found": 404,
    "bad_route": 404,
    "already_exists": 409,
    "resource_exhausted": 429,
    "internal": 500,
    "unavailable": 503,
    "deadline_exceeded": 504,
}


@dataclass
class Call:
    """One API call as the fake saw it: the decoded request and the verified token's claims."""

    service: str
    method: str
    request: Any
    claims: Claims
    at: float = field(default_factory=time.monotonic)


@dataclass
class _Fault:
    code: str = ""
    status: int = 0
    delay: float = 0.0
    times: int = 1


class FakeLiveKit:
    def __init__(self, api_key: str = API_KEY, api_secret: str = API_SECRET) -> None:
        self.api_key = api_key
        self.api_secret = api_secret
        self.rooms: dict[str, api.Room] = {}
        self.dispatches: dict[str, list[api.AgentDispatch]] = {}
        self.calls: list[Call] = []
        self.rejected: list[tuple[str, str]] = []  # (method, reason) of requests refused for bad auth
        self.rtc_attempts = 0
        self._faults: dict[str, list[_Fault]] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # ---- lifecycle ----
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeLiveKit:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        def run() -> None:
            assert self._loop is not None
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._serve())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="fake-livekit", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake LiveKit did not start")
        return self

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_post("/twirp/livekit.{service}/{method}", self._twirp)
        app.router.add_get("/rtc", self._rtc)
        app.router.add_get("/rtc/{rest:.*}", self._rtc)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def stop(self) -> None:
        if self._loop is None:
            return
        loop = self._loop
        asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        loop.close()
        self._loop = None

    async def _shutdown(self) -> None:
        """Stop serving and cancel requests still held by an injected delay."""
        if self._runner is not None:
            await self._runner.cleanup()
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    # ---- test controls ----
    def fail(self, method: str, code: str = "unavailable", *, status: int | None = None, times: int = 1) -> None:
        """Answer the next `times` calls of `method` with a Twirp error (status from the code unless given)."""
        with self._lock:
            self._faults.setdefault(method, []).append(_Fault(code=code, status=status or _STATUS[code], times=times))

    def delay(self, method: str, seconds: float, *, times: int = 1) -> None:
        """Hold the next `times` calls of `method` for `seconds` before answering normally."""
        with self._lock:
            self._faults.setdefault(method, []).append(_Fault(delay=seconds, times=times))

    def reset(self) -> None:
        with self._lock:
            self.rooms.clear()
            self.dispatches.clear()
            self.calls.clear()
            self.rejected.clear()
            self._faults.clear()
            self.rtc_attempts = 0

    def calls_to(self, method: str, room: str | None = None) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.method == method and room in (None, _room_of(c.request))]

    def forget_room(self, name: str) -> None:
        """The room ended on LiveKit's side (its timeouts, or someone else deleted it)."""
        with self._lock:
            self.rooms.pop(name, None)
            self.dispatches.pop(name, None)

    def wait_for(self, condition: Callable[[], bool], timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"fake LiveKit: condition not met in {timeout}s; calls: {self.summary()}")
            time.sleep(0.02)

    def summary(self) -> list[str]:
        with self._lock:
            return [f"{c.method}({_room_of(c.request)})" for c in self.calls]

    # ---- the protocol ----
    async def _rtc(self, request: web.Request) -> web.Response:
        with self._lock:
            self.rtc_attempts += 1
        return web.Response(status=503, text="fake LiveKit: no media server here")

    async def _twirp(self, request: web.Request) -> web.Response:
        service, method = request.match_info["service"], request.match_info["method"]
        handler = self._handlers().get((service, method))
        if handler is None:
            return _error("bad_route", f"no handler for {service}/{method}")
        request_class, need, run = handler
        if request.content_type != "application/protobuf":
            return _error("malformed", "expected application/protobuf")
        try:
            message = request_class.FromString(await request.read())
        except Exception:
            return _error("malformed", "request is not a valid protobuf message")
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        try:
            if scheme != "Bearer":
                raise ValueError("no bearer token")
            claims = api.TokenVerifier(self.api_key, self.api_secret).verify(token)
        except Exception as exc:
            with self._lock:
                self.rejected.append((method, type(exc).__name__))
            return _error("unauthenticated", "invalid token")
        if not need(claims.video, message):
            with self._lock:
                self.rejected.append((method, "grants"))
            return _error("permission_denied", "the token lacks the grants for this call")
        with self._lock:
            self.calls.append(Call(service, method, message, claims))
            fault = self._take_fault(method)
        if fault is not None and fault.delay:
            await asyncio.sleep(fault.delay)
        if fault is not None and fault.code:
            return _error(fault.code, "injected by the test", status=fault.status)
        with self._lock:
            result = run(message)
        if isinstance(result, web.Response):
            return result
        return web.Response(body=result.SerializeToString(), content_type="application/protobuf")

    def _take_fault(self, method: str) -> _Fault | None:
        queue = self._faults.get(method)
        if not queue:
            return None
        fault = queue[0]
        fault.times -= 1
        if fault.times <= 0:
            queue.pop(0)
        return fault

    def _handlers(self) -> dict[tuple[str, str], tuple[Any, Callable[[Any, Any], bool], Callable[[Any], Any]]]:
        def room_create(video: Any, _: Any) -> bool:
            return bool(video and video.room_create)

        def room_list(video: Any, _: Any) -> bool:
            return bool(video and video.room_list)

        def room_admin(video: Any, message: Any) -> bool:
            return bool(video and video.room_admin and video.room == message.room)

        return {
            ("RoomService", "CreateRoom"): (api.CreateRoomRequest, room_create, self._create_room),
            ("RoomService", "DeleteRoom"): (api.DeleteRoomRequest, room_create, self._delete_room),
            ("RoomService", "ListRooms"): (api.ListRoomsRequest, room_list, self._list_rooms),
            ("AgentDispatchService", "CreateDispatch"): (
                api.CreateAgentDispatchRequest,
                room_admin,
                self._create_dispatch,
            ),
            ("AgentDispatchService", "ListDispatch"): (api.ListAgentDispatchRequest, room_admin, self._list_dispatch),
            ("AgentDispatchService", "DeleteDispatch"): (
                api.DeleteAgentDispatchRequest,
                room_admin,
                self._delete_dispatch,
            ),
        }

    def _create_room(self, req: api.CreateRoomRequest) -> api.Room:
        room = self.rooms.get(req.name)
        if room is None:  # like LiveKit: creating an existing room returns it
            room = api.Room(
                sid=f"RM_{next(self._ids)}",
                name=req.name,
                empty_timeout=req.empty_timeout,
                departure_timeout=req.departure_timeout,
                metadata=req.metadata,
                creation_time=int(time.time()),
            )
            self.rooms[req.name] = room
        return room

    def _delete_room(self, req: api.DeleteRoomRequest) -> Message | web.Response:
        if self.rooms.pop(req.room, None) is None:
            return _error("not_found", "requested room does not exist")
        self.dispatches.pop(req.room, None)
        return api.DeleteRoomResponse()

    def _list_rooms(self, req: api.ListRoomsRequest) -> api.ListRoomsResponse:
        rooms = [r for name, r in self.rooms.items() if not req.names or name in req.names]
        return api.ListRoomsResponse(rooms=rooms)

    def _create_dispatch(self, req: api.CreateAgentDispatchRequest) -> api.AgentDispatch:
        dispatch = api.AgentDispatch(
            id=f"AD_{next(self._ids)}",
            agent_name=req.agent_name,
            room=req.room,
            metadata=req.metadata,
            state=api.AgentDispatchState(created_at=time.time_ns()),  # no jobs: no worker here takes it
        )
        self.dispatches.setdefault(req.room, []).append(dispatch)
        return dispatch

    def _delete_dispatch(self, req: api.DeleteAgentDispatchRequest) -> api.AgentDispatch | web.Response:
        found = [d for d in self.dispatches.get(req.room, []) if d.id == req.dispatch_id]
        if not found:
            return _error("not_found", "dispatch not found")
        self.dispatches[req.room].remove(found[0])
        return found[0]

    def _list_dispatch(self, req: api.ListAgentDispatchRequest) -> api.ListAgentDispatchResponse:
        return api.ListAgentDispatchResponse(agent_dispatches=self.dispatches.get(req.room, []))


def _room_of(request: Any) -> str:
    """The room a request is about (CreateRoom names it `name`, the others `room`)."""
    return str(getattr(request, "room", "") or getattr(request, "name", ""))


def _error(code: str, msg: str, *, status: int | None = None) -> web.Response:
    """A Twirp error: JSON with the code and message, and the code's HTTP status."""
    return web.json_response({"code": code, "msg": msg}, status=status or _STATUS[code])


def signed_webhook(
    event: WebhookEvent,
    *,
    api_key: str = API_KEY,
    api_secret: str = API_SECRET,
    ttl: timedelta = timedelta(minutes=5),
) -> tuple[str, str]:
    """The body and Authorization header LiveKit sends: a JWT whose sha256 claim is the body's hash."""
    body = MessageToJson(event)
    digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
    token = api.AccessToken(api_key, api_secret).with_sha256(digest).with_ttl(ttl).to_jwt()
    return body, token


def room_finished(room_name: str) -> WebhookEvent:
    return WebhookEvent(event="room_finished", room=api.Room(name=room_name, sid="RM_x"), id=f"EV_{time.time_ns()}")


def make_settings(fake: FakeLiveKit, **env: str) -> Settings:
    """Settings of an app process whose LiveKit is `fake`, with a short LiveKit timeout."""
    return Settings.from_env(
        {
            "CHATAPP_SECRET_KEY": SECRET_KEY,
            "CHATAPP_DATA_DIR": "/nonexistent",
            "CHATAPP_PUBLIC_URL": "https://chat.example.com",
            "LIVEKIT_URL": fake.url,
            "LIVEKIT_API_KEY": API_KEY,
            "LIVEKIT_API_SECRET": API_SECRET,
            "CHATAPP_LIVEKIT_TIMEOUT": str(RUNTIME_TIMEOUT),
            "CHATAPP_AGENT_NAME": "test-agent",
        }
        | env
    )
