"""Fixtures for the loop library's unit tests: run a job offline and keep its events."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from loops import Job, RunResult, run
from loops.flow.events import MemorySink

RunJob = Callable[..., Awaitable[tuple[RunResult, MemorySink]]]


@pytest.fixture
def run_job(tmp_path: Path) -> RunJob:
    """``await run_job(job, **run_options)`` -> (result, sink); cwd defaults to tmp_path."""

    async def _run(job: Job, **options: Any) -> tuple[RunResult, MemorySink]:
        sink = MemorySink()
        options.setdefault("cwd", tmp_path)
        result = await run(job, sinks=[sink], **options)
        return result, sink

    return _run


class FakeClock:
    """Monotonic seconds that only move when told to."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def fake_clock() -> FakeClock:
    """A clock for wall-time budgets."""
    return FakeClock()
