"""The commands a person runs: createuser from stdin, and a clear one-line error when the database is away."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
