"""Shared by the run registry, CLI and TUI tests: a small job tree on the mock engine.

Importable as ``run_helpers`` (pytest puts ``tests/`` on the path for its conftest).
"""

from __future__ import annotations

from pathlib import Path

from loops import agent_job, budget, dag, fn_job, loop, predicate
from loops.engines.mock import MockEngine, MockTurn
from loops.flow.jobs import Job
from loops.usage import Usage


def demo_job(*, delay_s: float = 0.0, tokens: int = 5000, passes_at: int = 2) -> Job:
    """``ship``: dag(plan -> impl), impl = a budgeted loop of mock turns until app.txt says done.

    Each turn writes ``app.txt`` with its number; the gate passes at turn ``passes_at``.
    """
    turns = [
        MockTurn(
            text=f"turn {n}: editing app.txt\nran the tests",
            edits={"app.txt": "done" if n >= passes_at else f"try {n}"},
            usage=Usage(input_tokens=100, output_tokens=20, cost_usd=0.01),
            delay_s=delay_s,
        )
        for n in range(1, 6)
    ]
    engine = MockEngine(turns)

    def tests_pass(ctx, last) -> bool:
        path = Path(ctx.cwd) / "app.txt"
        return path.exists() and path.read_text() == "done"

    impl = loop(
        name="impl",
        body=agent_job("Make the tests pass", engine=engine),
        until=predicate(tests_pass),
        max=4,
        budget=budget(tokens=tokens, usd=1),
    )
    return dag(
        name="ship",
        nodes={
            "plan": fn_job(lambda ctx: True, name="plan"),
            "impl": {"job": impl, "needs": ["plan"]},
        },
    )
