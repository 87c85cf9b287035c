"""Piccolo's CLI looks for this file at the project root; the configuration lives in the package."""

from chatapp.core.piccolo_conf import *  # noqa: F403
