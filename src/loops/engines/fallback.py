"""A composing engine: when one engine is rate- or usage-limited, the turn moves on.

``FallbackEngine(primary, [codex, gemini], policy)`` runs each turn on the first
engine; when that turn ends with :class:`~loops.errors.EngineRateLimited` it either
moves the same request to the next engine at once (``on_limit="fallback"``, the
default) or first waits the limit out on the same engine as
:class:`~loops.engines.policy.RateLimitPolicy` allows and moves on only when the
policy gives up (``on_limit="wait"``). Every decision is a
:class:`~loops.engines.base.Notice` in the stream (``engine.fallback``,
``engine.rate_limit_wait``), so the worker's timeline and a run's events record it.
When every engine is limited, the last rate-limited result is returned, and the
caller's own rate-limit handling decides what to do next.

Sessions belong to the engine that made them: a turn that resumes a session starts
on the engine that owns it (so a conversation that moved to a fallback stays there),
and a turn moved to another engine starts a fresh session there (its prompt is the
same; the history of the other tool cannot be carried over). Each engine runs with
its own model (``models``), since a model name means nothing to another tool.

Money: a turn's usage includes every attempt's tokens and cost (each engine's
reported or computed price), and ``max_usd`` caps the USD spent through this engine
across all engines and turns: once reached, no turn starts
(:class:`~loops.errors.EngineBudgetExceeded`). A cost an engine cannot price counts
as zero and is flagged in a notice.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Literal

from loops import errors
from loops.engines import base, policy
from loops.usage import Usage

OnLimit = Literal["fallback", "wait"]


@dataclasses.dataclass(frozen=True, slots=True)
class FallbackPolicy:
    """How a :class:`FallbackEngine` reacts to limits and what it may spend.

    Attributes:
        on_limit: ``"fallback"``: move to the next engine at once; ``"wait"``: wait
            on the same engine (``rate_limits``) and move on when that gives up.
        rate_limits: the waiting bounds used with ``on_limit="wait"``.
        max_usd: USD cap over every turn and engine (``None``: no cap).
        models: engine name -> the model to use on it (the request's model is kept
            on the first engine; other engines use their own default when absent).
    """

    on_limit: OnLimit = "fallback"
    rate_limits: policy.RateLimitPolicy = dataclasses.field(default_factory=policy.RateLimitPolicy)
    max_usd: float | None = None
    models: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.on_limit not in ("fallback", "wait"):
            raise errors.ConfigError(
                f"on_limit={self.on_limit!r} is invalid; use 'fallback' or 'wait'"
            )
        if self.max_usd is not None and self.max_usd < 0:
            raise errors.ConfigError(f"max_usd must be >= 0, got {self.max_usd}")


class FallbackEngine:
    """Runs a turn on the first engine not limited (see the module docstring).

    Args:
        primary: the engine tried first.
        fallbacks: the engines tried next, in order.
        fallback_policy: limits, waiting and spending.
        sleep: the wait function (a parameter for tests).
    """

    def __init__(
        self,
        primary: base.Engine,
        fallbacks: Sequence[base.Engine] = (),
        fallback_policy: FallbackPolicy | None = None,
        *,
        sleep: policy.Sleep = asyncio.sleep,
    ) -> None:
        self.engines: tuple[base.Engine, ...] = (primary, *fallbacks)
        names = [e.name for e in self.engines]
        if len(set(names)) != len(names):
            raise errors.ConfigError(f"fallback engines must be distinct, got {names}")
        self.policy = fallback_policy or FallbackPolicy()
        self.sleep = sleep
        self.name = primary.name if not fallbacks else "+".join(names)
        caps = [e.capabilities for e in self.engines]
        self.capabilities = base.Capabilities(
            resume=any(c.resume for c in caps),
            streaming=all(c.streaming for c in caps),
            cost_reported=all(c.cost_reported for c in caps),
            cost_computed=all(c.cost_reported or c.cost_computed for c in caps)
            and not all(c.cost_reported for c in caps),
            subagents=any(c.subagents for c in caps),
            permissions=tuple(p for p in base.Permission if all(p in c.permissions for c in caps)),
        )
        #: USD spent through this engine so far (unknown costs count as zero)
        self.spent_usd = 0.0
        #: session id -> the name of the engine that made it
        self.session_owner: dict[str, str] = {}

    @classmethod
    def from_options(
        cls,
        *,
        engines: Sequence[str] | str,
        options: Mapping[str, Mapping[str, Any]] | None = None,
        on_limit: OnLimit = "fallback",
        max_usd: float | None = None,
        models: Mapping[str, str] | None = None,
    ) -> FallbackEngine:
        """Build from names: ``engines=["claude", "codex"]`` (or ``"claude,codex"``).

        Args:
            engines: the engine names, primary first.
            options: engine name -> its options.
            on_limit: see :class:`FallbackPolicy`.
            max_usd: see :class:`FallbackPolicy`.
            models: see :class:`FallbackPolicy`.

        Raises:
            ConfigError: no engine, an unknown one, or ``fallback`` itself.
        """
        from loops.engines import create_engine

        names = [n.strip() for n in engines.split(",")] if isinstance(engines, str) else engines
        names = [n for n in names if n]
        if not names:
            raise errors.ConfigError("the fallback engine needs engines=[primary, fallback...]")
        if "fallback" in names:
            raise errors.ConfigError("the fallback engine cannot contain itself")
        built = [create_engine(n, **dict((options or {}).get(n, {}))) for n in names]
        return cls(
            built[0],
            built[1:],
            FallbackPolicy(on_limit=on_limit, max_usd=max_usd, models=dict(models or {})),
        )

    def _start_index(self, request: base.TurnRequest) -> int:
        owner = self.session_owner.get(request.resume_session_id or "")
        for index, engine in enumerate(self.engines):
            if engine.name == owner:
                return index
        return 0

    def _request_for(self, index: int, request: base.TurnRequest, first: int) -> base.TurnRequest:
        engine = self.engines[index]
        session = request.resume_session_id
        owner = self.session_owner.get(session or "")
        if session is not None and owner is not None and owner != engine.name:
            session = None  # another tool's session: start fresh here
        model = self.policy.models.get(engine.name)
        if index == first and request.model is not None:
            model = request.model
        return dataclasses.replace(
            request,
            resume_session_id=session,
            model=model,
            session_usage=request.session_usage if session is not None else None,
        )

    def _budget_left(self) -> float | None:
        if self.policy.max_usd is None:
            return None
        return self.policy.max_usd - self.spent_usd

    def _charge(self, usage: Usage) -> None:
        self.spent_usd += usage.cost_usd or 0.0

    async def run_turn(self, request: base.TurnRequest) -> AsyncIterator[base.TurnEvent]:
        """Run the turn on the first engine that is not limited."""
        started = time.monotonic()
        spent = Usage()
        result: base.TurnResult | None = None
        first = self._start_index(request)
        for index in range(first, len(self.engines)):
            engine = self.engines[index]
            left = self._budget_left()
            if left is not None and left <= 0:
                message = (
                    f"the USD budget of {self.policy.max_usd:g} is spent "
                    f"({self.spent_usd:.4f} over {', '.join(e.name for e in self.engines)})"
                )
                yield base.Notice("engine.budget", message, {"spent_usd": self.spent_usd})
                result = base.TurnResult(
                    status=base.TurnStatus.ERROR, error=errors.EngineBudgetExceeded(message)
                )
                break
            sub_request = self._request_for(index, request, first)
            retries = 0
            waited_s = 0.0
            while True:
                result = None
                async for event in engine.run_turn(sub_request):
                    if isinstance(event, base.TurnResult):
                        result = event
                    else:
                        yield event
                if result is None:
                    result = base.TurnResult(
                        status=base.TurnStatus.ERROR,
                        error=errors.EngineCrashed(
                            f"engine {engine.name!r} ended without a result"
                        ),
                    )
                spent = spent + result.usage
                self._charge(result.usage)
                if result.usage.total_tokens and result.usage.cost_usd is None:
                    yield base.Notice(
                        "engine.cost_unknown",
                        f"{engine.name}: the cost of this attempt is unknown and counts as 0",
                        {"engine": engine.name, "usage": result.usage.to_dict()},
                    )
                error = result.error
                if not isinstance(error, errors.EngineRateLimited):
                    break
                if self.policy.on_limit != "wait":
                    break
                give_up = policy.give_up_reason(self.policy.rate_limits, error, retries, waited_s)
                if give_up is not None:
                    break
                retries += 1
                wait_s = self.policy.rate_limits.wait_s(error, retries)
                yield base.Notice(
                    "engine.rate_limit_wait",
                    f"{engine.name} is rate-limited; waiting {wait_s:g}s (retry {retries})",
                    {"engine": engine.name, "wait_s": wait_s, "retry": retries,
                     "error": error.message},
                )  # fmt: skip
                await self.sleep(wait_s)
                waited_s += wait_s
            if result.session_id:
                self.session_owner[result.session_id] = engine.name
            if not isinstance(result.error, errors.EngineRateLimited):
                break
            if index + 1 < len(self.engines):
                following = self.engines[index + 1].name
                yield base.Notice(
                    "engine.fallback",
                    f"{engine.name} is limited ({result.error.message}); "
                    f"the turn moves to {following}",
                    {"from": engine.name, "to": following, "error": result.error.message},
                )
        assert result is not None
        yield dataclasses.replace(
            result, usage=spent, duration_s=max(result.duration_s, time.monotonic() - started)
        )
