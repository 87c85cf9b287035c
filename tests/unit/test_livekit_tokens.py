"""Participant tokens, webhook verification, dispatch metadata and the LiveKit settings."""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from dataclasses import replace
from datetime import timedelta

import jwt
import pytest
from livekit import api

from chatapp.conversations.agent_access import conversation_for_room, room_for, room_name_for
from chatapp.core.settings import Settings, SettingsError
from chatapp.livekit.metadata import MAX_HISTORY_CHARS, BadMetadata, DispatchMetadata, trim_history
from chatapp.livekit.tokens import browser_url, participant_token
from chatapp.livekit.webhook import InvalidWebhook, verify_webhook
from tests.fakes.livekit import API_KEY, API_SECRET, room_finished, signed_webhook

OTHER_SECRET = "another-secret-that-is-also-long-enough-0123456789"


def settings(**env: str) -> Settings:
    base = {
        "CHATAPP_SECRET_KEY": "s" * 40,
        "CHATAPP_DATA_DIR": "/nonexistent",
        "LIVEKIT_URL": "wss://example.livekit.cloud",
        "LIVEKIT_API_KEY": API_KEY,
        "LIVEKIT_API_SECRET": API_SECRET,
    }
    return Settings.from_env(base | env)


def test_livekit_is_on_only_with_all_three_settings() -> None:
    assert settings().livekit_configured
    assert not Settings.from_env({"CHATAPP_SECRET_KEY": "s" * 40}).livekit_configured
    with pytest.raises(SettingsError, match="LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET"):
        Settings.from_env({"CHATAPP_SECRET_KEY": "s" * 40, "LIVEKIT_URL": "ws://localhost:7880"})
    with pytest.raises(SettingsError, match="CHATAPP_LIVEKIT_TIMEOUT"):
        settings(CHATAPP_LIVEKIT_TIMEOUT="soon")


def test_secrets_never_appear_in_the_settings_repr() -> None:
    text = repr(settings(CHATAPP_STT_API_KEY="stt-secret-value", CHATAPP_TTS_API_KEY="tts-secret-value"))
    assert API_SECRET not in text
    assert "stt-secret-value" not in text
    assert "tts-secret-value" not in text
    assert API_KEY in text  # the key is an identifier, not a secret


def test_defaults() -> None:
    s = settings()
    assert (s.agent_name, s.livekit_timeout, s.livekit_token_ttl) == ("chatapp-agent", 5.0, 600)
    assert settings(CHATAPP_LLM_API_KEY="k").stt_api_key == "k"  # one OpenAI key serves all three


def test_participant_token_joins_one_room_as_the_user() -> None:
    s = settings()
    user = str(uuid.uuid4())
    token = participant_token(s, room="chat-abc", identity=user, name="Ada")
    claims = api.TokenVerifier(API_KEY, API_SECRET).verify(token)
    assert claims.identity == user
    assert claims.name == "Ada"
    assert claims.video is not None
    assert claims.video.room == "chat-abc"
    assert claims.video.room_join
    assert claims.video.can_publish
    assert claims.video.can_subscribe
    assert claims.video.can_publish_data
    assert jwt.decode(token, options={"verify_signature": False})["video"]["canPublishSources"] == ["microphone"]
    assert not claims.video.room_admin
    assert not claims.video.room_create
    expires = jwt.decode(token, options={"verify_signature": False})["exp"]
    assert time.time() + 590 <= expires <= time.time() + 610


def test_participant_token_is_refused_with_the_wrong_key_tampered_or_expired() -> None:
    s = settings()
    token = participant_token(s, room="chat-abc", identity="u")
    with pytest.raises(jwt.InvalidSignatureError):
        api.TokenVerifier(API_KEY, OTHER_SECRET).verify(token)
    with pytest.raises(jwt.InvalidIssuerError):
        api.TokenVerifier("someone-else", API_SECRET).verify(token)
    header, payload, signature = token.split(".")
    claims = json.loads(jwt.utils.base64url_decode(payload))
    claims["video"]["room"] = "chat-other"
    forged = ".".join([header, jwt.utils.base64url_encode(json.dumps(claims).encode()).decode(), signature])
    with pytest.raises(jwt.InvalidSignatureError):
        api.TokenVerifier(API_KEY, API_SECRET).verify(forged)
    expired = participant_token(dataclasses.replace(s, livekit_token_ttl=-300), room="chat-abc", identity="u")
    with pytest.raises(jwt.ExpiredSignatureError):
        api.TokenVerifier(API_KEY, API_SECRET).verify(expired)


