"""One settings object, read from the environment and an optional `.env` (the environment wins)."""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Literal

from dotenv import dotenv_values

DEFAULT_SYSTEM_PROMPT = (
    "You are Wayfarer, a friendly travel-planning assistant. Help the person plan trips: destinations, "
    "itineraries, budgets, transport and what to pack. Keep answers short and conversational, because they "
    "may be spoken aloud. Ask one clarifying question at a time."
)

MIN_SECRET_LENGTH = 32  # characters of the key that signs sessions and CSRF tokens


class SettingsError(ValueError):
    """A setting is missing or malformed; the message says which and how to fix it."""


def _env() -> dict[str, str]:
    values = {k: v for k, v in dotenv_values(os.environ.get("CHATAPP_ENV_FILE", ".env")).items() if v is not None}
    values.update(os.environ)
    return values


def env_values() -> dict[str, str]:
    """The environment as settings see it: the .env file, overridden by the process environment."""
    return _env()


def _int(env: dict[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}")
    return value


def _float(env: dict[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if not value >= minimum:
        raise SettingsError(f"{name} must be at least {minimum}")
    return value


def _bool(env: dict[str, str], name: str, default: bool = False) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise SettingsError(f"{name} must be true or false, got {raw!r}")


@dataclass(frozen=True)
class Rate:
    """At most `limit` events per `window` seconds (a fixed window that starts with the first event)."""

    limit: int
    window: int

    def __str__(self) -> str:
        return f"{self.limit}/{self.window}s"


_RATE = re.compile(r"^(\d+)\s*(?:/\s*(\d*)\s*(s|sec|second|m|min|minute|h|hour|d|day)s?)?$")
_UNIT_SECONDS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600}
_UNIT_SECONDS |= {"d": 86400, "day": 86400}


def _rate(env: dict[str, str], name: str, default: Rate) -> Rate:
    """`N` (per minute, as the integer setting meant) or `N/unit` or `N/<count><unit>`: `20/hour`, `10/15min`."""
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    match = _RATE.match(raw)
    if not match or int(match.group(1)) < 1 or match.group(2) == "0":
        raise SettingsError(f"{name} must look like 10, 60/minute, 20/hour or 10/15min (at least 1), got {raw!r}")
    count, units, unit = match.groups()
    return Rate(int(count), int(units or 1) * _UNIT_SECONDS[unit or "m"])


@dataclass(frozen=True)
class Settings:
    """Everything configurable about chatapp; see the README for each variable."""

    env: Literal["development", "production"] = "development"
    database_url: str | None = None
    data_dir: Path = Path(".data")
    secret_key: str = field(default="", repr=False)
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "info"
    log_format: Literal["text", "json"] = "text"
    channels: Literal["memory", "postgres"] = "memory"
    public_url: str = ""
    forwarded_allow_ips: str = ""
    session_max_age: int = 14 * 24 * 3600
    # Per client address: login posts and sign-up posts have separate quotas.
    auth_rate_limit: Rate = Rate(10, 60)
    signup_rate_limit: Rate = Rate(20, 3600)
    # Per account (normalised email), whatever the address: failed logins that lock its logins for the window.
    login_failure_limit: Rate = Rate(10, 15 * 60)
    # Per signed-in user.
    message_rate_limit: Rate = Rate(60, 60)
    dictation_rate_limit: Rate = Rate(600, 60)
    new_chat_rate_limit: Rate = Rate(20, 60)
    # Per signed-in user: history imports, and account changes that check the password (name, password, delete).
    import_rate_limit: Rate = Rate(10, 3600)
    account_rate_limit: Rate = Rate(10, 600)
    # argon2 hashes at once per process (each ~0.25 s of CPU and 64 MiB), and how long an excess one may wait.
    hash_concurrency: int = field(default_factory=lambda: os.cpu_count() or 2)
    hash_wait_seconds: float = 5.0
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    llm_base_url: str = ""
    llm_model: str = ""
    llm_api_key: str = field(default="", repr=False)
    idle_minutes: float = 30
    reaper_interval: float = 60
    db_wait_seconds: float = 10
    # Bounds on every database call, so an outage answers 503 quickly instead of hanging requests.
    db_connect_timeout: float = 5
    db_statement_timeout: float = 30
    # Finals for an ended conversation are still accepted from an agent worker for this long after its end.
    late_final_grace_seconds: float = 120
    # Open SSE streams per user and process; a further one is answered 429 (every tab holds one).
    max_streams_per_user: int = 20
    test_faults: bool = False
    # Voice over LiveKit: all three LIVEKIT_* set switches from the in-process agent to LiveKit rooms.
    livekit_url: str = ""
    livekit_api_key: str = ""
    livekit_api_secret: str = field(default="", repr=False)
    livekit_browser_url: str = ""
    livekit_timeout: float = 5.0
    livekit_token_ttl: int = 600
    livekit_empty_timeout: int = 300
    livekit_departure_timeout: int = 60
    agent_name: str = "chatapp-agent"
    ingest_url: str = ""
    stt_base_url: str = ""
    stt_model: str = "gpt-4o-mini-transcribe"
    stt_api_key: str = field(default="", repr=False)
    stt_language: str = "en"
    tts_base_url: str = ""
    tts_model: str = "gpt-4o-mini-tts"
    tts_voice: str = "ash"
    tts_api_key: str = field(default="", repr=False)

    @property
    def production(self) -> bool:
        return self.env == "production"

    @property
    def secure_cookies(self) -> bool:
        return self.public_url.startswith("https://") or self.production

    @property
    def llm_configured(self) -> bool:
        return bool(self.llm_base_url or self.llm_api_key)

    @property
    def livekit_configured(self) -> bool:
        return bool(self.livekit_url and self.livekit_api_key and self.livekit_api_secret)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        """Build settings; generate and keep a development secret key in the data dir when none is set."""
        env = _env() if env is None else env
        mode = env.get("CHATAPP_ENV", "development").strip().lower() or "development"
        if mode not in {"development", "production"}:
            raise SettingsError("CHATAPP_ENV must be development or production")
        channels = env.get("CHATAPP_CHANNELS", "memory").strip().lower() or "memory"
        if channels not in {"memory", "postgres"}:
            raise SettingsError("CHATAPP_CHANNELS must be memory or postgres")
        log_format = env.get("CHATAPP_LOG_FORMAT", "").strip().lower() or "text"
        if log_format not in {"text", "json"}:
            raise SettingsError("CHATAPP_LOG_FORMAT must be text or json")
        data_dir = Path(env.get("CHATAPP_DATA_DIR", "").strip() or ".data").absolute()
        secret = env.get("CHATAPP_SECRET_KEY", "").strip()
        test_faults = _bool(env, "CHATAPP_TEST_FAULTS")
        if mode == "production":
            if len(secret) < MIN_SECRET_LENGTH:
                raise SettingsError("CHATAPP_SECRET_KEY must be set (32+ characters) when CHATAPP_ENV=production")
            if test_faults:
                raise SettingsError("CHATAPP_TEST_FAULTS cannot be enabled when CHATAPP_ENV=production")
        elif not secret:
            secret = development_secret(data_dir)
        livekit = [env.get(name, "").strip() for name in ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET")]
        if any(livekit) and not all(livekit):
            raise SettingsError("set all of LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET, or none of them")
        llm_api_key = env.get("CHATAPP_LLM_API_KEY", "").strip()
        return cls(
            env=mode,  # type: ignore[arg-type]
            database_url=env.get("DATABASE_URL", "").strip() or None,
            data_dir=data_dir,
            secret_key=secret,
            host=env.get("CHATAPP_HOST", "").strip() or "127.0.0.1",
            port=_int(env, "CHATAPP_PORT", 8000, minimum=1),
            log_level=env.get("CHATAPP_LOG_LEVEL", "").strip().lower() or "info",
            log_format=log_format,  # type: ignore[arg-type]
            channels=channels,  # type: ignore[arg-type]
            public_url=env.get("CHATAPP_PUBLIC_URL", "").strip().rstrip("/"),
            forwarded_allow_ips=env.get("CHATAPP_FORWARDED_ALLOW_IPS", "").strip(),
            session_max_age=_int(env, "CHATAPP_SESSION_MAX_AGE", 14 * 24 * 3600, minimum=60),
            auth_rate_limit=_rate(env, "CHATAPP_AUTH_RATE_LIMIT", Rate(10, 60)),
            signup_rate_limit=_rate(env, "CHATAPP_SIGNUP_RATE_LIMIT", Rate(20, 3600)),
            login_failure_limit=_rate(env, "CHATAPP_LOGIN_FAILURE_LIMIT", Rate(10, 15 * 60)),
            message_rate_limit=_rate(env, "CHATAPP_MESSAGE_RATE_LIMIT", Rate(60, 60)),
            dictation_rate_limit=_rate(env, "CHATAPP_DICTATION_RATE_LIMIT", Rate(600, 60)),
            new_chat_rate_limit=_rate(env, "CHATAPP_NEW_CHAT_RATE_LIMIT", Rate(20, 60)),
            import_rate_limit=_rate(env, "CHATAPP_IMPORT_RATE_LIMIT", Rate(10, 3600)),
            account_rate_limit=_rate(env, "CHATAPP_ACCOUNT_RATE_LIMIT", Rate(10, 600)),
            hash_concurrency=_int(env, "CHATAPP_HASH_CONCURRENCY", os.cpu_count() or 2, minimum=1),
            hash_wait_seconds=_float(env, "CHATAPP_HASH_WAIT_SECONDS", 5.0, minimum=0.0),
            system_prompt=env.get("CHATAPP_SYSTEM_PROMPT", "").strip() or DEFAULT_SYSTEM_PROMPT,
            llm_base_url=env.get("CHATAPP_LLM_BASE_URL", "").strip(),
            llm_model=env.get("CHATAPP_LLM_MODEL", "").strip() or "gpt-4o-mini",
            llm_api_key=llm_api_key,
            idle_minutes=_float(env, "CHATAPP_IDLE_MINUTES", 30, minimum=0.05),
            reaper_interval=_float(env, "CHATAPP_REAPER_INTERVAL", 60, minimum=0.5),
            db_wait_seconds=_float(env, "CHATAPP_DB_WAIT_SECONDS", 10, minimum=0.1),
            db_connect_timeout=_float(env, "CHATAPP_DB_CONNECT_TIMEOUT", 5, minimum=0.1),
            db_statement_timeout=_float(env, "CHATAPP_DB_STATEMENT_TIMEOUT", 30, minimum=0.1),
            late_final_grace_seconds=_float(env, "CHATAPP_LATE_FINAL_GRACE_SECONDS", 120),
            max_streams_per_user=_int(env, "CHATAPP_MAX_STREAMS_PER_USER", 20, minimum=1),
            test_faults=test_faults,
            livekit_url=livekit[0],
            livekit_api_key=livekit[1],
            livekit_api_secret=livekit[2],
            livekit_browser_url=env.get("CHATAPP_LIVEKIT_BROWSER_URL", "").strip(),
            livekit_timeout=_float(env, "CHATAPP_LIVEKIT_TIMEOUT", 5.0, minimum=0.1),
            livekit_token_ttl=_int(env, "CHATAPP_LIVEKIT_TOKEN_TTL", 600, minimum=60),
            livekit_empty_timeout=_int(env, "CHATAPP_LIVEKIT_EMPTY_TIMEOUT", 300, minimum=10),
            livekit_departure_timeout=_int(env, "CHATAPP_LIVEKIT_DEPARTURE_TIMEOUT", 60, minimum=0),
            agent_name=env.get("CHATAPP_AGENT_NAME", "").strip() or "chatapp-agent",
            ingest_url=env.get("CHATAPP_INGEST_URL", "").strip().rstrip("/"),
            stt_base_url=env.get("CHATAPP_STT_BASE_URL", "").strip(),
            stt_model=env.get("CHATAPP_STT_MODEL", "").strip() or "gpt-4o-mini-transcribe",
            stt_api_key=env.get("CHATAPP_STT_API_KEY", "").strip() or llm_api_key,
            stt_language=env.get("CHATAPP_STT_LANGUAGE", "").strip() or "en",
            tts_base_url=env.get("CHATAPP_TTS_BASE_URL", "").strip(),
            tts_model=env.get("CHATAPP_TTS_MODEL", "").strip() or "gpt-4o-mini-tts",
            tts_voice=env.get("CHATAPP_TTS_VOICE", "").strip() or "ash",
            tts_api_key=env.get("CHATAPP_TTS_API_KEY", "").strip() or llm_api_key,
        )


def development_secret(data_dir: Path) -> str:
    """Return the development secret kept in the data dir, creating it (mode 0600) on first use.

    An empty file (a write cut short, or `touch`) holds no key at all, so it is replaced by a new one; a
    short one was put there by someone, so it is refused rather than silently signing sessions weakly."""
    path = data_dir / "secret_key"
    if path.exists():
        secret = path.read_text().strip()
        if len(secret) >= MIN_SECRET_LENGTH:
            return secret
        if secret:
            raise SettingsError(
                f"{path} holds a secret key shorter than {MIN_SECRET_LENGTH} characters: "
                "delete the file to have a new one generated, or set CHATAPP_SECRET_KEY"
            )
        path.unlink()
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret)
    return secret


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings.from_env()
