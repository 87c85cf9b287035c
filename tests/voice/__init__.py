"""Voice end to end: a real LiveKit server, the real `chatapp agent` worker, real speech, the real app."""
