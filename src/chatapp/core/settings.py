"""One settings object, read from the environment and an optional `.env` (the environment wins)."""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

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


# Parsers: each gets the variable's name (for its error message) and its value, stripped and never empty (an
# unset or blank variable means the setting's default).
Parser = Callable[[str, str], Any]


def text(name: str, raw: str) -> str:
    return raw


def lowercase(name: str, raw: str) -> str:
    return raw.lower()


def base_url(name: str, raw: str) -> str:
    """An address other URLs are built on: without its trailing slash."""
    return raw.rstrip("/")


def directory(name: str, raw: str) -> Path:
    return Path(raw).absolute()


def one_of(*choices: str) -> Parser:
    def parse(name: str, raw: str) -> str:
        if raw.lower() not in choices:
            raise SettingsError(f"{name} must be {' or '.join(choices)}")
        return raw.lower()

    return parse


def whole(minimum: int = 0) -> Parser:
    def parse(name: str, raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise SettingsError(f"{name} must be a whole number, got {raw!r}") from None
        if value < minimum:
            raise SettingsError(f"{name} must be at least {minimum}")
        return value

    return parse


def number(minimum: float = 0.0) -> Parser:
    def parse(name: str, raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise SettingsError(f"{name} must be a number, got {raw!r}") from None
        if not value >= minimum:
            raise SettingsError(f"{name} must be at least {minimum}")
        return value

    return parse


def flag(name: str, raw: str) -> bool:
    value = raw.lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise SettingsError(f"{name} must be true or false, got {value!r}")


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


def rate(name: str, raw: str) -> Rate:
    """`N` (per minute, as the integer setting meant) or `N/unit` or `N/<count><unit>`: `20/hour`, `10/15min`."""
    match = _RATE.match(raw.lower())
    if not match or int(match.group(1)) < 1 or match.group(2) == "0":
        raise SettingsError(
            f"{name} must look like 10, 60/minute, 20/hour or 10/15min (at least 1), got {raw.lower()!r}"
        )
    count, units, unit = match.groups()
    return Rate(int(count), int(units or 1) * _UNIT_SECONDS[unit or "m"])


def setting(
    env: str,
    default: Any = None,
    parse: Parser = text,
    *,
    factory: Callable[[], Any] | None = None,
    secret: bool = False,
) -> Any:
    """A settings field with everything about it in one place: its environment variable, its default (or a
    factory for one) and its parser. Secrets stay out of the repr."""
    metadata = {"env": env, "parse": parse}
    if factory is not None:
        return field(default_factory=factory, repr=not secret, metadata=metadata)
    return field(default=default, repr=not secret, metadata=metadata)


@dataclass(frozen=True)
class Settings:
    """Everything configurable about chatapp, one line per setting; see the README for each variable."""

    env: Literal["development", "production"] = setting(
        "CHATAPP_ENV", "development", one_of("development", "production")
    )
    database_url: str | None = setting("DATABASE_URL", None)
    data_dir: Path = setting("CHATAPP_DATA_DIR", parse=directory, factory=lambda: Path(".data").absolute())
    # Empty: generated into the data dir in development, refused in production (see from_env).
    secret_key: str = setting("CHATAPP_SECRET_KEY", "", secret=True)
    host: str = setting("CHATAPP_HOST", "127.0.0.1")
    port: int = setting("CHATAPP_PORT", 8000, whole(minimum=1))
    log_level: str = setting("CHATAPP_LOG_LEVEL", "info", lowercase)
    log_format: Literal["text", "json"] = setting("CHATAPP_LOG_FORMAT", "text", one_of("text", "json"))
    channels: Literal["memory", "postgres", "redis"] = setting(
        "CHATAPP_CHANNELS", "memory", one_of("memory", "postgres", "redis")
    )
    # redis://[:password@]host:6379/0 for CHATAPP_CHANNELS=redis (a password may be in it: kept out of the repr).
    redis_url: str = setting("CHATAPP_REDIS_URL", "", secret=True)
    public_url: str = setting("CHATAPP_PUBLIC_URL", "", base_url)
    forwarded_allow_ips: str = setting("CHATAPP_FORWARDED_ALLOW_IPS", "")
    session_max_age: int = setting("CHATAPP_SESSION_MAX_AGE", 14 * 24 * 3600, whole(minimum=60))
    # Per client address: login posts and sign-up posts have separate quotas.
    auth_rate_limit: Rate = setting("CHATAPP_AUTH_RATE_LIMIT", Rate(10, 60), rate)
    signup_rate_limit: Rate = setting("CHATAPP_SIGNUP_RATE_LIMIT", Rate(20, 3600), rate)
    # Per account (normalised email), whatever the address: failed logins that lock its logins for the window.
    login_failure_limit: Rate = setting("CHATAPP_LOGIN_FAILURE_LIMIT", Rate(10, 15 * 60), rate)
    # Per signed-in user.
    message_rate_limit: Rate = setting("CHATAPP_MESSAGE_RATE_LIMIT", Rate(60, 60), rate)
    dictation_rate_limit: Rate = setting("CHATAPP_DICTATION_RATE_LIMIT", Rate(600, 60), rate)
    new_chat_rate_limit: Rate = setting("CHATAPP_NEW_CHAT_RATE_LIMIT", Rate(20, 60), rate)
    # Per signed-in user: history imports, and account changes that check the password (name, password, delete).
    import_rate_limit: Rate = setting("CHATAPP_IMPORT_RATE_LIMIT", Rate(10, 3600), rate)
    account_rate_limit: Rate = setting("CHATAPP_ACCOUNT_RATE_LIMIT", Rate(10, 600), rate)
    # argon2 hashes at once per process (each ~0.25 s of CPU and 64 MiB), and how long an excess one may wait.
    hash_concurrency: int = setting(
        "CHATAPP_HASH_CONCURRENCY", parse=whole(minimum=1), factory=lambda: os.cpu_count() or 2
    )
    hash_wait_seconds: float = setting("CHATAPP_HASH_WAIT_SECONDS", 5.0, number(minimum=0.0))
    system_prompt: str = setting("CHATAPP_SYSTEM_PROMPT", DEFAULT_SYSTEM_PROMPT)
    llm_base_url: str = setting("CHATAPP_LLM_BASE_URL", "")
    llm_model: str = setting("CHATAPP_LLM_MODEL", "gpt-4o-mini")
    llm_api_key: str = setting("CHATAPP_LLM_API_KEY", "", secret=True)
    idle_minutes: float = setting("CHATAPP_IDLE_MINUTES", 30, number(minimum=0.05))
    reaper_interval: float = setting("CHATAPP_REAPER_INTERVAL", 60, number(minimum=0.5))
    # A deleted conversation can be restored (Undo) for this long, then it is purged for good.
    delete_undo_seconds: float = setting("CHATAPP_DELETE_UNDO_SECONDS", 10, number(minimum=1.0))
    db_wait_seconds: float = setting("CHATAPP_DB_WAIT_SECONDS", 10, number(minimum=0.1))
    # Bounds on every database call, so an outage answers 503 quickly instead of hanging requests.
    db_connect_timeout: float = setting("CHATAPP_DB_CONNECT_TIMEOUT", 5, number(minimum=0.1))
    db_statement_timeout: float = setting("CHATAPP_DB_STATEMENT_TIMEOUT", 30, number(minimum=0.1))
    # Finals for an ended conversation are still accepted from an agent worker for this long after its end.
    late_final_grace_seconds: float = setting("CHATAPP_LATE_FINAL_GRACE_SECONDS", 120, number())
    # Open SSE streams per user and process; a further one is answered 429 (every tab holds one).
    max_streams_per_user: int = setting("CHATAPP_MAX_STREAMS_PER_USER", 20, whole(minimum=1))
    # How often a live stream says it is alive (a `ping` event). The page reconnects a stream silent for 2.5 pings
    # (its host cut off behind a proxy that keeps the client's connection open); a proxy's read timeout must
    # be above it (deploy/nginx: 40 s).
    sse_ping_seconds: float = setting("CHATAPP_SSE_PING_SECONDS", 15, number(minimum=0.5))
    # Seconds a client may take to send a request's head, its body (plus 1 s per KiB), or to read (server.httpserver).
    header_timeout: float = setting("CHATAPP_HEADER_TIMEOUT", 10, number(minimum=0.1))
    body_timeout: float = setting("CHATAPP_BODY_TIMEOUT", 30, number(minimum=0.1))
    write_stall_timeout: float = setting("CHATAPP_WRITE_STALL_TIMEOUT", 30, number(minimum=0.1))
    test_faults: bool = setting("CHATAPP_TEST_FAULTS", False, flag)
    # Voice over LiveKit: all three LIVEKIT_* set switches from the in-process agent to LiveKit rooms.
    livekit_url: str = setting("LIVEKIT_URL", "")
    livekit_api_key: str = setting("LIVEKIT_API_KEY", "")
    livekit_api_secret: str = setting("LIVEKIT_API_SECRET", "", secret=True)
    livekit_browser_url: str = setting("CHATAPP_LIVEKIT_BROWSER_URL", "")
    livekit_timeout: float = setting("CHATAPP_LIVEKIT_TIMEOUT", 5.0, number(minimum=0.1))
    livekit_token_ttl: int = setting("CHATAPP_LIVEKIT_TOKEN_TTL", 600, whole(minimum=60))
    livekit_empty_timeout: int = setting("CHATAPP_LIVEKIT_EMPTY_TIMEOUT", 300, whole(minimum=10))
    livekit_departure_timeout: int = setting("CHATAPP_LIVEKIT_DEPARTURE_TIMEOUT", 60, whole(minimum=0))
    agent_name: str = setting("CHATAPP_AGENT_NAME", "chatapp-agent")
    # The worker (`chatapp agent`); unset keeps livekit-agents' defaults (production: full above 0.7 CPU load, one
    # warm job process per core, health check on every interface at 8081; --dev: never full, none warm, any port).
    agent_load_threshold: float | None = setting("CHATAPP_AGENT_LOAD_THRESHOLD", None, number(minimum=0.01))
    agent_idle_processes: int | None = setting("CHATAPP_AGENT_IDLE_PROCESSES", None, whole(minimum=0))
    # Set: the worker's load is its share of this many conversations (full at that many), not the machine's CPU.
    agent_max_jobs: int | None = setting("CHATAPP_AGENT_MAX_JOBS", None, whole(minimum=1))
    agent_health_host: str = setting("CHATAPP_AGENT_HEALTH_HOST", "")  # "" = every interface
    agent_health_port: int | None = setting("CHATAPP_AGENT_HEALTH_PORT", None, whole(minimum=0))  # 0: any free
    # Off only for `python -m bench voice`'s baseline: the same agent with no transcript sent to the app.
    agent_forward_transcripts: bool = setting("CHATAPP_AGENT_FORWARD_TRANSCRIPTS", True, flag)
    # How the worker decides a spoken turn ended: livekit-agents' end-of-turn "model", or the "vad"'s silence.
    turn_detection: Literal["model", "vad"] = setting("CHATAPP_TURN_DETECTION", "model", one_of("model", "vad"))
    ingest_url: str = setting("CHATAPP_INGEST_URL", "", base_url)
    # Speech for the agent worker, and speech-to-text for the app's server dictation (on when stt_configured);
    # the keys default to CHATAPP_LLM_API_KEY (see from_env).
    stt_base_url: str = setting("CHATAPP_STT_BASE_URL", "")
    stt_model: str = setting("CHATAPP_STT_MODEL", "gpt-4o-mini-transcribe")
    stt_api_key: str = setting("CHATAPP_STT_API_KEY", "", secret=True)
    stt_language: str = setting("CHATAPP_STT_LANGUAGE", "en")
    tts_base_url: str = setting("CHATAPP_TTS_BASE_URL", "")
    tts_model: str = setting("CHATAPP_TTS_MODEL", "gpt-4o-mini-tts")
    tts_voice: str = setting("CHATAPP_TTS_VOICE", "ash")
    tts_api_key: str = setting("CHATAPP_TTS_API_KEY", "", secret=True)

    @property
    def production(self) -> bool:
        return self.env == "production"

    @property
    def secure_cookies(self) -> bool:
        return self.public_url.startswith("https://") or self.production

    @property
    def served_url(self) -> str:
        """The address `chatapp serve` listens on, as a URL (a wildcard listen address as 127.0.0.1)."""
        host = "127.0.0.1" if self.host in {"", "0.0.0.0", "::"} else self.host  # noqa: S104
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    @property
    def llm_configured(self) -> bool:
        return bool(self.llm_base_url or self.llm_api_key)

    @property
    def stt_configured(self) -> bool:
        """Speech-to-text has an endpoint: its own base URL, or a key for OpenAI's (the worker's and dictation's)."""
        return bool(self.stt_base_url or self.stt_api_key)

    @property
    def tts_configured(self) -> bool:
        return bool(self.tts_base_url or self.tts_api_key)

    @property
    def livekit_configured(self) -> bool:
        return bool(self.livekit_url and self.livekit_api_key and self.livekit_api_secret)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        """Build settings: each from its variable (blank means its default), then the rules across settings;
        generate and keep a development secret key in the data dir when none is set."""
        env = _env() if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            name, parse = f.metadata["env"], f.metadata["parse"]
            if raw := env.get(name, "").strip():
                values[f.name] = parse(name, raw)
        settings = cls(**values)
        secret = settings.secret_key
        if settings.production:
            if len(secret) < MIN_SECRET_LENGTH:
                raise SettingsError("CHATAPP_SECRET_KEY must be set (32+ characters) when CHATAPP_ENV=production")
            if settings.test_faults:
                raise SettingsError("CHATAPP_TEST_FAULTS cannot be enabled when CHATAPP_ENV=production")
        elif not secret:
            secret = development_secret(settings.data_dir)
        if settings.channels == "redis" and not settings.redis_url:
            raise SettingsError("CHATAPP_CHANNELS=redis needs CHATAPP_REDIS_URL (redis://host:6379/0)")
        livekit = (settings.livekit_url, settings.livekit_api_key, settings.livekit_api_secret)
        if any(livekit) and not all(livekit):
            raise SettingsError("set all of LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET, or none of them")
        return replace(
            settings,
            secret_key=secret,
            # The worker's speech uses the LLM's key unless it has its own.
            stt_api_key=settings.stt_api_key or settings.llm_api_key,
            tts_api_key=settings.tts_api_key or settings.llm_api_key,
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
