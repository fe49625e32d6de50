"""Framework overhead of loop() and dag() with the mock engine, against a bare Python loop.

Run:  .venv/bin/python bench/loop_overhead.py [--runs 7]

* loop: 1,000 iterations of one mock agent turn, gated by a predicate met at the last.
* dag: 1,000 mock agent nodes in 10 layers of 100; every node needs every node of the
  layer before (90,000 edges), unbounded concurrency.

The bare baseline makes the same engine calls and predicate checks in a plain ``for``
loop. Framework time per iteration/node = (framework - bare) / 1,000. Each figure is
the median over ``--runs`` runs, with min-max. Events go to no sink ("null") and to an
NDJSON writer on /dev/null ("ndjson"), since a real run always has one consumer.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from loops import agent_job, dag, loop, predicate, run
from loops.engines import base
from loops.engines.mock import MockEngine, MockTurn
from loops.flow.events import EventSink, NdjsonSink

N = 1000
LAYERS = 10
CWD = Path.cwd()


def engine() -> MockEngine:
    return MockEngine(default=MockTurn(text="ok"))


async def bare_loop() -> None:
    mock = engine()
    gate = lambda iteration: iteration >= N  # noqa: E731
    for iteration in range(1, N + 1):
        async for _event in mock.run_turn(base.TurnRequest(prompt="work", cwd=CWD)):
            pass
        if gate(iteration):
            break


async def framework_loop(sinks: list[EventSink]) -> None:
    job = loop(
        name="bench",
        body=agent_job("work", engine=engine()),
        until=predicate(lambda ctx, last: ctx.iteration >= N, name="last"),
        max=N,
    )
    result = await run(job, cwd=CWD, sinks=sinks)
    assert result.status.value == "pass", result.reason


async def bare_dag() -> None:
    mock = engine()
    for _layer in range(LAYERS):
        for _node in range(N // LAYERS):
            async for _event in mock.run_turn(base.TurnRequest(prompt="work", cwd=CWD)):
                pass


def build_dag():
    mock = engine()
    width = N // LAYERS
    nodes = {}
    for layer in range(LAYERS):
        previous = [f"n{layer - 1}-{i}" for i in range(width)] if layer else []
        for i in range(width):
            nodes[f"n{layer}-{i}"] = {
                "job": agent_job("work", name="w", engine=mock),
                "needs": previous,
            }
    return dag(name="bench", nodes=nodes)


_PREBUILT: list = []


async def framework_dag(sinks: list[EventSink]) -> None:
    """Run a dag built beforehand (construction is timed on its own)."""
    result = await run(_PREBUILT.pop(), cwd=CWD, sinks=sinks)
    assert result.status.value == "pass", result.reason


def timed(fn: Callable[[], Awaitable[None]], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        started = time.perf_counter()
        asyncio.run(fn())
        out.append(time.perf_counter() - started)
    return out


def fmt(samples: list[float], scale: float = 1.0, unit: str = "ms") -> str:
    values = [s * scale for s in samples]
    return f"{statistics.median(values):.3f} {unit} ({min(values):.3f}-{max(values):.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    devnull = open(os.devnull, "w")  # noqa: SIM115 (kept open for the whole benchmark)
    print(f"python {sys.version.split()[0]}, {args.runs} runs each, median (min-max)")
    started = time.perf_counter()
    build_dag()
    built_ms = (time.perf_counter() - started) * 1e3
    print(f"dag construction (1,000 nodes, 90,000 edges, checked): {built_ms:.1f} ms")
    _PREBUILT.extend(build_dag() for _ in range(2 * args.runs))
    for label, bare, framework in (
        ("loop", bare_loop, framework_loop),
        ("dag", bare_dag, framework_dag),
    ):
        bare_s = timed(bare, args.runs)
        print(f"{label}: bare python, total {fmt(bare_s, 1e3)}")
        for sink_name, sinks in (("null", []), ("ndjson", [NdjsonSink(devnull)])):
            total = timed(lambda f=framework, s=sinks: f(list(s)), args.runs)
            per_item = [(t - statistics.median(bare_s)) / N for t in total]
            ratio = statistics.median(total) / statistics.median(bare_s)
            print(
                f"{label}: framework ({sink_name} sink), total {fmt(total, 1e3)}, "
                f"overhead per {'iteration' if label == 'loop' else 'node'} {fmt(per_item, 1e3)}, "
                f"{ratio:.1f}x bare"
            )


if __name__ == "__main__":
    main()
