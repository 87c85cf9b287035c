"""Piccolo's engine and app registry; the DSN is filled in by `chatapp.database.configure_engine()`."""

import os

from piccolo.conf.apps import AppRegistry
from piccolo.engine.postgres import PostgresEngine


class DeferredPostgresEngine(PostgresEngine):
    """Piccolo's engine, minus the version check it runs while being constructed.

    The embedded server's socket path is only known once it runs, so this module holds a placeholder DSN
    and `configure_engine()` points the engine at the real database before first use.
    """

    async def check_version(self) -> None:
        return None


DB = DeferredPostgresEngine(config={"dsn": os.environ.get("DATABASE_URL") or "postgresql:///chatapp"})

APP_REGISTRY = AppRegistry(apps=["chatapp.piccolo_app"])