def test_a_valid_webhook_is_accepted() -> None:
    body, auth = signed_webhook(room_finished("chat-" + "a" * 32))
    event = verify_webhook(settings(), body, auth)
    assert event.event == "room_finished"
    assert event.room.name == "chat-" + "a" * 32
    assert verify_webhook(settings(), body, f"Bearer {auth}").event == "room_finished"


@pytest.mark.parametrize(
    "case",
    ["tampered body", "wrong secret", "wrong key", "expired", "missing", "garbage", "unsigned body hash"],
)
def test_a_bad_webhook_is_refused(case: str) -> None:
    event = room_finished("chat-" + "a" * 32)
    body, auth = signed_webhook(event)
    if case == "tampered body":
        body = body.replace("a" * 32, "b" * 32)
    elif case == "wrong secret":
        body, auth = signed_webhook(event, api_secret=OTHER_SECRET)
    elif case == "wrong key":
        body, auth = signed_webhook(event, api_key="not-our-key")
    elif case == "expired":
        body, auth = signed_webhook(event, ttl=timedelta(minutes=-5))
    elif case == "missing":
        auth = ""
    elif case == "garbage":
        auth = "not.a.jwt"
    else:
        auth = api.AccessToken(API_KEY, API_SECRET).to_jwt()  # valid JWT, but no sha256 claim
    with pytest.raises(InvalidWebhook):
        verify_webhook(settings(), body, auth)


def test_rooms_map_to_conversations() -> None:
    cid = uuid.uuid4()
    assert conversation_for_room(f"chat-{cid.hex}") == cid
    assert conversation_for_room("someone-elses-room") is None
    assert conversation_for_room(f"chat-{cid.hex}-x") is None


def test_browser_url_is_a_websocket_url() -> None:
    assert browser_url(settings(LIVEKIT_URL="http://localhost:7880")) == "ws://localhost:7880"
    assert browser_url(settings(LIVEKIT_URL="https://lk.example.com")) == "wss://lk.example.com"
    assert browser_url(settings()) == "wss://example.livekit.cloud"
    assert browser_url(settings(CHATAPP_LIVEKIT_BROWSER_URL="wss://public.example")) == "wss://public.example"


def test_dispatch_metadata_round_trips_and_keeps_the_token_out_of_repr() -> None:
    meta = DispatchMetadata(
        conversation_id=uuid.uuid4(),
        ingest_url="http://app/api/conversations/x/events",
        ingest_token="tok-123",
        system_prompt="Plan trips.",
        user_identity="u-1",
        user_name="Ada",
        history=(("user", "Lisbon?"), ("agent", "Yes!")),
    )
    assert DispatchMetadata.from_json(meta.to_json()) == meta
    assert "tok-123" not in repr(meta)
    asked = replace(meta, history=(("user", "Lisbon?"),), answer_last=True)
    assert DispatchMetadata.from_json(asked.to_json()).answer_last is True
    for raw in ["", "{}", "[1]", '{"conversation_id": "nope", "ingest_url": "u", "ingest_token": "t"}']:
        with pytest.raises(BadMetadata):
            DispatchMetadata.from_json(raw)


def test_history_is_trimmed_to_the_most_recent_turns() -> None:
    long = tuple(("user", f"{n} " + "x" * 1000) for n in range(100))
    kept = trim_history(long)
    assert kept[-1] == long[-1]
    assert sum(len(t) for _, t in kept) <= MAX_HISTORY_CHARS
    assert trim_history((("user", "hi"),)) == (("user", "hi"),)


def test_room_names_of_reopened_periods_are_unique_and_name_their_conversation() -> None:
    cid = uuid.uuid4()
    names = [room_name_for(cid, n) for n in range(3)]
    assert names == [f"chat-{cid.hex}", f"chat-{cid.hex}-1", f"chat-{cid.hex}-2"]
    assert [room_for(name) for name in names] == [(cid, 0), (cid, 1), (cid, 2)]
    assert all(conversation_for_room(name) == cid for name in names)
    assert conversation_for_room(f"chat-{cid.hex}-0") is None  # period 0 has one name only
    assert conversation_for_room("chat-xyz-1") is None
