"""The commands a person runs: createuser from stdin, and a clear one-line error when the database is away."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from chatapp.accounts.service import authenticate
from tests.support import ROOT, unique_email


def run(args: list[str], env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chatapp", *args],
        input=stdin,
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def environment(dsn: str, tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "DATABASE_URL": dsn, "CHATAPP_DATA_DIR": str(tmp_path), "CHATAPP_ENV_FILE": "/nonexistent"}


async def test_createuser_reads_the_password_from_stdin(db: str, tmp_path: Path) -> None:
    email = unique_email()
    result = run(
        ["createuser", "--email", email.upper(), "--display-name", "Cli User"],
        environment(db, tmp_path),
        "a long password here\n",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"created {email}"
    assert "a long password here" not in result.stdout + result.stderr
    user = await authenticate(email, "a long password here")
    assert user is not None
    assert user.display_name == "Cli User"
    again = run(
        ["createuser", "--email", email, "--display-name", "Twice"], environment(db, tmp_path), "a long password here\n"
    )
    assert again.returncode == 2
    assert "could not create an account" in again.stderr
    unchanged = await authenticate(email, "a long password here")
    assert unchanged is not None
    assert unchanged.display_name == "Cli User"


def test_an_unreachable_database_is_one_clear_line(tmp_path: Path) -> None:
    env = environment("postgresql://chatapp:hunter2@127.0.0.1:1/chatapp", tmp_path) | {"CHATAPP_DB_WAIT_SECONDS": "1"}
    result = run(["migrate"], env)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("chatapp: cannot reach PostgreSQL at 127.0.0.1:1/chatapp")
    assert "hunter2" not in result.stderr
    assert "Traceback" not in result.stderr


async def test_two_hosts_migrating_an_empty_database_at_once_take_turns(db: str, tmp_path: Path) -> None:
    """deploy/'s unit migrates before every start: two hosts starting together must not race (advisory lock)."""
    name = f"migrate_race_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(db)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
        fresh = urlunsplit(urlsplit(db)._replace(path=f"/{name}"))
        env = environment(fresh, tmp_path)
        started = [
            subprocess.Popen(
                [sys.executable, "-m", "chatapp", "migrate"],
                env=env,
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        results = [(process.wait(90), *process.communicate()) for process in started]
        assert [code for code, _, _ in results] == [0, 0], results
        outputs = sorted(out.strip() for _, out, _ in results)
        assert outputs[0].startswith("applied ")  # one applied everything ...
        assert outputs[1] == "database schema is up to date"  # ... the other waited, then found nothing to do
        conn = await asyncpg.connect(fresh)
        try:
            names = await conn.fetch("SELECT name FROM migration WHERE app_name = 'chatapp'")
        finally:
            await conn.close()
        assert (
            len(names)
            == len({row["name"] for row in names})
            == len(list((ROOT / "piccolo_migrations").glob("chatapp_*.py")))
        )
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()
