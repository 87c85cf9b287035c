"""Participant tokens for the browser, and the LiveKit address the browser connects to."""

from __future__ import annotations

from datetime import timedelta

from livekit import api

from chatapp.core.settings import Settings

# LiveKit compares publish sources as the lower-cased TrackSource names; the person only ever talks.
PUBLISH_SOURCES = [api.TrackSource.Name(api.TrackSource.MICROPHONE).lower()]


def participant_token(settings: Settings, *, room: str, identity: str, name: str = "") -> str:
    """A short-lived token that lets one person join one room (and nothing else): publish their microphone,
    hear the agent and send chat text (no camera, no screen share). It only has to be valid when they join;
    LiveKit renews it after."""
    grants = api.VideoGrants(
        room_join=True,
        room=room,
        can_publish=True,
        can_publish_sources=PUBLISH_SOURCES,
        can_subscribe=True,
        can_publish_data=True,
    )
    token = (
        api.AccessToken(settings.livekit_api_key, settings.livekit_api_secret)
        .with_identity(identity)
        .with_grants(grants)
        .with_ttl(timedelta(seconds=settings.livekit_token_ttl))
    )
    if name:
        token = token.with_name(name)
    return str(token.to_jwt())


def browser_url(settings: Settings) -> str:
    """The WebSocket URL for livekit-client: CHATAPP_LIVEKIT_BROWSER_URL, else LIVEKIT_URL as ws(s)://."""
    url = settings.livekit_browser_url or settings.livekit_url
    if url.startswith("http://"):
        return "ws://" + url.removeprefix("http://")
    if url.startswith("https://"):
        return "wss://" + url.removeprefix("https://")
    return url
