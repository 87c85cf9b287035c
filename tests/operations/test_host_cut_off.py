"""The proxy's failover settings with one app host's link cut (`ip link set … down`: no resets, silence):
idempotent requests still succeed through the other host, and the cut host serves again once reconnected.
(The harness's cut/reconnect are what the later failure tests build on.)"""

from __future__ import annotations

import statistics
import time

from tests.support import wait_for
from tests.support_hosts import Deployment, figure

CONNECT_TIMEOUT = 2.0  # proxy_connect_timeout in deploy/nginx/chatapp.conf.template


async def test_with_one_app_host_cut_off_every_page_load_still_succeeds_through_the_other(
    deployment: Deployment,
) -> None:
    cut = deployment.apps["app1"]
    durations = []
    async with deployment.client("127.0.0.11") as browser:
        deployment.cut("app1")
        try:
            for _ in range(8):
                started = time.monotonic()
                response = await browser.get("/login")
                durations.append(time.monotonic() - started)
                assert response.status_code == 200
        finally:
            deployment.reconnect("app1")

    async def serving_again() -> bool:
        return cut.healthy()

    await wait_for(serving_again, 15)
    retried = [line for line in deployment.proxy.access_log.read_text().splitlines() if f"{cut.address}:8000, " in line]
    figure(
        f"one app host cut off: 8 page loads through nginx, all 200; slowest {max(durations):.2f} s (a "
        f"connect timeout of {CONNECT_TIMEOUT:.0f} s, then the other host), median "
        f"{statistics.median(durations) * 1000:.0f} ms; {len(retried)} retried on the other host"
    )
    assert retried  # nginx tried the cut host, gave up after the connect timeout and went on
    assert max(durations) < CONNECT_TIMEOUT + 1.5
    assert statistics.median(durations) < 0.5  # then it stops trying the cut host (max_fails=2)
