"""Nesting both ways, with exits and budgets scoped to the subtree they belong to.

Each case builds a tree, runs it offline, and checks the root status, the reason, and
how much work ran. The rules under test: a loop's exit (until, stop_on, max) ends only
that loop and its parent carries on; a budget bounds only its own subtree (an inner
budget never caps an ancestor's other work), an ancestor's budget counts everything
below it, and a crossed budget pauses the run (a paused child pauses its parent).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from loops import Job, agent_job, budget, dag, fn_job, loop, predicate, sequence
from loops.engines.mock import MockEngine, MockTurn
from loops.usage import Usage


@dataclasses.dataclass
class Case:
    build: Callable[[dict[str, Any]], Job]
    status: str
    reason: str
    counts: dict[str, int]


def tally(counts: dict[str, Any], name: str, result: Any = None):
    def fn(ctx):
        counts[name] = counts.get(name, 0) + 1
        return result

    return fn_job(fn, name=name)


def after(n: int, name: str):
    """Met from the loop's n-th iteration on."""
    return predicate(lambda ctx, last: ctx.iteration >= n, name=name)


NEVER = predicate(lambda ctx, last: False, name="never")


def spender(counts: dict[str, Any], name: str, tokens: int = 400) -> Job:
    engine = counts.setdefault(
        f"engine:{name}",
        MockEngine(default=MockTurn(text="spent", usage=Usage(input_tokens=tokens))),
    )
    return sequence(tally(counts, name), agent_job("work", name="turn", engine=engine), name=name)


CASES = {
    "loop in dag in loop: every inner loop converges, the outer gate decides": Case(
        lambda c: loop(
            name="outer",
            max=5,
            until=after(2, "outer-gate"),
            body=dag(
                name="team",
                nodes={
                    "a": loop(name="a", body=tally(c, "a"), until=after(2, "a-gate"), max=3),
                    "b": {"job": tally(c, "b"), "needs": ["a"]},
                },
            ),
        ),
        "pass",
        "until met at iteration 2: outer-gate",
        {"a": 4, "b": 2},
    ),
    "an inner loop reaching max fails itself, not the outer loop": Case(
        lambda c: loop(
            name="outer",
            max=3,
            until=after(2, "outer-gate"),
            body=loop(name="inner", body=tally(c, "inner"), until=NEVER, max=2),
        ),
        "pass",
        "until met at iteration 2",
        {"inner": 4},
    ),
    "an inner stop_on ends the inner loop only": Case(
        lambda c: loop(
            name="outer",
            max=3,
            until=after(3, "outer-gate"),
            body=loop(
                name="inner",
                body=tally(c, "inner"),
                until=NEVER,
                max=9,
                stop_on=predicate(lambda ctx, last: True, name="stop"),
            ),
        ),
        "pass",
        "until met at iteration 3",
        {"inner": 3},
    ),
    "a failing inner dag node skips its dependents; the loop's gate still decides": Case(
        lambda c: loop(
            name="outer",
            max=3,
            until=after(2, "outer-gate"),
            body=dag(
                name="d",
                nodes={
                    "build": tally(c, "build", result=False),
                    "test": {"job": tally(c, "test"), "needs": ["build"]},
                },
            ),
        ),
        "pass",
        "until met at iteration 2",
        {"build": 2, "test": 0},
    ),
    "dag in loop in dag: a node that never converges fails the outer dag": Case(
        lambda c: dag(
            name="ship",
            nodes={
                "impl": loop(name="impl", max=2, until=NEVER, body=parallel_pair(c)),
                "release": {"job": tally(c, "release"), "needs": ["impl"]},
                "notes": tally(c, "notes"),
            },
        ),
        "fail",
        "node impl fail: max 2 iterations reached",
        {"p": 2, "q": 2, "notes": 1, "release": 0},
    ),
    "an inner iterations budget is per execution of its loop, not the ancestors'": Case(
        lambda c: loop(
            name="outer",
            max=4,
            until=after(4, "outer-gate"),
            body=loop(
                name="inner",
                body=tally(c, "inner"),
                until=after(2, "inner-gate"),
                max=3,
                budget=budget(iterations=2),
            ),
        ),
        "pass",
        "until met at iteration 4",
        {"inner": 8},
    ),
    "an inner budget never caps a sibling's spending": Case(
        lambda c: dag(
            name="d",
            nodes={
                "capped": loop(
                    name="capped",
                    body=spender(c, "capped"),
                    until=after(3, "c-gate"),
                    max=5,
                    budget=budget(tokens=10_000),
                ),
                "free": loop(name="free", body=spender(c, "free"), until=after(4, "f-gate"), max=5),
            },
            budget=None,
        ),
        "pass",
        "2 nodes: 2 passed",
        {"capped": 3, "free": 4},
    ),
    "a crossed inner budget pauses the run, and siblings finish": Case(
        lambda c: dag(
            name="d",
            nodes={
                "capped": loop(
                    name="capped",
                    body=spender(c, "capped"),
                    until=NEVER,
                    max=9,
                    budget=budget(tokens=1000),
                ),
                "free": loop(name="free", body=spender(c, "free"), until=after(4, "f-gate"), max=5),
                "after": {"job": tally(c, "after"), "needs": ["capped"]},
            },
        ),
        "paused",
        "budget of d/capped exhausted: tokens 1200 of 1000",
        {"capped": 3, "free": 4, "after": 0},
    ),
    "an outer budget counts inner spending and pauses the inner loop's ancestors": Case(
        lambda c: loop(
            name="outer",
            max=5,
            until=NEVER,
            budget=budget(tokens=1000),
            body=loop(name="inner", body=spender(c, "inner"), until=NEVER, max=9),
        ),
        "paused",
        "budget of outer exhausted: tokens 1200 of 1000",
        {"inner": 3},
    ),
}


def parallel_pair(c: dict[str, Any]) -> Job:
    return dag(name="pair", nodes={"p": tally(c, "p"), "q": tally(c, "q")})


@pytest.mark.parametrize("case", CASES.values(), ids=list(CASES))
async def test_nesting(run_job, case: Case):
    counts: dict[str, Any] = {}
    result, sink = await run_job(case.build(counts))
    assert result.status.value == case.status, result.reason
    assert case.reason in result.reason
    for name, expected in case.counts.items():
        assert counts.get(name, 0) == expected, name
    assert sink.events[-1].type.value == "run.finished"
    assert sink.events[-1].data["status"] == case.status
