"""LiveKit webhooks: verified with the API key and secret before anything is believed."""

from __future__ import annotations

from livekit import api
from livekit.protocol.webhook import WebhookEvent

from chatapp.core.settings import Settings


class InvalidWebhook(ValueError):
    """Missing, forged, expired or not matching its body: answered 401 and otherwise ignored."""


def verify_webhook(settings: Settings, body: str, authorization: str) -> WebhookEvent:
    """The event, if `authorization` is a JWT signed with our API secret, issued by our API key, unexpired,
    whose sha256 claim matches `body`. LiveKit sends the JWT bare; a `Bearer ` prefix is accepted too."""
    token = authorization.strip()
    if token[:7].lower() == "bearer ":
        token = token[7:].strip()
    if not token:
        raise InvalidWebhook("no Authorization header")
    receiver = api.WebhookReceiver(api.TokenVerifier(settings.livekit_api_key, settings.livekit_api_secret))
    try:
        return receiver.receive(body, token)
    except Exception as exc:  # jwt errors, hash mismatch, unparsable body: all mean "not from our LiveKit"
        # livekit-api raises bare Exceptions with fixed texts ("hash mismatch"); never echo anything else.
        raise InvalidWebhook(str(exc) if type(exc) is Exception else type(exc).__name__) from None
