"""Run loop designs on graded tasks and report honesty, convergence and spend per design.

    .venv/bin/python bench/mechanism                       # offline: scripted mock agents
    .venv/bin/python bench/mechanism --engine claude --tasks clamp,roman --repeat 3
    .venv/bin/python bench/mechanism --json                # one JSON document

A trial is one design on one task with one seed: create the task's repository, run the
design's loop there with the engine, then run the task's hidden check on a copy of the
final tree. Per design we report the pass rate by the hidden check, the false "done"
rate (the loop passed, the hidden check fails), iterations, tokens, cost and wall time.
With ``--engine mock`` each task is played by its scripted persona; any other engine
name runs the same tasks and designs with real agents (workers and judges alike).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import loops
from loops.engines.mock import MockEngine
from loops.flow.events import Event, EventType
from mechanism import personas, tasks
from mechanism.designs import DESIGNS

DEFAULT_MAX_ITERATIONS = 4


@dataclasses.dataclass(frozen=True, slots=True)
class Trial:
    """One design run on one task, graded by the hidden check."""

    task: str
    persona: str
    design: str
    seed: int
    status: str
    loop_passed: bool
    hidden_passed: bool
    iterations: int
    input_tokens: int
    output_tokens: int
    cost_usd: float | None
    wall_s: float
    reason: str
    hidden: str

    @property
    def false_done(self) -> bool:
        """The loop said done and the hidden check disagrees."""
        return self.loop_passed and not self.hidden_passed

    @property
    def mark(self) -> str:
        """One cell of the task x design grid."""
        if self.loop_passed:
            return "pass" if self.hidden_passed else "FALSE DONE"
        return "missed" if self.hidden_passed else f"{self.status} (honest)"


class _Counter:
    """Counts iterations started by the root loop."""

    def __init__(self) -> None:
        self.iterations = 0

    def emit(self, event: Event) -> None:
        if event.type is EventType.ITERATION_STARTED and event.path.count("/") == 0:
            self.iterations += 1


async def run_trial(
    task: tasks.Task,
    design: str,
    *,
    engine: str,
    seed: int,
    max_iterations: int,
    workroot: Path,
) -> Trial:
    """Run ``design`` on ``task`` once and grade it."""
    repo = await asyncio.to_thread(
        tasks.materialize, task, workroot / f"{task.name}--{design}--{seed}"
    )
    job = DESIGNS[design](task, max_iterations)
    counter = _Counter()
    started = time.perf_counter()
    if engine == "mock":
        persona = personas.persona_for(task, random.Random(f"{seed}:{task.name}"))
        engine_obj = MockEngine(script=persona.turn)
        result = await loops.run(job, cwd=repo, engine=engine_obj, sinks=[counter])
    else:
        result = await loops.run(job, cwd=repo, engine=engine, force_engine=True, sinks=[counter])
    wall = time.perf_counter() - started
    hidden = await asyncio.to_thread(tasks.hidden_check, task, repo)
    usage = result.outcome.usage
    return Trial(
        task=task.name,
        persona=task.persona if engine == "mock" else engine,
        design=design,
        seed=seed,
        status=result.status.value,
        loop_passed=result.status is loops.OutcomeStatus.PASS,
        hidden_passed=hidden.passed,
        iterations=counter.iterations,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cost_usd=usage.cost_usd,
        wall_s=wall,
        reason=result.reason[:300],
        hidden=hidden.detail,
    )


async def run_all(
    chosen: Sequence[tasks.Task],
    designs: Sequence[str],
    *,
    engine: str,
    seeds: Sequence[int],
    max_iterations: int,
    jobs: int,
) -> list[Trial]:
    """Every design on every task for every seed, ``jobs`` trials at a time."""
    limit = asyncio.Semaphore(jobs)
    plan = [(t, d, s) for s in seeds for t in chosen for d in designs]
    random.Random(seeds[0] if seeds else 0).shuffle(plan)  # no order effects on shared load

    with tempfile.TemporaryDirectory(prefix="loops-mechanism-") as tmp:

        async def one(task: tasks.Task, design: str, seed: int) -> Trial:
            async with limit:
                return await run_trial(
                    task,
                    design,
                    engine=engine,
                    seed=seed,
                    max_iterations=max_iterations,
                    workroot=Path(tmp),
                )

        trials = await asyncio.gather(*(one(t, d, s) for t, d, s in plan))
    return sorted(trials, key=lambda t: (designs.index(t.design), t.task, t.seed))


def summarize(trials: Sequence[Trial], designs: Sequence[str]) -> list[dict[str, Any]]:
    """Per design: rates, iterations, tokens, cost and wall time."""
    rows = []
    for design in designs:
        mine = [t for t in trials if t.design == design]
        if not mine:
            continue
        n = len(mine)
        costs = [t.cost_usd for t in mine if t.cost_usd is not None]
        walls = [t.wall_s for t in mine]
        rows.append(
            {
                "design": design,
                "trials": n,
                "pass_rate": sum(t.hidden_passed for t in mine) / n,
                "loop_done_rate": sum(t.loop_passed for t in mine) / n,
                "false_done_rate": sum(t.false_done for t in mine) / n,
                "false_dones": sum(t.false_done for t in mine),
                "false_done_tasks": sorted({t.task for t in mine if t.false_done}),
                "iterations_mean": statistics.fmean(t.iterations for t in mine),
                "tokens_mean": statistics.fmean(t.input_tokens + t.output_tokens for t in mine),
                "cost_usd_total": sum(costs) if costs else None,
                "wall_s_median": statistics.median(walls),
                "wall_s_min": min(walls),
                "wall_s_max": max(walls),
            }
        )
    return rows


def render(trials: Sequence[Trial], rows: Sequence[dict[str, Any]], header: str) -> str:
    """The report as Markdown tables: per design, then the task x design grid."""
    out = [header, ""]
    out.append(
        "| design | trials | pass rate (hidden check) | loop said done | false done | "
        "iterations, mean | tokens, mean | cost USD | wall s, median (min-max) |"
    )
    out.append("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        cost = "n/a" if r["cost_usd_total"] is None else f"{r['cost_usd_total']:.4f}"
        out.append(
            f"| {r['design']} | {r['trials']} | {r['pass_rate']:.0%} | {r['loop_done_rate']:.0%} "
            f"| {r['false_done_rate']:.0%} ({r['false_dones']}) | {r['iterations_mean']:.2f} "
            f"| {r['tokens_mean']:,.0f} | {cost} | {r['wall_s_median']:.2f} "
            f"({r['wall_s_min']:.2f}-{r['wall_s_max']:.2f}) |"
        )
    designs = [r["design"] for r in rows]
    out += ["", "| task (agent) | " + " | ".join(designs) + " |"]
    out.append("|---" * (len(designs) + 1) + "|")
    for key in sorted({(t.task, t.persona) for t in trials}):
        cells = []
        for design in designs:
            mine = [t for t in trials if (t.task, t.persona) == key and t.design == design]
            marks = sorted({t.mark for t in mine})
            its = "/".join(str(t.iterations) for t in mine)
            cells.append(f"{', '.join(marks)} [{its} it]")
        out.append(f"| {key[0]} ({key[1]}) | " + " | ".join(cells) + " |")
    return "\n".join(out)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/mechanism", description=__doc__.split("\n")[0])
    parser.add_argument("--engine", default="mock", help="mock (scripted agents), claude, codex…")
    parser.add_argument("--designs", default=",".join(DESIGNS), help="comma-separated")
    parser.add_argument("--tasks", default="", help="comma-separated task names (default all)")
    parser.add_argument("--seed", type=int, default=1, help="first seed (repeatable runs)")
    parser.add_argument("--repeat", type=int, default=1, help="seeds per task and design")
    parser.add_argument("--max", type=int, default=DEFAULT_MAX_ITERATIONS, dest="max_iterations")
    parser.add_argument("--jobs", type=int, default=0, help="trials at once (mock 4, else 1)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args(argv)
    unknown = [d for d in args.designs.split(",") if d not in DESIGNS]
    if unknown:
        parser.error(f"unknown design(s) {', '.join(unknown)}; known: {', '.join(DESIGNS)}")
    if args.repeat < 1 or args.max_iterations < 1:
        parser.error("--repeat and --max must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the harness from the command line; 0 on success, 2 on bad input."""
    args = parse_args(argv)
    try:
        chosen = tasks.load_tasks([n for n in args.tasks.split(",") if n] or None)
    except tasks.TaskError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    designs = args.designs.split(",")
    seeds = list(range(args.seed, args.seed + args.repeat))
    jobs = args.jobs or (4 if args.engine == "mock" else 1)
    started = time.perf_counter()
    trials = asyncio.run(
        run_all(
            chosen,
            designs,
            engine=args.engine,
            seeds=seeds,
            max_iterations=args.max_iterations,
            jobs=jobs,
        )
    )
    rows = summarize(trials, designs)
    took = time.perf_counter() - started
    if args.json:
        document = {
            "engine": args.engine,
            "seeds": seeds,
            "max_iterations": args.max_iterations,
            "wall_s": took,
            "designs": rows,
            "trials": [dataclasses.asdict(t) | {"false_done": t.false_done} for t in trials],
        }
        print(json.dumps(document, indent=2))
    else:
        header = (
            f"engine {args.engine}, {len(chosen)} tasks x {len(designs)} designs x "
            f"{len(seeds)} seed(s) from {args.seed}, max {args.max_iterations} iterations, "
            f"{took:.1f} s"
        )
        print(render(trials, rows, header))
    return 0
