"""The bench's framework floor (bench/history/floor_app.py) serves the app's own history pages, so the bench's
"÷ floor" column compares like with like: the same rows and markup (apart from the CSRF token), the same JSON, from
the same login session, and nothing without one."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.factories import make_saved
from tests.support import ITEM, NEXT, ROOT, SECRET_KEY, AppServer, free_port, person

CSRF = re.compile(r'(name="_csrf_token" value=|"x-csrftoken": )"[^"]+"')


@pytest.fixture(scope="module")
def floor_url(db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log_path = Path(tmp_path_factory.mktemp("floor")) / "floor.log"
    environment = {
        **os.environ,
        "DATABASE_URL": db,
        "CHATAPP_ENV_FILE": "/nonexistent",
        "CHATAPP_SECRET_KEY": SECRET_KEY,
        "CHATAPP_WORKERS": "1",
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.history.floor_app", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log_path.read_text()
            try:
                if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


async def test_the_floor_serves_the_apps_history_pages_from_the_same_login_session(
    app_server: AppServer, floor_url: str
) -> None:
    async with person(app_server) as (client, user):
        now = datetime.now(UTC)
        for n in range(25):
            await make_saved(user, f"Trip {n}", now - timedelta(hours=5 * n), [("user", f"Lisbon hotels, day {n}")])
        results = {"HX-Request": "true", "HX-Target": "history-results", "HX-Current-URL": f"{app_server.url}/history"}
        pages = [
            ("/history", {}),
            ("/history?q=&from=&to=", results),
            ("/history?q=lisbon&from=&to=", results),
            ("/api/users/sessions?limit=20", {}),
        ]
        async with httpx.AsyncClient(base_url=floor_url, cookies=client.cookies, timeout=10) as floor:
            for path, headers in pages:
                mine, its = await client.get(path, headers=headers), await floor.get(path, headers=headers)
                assert (mine.status_code, its.status_code) == (200, 200), path
                if path.startswith("/api/"):
                    assert its.json() == mine.json()
                    assert len(its.json()["items"]) == 20
                    continue
                assert len(ITEM.findall(its.text)) == 20, path
                assert CSRF.sub(r"\1TOKEN", its.text) == CSRF.sub(r"\1TOKEN", mine.text), path
            next_page = NEXT.search((await client.get("/history")).text)
            assert next_page is not None
            deep = next_page.group(1).replace("&amp;", "&")
            more = {"HX-Request": "true", "HX-Target": "load-more"}
            assert ITEM.findall((await floor.get(deep, headers=more)).text) == ITEM.findall(
                (await client.get(deep, headers=more)).text
            )
        async with httpx.AsyncClient(base_url=floor_url, timeout=10) as stranger:
            assert (await stranger.get("/history")).status_code == 401
