"""dag(): needs, concurrency, optional, when, skipping, construction errors; sugar."""

from __future__ import annotations

import asyncio

import pytest

from loops import Outcome, dag, errors, fn_job, parallel, predicate, sequence
from loops.flow.schedule import NodeState, Schedule


def recorder(log: list[str], name: str, result=None, delay: float = 0.0):
    async def fn(ctx):
        log.append(f"start {name}")
        if delay:
            await asyncio.sleep(delay)
        log.append(f"end {name}")
        return result

    return fn_job(fn, name=name)


async def test_nodes_run_after_their_needs(run_job):
    log: list[str] = []
    job = dag(
        name="d",
        nodes={
            "c": {"job": recorder(log, "c"), "needs": ["a", "b"]},
            "a": recorder(log, "a"),
            "b": {"job": recorder(log, "b"), "needs": "a"},
        },
    )
    result, sink = await run_job(job)
    assert result.status.value == "pass"
    assert log == ["start a", "end a", "start b", "end b", "start c", "end c"]
    assert [e.path for e in sink.of_type("node.started")] == ["d/a", "d/b", "d/c"]


async def test_ready_nodes_run_concurrently_within_the_bound(run_job):
    running = {"now": 0, "peak": 0}

    async def work(ctx):
        running["now"] += 1
        running["peak"] = max(running["peak"], running["now"])
        await asyncio.sleep(0.01)
        running["now"] -= 1

    nodes = {f"n{i}": fn_job(work, name=f"n{i}") for i in range(6)}
    result, _ = await run_job(dag(name="d", nodes=nodes, concurrency=2))
    assert result.status.value == "pass" and running["peak"] == 2
    running["peak"] = 0
    await run_job(dag(name="d", nodes=nodes))
    assert running["peak"] == 6


async def test_a_failed_required_node_skips_its_dependents_and_fails_the_dag(run_job):
    log: list[str] = []
    job = dag(
        name="d",
        nodes={
            "build": recorder(log, "build", result=False),
            "test": {"job": recorder(log, "test"), "needs": ["build"]},
            "deploy": {"job": recorder(log, "deploy"), "needs": ["test"]},
            "docs": recorder(log, "docs"),
        },
    )
    result, sink = await run_job(job)
    assert result.status.value == "fail"
    assert result.reason == "node build fail: build returned False; skipped: test, deploy"
    assert "start test" not in log and "start docs" in log
    skipped = {e.data["node"]: e.data["reason"] for e in sink.of_type("node.skipped")}
    assert skipped == {
        "test": "needs build, which ended fail",
        "deploy": "needs test, which was skipped (build ended fail)",
    }
    assert result.outcome.data["nodes"]["deploy"] == "blocked"


async def test_dependents_of_a_failed_optional_node_still_run(run_job):
    log: list[str] = []
    job = dag(
        name="d",
        nodes={
            "lint": {
                "job": recorder(log, "lint", result=Outcome("error", "linter crashed")),
                "optional": True,
            },
            "ship": {"job": recorder(log, "ship"), "needs": ["lint"]},
        },
    )
    result, _ = await run_job(job)
    assert result.status.value == "pass" and "start ship" in log
    assert result.outcome.data["nodes"] == {"lint": "failed", "ship": "passed"}


async def test_an_unmet_when_skips_the_node_and_its_dependents_run(run_job):
    log: list[str] = []
    job = dag(
        name="d",
        nodes={
            "a": recorder(log, "a", result=Outcome("pass", "no changes")),
            "docs": {
                "job": recorder(log, "docs"),
                "needs": ["a"],
                "when": lambda ctx: "changed" in ctx.upstream["a"].summary,
            },
            "after": {"job": recorder(log, "after"), "needs": ["docs"]},
            "cond": {
                "job": recorder(log, "cond"),
                "needs": ["a"],
                "when": predicate(lambda ctx, last: last.summary == "no changes"),
            },
        },
    )
    result, sink = await run_job(job)
    assert result.status.value == "pass"
    assert "start docs" not in log and "start after" in log and "start cond" in log
    assert [e.data["slot"] for e in sink.of_type("verdict")] == ["when", "when"]


async def test_a_paused_node_pauses_the_dag_and_its_dependents_wait(run_job):
    log: list[str] = []
    job = dag(
        name="d",
        nodes={
            "a": recorder(log, "a", result=Outcome("paused", "budget of x exhausted")),
            "b": {"job": recorder(log, "b"), "needs": ["a"]},
            "c": recorder(log, "c"),
        },
    )
    result, _ = await run_job(job)
    assert result.status.value == "paused"
    assert "start b" not in log and "start c" in log
    assert "budget of x exhausted" in result.reason and "b" in result.reason


async def test_sequence_and_parallel_are_dags(run_job):
    log: list[str] = []
    seq = sequence(recorder(log, "x"), recorder(log, "x"), recorder(log, "y"))
    assert [c.segment for c in seq.children()] == ["x", "x-2", "y"]
    result, _ = await run_job(seq)
    assert result.status.value == "pass" and log == [
        "start x",
        "end x",
        "start x",
        "end x",
        "start y",
        "end y",
    ]
    log.clear()
    par = parallel(recorder(log, "p", delay=0.01), recorder(log, "q", delay=0.01), name="both")
    result, _ = await run_job(par)
    assert par.kind == "dag" and par.name == "both"
    assert log[:2] == ["start p", "start q"]


@pytest.mark.parametrize(
    ("nodes", "message"),
    [
        ({}, "at least one node"),
        (
            {"a": {"job": fn_job(lambda c: None), "needs": ["ghost"]}},
            "needs 'ghost', which is not a node",
        ),
        ({"a": {"job": fn_job(lambda c: None), "needs": ["a"]}}, "needs itself"),
        (
            {
                "a": {"job": fn_job(lambda c: None), "needs": ["b"]},
                "b": {"job": fn_job(lambda c: None), "needs": ["c"]},
                "c": {"job": fn_job(lambda c: None), "needs": ["a"]},
            },
            "has a cycle in its needs: a -> b -> c -> a",
        ),
        ({"a": {"job": fn_job(lambda c: None), "priority": 1}}, "unknown key 'priority'"),
        ({"a": {"job": fn_job(lambda c: None), "isolate": "yes"}}, "isolate="),
        ({"a": {"needs": []}}, "has no 'job'"),
        ({"a": {"job": fn_job(lambda c: None), "optional": "yes"}}, "optional="),
        ({"a/b": fn_job(lambda c: None)}, "without '/'"),
    ],
)
def test_bad_dags_are_construction_errors(nodes, message):
    with pytest.raises(errors.ConstructionError, match=message):
        dag(name="d", nodes=nodes)


def test_bad_concurrency_and_empty_sugar():
    with pytest.raises(errors.ConstructionError, match="concurrency=0"):
        dag(name="d", nodes={"a": fn_job(lambda c: None)}, concurrency=0)
    with pytest.raises(errors.ConstructionError, match="at least one job"):
        sequence()
    with pytest.raises(errors.ConstructionError, match="at least one job"):
        parallel()


def test_schedule_releases_and_blocks_incrementally():
    plan = Schedule({"a": (), "b": ("a",), "opt": (), "c": ("b", "opt")}, frozenset({"opt"}))
    assert plan.pop_ready() == "a" and plan.pop_ready() == "opt"
    plan.start("a")
    plan.start("opt")
    assert plan.settle("opt", NodeState.FAILED) == []
    assert plan.settle("a", NodeState.FAILED) == [("b", "a"), ("c", "b")]
    assert plan.finished() and plan.required_failures() == ["a", "b", "c"]
