"""Predicates and combinators: who decided, short-circuits, k-of-n with early stop."""

from __future__ import annotations

import asyncio

import pytest

from loops import Verdict, all_of, any_of, errors, gate_job, predicate, quorum
from loops.flow.conditions import as_condition, quorum_decided


def _count(name: str, value: bool, calls: list[str]):
    def fn(ctx, last):
        calls.append(name)
        return value

    return predicate(fn, name=name)


async def _check(run_job, condition):
    result, sink = await run_job(gate_job("g", condition))
    return result, sink.of_type("verdict")[0].data


async def test_predicates_sync_async_and_raising(run_job):
    async def ready(ctx, last):
        return True

    result, verdict = await _check(run_job, predicate(ready))
    assert result.status.value == "pass" and verdict["decided_by"] == "ready"
    assert verdict["kind"] == "predicate"

    def broken(ctx, last):
        raise RuntimeError("disk on fire")

    result, verdict = await _check(run_job, predicate(broken))
    assert result.status.value == "fail"
    assert "raised RuntimeError: disk on fire" in verdict["reason"]
    result, verdict = await _check(run_job, predicate(lambda c, _: "yes"))
    assert not verdict["met"]  # only True is met

    result, verdict = await _check(run_job, predicate(lambda c, _: Verdict(True, "custom")))
    assert verdict["reason"] == "custom"


async def test_all_of_stops_at_the_first_unmet_and_names_it(run_job):
    calls: list[str] = []
    condition = all_of(
        _count("a", True, calls), _count("b", False, calls), _count("c", True, calls)
    )
    _, verdict = await _check(run_job, condition)
    assert calls == ["a", "b"]
    assert not verdict["met"] and verdict["reason"].startswith("b: ")
    assert [d["decided_by"] for d in verdict["details"]] == ["a", "b"]


async def test_any_of_stops_at_the_first_met(run_job):
    calls: list[str] = []
    _, verdict = await _check(
        run_job,
        any_of(_count("a", False, calls), _count("b", True, calls), _count("c", True, calls)),
    )
    assert calls == ["a", "b"] and verdict["met"]
    _, verdict = await _check(run_job, any_of(_count("x", False, []), _count("y", False, [])))
    assert not verdict["met"] and verdict["reason"].startswith("none met")


async def test_quorum_k_of_n_stops_early_and_cancels_the_rest(run_job):
    cancelled = []

    async def slow(ctx, last):
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append("slow")
            raise
        return True

    condition = quorum(
        2,
        predicate(lambda c, _: True, name="a"),
        predicate(lambda c, _: True, name="b"),
        predicate(slow, name="slow"),
    )
    result, verdict = await _check(run_job, condition)
    assert result.status.value == "pass"
    assert verdict["reason"].startswith("2 of 3 met (need 2)")
    assert cancelled == ["slow"]
    _, failing = await _check(
        run_job,
        quorum(
            2,
            predicate(lambda c, _: False, name="a"),
            predicate(lambda c, _: False, name="b"),
            predicate(slow, name="slow"),
        ),
    )
    assert not failing["met"]


def test_quorum_decision_table():
    assert quorum_decided(2, 3, 2, 0) is True
    assert quorum_decided(2, 3, 1, 1) is None
    assert quorum_decided(2, 3, 0, 2) is False
    assert quorum_decided(3, 3, 2, 0) is None


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: quorum(1), "at least one condition"),
        (lambda: quorum(3, predicate(lambda c, _: True)), "from 1 to 1"),
        (lambda: quorum(0, predicate(lambda c, _: True)), "from 1 to 1"),
        (lambda: all_of(), "at least one"),
        (lambda: any_of(), "at least one"),
        (lambda: as_condition([], slot="until"), "empty list"),
        (lambda: as_condition(42, slot="until"), "until= takes a condition"),
        (lambda: predicate("not callable"), "takes a function"),
    ],
)
def test_bad_conditions_are_construction_errors(build, message):
    with pytest.raises(errors.ConstructionError, match=message):
        build()
