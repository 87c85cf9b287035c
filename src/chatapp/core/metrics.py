"""Prometheus metrics at `/metrics`: Litestar's request metrics plus the app's own, for every worker at once.

With several workers (`chatapp serve --workers N`) the parent points `PROMETHEUS_MULTIPROC_DIR` at an emptied
folder before spawning them (cli.prepare_metrics_dir), so prometheus_client writes each process's values
to files there and `/metrics` on any worker adds up the whole server. A single process keeps them in memory.

Labels are low-cardinality by design: route templates (never paths with ids), fixed outcome words; no user ids,
conversation ids or transcript text ever become a label.
"""

from __future__ import annotations

import os

from litestar import Controller
from litestar.plugins.prometheus import PrometheusConfig, PrometheusController
from prometheus_client import Counter, Gauge

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Gauges: `livesum` adds up the values of the workers that are alive (a stopped worker's files are removed
# by `worker_stopped`); in a single process it is an ordinary gauge.
SSE_STREAMS = Gauge("chatapp_sse_streams", "Open SSE streams (tabs with a live view)", multiprocess_mode="livesum")
ACTIVE_AGENTS = Gauge(
    "chatapp_active_agents", "In-process agents running (conversations with an agent here)", multiprocess_mode="livesum"
)
INGEST_EVENTS = Counter(
    "chatapp_ingest_events",
    "Transcript events through the pipeline, by source (api: agent worker POSTs; app: typed, dictated and "
    "in-process agents), kind (final/interim) and outcome (stored; ignored: a repeat, or a stale interim)",
    ["source", "kind", "outcome"],
)
NEW_CHAT = Counter(
    "chatapp_new_chat",
    "New Chat outcomes: saved, deleted_empty (nobody spoke), nothing (already ended), failed (could not save)",
    ["outcome"],
)
REAPER_ACTIONS = Counter(
    "chatapp_reaper_actions",
    "Idle reaper actions: ended (idle conversations), failed (could not end one), sessions_deleted (expired logins)",
    ["action"],
)

NEW_CHAT_OUTCOMES = ("saved", "deleted_empty", "nothing", "failed")
for _outcome in NEW_CHAT_OUTCOMES:  # every series exists from the start: a rate over a missing series is empty
    NEW_CHAT.labels(_outcome)
for _action in ("ended", "failed", "sessions_deleted"):
    REAPER_ACTIONS.labels(_action)


def count_events(source: str, kind: str, stored: int, ignored: int) -> None:
    if stored:
        INGEST_EVENTS.labels(source, kind, "stored").inc(stored)
    if ignored:
        INGEST_EVENTS.labels(source, kind, "ignored").inc(ignored)


class MetricsController(PrometheusController):
    """`/metrics`, outside login (see accounts.sessions.PUBLIC_PATHS) and outside the OpenAPI schema.

    Litestar's controller already reads `PROMETHEUS_MULTIPROC_DIR`: set, it merges every worker's files."""

    include_in_schema = False


def prometheus_config() -> PrometheusConfig:
    """Request count, latency and in-progress per route template (`group_path`), not per concrete path."""
    return PrometheusConfig(app_name="chatapp", prefix="chatapp", group_path=True, exclude=["^/metrics$"])


def controllers() -> list[type[Controller]]:
    return [MetricsController]


def worker_stopped() -> None:
    """A worker shutting down: drop its live gauges so `livesum` no longer counts it."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
