"""Durable runs in the library: checkpoints, resume, restored outcomes and budgets."""

from __future__ import annotations

import asyncio
import dataclasses
import json

from loops import Outcome, agent_job, budget, dag, fn_job, loop, predicate, run
from loops.engines.mock import MockEngine, MockTurn
from loops.flow.checkpoint import (
    Checkpoints,
    FileCheckpointer,
    MemoryCheckpointer,
    outcome_from_record,
    outcome_record,
    verdict_from_record,
    verdict_record,
)
from loops.flow.events import MemorySink
from loops.flow.outcome import Finding, RevisionRequest, Verdict
from loops.usage import Usage


def counted(counts: dict[str, int], name: str, *, block: asyncio.Event | None = None):
    async def fn(ctx):
        counts[name] = counts.get(name, 0) + 1
        if block is not None:
            await block.wait()
        return Outcome("pass", f"{name} done", {"n": counts[name]}, Usage(10, 5, cost_usd=0.01))

    return fn_job(fn, name=name)


def six_nodes(counts, block=None):
    return dag(
        name="ship",
        nodes={
            "a": counted(counts, "a"),
            "b": {"job": counted(counts, "b"), "needs": ["a"]},
            "c": {"job": counted(counts, "c"), "needs": ["a"]},
            "d": {"job": counted(counts, "d", block=block), "needs": ["b", "c"]},
            "e": {"job": counted(counts, "e"), "needs": ["d"]},
            "f": {"job": counted(counts, "f"), "needs": ["e"]},
        },
    )


async def test_a_dag_interrupted_mid_run_resumes_without_rerunning_finished_nodes(tmp_path):
    counts: dict[str, int] = {}
    store = FileCheckpointer(tmp_path / "cp.json")
    block = asyncio.Event()
    first = asyncio.ensure_future(run(six_nodes(counts, block), cwd=tmp_path, checkpointer=store))
    while counts.get("d") != 1:
        await asyncio.sleep(0.001)
    first.cancel()  # the worker died while d was running
    await asyncio.gather(first, return_exceptions=True)
    saved = json.loads((tmp_path / "cp.json").read_text())
    assert sorted(saved["jobs"]) == ["ship/a", "ship/b", "ship/c"]
    run_id = saved["run"]["run_id"]

    block.set()
    sink = MemorySink()
    result = await run(six_nodes(counts), cwd=tmp_path, checkpointer=store, sinks=[sink])
    assert result.status.value == "pass"
    assert result.run_id == run_id  # the run keeps its id across attempts
    assert counts == {"a": 1, "b": 1, "c": 1, "d": 2, "e": 1, "f": 1}
    resumed = sink.of_type("run.resumed")
    assert len(resumed) == 1
    assert resumed[0].data["attempt"] == 2
    assert resumed[0].data["restored"] == ["ship/a", "ship/b", "ship/c"]
    restored = [e.path for e in sink.of_type("job.restored")]
    assert restored == ["ship/a", "ship/b", "ship/c"]
    # restored usage counts in the run's total: six nodes, each 15 tokens
    assert result.outcome.usage.total_tokens == 90


async def test_a_fresh_run_emits_no_resumed_event(tmp_path):
    sink = MemorySink()
    result = await run(six_nodes({}), cwd=tmp_path, checkpointer=MemoryCheckpointer(), sinks=[sink])
    assert result.status.value == "pass"
    assert sink.of_type("run.resumed") == []
    assert sink.of_type("job.restored") == []


def stepping_loop(calls: list[int], limit: int | None):
    def body(ctx):
        calls.append(ctx.iteration)
        return Outcome("pass", f"turn {ctx.iteration}", usage=Usage(100, 0))

    return loop(
        name="work",
        body=body,
        until=predicate(lambda ctx, last: ctx.iteration >= 4, name="four turns"),
        max=6,
        budget=budget(iterations=limit) if limit else None,
    )


async def test_a_budget_paused_loop_resumes_with_a_new_budget(tmp_path):
    calls: list[int] = []
    store = MemoryCheckpointer()
    paused = await run(stepping_loop(calls, 2), cwd=tmp_path, checkpointer=store)
    assert paused.status.value == "paused"
    assert calls == [1, 2]

    sink = MemorySink()
    resumed = await run(
        stepping_loop(calls, 2),
        cwd=tmp_path,
        checkpointer=store,
        budget=budget(iterations=5),
        sinks=[sink],
    )
    assert resumed.status.value == "pass"
    assert calls == [1, 2, 3, 4]  # iterations 1 and 2 were not run again
    assert [e.data["iteration"] for e in sink.of_type("iteration.started")] == [3, 4]
    assert sink.of_type("run.resumed")[0].data["loops"] == {"work": 2}
    # the budget continued from what was spent: 2 earlier iterations + 2 now
    spent = [e.data["spent"]["iterations"] for e in sink.of_type("budget")]
    assert spent[-1] == 4
    assert resumed.outcome.usage.total_tokens == 400


