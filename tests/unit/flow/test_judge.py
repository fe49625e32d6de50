"""The judge's answer decides fail-closed: last JSON object, geometric mean, threshold."""

from __future__ import annotations

import pytest

from loops import agent_check, errors, loop, predicate
from loops.engines.mock import MockEngine, MockTurn
from loops.flow.judge import geometric_mean, judge_verdict, last_json_object


def test_the_last_json_object_with_met_counts():
    text = (
        'First {"met": false, "reason": "a"} then '
        '```json\n{"met": true, "confidence": 0.9, "reason": "b"}\n```'
    )
    assert last_json_object(text) == {"met": True, "confidence": 0.9, "reason": "b"}
    nested = '{"met": true, "reason": "x", "dimensions": {"a": {"score": 1}}}'
    assert last_json_object(nested)["reason"] == "x"
    assert last_json_object('{"score": 1} no verdict {broken') is None


@pytest.mark.parametrize(
    ("text", "met", "confidence"),
    [
        ('{"met": true, "confidence": 0.9, "reason": "ok"}', True, 0.9),
        ('{"met": true, "reason": "no confidence"}', False, 0.0),
        ('{"met": true, "confidence": "high", "reason": "x"}', False, 0.0),
        ('{"met": true, "confidence": 1.7, "reason": "x"}', False, 0.0),
        ('{"met": "yes", "confidence": 1, "reason": "x"}', False, 1.0),
        ('{"met": false, "confidence": 0.99, "reason": "no"}', False, 0.99),
        ("I think it is done.", False, 0.0),
        ('{"met": true, "confidence": 0.5, "reason": "meh"}', False, 0.5),
    ],
)
def test_verdicts_without_dimensions(text: str, met: bool, confidence: float):
    verdict = judge_verdict(text, threshold=0.7)
    assert (verdict.met, verdict.confidence) == (met, confidence)
    assert verdict.reason


def test_dimensions_use_the_geometric_mean_and_a_missing_one_scores_zero():
    text = (
        '{"met": true, "reason": "r", "dimensions": {"correctness": {"score": 0.9}, "scope": 0.4}}'
    )
    verdict = judge_verdict(text, dimensions=["correctness", "scope"], threshold=0.7)
    assert verdict.confidence == pytest.approx(0.6)
    assert not verdict.met
    assert "scope=0.40" in verdict.reason
    assert verdict.dimensions == {"correctness": 0.9, "scope": 0.4}
    missing = judge_verdict(
        '{"met": true, "reason": "r", "dimensions": {"correctness": 1}}',
        dimensions=["correctness", "scope"],
    )
    assert missing.confidence == 0.0 and not missing.met
    assert judge_verdict(text, dimensions=["correctness", "scope"], threshold=0.5).met


def test_geometric_mean():
    assert geometric_mean([]) == 0.0
    assert geometric_mean([1.0, 0.0]) == 0.0
    assert geometric_mean([0.25, 1.0]) == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"question": " "}, "needs a question"),
        ({"question": "q", "dimensions": ["a", "a"]}, "distinct"),
        ({"question": "q", "threshold": 1.5}, "within 0..1"),
    ],
)
def test_bad_agent_checks_are_construction_errors(kwargs, message):
    with pytest.raises(errors.ConstructionError, match=message):
        agent_check(**kwargs)


async def test_the_judge_is_a_separate_read_only_turn_and_asked_once_per_check(run_job):
    engine = MockEngine(
        [
            MockTurn(text="not sure", match="Question"),
            MockTurn(text='{"met": true, "confidence": 0.95, "reason": "done"}', match="Question"),
        ]
    )
    judge = agent_check("Is it done?", engine=engine)
    job = loop(name="l", body=lambda ctx: True, until=judge, max=3)
    result, sink = await run_job(job)
    assert result.status.value == "pass"
    assert len(engine.requests) == 2  # an unparsable answer is "not met", not asked again
    assert engine.requests[0].permission.value == "read-only"
    assert "Is it done?" in engine.requests[0].prompt
    verdicts = [e.data for e in sink.of_type("verdict")]
    assert verdicts[0]["met"] is False and "no JSON verdict" in verdicts[0]["reason"]
    assert verdicts[1]["decided_by"] == "agent_check('Is it done?')"
    assert [e.data["role"] for e in sink.of_type("agent.started")] == ["judge", "judge"]


async def test_a_failed_judge_turn_is_not_met(run_job):
    engine = MockEngine([MockTurn(error="network")])
    job = loop(name="l", body=lambda ctx: True, until=agent_check("ok?", engine=engine), max=1)
    result, _ = await run_job(job)
    assert result.status.value == "fail"
    assert "judge's turn failed" in result.reason


async def test_a_judge_is_not_asked_when_the_check_before_it_fails(run_job):
    engine = MockEngine(default=MockTurn(text='{"met": true, "confidence": 1, "reason": "x"}'))
    job = loop(
        name="l",
        body=lambda ctx: True,
        until=[predicate(lambda c, _: False, name="tests"), agent_check("ok?", engine=engine)],
        max=2,
    )
    result, _ = await run_job(job)
    assert result.status.value == "fail"
    assert engine.requests == []


async def test_a_condition_can_be_checked_outside_a_loop(tmp_path):
    from loops import Outcome
    from loops.flow.events import MemorySink
    from loops.flow.runner import check_condition

    engine = MockEngine(
        default=MockTurn(text='ok {"met": true, "confidence": 0.8, "reason": "tests pass"}')
    )
    sink = MemorySink()
    verdict = await check_condition(
        agent_check("Is the task done?"),
        cwd=tmp_path,
        engine=engine,
        last=Outcome("pass", "I fixed it"),
        sinks=[sink],
        run_id="task-7",
    )
    assert (
        verdict.met and verdict.confidence == 0.8 and verdict.decided_by.startswith("agent_check")
    )
    assert "I fixed it" in engine.requests[0].prompt
    assert [e.type.value for e in sink.events][-1] == "verdict"
    assert {e.run_id for e in sink.events} == {"task-7"}
