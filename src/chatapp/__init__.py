"""chatapp: talk with an AI agent by voice or text, and keep every conversation."""

import os

# Piccolo finds its engine through this module path, wherever the process was started from.
os.environ.setdefault("PICCOLO_CONF", "chatapp.piccolo_conf")
