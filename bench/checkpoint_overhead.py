"""What checkpointing costs a run: loop() and dag() with and without a checkpointer.

Run:  .venv/bin/python bench/checkpoint_overhead.py [--runs 5] [--n 1000]

* loop: N iterations of one mock agent turn, gated by a predicate met at the last.
* dag: N mock agent nodes without needs (unbounded concurrency).

Each case runs with no checkpointer, with a :class:`MemoryCheckpointer` (the document
is copied through JSON on every save, as a queue state write serialises it) and with a
:class:`FileCheckpointer` in a temporary folder (write, fsync, rename per save). The
per-job cost is (checkpointed - plain) / N. Each figure is the median over ``--runs``
runs, with min-max.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loops import agent_job, dag, loop, predicate, run
from loops.engines.mock import MockEngine, MockTurn
from loops.flow.checkpoint import Checkpointer, FileCheckpointer, MemoryCheckpointer

CWD = Path.cwd()


def engine() -> MockEngine:
    return MockEngine(default=MockTurn(text="ok"))


def loop_job(n: int) -> Any:
    return loop(
        name="bench",
        body=agent_job("work", engine=engine()),
        until=predicate(lambda ctx, last: ctx.iteration >= n, name="last"),
        max=n,
    )


def dag_job(n: int) -> Any:
    mock = engine()
    return dag(name="bench", nodes={f"n{i}": agent_job("work", engine=mock) for i in range(n)})


async def timed(job: Any, store: Checkpointer | None) -> float:
    started = time.perf_counter()
    result = await run(job, cwd=CWD, checkpointer=store)
    assert result.status.value == "pass", result.reason
    return time.perf_counter() - started


def measure(
    build: Callable[[], Any], make: Callable[[Path], Checkpointer | None], runs: int
) -> list[float]:
    out = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as folder:
            out.append(asyncio.run(timed(build(), make(Path(folder)))))
    return out


def cell(values: list[float]) -> str:
    median, low, high = (x * 1000 for x in (statistics.median(values), min(values), max(values)))
    return f"{median:.1f} ms ({low:.1f}-{high:.1f})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--n", type=int, default=1000)
    args = parser.parse_args()
    n = args.n
    stores: dict[str, Callable[[Path], Checkpointer | None]] = {
        "none": lambda folder: None,
        "memory": lambda folder: MemoryCheckpointer(),
        "file": lambda folder: FileCheckpointer(folder / "cp.json"),
    }
    for case, build in (("loop", lambda: loop_job(n)), ("dag", lambda: dag_job(n))):
        plain = measure(build, stores["none"], args.runs)
        row = [f"{case}, {n}", cell(plain)]
        for name in ("memory", "file"):
            values = measure(build, stores[name], args.runs)
            per_job = (statistics.median(values) - statistics.median(plain)) / n * 1000
            row.append(f"{cell(values)}: {per_job:.3f} ms/job")
        print(" | ".join(row), flush=True)


if __name__ == "__main__":
    main()