async def test_resuming_with_the_old_budget_pauses_again_at_once(tmp_path):
    calls: list[int] = []
    store = MemoryCheckpointer()
    await run(stepping_loop(calls, 2), cwd=tmp_path, checkpointer=store)
    again = await run(stepping_loop(calls, 2), cwd=tmp_path, checkpointer=store)
    assert again.status.value == "paused"
    assert calls == [1, 2]


async def test_retry_failed_runs_failed_nodes_again(tmp_path):
    attempts: list[int] = []

    def flaky(ctx):
        attempts.append(1)
        return len(attempts) > 1

    job = dag(name="d", nodes={"x": fn_job(flaky, name="x")})
    store = MemoryCheckpointer()
    assert (await run(job, cwd=tmp_path, checkpointer=store)).status.value == "fail"
    assert (await run(job, cwd=tmp_path, checkpointer=store)).status.value == "fail"
    assert len(attempts) == 1  # a failed node is final for a plain retry
    result = await run(job, cwd=tmp_path, checkpointer=store, retry_failed=True)
    assert result.status.value == "pass"
    assert len(attempts) == 2


async def test_kickback_forgets_the_records_of_the_nodes_it_reruns(tmp_path):
    runs: dict[str, int] = {}

    def build(ctx):
        runs["build"] = runs.get("build", 0) + 1
        return True

    def review(ctx):
        runs["review"] = runs.get("review", 0) + 1
        if runs["review"] == 1:
            return Outcome("fail", "redo", revision=RevisionRequest("build", (), "redo"))
        return True

    job = dag(
        name="d",
        max_kickbacks=1,
        nodes={
            "build": fn_job(build, name="build"),
            "review": {"job": fn_job(review, name="review"), "needs": ["build"]},
        },
    )
    store = MemoryCheckpointer()
    result = await run(job, cwd=tmp_path, checkpointer=store)
    assert result.status.value == "pass"
    assert runs == {"build": 2, "review": 2}
    checkpoints = await Checkpoints.open(store)
    outcome, _ = checkpoints.finished("d/build") or (None, 0)
    assert outcome is not None and outcome.ok


async def test_kickbacks_used_before_a_crash_still_count_after_resume(tmp_path):
    runs: dict[str, int] = {}
    crash = asyncio.Event()

    def build(ctx):
        runs["build"] = runs.get("build", 0) + 1
        return True

    async def review(ctx):
        runs["review"] = runs.get("review", 0) + 1
        if runs["review"] == 2:
            crash.set()
            await asyncio.Event().wait()  # the worker dies while the second review runs
        return Outcome("fail", "redo", revision=RevisionRequest("build", (), "redo"))

    job = dag(
        name="d",
        max_kickbacks=1,
        nodes={
            "build": fn_job(build, name="build"),
            "review": {"job": fn_job(review, name="review"), "needs": ["build"]},
        },
    )
    store = FileCheckpointer(tmp_path / "cp.json")
    first = asyncio.ensure_future(run(job, cwd=tmp_path, checkpointer=store))
    await crash.wait()
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    assert runs == {"build": 2, "review": 2}

    result = await run(job, cwd=tmp_path, checkpointer=store)
    assert result.status.value == "fail"
    assert "kickback refused: dag 'd' allows max_kickbacks=1 and used 1" in result.reason
    assert runs == {"build": 2, "review": 3}  # the resumed review's kickback was refused


def test_outcomes_and_verdicts_survive_json():
    outcome = Outcome(
        "fail",
        "nope",
        {"n": 1, "obj": object()},
        Usage(1, 2, 3, 0.5),
        RevisionRequest("a", (Finding("r", "fix it", "block"),), "why"),
    )
    back = outcome_from_record(json.loads(json.dumps(outcome_record(outcome))))
    assert back.to_dict() == outcome.to_dict()
    assert back.data == {"n": 1}
    verdict = Verdict(
        False, "bad", 0.4, "judge", "agent_check", {"x": 0.4}, (Verdict(True, "ok"),), evidence="e"
    )
    again = verdict_from_record(json.loads(json.dumps(verdict_record(verdict))))
    assert again is not None
    assert again.to_dict() == verdict.to_dict()
    assert again.evidence == "e"


