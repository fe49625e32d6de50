"""loop(): the gate decides; stop_on, max, pause, review and start as DESIGN 6/13 say."""

from __future__ import annotations

import pytest

from loops import Outcome, errors, fn_job, loop, predicate


def counter():
    state = {"n": 0}

    def body(ctx):
        state["n"] += 1
        return Outcome("pass", f"turn {state['n']}")

    return state, body


def at_least(state, n):
    return predicate(lambda ctx, last: state["n"] >= n, name=f"n>={n}")


async def test_passes_when_until_is_met_and_says_why(run_job):
    state, body = counter()
    result, sink = await run_job(loop(name="l", body=body, until=at_least(state, 3), max=5))
    assert result.status.value == "pass" and result.exit_code == 0
    assert result.reason == "until met at iteration 3: n>=3: n>=3 returned True"
    assert [e.data["iteration"] for e in sink.of_type("iteration.started")] == [1, 2, 3]
    assert result.outcome.data["iterations"] == 3


async def test_reaching_max_fails_with_the_last_verdict(run_job):
    state, body = counter()
    result, _ = await run_job(loop(name="l", body=body, until=at_least(state, 10), max=2))
    assert result.status.value == "fail" and result.exit_code == 1
    assert (
        result.reason == "max 2 iterations reached; last gate verdict: n>=10: n>=10 returned False"
    )


@pytest.mark.parametrize("body_result", [False, RuntimeError("boom")])
async def test_a_failed_or_erroring_body_still_has_the_gate_evaluated(run_job, body_result):
    def body(ctx):
        if isinstance(body_result, Exception):
            raise body_result
        return body_result

    result, sink = await run_job(loop(name="l", body=body, until=lambda ctx, last: True, max=3))
    assert result.status.value == "pass"
    finished = sink.of_type("iteration.finished")[0].data
    assert finished["status"] in ("fail", "error")


async def test_the_gate_sees_the_body_outcome_and_the_next_turn_sees_the_last(run_job):
    seen = []

    def body(ctx):
        seen.append((ctx.iteration, ctx.last.summary if ctx.last else None))
        return Outcome("pass", f"out {ctx.iteration}")

    until = predicate(lambda ctx, last: last.summary == "out 2")
    result, _ = await run_job(loop(name="l", body=body, until=until, max=5))
    assert result.status.value == "pass"
    assert seen == [(1, None), (2, "out 1")]


async def test_stop_on_fails_with_the_stop_condition_as_reason(run_job):
    state, body = counter()
    stop = predicate(lambda ctx, last: state["n"] == 2, name="hopeless")
    result, _ = await run_job(
        loop(name="l", body=body, until=at_least(state, 5), stop_on=stop, max=5)
    )
    assert result.status.value == "fail"
    assert result.reason == "stopped by hopeless: hopeless returned True"
    assert state["n"] == 2


async def test_a_paused_body_pauses_the_loop(run_job):
    result, _ = await run_job(
        loop(
            name="l",
            body=lambda ctx: Outcome("paused", "waiting for approval"),
            until=lambda ctx, last: True,
            max=3,
        )
    )
    assert result.status.value == "paused" and result.exit_code == 3
    assert result.reason == "waiting for approval"


async def test_a_failing_review_goes_into_last_review_and_the_loop_goes_on(run_job):
    reviews = []

    def body(ctx):
        reviews.append(ctx.last_review.reason if ctx.last_review else None)

    review = predicate(lambda ctx, last: ctx.iteration >= 2, name="reviewer")
    result, sink = await run_job(
        loop(name="l", body=body, until=lambda c, _: True, review=review, max=4)
    )
    assert result.status.value == "pass"
    assert reviews == [None, "reviewer returned False"]
    assert [e.data["met"] for e in sink.of_type("review")] == [False, True]


async def test_review_runs_only_after_until_is_met(run_job):
    asked = []
    state, body = counter()
    review = predicate(lambda ctx, last: asked.append(ctx.iteration) or True)
    await run_job(loop(name="l", body=body, until=at_least(state, 2), review=review, max=3))
    assert asked == [2]


async def test_start_unmet_skips_the_loop(run_job):
    ran = []
    result, _ = await run_job(
        loop(
            name="l",
            body=lambda ctx: ran.append(1),
            until=lambda c, _: True,
            start=predicate(lambda c, _: False, name="work_waiting"),
        )
    )
    assert result.status.value == "skipped" and ran == []
    assert result.reason == "start not met: work_waiting returned False"


async def test_events_carry_paths_and_order(run_job):
    result, sink = await run_job(
        loop(name="outer", body=fn_job(lambda c: None, name="step"), until=lambda c, _: True)
    )
    types = [(e.type.value, e.path) for e in sink.events]
    assert types[0] == ("run.started", "outer")
    assert ("job.started", "outer/step") in types
    assert types[-1] == ("run.finished", "outer")
    assert all(e.run_id == result.run_id for e in sink.events)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"body": lambda c: None}, "needs until="),
        ({"body": lambda c: None, "until": lambda c, _: True, "max": 0}, "max=0"),
        ({"body": 3, "until": lambda c, _: True}, "must be a job"),
        ({"body": lambda c: None, "until": lambda c, _: True, "budget": {"usd": 1}}, "budget="),
        ({"name": "a/b", "body": lambda c: None, "until": lambda c, _: True}, "without '/'"),
    ],
)
def test_bad_loops_are_construction_errors(kwargs, message):
    kwargs.setdefault("until", None)
    with pytest.raises(errors.ConstructionError, match=message):
        loop(**kwargs)


async def test_a_condition_that_cannot_prepare_ends_the_run_as_error(run_job):
    from loops.flow.conditions import Condition

    class Broken(Condition):
        name = "broken"

        async def prepare(self, ctx):
            raise PermissionError("tests/ is unreadable")

        async def check(self, ctx, last):
            raise AssertionError("never checked")

    ran = []
    result, _ = await run_job(loop(name="l", body=lambda c: ran.append(1), until=Broken()))
    assert result.status.value == "error" and ran == []
    assert result.reason == "broken could not prepare: PermissionError: tests/ is unreadable"
