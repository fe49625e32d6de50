"""agent_job: engine resolution, streamed turn events, feedback, failures, rate limits."""

from __future__ import annotations

from pathlib import Path

import pytest

from loops import Verdict, agent_job, command_succeeds, errors, fn_job, loop, predicate, sequence
from loops.engines.mock import MockEngine, MockTurn
from loops.usage import Usage


async def test_a_turn_streams_its_events_into_the_run(run_job, tmp_path: Path):
    engine = MockEngine(
        [
            MockTurn(
                text="wrote it",
                edits={"a.txt": "A"},
                usage=Usage(input_tokens=10, output_tokens=5, cost_usd=0.01),
            )
        ]
    )
    result, sink = await run_job(agent_job("Write a.txt", name="writer", engine=engine))
    assert result.status.value == "pass" and result.reason == "wrote it"
    assert (tmp_path / "a.txt").read_text() == "A"
    types = [e.type.value for e in sink.events if e.path == "writer"]
    assert types == [
        "run.started",
        "job.started",
        "agent.started",
        "agent.tool_use",
        "agent.tool_result",
        "agent.text",
        "agent.usage",
        "agent.finished",
        "job.finished",
        "run.finished",
    ]
    finished = sink.of_type("agent.finished")[0].data
    assert finished["usage"]["cost_usd"] == 0.01 and finished["role"] == "worker"
    assert result.outcome.usage.total_tokens == 15
    assert engine.requests[0].cwd == tmp_path


async def test_a_failed_turn_is_an_error_outcome_with_the_classified_reason(run_job):
    result, _ = await run_job(agent_job("x", engine=MockEngine([MockTurn(error="auth")])))
    assert result.status.value == "error"
    assert result.reason == "agent turn failed: mock engine: scripted auth"


async def test_rate_limits_wait_and_retry_without_burning_an_iteration(run_job):
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    engine = MockEngine([MockTurn(error="rate_limit", retry_after_s=7), MockTurn(text="done")])
    result, _ = await run_job(agent_job("x", engine=engine), sleep=sleep)
    assert result.status.value == "pass" and waits == [7]


async def test_engine_defaults_and_forcing(run_job):
    named = agent_job("x", engine="mock", engine_options={"default": {"text": "from the job"}})
    result, _ = await run_job(named)
    assert result.reason == "from the job"
    run_engine = MockEngine(default=MockTurn(text="from the run"))
    result, _ = await run_job(agent_job("x"), engine=run_engine)
    assert result.reason == "from the run"
    result, _ = await run_job(named, engine=run_engine)
    assert result.reason == "from the job"  # not forced: the job's own engine
    result, _ = await run_job(named, engine=run_engine, force_engine=True)
    assert result.reason == "from the run"


async def test_no_engine_anywhere_ends_the_run_with_a_clear_error(run_job):
    with pytest.raises(errors.ConfigError, match="has no engine"):
        await run_job(loop(name="l", body=agent_job("x"), until=lambda c, _: True))


async def test_consume_feedback_folds_the_failing_gate_and_review_into_the_prompt(run_job):
    engine = MockEngine(default=MockTurn(text="ok"))
    review = predicate(lambda ctx, last: ctx.iteration >= 3, name="reviewer")
    gate = predicate(
        lambda ctx, last: Verdict(ctx.iteration >= 2, "tests failed", evidence="E   assert 1 == 2"),
        name="tests",
    )
    job = loop(
        name="l",
        body=agent_job(
            lambda ctx: f"Fix it (turn {ctx.iteration}).", engine=engine, consume_feedback=True
        ),
        until=gate,
        review=review,
        max=4,
    )
    result, _ = await run_job(job)
    assert result.status.value == "pass"
    first, second, third = (r.prompt for r in engine.requests)
    assert first == "Fix it (turn 1)."
    assert "## Why the previous attempt did not pass\n- tests: tests failed" in second
    assert "E   assert 1 == 2" in second
    assert "## Review findings to address\n- reviewer: reviewer returned False" in third


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prompt": ""}, "needs a prompt"),
        ({"prompt": "x", "engine": 3}, "engine name or an engine object"),
        ({"prompt": "x", "permission": "root"}, "permission 'root' is unknown"),
        ({"prompt": "x", "tools": "Bash"}, "list of tool names"),
    ],
)
def test_bad_agent_jobs_are_construction_errors(kwargs, message):
    with pytest.raises(errors.ConstructionError, match=message):
        agent_job(**kwargs)


def test_bad_commands_are_construction_errors():
    with pytest.raises(errors.ConstructionError, match="never a shell string"):
        command_succeeds("pytest", "-q")
    with pytest.raises(errors.ConstructionError, match="min_tests"):
        command_succeeds("pytest", min_tests=-1)


async def test_fn_jobs_map_results(run_job):
    async def returns_none(ctx):
        return None

    outcomes = []
    for fn in (returns_none, lambda c: True, lambda c: False, lambda c: 42, lambda c: 1 / 0):
        result, _ = await run_job(sequence(fn_job(fn)))
        outcomes.append(
            result.outcome.data["nodes"]["fn"] if result.status.value != "pass" else "passed"
        )
    assert outcomes == ["passed", "passed", "failed", "failed", "failed"]
    result, _ = await run_job(fn_job(lambda c: 1 / 0, name="divide"))
    assert (
        result.status.value == "error"
        and result.reason == "divide raised ZeroDivisionError: division by zero"
    )
    result, _ = await run_job(fn_job(lambda c: 42, name="answer"))
    assert result.reason == "answer returned int; return an Outcome, a bool or None"