async def test_a_loop_budget_of_seconds_counts_the_earlier_attempts(tmp_path):
    now = [0.0]

    def body(ctx):
        now[0] += 10.0  # each turn takes ten seconds
        return True

    def job(seconds):
        return loop(
            name="work",
            body=body,
            until=predicate(lambda ctx, last: False, name="never"),
            max=10,
            budget=budget(seconds=seconds),
        )

    store = MemoryCheckpointer()
    first = await run(job(25), cwd=tmp_path, checkpointer=store, clock=lambda: now[0])
    assert first.status.value == "paused"  # after 3 turns: 30 s of 25
    sink = MemorySink()
    again = await run(job(25), cwd=tmp_path, checkpointer=store, clock=lambda: now[0], sinks=[sink])
    assert again.status.value == "paused"
    assert sink.of_type("iteration.started") == []  # the 30 s already spent still count
    more = await run(job(45), cwd=tmp_path, checkpointer=store, clock=lambda: now[0], sinks=[sink])
    assert more.status.value == "paused"
    # 30 s spent in iterations 1-3; two more turns fit in 45 s
    assert [e.data["iteration"] for e in sink.of_type("iteration.started")] == [4, 5]


async def test_a_long_loop_keeps_a_small_checkpoint(tmp_path):
    store = MemoryCheckpointer()
    job = loop(
        name="l",
        body=fn_job(lambda ctx: True, name="b"),
        until=predicate(lambda ctx, last: ctx.iteration >= 50, name="fifty"),
        max=50,
    )
    assert (await run(job, cwd=tmp_path, checkpointer=store)).status.value == "pass"
    assert store.document is not None
    # the loop state stands for iterations 1-49; only the last body and the loop remain
    assert sorted(store.document["jobs"]) == ["l", "l/b@50"]
    assert store.document["loops"]["l"]["iteration"] == 49


async def test_concurrent_saves_share_one_write_and_each_waits_for_its_record():
    class Slow(MemoryCheckpointer):
        async def save(self, document):
            await asyncio.sleep(0.01)
            await super().save(document)

    store = Slow()
    checkpoints = await Checkpoints.open(store)
    outcomes = [Outcome("pass", f"n{i}") for i in range(10)]
    await asyncio.gather(*(checkpoints.finish(f"d/n{i}", o) for i, o in enumerate(outcomes)))
    assert store.document is not None
    assert sorted(store.document["jobs"]) == sorted(f"d/n{i}" for i in range(10))
    assert store.saves < 10


class _NoResume(MockEngine):
    capabilities = dataclasses.replace(MockEngine.capabilities, resume=False)


async def _interrupt_a_turn(engine: MockEngine, store: FileCheckpointer, tmp_path) -> None:
    """Run ``build`` (agent) -> ``ship`` until the agent turn is running, then crash."""
    first = asyncio.ensure_future(run(_agent_dag(engine), cwd=tmp_path, checkpointer=store))
    while not engine.requests:
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.01)
    first.cancel()  # the worker died in the middle of the agent's turn
    await asyncio.gather(first, return_exceptions=True)


def _agent_dag(engine: MockEngine):
    return dag(
        name="d",
        nodes={
            "build": agent_job("build it", name="build", engine=engine),
            "ship": {"job": fn_job(lambda ctx: True, name="ship"), "needs": ["build"]},
        },
    )


async def test_an_interrupted_turn_resumes_its_session(tmp_path):
    store = FileCheckpointer(tmp_path / "cp.json")
    slow = MockEngine([MockTurn(text="first try", delay_s=60)])
    await _interrupt_a_turn(slow, store, tmp_path)
    saved = json.loads((tmp_path / "cp.json").read_text())
    assert saved["extra"] == {"agent.session:d/build:worker": {"session_id": "mock-session-1"}}

    fast = MockEngine([MockTurn(text="done")])
    sink = MemorySink()
    result = await run(_agent_dag(fast), cwd=tmp_path, checkpointer=store, sinks=[sink])
    assert result.status.value == "pass"
    (request,) = fast.requests
    assert request.resume_session_id == "mock-session-1"  # the conversation goes on
    (event,) = sink.of_type("agent.turn_resumed")
    assert (event.path, event.data["session_id"], event.data["resumed"]) == (
        "d/build",
        "mock-session-1",
        True,
    )
    assert "agent.session:d/build:worker" not in json.loads((tmp_path / "cp.json").read_text()).get(
        "extra", {}
    )  # the turn finished: nothing left to resume


async def test_an_engine_without_resume_starts_the_interrupted_turn_fresh(tmp_path):
    store = FileCheckpointer(tmp_path / "cp.json")
    await _interrupt_a_turn(_NoResume([MockTurn(text="x", delay_s=60)]), store, tmp_path)
    fresh = _NoResume([MockTurn(text="done")])
    sink = MemorySink()
    result = await run(_agent_dag(fresh), cwd=tmp_path, checkpointer=store, sinks=[sink])
    assert result.status.value == "pass"
    assert fresh.requests[0].resume_session_id is None
    (event,) = sink.of_type("agent.turn_resumed")
    assert event.data["resumed"] is False
    assert event.data["reason"] == "engine 'mock' cannot resume a session"
