"""Caller-side policy around engine turns: wait out rate limits instead of failing.

Engines never retry (they classify and return). A caller that wants the "rate limit
waits, no attempt burned" behaviour runs its turn through
:func:`run_turn_with_policy`: when a turn ends with
:class:`~loops.errors.EngineRateLimited`, it waits (the advertised ``retry_after_s``,
or an exponential back-off from ``default_wait_s``), bounded per wait and in total,
then runs the same request again. Each decision is reported to ``on_policy`` so the
caller can record it as an event; the tokens spent by rate-limited attempts are added
to the final result, so nothing is left out of the accounts.

Waiting can be turned off (``RateLimitPolicy(wait=False)``), and the sleep function
is a parameter so tests need no real waiting.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from typing import ClassVar

from loops import errors
from loops.engines import base


@dataclasses.dataclass(frozen=True, slots=True)
class RateLimitPolicy:
    """How long a caller is willing to wait out rate limits for one turn.

    Attributes:
        wait: wait and retry at all; ``False`` returns the rate-limited result at once.
        max_retries: retries after a rate limit, at most.
        default_wait_s: the first wait when the error advertises no ``retry_after_s``
            (doubled on each further retry).
        max_single_wait_s: cap on one wait; a longer advertised wait gives up at once.
        max_total_wait_s: cap on the sum of the waits for one turn.
    """

    wait: bool = True
    max_retries: int = 5
    default_wait_s: float = 30.0
    max_single_wait_s: float = 600.0
    max_total_wait_s: float = 1800.0

    def __post_init__(self) -> None:
        for name in ("default_wait_s", "max_single_wait_s", "max_total_wait_s"):
            if getattr(self, name) < 0:
                raise errors.ConfigError(f"RateLimitPolicy.{name} must be >= 0")
        if self.max_retries < 0:
            raise errors.ConfigError("RateLimitPolicy.max_retries must be >= 0")

    def wait_s(self, error: errors.EngineRateLimited, retry: int) -> float:
        """The wait before retry number ``retry`` (1-based) after ``error``."""
        if error.retry_after_s is not None and error.retry_after_s >= 0:
            return error.retry_after_s
        return float(self.default_wait_s * 2 ** (retry - 1))


@dataclasses.dataclass(frozen=True, slots=True)
class RateLimitWait:
    """The policy is waiting before retrying a rate-limited turn.

    Attributes:
        retry: which retry this wait precedes (1-based).
        wait_s: how long it waits.
        message: the rate-limit error's message.
    """

    retry: int
    wait_s: float
    message: str
    kind: ClassVar[str] = "engine.rate_limit_wait"


@dataclasses.dataclass(frozen=True, slots=True)
class RateLimitGiveUp:
    """The policy stopped retrying; the rate-limited result is returned.

    Attributes:
        retries: retries made.
        waited_s: total time waited.
        reason: why it gave up (disabled, a bound reached).
    """

    retries: int
    waited_s: float
    reason: str
    kind: ClassVar[str] = "engine.rate_limit_give_up"


PolicyEvent = RateLimitWait | RateLimitGiveUp
PolicyCallback = Callable[[PolicyEvent], None]
Sleep = Callable[[float], Awaitable[None]]


async def run_turn_with_policy(
    engine: base.Engine,
    request: base.TurnRequest,
    *,
    policy: RateLimitPolicy | None = None,
    on_event: base.EventCallback | None = None,
    on_policy: PolicyCallback | None = None,
    sleep: Sleep = asyncio.sleep,
) -> base.TurnResult:
    """Run one turn, waiting out rate limits as ``policy`` allows.

    Args:
        engine: the engine.
        request: the turn; retried unchanged after a wait.
        policy: the waiting bounds (default :class:`RateLimitPolicy`).
        on_event: called with every engine event of every attempt.
        on_policy: called with each :class:`RateLimitWait` / :class:`RateLimitGiveUp`.
        sleep: the wait function (a parameter for tests).

    Returns:
        The last attempt's result, its usage including the rate-limited attempts'.
    """
    policy = policy or RateLimitPolicy()
    spent = None
    retries = 0
    waited_s = 0.0
    while True:
        result = await base.run_turn(engine, request, on_event=on_event)
        spent = result.usage if spent is None else spent + result.usage
        error = result.error
        if not isinstance(error, errors.EngineRateLimited):
            break
        give_up = give_up_reason(policy, error, retries, waited_s)
        if give_up is not None:
            if on_policy is not None:
                on_policy(RateLimitGiveUp(retries=retries, waited_s=waited_s, reason=give_up))
            break
        retries += 1
        wait_s = policy.wait_s(error, retries)
        if on_policy is not None:
            on_policy(RateLimitWait(retry=retries, wait_s=wait_s, message=error.message))
        await sleep(wait_s)
        waited_s += wait_s
    return dataclasses.replace(result, usage=spent)


def give_up_reason(
    policy: RateLimitPolicy, error: errors.EngineRateLimited, retries: int, waited_s: float
) -> str | None:
    """Why ``policy`` stops waiting after ``retries`` retries and ``waited_s``; None: wait."""
    if not policy.wait:
        return "rate-limit waiting is turned off"
    if retries >= policy.max_retries:
        return f"{retries} retries made (max_retries={policy.max_retries})"
    wait_s = policy.wait_s(error, retries + 1)
    if wait_s > policy.max_single_wait_s:
        return f"the wait of {wait_s:g}s exceeds max_single_wait_s={policy.max_single_wait_s:g}"
    if waited_s + wait_s > policy.max_total_wait_s:
        return (
            f"waiting {wait_s:g}s more would exceed max_total_wait_s="
            f"{policy.max_total_wait_s:g} (waited {waited_s:g}s)"
        )
    return None
