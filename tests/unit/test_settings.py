"""Settings: environment beats .env, production refuses unsafe configuration, secrets stay out of reprs."""

from __future__ import annotations

from dataclasses import fields
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


def test_settings_built_in_code_and_from_an_empty_environment_agree_on_every_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each default is declared once, so `Settings()` (as tests build it) and `Settings.from_env({})` (as the app
    does) cannot drift apart. The one difference is a rule: development generates a secret key when none is set."""
    monkeypatch.chdir(tmp_path)  # the generated key goes to ./.data, which is the default data dir
    in_code, from_env = Settings(), Settings.from_env({})
    differ = {
        f.name: (getattr(in_code, f.name), getattr(from_env, f.name))
        for f in fields(Settings)
        if f.name != "secret_key" and getattr(in_code, f.name) != getattr(from_env, f.name)
    }
    assert differ == {}
    assert in_code.llm_model == from_env.llm_model == "gpt-4o-mini"
    assert in_code.secret_key == ""
    assert from_env.secret_key == (tmp_path / ".data" / "secret_key").read_text()


def test_every_setting_is_read_from_its_own_documented_variable() -> None:
    """from_env loops over the fields: each names its variable and parser, no two share one, and the README's
    configuration table lists every variable."""
    names = [f.metadata.get("env") for f in fields(Settings)]
    assert None not in names
    assert len(set(names)) == len(names)
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert [name for name in names if f"`{name}`" not in readme] == []


def test_rules_across_settings_still_apply(tmp_path: Path) -> None:
    """The speech keys fall back to the LLM's key; LiveKit is all three variables or none."""
    settings = Settings.from_env({"CHATAPP_DATA_DIR": str(tmp_path), "CHATAPP_LLM_API_KEY": "sk-shared"})
    assert (settings.stt_api_key, settings.tts_api_key) == ("sk-shared", "sk-shared")
    own = Settings.from_env(
        {"CHATAPP_DATA_DIR": str(tmp_path), "CHATAPP_LLM_API_KEY": "sk-a", "CHATAPP_TTS_API_KEY": "b"}
    )
    assert (own.stt_api_key, own.tts_api_key) == ("sk-a", "b")
    with pytest.raises(SettingsError, match="LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET"):
        Settings.from_env({"CHATAPP_DATA_DIR": str(tmp_path), "LIVEKIT_URL": "ws://localhost:7880"})


def test_redis_channels_need_a_url_and_keep_its_password_out_of_the_repr(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="CHATAPP_REDIS_URL"):
        Settings.from_env({"CHATAPP_CHANNELS": "redis", "CHATAPP_DATA_DIR": str(tmp_path)})
    url = "redis://:hunter2-redis@10.0.0.5:6379/0"
    settings = Settings.from_env(
        {"CHATAPP_CHANNELS": "redis", "CHATAPP_REDIS_URL": url, "CHATAPP_DATA_DIR": str(tmp_path)}
    )
    assert (settings.channels, settings.redis_url) == ("redis", url)
    assert "hunter2-redis" not in repr(settings)
    assert Settings.from_env({"CHATAPP_DATA_DIR": str(tmp_path)}).channels == "memory"
