"""Piccolo app config: chatapp's tables and the top-level piccolo_migrations/ folder."""

from pathlib import Path

from piccolo.conf.apps import AppConfig

from chatapp.core.tables import Conversation, HttpSession, ShareLink, UserAccount, Utterance

MIGRATIONS_DIR = Path(__file__).resolve().parents[3] / "piccolo_migrations"

APP_CONFIG = AppConfig(
    app_name="chatapp",
    migrations_folder_path=str(MIGRATIONS_DIR),
    table_classes=[UserAccount, Conversation, Utterance, HttpSession, ShareLink],
    migration_dependencies=[],
    commands=[],
)
