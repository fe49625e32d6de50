"""The rate-limit policy: wait, retry without burning attempts, bounded, reported."""

from __future__ import annotations

from pathlib import Path

import pytest

from loops import errors
from loops.engines import base
from loops.engines.mock import MockEngine, MockTurn
from loops.engines.policy import (
    RateLimitGiveUp,
    RateLimitPolicy,
    RateLimitWait,
    run_turn_with_policy,
)
from loops.usage import Usage


class Clock:
    """A fake sleep that records the waits."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)


def _limited(retry_after_s: float | None = None, tokens: int = 10) -> MockTurn:
    return MockTurn(
        error="rate_limit", retry_after_s=retry_after_s, usage=Usage(tokens, 1, 0, 0.01)
    )


async def _run(engine: MockEngine, policy: RateLimitPolicy, tmp_path: Path):
    clock = Clock()
    decisions: list[object] = []
    result = await run_turn_with_policy(
        engine,
        base.TurnRequest(prompt="p", cwd=tmp_path),
        policy=policy,
        on_policy=decisions.append,
        sleep=clock.sleep,
    )
    return result, clock.waits, decisions


async def test_rate_limit_waits_the_advertised_time_then_succeeds(tmp_path: Path):
    engine = MockEngine([_limited(7), MockTurn(text="done", usage=Usage(5, 2, 0, 0.02))])
    result, waits, decisions = await _run(engine, RateLimitPolicy(), tmp_path)
    assert result.ok and result.final_text == "done"
    assert waits == [7]
    assert decisions == [
        RateLimitWait(retry=1, wait_s=7, message="mock engine: scripted rate limit")
    ]
    # The rate-limited attempt's tokens stay in the accounts.
    assert result.usage == Usage(15, 3, 0, pytest.approx(0.03))
    assert len(engine.requests) == 2


async def test_without_retry_after_the_wait_doubles(tmp_path: Path):
    engine = MockEngine([_limited(), _limited(), _limited(), MockTurn(text="done")])
    result, waits, _ = await _run(engine, RateLimitPolicy(default_wait_s=2), tmp_path)
    assert result.ok
    assert waits == [2, 4, 8]


async def test_waiting_can_be_turned_off(tmp_path: Path):
    engine = MockEngine([_limited(1), MockTurn(text="never reached")])
    result, waits, decisions = await _run(engine, RateLimitPolicy(wait=False), tmp_path)
    assert isinstance(result.error, errors.EngineRateLimited)
    assert waits == []
    assert decisions == [
        RateLimitGiveUp(retries=0, waited_s=0, reason="rate-limit waiting is turned off")
    ]


async def test_gives_up_after_max_retries(tmp_path: Path):
    engine = MockEngine([_limited(1)] * 5)
    result, waits, decisions = await _run(engine, RateLimitPolicy(max_retries=2), tmp_path)
    assert isinstance(result.error, errors.EngineRateLimited)
    assert waits == [1, 1]
    assert isinstance(decisions[-1], RateLimitGiveUp) and "max_retries=2" in decisions[-1].reason


async def test_gives_up_on_an_advertised_wait_longer_than_allowed(tmp_path: Path):
    engine = MockEngine([_limited(7200)])
    result, waits, decisions = await _run(engine, RateLimitPolicy(max_single_wait_s=600), tmp_path)
    assert isinstance(result.error, errors.EngineRateLimited)
    assert waits == []
    assert "max_single_wait_s" in decisions[-1].reason  # type: ignore[attr-defined]


async def test_total_wait_is_bounded(tmp_path: Path):
    engine = MockEngine([_limited(40)] * 5)
    _, waits, decisions = await _run(engine, RateLimitPolicy(max_total_wait_s=100), tmp_path)
    assert waits == [40, 40]
    assert "max_total_wait_s" in decisions[-1].reason  # type: ignore[attr-defined]


async def test_other_errors_are_returned_at_once(tmp_path: Path):
    engine = MockEngine([MockTurn(error="auth"), MockTurn(text="unused")])
    result, waits, decisions = await _run(engine, RateLimitPolicy(), tmp_path)
    assert isinstance(result.error, errors.EngineAuthError)
    assert waits == [] and decisions == []


def test_policy_rejects_negative_bounds():
    with pytest.raises(errors.ConfigError, match="max_retries"):
        RateLimitPolicy(max_retries=-1)
    with pytest.raises(errors.ConfigError, match="default_wait_s"):
        RateLimitPolicy(default_wait_s=-1)
