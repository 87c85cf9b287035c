"""Voice over LiveKit: rooms and dispatches through `livekit-api`, participant tokens, the webhook, and the
agent worker (`chatapp agent`) with its transcript forwarder.

Used only when LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET are set; importing this package pulls in
nothing heavy, so the in-process default never pays for it.
"""
