"""The LiveKit runtime with the real `livekit-api` client against the fake Twirp server."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from livekit import api

from chatapp.conversations.agent_access import ingest_token
from chatapp.conversations.agent_runtime import AgentStartError, ConversationInfo
from chatapp.livekit.metadata import DispatchMetadata
from chatapp.livekit.runtime import REFUSED, UNREACHABLE, LiveKitRuntime, ingest_base_url
from tests.fakes.livekit import API_KEY, API_SECRET, RUNTIME_TIMEOUT, FakeLiveKit, make_settings
from tests.support import SECRET_KEY

TIMEOUT = RUNTIME_TIMEOUT  # the LiveKit timeout of make_settings


@pytest.fixture
async def runtime(fake: FakeLiveKit) -> AsyncIterator[LiveKitRuntime]:
    fake.reset()
    rt = LiveKitRuntime(make_settings(fake))
    yield rt
    await rt.aclose()


def conversation(history: tuple[tuple[str, str], ...] = ()) -> ConversationInfo:
    cid = uuid.uuid4()
    return ConversationInfo(
        id=cid,
        room_name=f"chat-{cid.hex}",
        system_prompt="You plan trips.",
        user_display_name="Ada",
        user_id=uuid.uuid4(),
        history=history,
    )


async def test_start_creates_the_room_and_dispatches_the_agent(fake: FakeLiveKit, runtime: LiveKitRuntime) -> None:
    info = conversation(history=(("user", "Lisbon?"), ("agent", "Lovely.")))
    start = await runtime.start(info)

    assert fake.summary() == [f"CreateRoom({info.room_name})", f"ListDispatch({info.room_name})",
                              f"CreateDispatch({info.room_name})"]  # fmt: skip
    assert fake.rejected == []
    [create] = fake.calls_to("CreateRoom")
    assert create.request.name == info.room_name
    assert (create.request.empty_timeout, create.request.departure_timeout) == (300, 60)
    assert json.loads(create.request.metadata) == {"conversation_id": str(info.id)}
    assert create.claims.video is not None
    assert create.claims.video.room_create
    # (the fake verified each bearer JWT: signed with our secret, issued by our key, unexpired)
    [dispatch] = fake.calls_to("CreateDispatch")
    assert dispatch.request.agent_name == "test-agent"
    assert dispatch.request.room == info.room_name
    assert dispatch.claims.video is not None
    assert dispatch.claims.video.room_admin
    assert dispatch.claims.video.room == info.room_name
    meta = DispatchMetadata.from_json(dispatch.request.metadata)
    assert meta.conversation_id == info.id
    assert meta.ingest_url == f"https://chat.example.com/api/conversations/{info.id}/events"
    assert meta.ingest_token == ingest_token(SECRET_KEY, info.id)
    assert (meta.system_prompt, meta.user_name, meta.user_identity) == ("You plan trips.", "Ada", str(info.user_id))
    assert meta.history == info.history

    assert start.mode == "voice"
    assert start.livekit_url == fake.url.replace("http://", "ws://")
    claims = api.TokenVerifier(API_KEY, API_SECRET).verify(start.participant_token)
    assert claims.identity == str(info.user_id)
    assert claims.video is not None
    assert claims.video.room == info.room_name
    assert runtime.is_running(info.id)


async def test_start_is_idempotent_even_when_concurrent(fake: FakeLiveKit, runtime: LiveKitRuntime) -> None:
    info = conversation()
    first, second = await asyncio.gather(runtime.start(info), runtime.start(info))
    again = await runtime.start(info)
    assert first.mode == second.mode == again.mode == "voice"
    assert len(fake.calls_to("CreateDispatch")) == 1
    assert len(fake.calls_to("CreateRoom")) == 1


async def test_a_new_app_process_reuses_the_dispatch_already_in_the_room(fake: FakeLiveKit) -> None:
    fake.reset()
    info = conversation()
    for _ in range(2):  # two app processes (or a restart) opening the same conversation
        rt = LiveKitRuntime(make_settings(fake))
        await rt.start(info)
        await rt.aclose()
    assert len(fake.calls_to("CreateRoom")) == 2
    assert len(fake.calls_to("CreateDispatch")) == 1


async def test_stop_deletes_the_room_and_tolerates_one_already_gone(
    fake: FakeLiveKit, runtime: LiveKitRuntime, caplog: pytest.LogCaptureFixture
) -> None:
    info = conversation()
    await runtime.start(info)
    await runtime.stop(info.id)
    await runtime.wait_stopped()
    assert [c.request.room for c in fake.calls_to("DeleteRoom")] == [info.room_name]
    assert info.room_name not in fake.rooms
    assert not runtime.is_running(info.id)

    caplog.set_level(logging.DEBUG, logger="chatapp.livekit.runtime")
    await runtime.stop(info.id)  # the room is gone now: LiveKit answers not_found
    await runtime.wait_stopped()
    assert len(fake.calls_to("DeleteRoom")) == 2
    assert "already gone" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_stop_returns_at_once_and_a_failing_delete_is_only_logged(
    fake: FakeLiveKit, runtime: LiveKitRuntime, caplog: pytest.LogCaptureFixture
) -> None:
    info = conversation()
    await runtime.start(info)
    fake.delay("DeleteRoom", TIMEOUT * 4)
    began = time.monotonic()
    await runtime.stop(info.id)
    assert time.monotonic() - began < 0.1  # saving never waits for LiveKit
    await runtime.wait_stopped()
    assert time.monotonic() - began < TIMEOUT * 3
    assert "deleting the LiveKit room" in caplog.text
    assert "TimeoutError" in caplog.text

    caplog.clear()
    await runtime.start(info)
    fake.fail("DeleteRoom", "internal")
    await runtime.stop(info.id)
    await runtime.wait_stopped()
    assert "internal (HTTP 500)" in caplog.text


@pytest.mark.parametrize("method", ["CreateRoom", "ListDispatch", "CreateDispatch"])
async def test_a_5xx_fails_the_start_with_a_message_for_the_panel(
    fake: FakeLiveKit, runtime: LiveKitRuntime, method: str
) -> None:
    info = conversation()
    fake.fail(method, "unavailable")
    with pytest.raises(AgentStartError) as failure:
        await runtime.start(info)
    assert failure.value.detail == UNREACHABLE
    assert not runtime.is_running(info.id)
    await runtime.start(info)  # LiveKit is back: Retry works
    assert runtime.is_running(info.id)
    assert len(fake.calls_to("CreateDispatch")) == (2 if method == "CreateDispatch" else 1)


async def test_a_slow_livekit_fails_the_start_within_the_timeout(fake: FakeLiveKit, runtime: LiveKitRuntime) -> None:
    info = conversation()
    fake.delay("CreateDispatch", TIMEOUT * 6)
    began = time.monotonic()
    with pytest.raises(AgentStartError) as failure:
        await runtime.start(info)
    assert TIMEOUT * 0.9 < time.monotonic() - began < TIMEOUT * 2
    assert failure.value.detail == UNREACHABLE


async def test_an_unreachable_livekit_fails_the_start(fake: FakeLiveKit) -> None:
    rt = LiveKitRuntime(make_settings(fake, LIVEKIT_URL="http://127.0.0.1:9"))  # nothing listens on port 9
    with pytest.raises(AgentStartError) as failure:
        await rt.start(conversation())
    assert failure.value.detail == UNREACHABLE
    await rt.aclose()


async def test_wrong_credentials_say_so(fake: FakeLiveKit) -> None:
    fake.reset()
    rt = LiveKitRuntime(make_settings(fake, LIVEKIT_API_SECRET="a-wrong-secret-that-is-long-enough-0123456789"))
    with pytest.raises(AgentStartError) as failure:
        await rt.start(conversation())
    assert failure.value.detail == REFUSED
    assert fake.rejected == [("CreateRoom", "InvalidSignatureError")]
    assert fake.calls == []
    await rt.aclose()


async def test_a_closed_runtime_starts_nothing(runtime: LiveKitRuntime) -> None:
    await runtime.aclose()
    with pytest.raises(AgentStartError):
        await runtime.start(conversation())


def test_the_ingest_url_defaults_to_the_served_address(fake: FakeLiveKit) -> None:
    s = make_settings(fake, CHATAPP_PUBLIC_URL="")
    assert ingest_base_url(s) == "http://127.0.0.1:8000"
    assert ingest_base_url(make_settings(fake, CHATAPP_HOST="0.0.0.0", CHATAPP_PORT="9000", CHATAPP_PUBLIC_URL="")) == (
        "http://127.0.0.1:9000"
    )
    assert ingest_base_url(make_settings(fake)) == "https://chat.example.com"
    assert ingest_base_url(make_settings(fake, CHATAPP_INGEST_URL="http://app.internal:8000")) == (
        "http://app.internal:8000"
    )


async def test_a_room_the_server_lost_is_opened_again_with_a_new_dispatch(
    fake: FakeLiveKit, runtime: LiveKitRuntime
) -> None:
    """A self-hosted server that restarts keeps no rooms: asked before a browser rejoins, the runtime notices
    and the next start opens the room again and dispatches a fresh agent (before, it returned its cached join
    info for a room that no longer existed)."""
    info = conversation()
    await runtime.start(info)
    assert await runtime.forget_if_gone(info.id, info.room_name) is False  # still there: nothing to do
    fake.forget_room(info.room_name)  # the restart
    fake.reset()

    assert await runtime.forget_if_gone(info.id, info.room_name) is True
    assert not runtime.is_running(info.id)
    await runtime.start(info)
    assert fake.summary() == ["ListRooms()", f"CreateRoom({info.room_name})",
                              f"ListDispatch({info.room_name})", f"CreateDispatch({info.room_name})"]  # fmt: skip
    assert info.room_name in fake.rooms


async def test_a_dispatch_no_worker_took_is_replaced_but_a_recent_one_is_left_alone(
    fake: FakeLiveKit, runtime: LiveKitRuntime
) -> None:
    info = conversation()
    await runtime.start(info)
    assert await runtime.forget_if_gone(info.id, info.room_name) is False  # just made: a worker may take it yet
    [stranded] = fake.dispatches[info.room_name]
    stranded.state.created_at -= 11 * 10**9  # LiveKit gave up on it (no worker was registered)

    assert await runtime.forget_if_gone(info.id, info.room_name) is True
    await runtime.start(info)
    [replacement] = fake.dispatches[info.room_name]
    assert replacement.id != stranded.id
    assert [c.request.dispatch_id for c in fake.calls_to("DeleteDispatch")] == [stranded.id]


async def test_a_room_check_with_livekit_down_says_voice_is_unavailable(
    fake: FakeLiveKit, runtime: LiveKitRuntime
) -> None:
    info = conversation()
    await runtime.start(info)
    fake.fail("ListRooms", status=503)
    with pytest.raises(AgentStartError) as failed:
        await runtime.forget_if_gone(info.id, info.room_name)
    assert failed.value.detail == UNREACHABLE
    assert runtime.is_running(info.id)  # nothing forgotten on a guess


async def test_a_reopened_period_gets_its_own_room_and_ingest_token(fake: FakeLiveKit, runtime: LiveKitRuntime) -> None:
    first = conversation()
    info = ConversationInfo(
        id=first.id,
        room_name=f"chat-{first.id.hex}-2",
        system_prompt="You plan trips.",
        user_id=first.user_id,
        period=2,
    )
    await runtime.start(info)
    [create] = fake.calls_to("CreateRoom")
    assert create.request.name == f"chat-{info.id.hex}-2"
    [dispatch] = fake.calls_to("CreateDispatch")
    meta = DispatchMetadata.from_json(dispatch.request.metadata)
    assert meta.ingest_url == f"https://chat.example.com/api/conversations/{info.id}/events?period=2"
    assert meta.ingest_token == ingest_token(SECRET_KEY, info.id, 2)
    assert meta.ingest_token != ingest_token(SECRET_KEY, info.id)  # period 0's worker cannot pass for this one


async def test_the_worker_is_told_whether_to_answer_the_last_user_message(runtime: LiveKitRuntime) -> None:
    """A reopened conversation's old last question stays unanswered; one typed while the room had no agent (a
    LiveKit restart) is answered: the app decides (ConversationInfo.answer_last), the worker only follows."""
    history = (("agent", "Where to?"), ("user", "Lisbon in May?"))
    reopened = replace(conversation(), history=history, answer_last=False)
    typed_meanwhile = replace(reopened, answer_last=True)
    assert runtime.dispatch_metadata(reopened).answer_last is False
    assert runtime.dispatch_metadata(typed_meanwhile).answer_last is True
