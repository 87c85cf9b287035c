"""The embedded PostgreSQL is stopped when `chatapp serve` is stopped, even after an earlier crash."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from chatapp.core.database import EmbeddedPostgres
from tests.support import ROOT, free_port


def postmaster_running(pgdata: Path) -> bool:
    pid_file = pgdata / "postmaster.pid"
    if not pid_file.exists():
        return False
    try:
        os.kill(int(pid_file.read_text().split()[0]), 0)
    except (ProcessLookupError, ValueError):
        return False
    return True


def test_sigterm_stops_the_embedded_server_even_after_a_crashed_run(tmp_path: Path) -> None:
    pgdata = tmp_path / "postgres"
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"} | {
        "CHATAPP_DATA_DIR": str(tmp_path),
        "CHATAPP_ENV_FILE": "/nonexistent",
        "CHATAPP_LOG_LEVEL": "warning",
    }
    port = free_port()
    # A cluster from an earlier run that was killed outright, leaving its pid behind.
    embedded = EmbeddedPostgres(tmp_path)
    embedded.start()
    embedded.stop()
    (pgdata / ".handle_pids.json").write_text(json.dumps([2**22 + 12345]))
    process = subprocess.Popen(
        [sys.executable, "-m", "chatapp", "serve", "--migrate", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        assert postmaster_running(pgdata)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) != -signal.SIGTERM  # exited through our handler, not killed
        assert not postmaster_running(pgdata)
        assert json.loads((pgdata / ".handle_pids.json").read_text()) == []
    finally:
        if process.poll() is None:
            process.kill()
