"""The database bounds and the late-final grace window are settings with safe defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatapp.core.settings import Settings, SettingsError


def test_defaults_bound_every_database_call_and_late_finals(tmp_path: Path) -> None:
    settings = Settings.from_env({"CHATAPP_DATA_DIR": str(tmp_path)})
    assert settings.db_connect_timeout == 5
    assert settings.db_statement_timeout == 30
    assert settings.late_final_grace_seconds == 120


def test_they_can_be_set(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "CHATAPP_DATA_DIR": str(tmp_path),
            "CHATAPP_DB_CONNECT_TIMEOUT": "1.5",
            "CHATAPP_DB_STATEMENT_TIMEOUT": "10",
            "CHATAPP_LATE_FINAL_GRACE_SECONDS": "0",
        }
    )
    assert (settings.db_connect_timeout, settings.db_statement_timeout, settings.late_final_grace_seconds) == (
        1.5,
        10,
        0,
    )


@pytest.mark.parametrize("name", ["CHATAPP_DB_CONNECT_TIMEOUT", "CHATAPP_DB_STATEMENT_TIMEOUT"])
def test_a_zero_timeout_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({"CHATAPP_DATA_DIR": str(tmp_path), name: "0"})
