"""The operations tests' deployment: two app hosts and a database host (network namespaces) behind nginx,
brought up once for the package and torn down after its last test, with the figures printed at the end."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from _pytest.terminal import TerminalReporter

from tests.support_hosts import FIGURES, Deployment, figure, leftovers, missing_requirements


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/operations/" in str(item.path):
            item.add_marker(pytest.mark.operations)


@pytest.fixture(scope="package")
def deployment() -> Iterator[Deployment]:
    if reason := missing_requirements():
        pytest.skip(reason)
    with Deployment.up(CHATAPP_AUTH_RATE_LIMIT="3") as running:
        yield running
    timings = running.timings
    figure(
        "multi-host deployment: up {up:.1f} s (network {network:.1f}, initdb {initdb:.1f}, app hosts ready "
        "{ready:.1f}, nginx {nginx:.2f}), down {down:.1f} s (app hosts {apps:.1f}, postgres {pg:.1f})".format(
            up=timings["up"],
            network=timings["network"],
            initdb=timings["initdb"],
            ready=timings["app hosts ready"],
            nginx=timings["nginx start"],
            down=timings["down"],
            apps=timings.get("stop app hosts", 0.0),
            pg=timings.get("stop postgres", 0.0),
        )
    )
    left = leftovers(running.run_id)
    assert left == [], f"teardown left {left}"


@pytest.fixture(scope="package")
def redis_deployment() -> Iterator[Deployment]:
    """The same deployment with a Redis host carrying live events (CHATAPP_CHANNELS=redis); brought up only
    for the flows run on both."""
    if reason := missing_requirements():
        pytest.skip(reason)
    with Deployment.up(redis=True, CHATAPP_AUTH_RATE_LIMIT="3") as running:
        yield running
    timings = running.timings
    figure(
        f"multi-host deployment with a Redis host: up {timings['up']:.1f} s (redis {timings['redis start']:.2f}), "
        f"down {timings['down']:.1f} s"
    )
    left = leftovers(running.run_id)
    assert left == [], f"teardown left {left}"


@pytest.fixture(scope="package", params=["postgres", "redis"])
def channels_deployment(request: pytest.FixtureRequest) -> Deployment:
    """The flows that carry live events between app hosts, run with either channel: PostgreSQL's LISTEN/NOTIFY
    (the `deployment`) and Redis pub/sub."""
    found = request.getfixturevalue("deployment" if request.param == "postgres" else "redis_deployment")
    assert isinstance(found, Deployment)
    return found


def pytest_terminal_summary(terminalreporter: TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("operations figures")
        for line in FIGURES:
            terminalreporter.write_line(line)
