"""Settings: environment beats .env, production refuses unsafe configuration, secrets stay out of reprs."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatapp.core.settings import Settings, SettingsError


def test_development_generates_and_keeps_a_secret(tmp_path: Path) -> None:
    first = Settings.from_env({"CHATAPP_DATA_DIR": str(tmp_path)})
    second = Settings.from_env({"CHATAPP_DATA_DIR": str(tmp_path)})
    assert len(first.secret_key) >= 32
    assert first.secret_key == second.secret_key
    assert (tmp_path / "secret_key").stat().st_mode & 0o777 == 0o600


def test_production_needs_a_secret_and_refuses_test_faults(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="CHATAPP_SECRET_KEY"):
        Settings.from_env({"CHATAPP_ENV": "production", "CHATAPP_DATA_DIR": str(tmp_path)})
    secret = "s" * 40
    with pytest.raises(SettingsError, match="CHATAPP_TEST_FAULTS"):
        Settings.from_env({"CHATAPP_ENV": "production", "CHATAPP_SECRET_KEY": secret, "CHATAPP_TEST_FAULTS": "1"})
    settings = Settings.from_env({"CHATAPP_ENV": "production", "CHATAPP_SECRET_KEY": secret})
    assert settings.secure_cookies


def test_secrets_are_not_in_the_repr(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "CHATAPP_SECRET_KEY": "top-secret-value-123",
            "CHATAPP_LLM_API_KEY": "sk-hidden",
            "CHATAPP_DATA_DIR": str(tmp_path),
        }
    )
    assert "top-secret-value-123" not in repr(settings)
    assert "sk-hidden" not in repr(settings)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CHATAPP_PORT", "eighty"),
        ("CHATAPP_CHANNELS", "redis"),
        ("CHATAPP_ENV", "staging"),
        ("CHATAPP_TEST_FAULTS", "maybe"),
    ],
)
def test_malformed_values_say_which_setting(tmp_path: Path, name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value, "CHATAPP_DATA_DIR": str(tmp_path)})


def test_environment_beats_the_env_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("CHATAPP_PORT=9001\nCHATAPP_LOG_LEVEL=debug\n")
    monkeypatch.setenv("CHATAPP_ENV_FILE", str(env_file))
    monkeypatch.setenv("CHATAPP_PORT", "9002")
    monkeypatch.setenv("CHATAPP_DATA_DIR", str(tmp_path))
    settings = Settings.from_env()
    assert settings.port == 9002
    assert settings.log_level == "debug"


def test_an_empty_development_secret_file_is_replaced(tmp_path: Path) -> None:
    (tmp_path / "secret_key").write_text("")
    settings = Settings.from_env({"CHATAPP_DATA_DIR": str(tmp_path)})
    assert len(settings.secret_key) >= 32
    assert (tmp_path / "secret_key").read_text() == settings.secret_key
    assert (tmp_path / "secret_key").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("content", ["short", "x" * 31 + "\n"])
def test_a_too_short_development_secret_file_is_refused(tmp_path: Path, content: str) -> None:
    (tmp_path / "secret_key").write_text(content)
    with pytest.raises(SettingsError, match="shorter than 32 characters"):
        Settings.from_env({"CHATAPP_DATA_DIR": str(tmp_path)})
    assert (tmp_path / "secret_key").read_text() == content
