"""chatapp: talk with an AI agent by voice or text, and keep every conversation.

One folder per layer, lowest first; a module imports only its own layer or lower ones, and no modules import
each other in a cycle (tests/unit/test_layering.py holds the list and checks it): core (settings, database,
validation, ...) < accounts < conversations < agents < livekit < history < profile < the app (app.py, server/,
cli.py).
"""

import os

# Piccolo finds its engine through this module path, wherever the process was started from.
os.environ.setdefault("PICCOLO_CONF", "chatapp.core.piccolo_conf")
