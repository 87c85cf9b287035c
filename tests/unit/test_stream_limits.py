"""CHATAPP_MAX_STREAMS_PER_USER: how many live streams one user may hold open per process."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatapp.core.settings import Settings, SettingsError


def test_stream_cap_defaults_to_20_and_is_configurable(tmp_path: Path) -> None:
    base = {"CHATAPP_DATA_DIR": str(tmp_path)}
    assert Settings.from_env(base).max_streams_per_user == 20
    assert Settings.from_env(base | {"CHATAPP_MAX_STREAMS_PER_USER": "3"}).max_streams_per_user == 3


@pytest.mark.parametrize("value", ["0", "many"])
def test_a_bad_stream_cap_says_which_setting(tmp_path: Path, value: str) -> None:
    with pytest.raises(SettingsError, match="CHATAPP_MAX_STREAMS_PER_USER"):
        Settings.from_env({"CHATAPP_DATA_DIR": str(tmp_path), "CHATAPP_MAX_STREAMS_PER_USER": value})
