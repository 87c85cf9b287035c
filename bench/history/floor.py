"""The framework floor the history benchmark measures beside the app: `bench.history.floor_app`, started as the
bench starts `chatapp serve` (`running_app(env, FLOOR)`: its own process, the run's database and environment, so
the same worker count)."""

from __future__ import annotations

FLOOR = ("bench.history.floor_app",)
