"""Budgets in runs: pause with the reason, at most one turn past, scoped to a subtree."""

from __future__ import annotations

from loops import agent_job, budget, dag, loop, predicate
from loops.engines.mock import MockEngine, MockTurn
from loops.usage import Usage

NEVER = predicate(lambda ctx, last: False, name="never")


def costly(tokens: int = 400, usd: float = 0.0) -> MockEngine:
    return MockEngine(
        default=MockTurn(text="worked", usage=Usage(input_tokens=tokens, cost_usd=usd))
    )


async def test_tokens_pause_the_run_at_most_one_turn_past_the_limit(run_job):
    engine = costly(400)
    job = loop(
        name="l",
        body=agent_job("x", engine=engine),
        until=NEVER,
        max=10,
        budget=budget(tokens=1000),
    )
    result, sink = await run_job(job)
    assert result.status.value == "paused" and result.exit_code == 3
    assert len(engine.requests) == 3  # 400, 800, 1200: the third crosses, no fourth starts
    assert result.reason == "budget of l exhausted: tokens 1200 of 1000"
    exceeded = sink.of_type("budget.exceeded")
    assert exceeded[0].path == "l" and exceeded[0].data["limits"] == {"tokens": 1000}
    spent = [
        (e.data["spent"]["iterations"], e.data["spent"]["tokens"]) for e in sink.of_type("budget")
    ]
    assert spent == [(1, 0), (1, 400), (2, 400), (2, 800), (3, 800), (3, 1200)]
    assert sink.events[-1].data["status"] == "paused"


async def test_usd_and_iterations(run_job):
    engine = costly(10, usd=0.6)
    job = loop(
        name="l", body=agent_job("x", engine=engine), until=NEVER, max=10, budget=budget(usd=1)
    )
    result, _ = await run_job(job)
    assert result.status.value == "paused" and len(engine.requests) == 2
    job = loop(name="l", body=lambda c: None, until=NEVER, max=10, budget=budget(iterations=4))
    result, sink = await run_job(job)
    assert result.status.value == "paused" and "iterations 4 of 4" in result.reason
    assert len(sink.of_type("iteration.started")) == 4


async def test_wall_time(run_job, fake_clock):
    def tick(ctx):
        fake_clock.advance(20)

    job = loop(name="l", body=tick, until=NEVER, max=10, budget=budget(seconds=50))
    result, sink = await run_job(job, clock=fake_clock)
    assert result.status.value == "paused" and "seconds 60.0 of 50" in result.reason
    assert len(sink.of_type("iteration.started")) == 3


async def test_a_judge_is_not_asked_past_the_budget(run_job):
    from loops import agent_check

    judge_engine = MockEngine(
        default=MockTurn(
            text='{"met": false, "confidence": 1, "reason": "no"}', usage=Usage(input_tokens=600)
        )
    )
    job = loop(
        name="l",
        body=lambda c: None,
        until=agent_check("done?", engine=judge_engine),
        max=5,
        budget=budget(tokens=1000),
    )
    result, _ = await run_job(job)
    assert result.status.value == "paused" and len(judge_engine.requests) == 2


async def test_a_dag_budget_covers_all_its_nodes(run_job):
    engine = costly(300)
    nodes = {f"n{i}": agent_job("x", name=f"n{i}", engine=engine) for i in range(5)}
    job = dag(name="d", nodes=nodes, concurrency=1, budget=budget(tokens=600))
    result, _ = await run_job(job)
    assert result.status.value == "paused" and len(engine.requests) == 2
    assert result.outcome.data["nodes"] == {
        "n0": "passed",
        "n1": "passed",
        "n2": "paused",
        "n3": "paused",
        "n4": "paused",
    }
