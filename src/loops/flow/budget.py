"""Budgets: limits on tokens, money, wall time and iterations, scoped to a subtree.

A :class:`Budget` is a value; a :class:`Ledger` counts what a scope has spent and
chains to its parent scope, so every charge counts against the budget it was set on
and every enclosing one. The decision (:func:`exceeded`) is a plain function over a
limit and a :class:`Spend`. Jobs check the ledger before each iteration and each agent
turn; a turn already running is allowed to finish, so a run goes at most one turn past
a limit.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

from loops import errors
from loops.usage import Usage


@dataclasses.dataclass(frozen=True, slots=True)
class Budget:
    """Limits for one subtree of a run; ``None`` means no limit on that measure.

    Attributes:
        tokens: input plus output tokens.
        usd: cost in US dollars (turns whose cost is unknown count as 0).
        seconds: wall time since the budgeted job started.
        iterations: loop iterations started anywhere in the subtree.
    """

    tokens: int | None = None
    usd: float | None = None
    seconds: float | None = None
    iterations: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The limits that are set, as JSON."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    def __str__(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.to_dict().items())


def budget(
    tokens: int | None = None,
    usd: float | None = None,
    seconds: float | None = None,
    iterations: int | None = None,
) -> Budget:
    """Build a budget for ``loop(budget=...)`` or ``dag(budget=...)``.

    Raises:
        ConstructionError: no limit given, or a limit is negative or not a number.
    """
    values = {"tokens": tokens, "usd": usd, "seconds": seconds, "iterations": iterations}
    if all(v is None for v in values.values()):
        raise errors.ConstructionError(
            "budget() needs at least one limit: tokens=, usd=, seconds= or iterations="
        )
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            raise errors.ConstructionError(f"budget {key}={value!r} must be a number")
        if value < 0:
            raise errors.ConstructionError(f"budget {key}={value!r} must not be negative")
    return Budget(tokens, usd, seconds, iterations)


@dataclasses.dataclass(frozen=True, slots=True)
class Spend:
    """What a scope has spent so far."""

    tokens: int = 0
    usd: float = 0.0
    seconds: float = 0.0
    iterations: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The JSON form used in budget events."""
        return {
            "tokens": self.tokens,
            "usd": round(self.usd, 6),
            "seconds": round(self.seconds, 3),
            "iterations": self.iterations,
        }


def exceeded(limit: Budget, spent: Spend) -> str | None:
    """Which limit ``spent`` has reached, as a reason, or ``None`` when within all.

    A limit is reached when the spend is at or past it: with ``iterations=3`` a fourth
    iteration does not start; with ``usd=5`` no turn starts once $5 is spent.
    """
    if limit.iterations is not None and spent.iterations >= limit.iterations:
        return f"iterations {spent.iterations} of {limit.iterations}"
    if limit.tokens is not None and spent.tokens >= limit.tokens:
        return f"tokens {spent.tokens} of {limit.tokens}"
    if limit.usd is not None and spent.usd >= limit.usd:
        return f"usd {spent.usd:.4f} of {limit.usd:.2f}"
    if limit.seconds is not None and spent.seconds >= limit.seconds:
        return f"seconds {spent.seconds:.1f} of {limit.seconds:g}"
    return None


def charged(spent: Spend, usage: Usage) -> Spend:
    """``spent`` plus one turn's usage."""
    return dataclasses.replace(
        spent, tokens=spent.tokens + usage.total_tokens, usd=spent.usd + (usage.cost_usd or 0.0)
    )


class Ledger:
    """The running spend of one budget scope, chained to the enclosing scopes.

    Args:
        limit: this scope's budget, or ``None`` for an unlimited scope (the run root).
        scope: the path of the budgeted job, shown in reasons and events.
        parent: the enclosing scope's ledger.
        clock: monotonic seconds (a parameter so tests are exact).
    """

    def __init__(
        self,
        limit: Budget | None = None,
        *,
        scope: str = "",
        parent: Ledger | None = None,
        clock: Callable[[], float],
    ) -> None:
        self.limit = limit
        self.scope = scope
        self.parent = parent
        self._clock = clock
        self._started = clock()
        self._spent = Spend()

    def child(self, limit: Budget, scope: str) -> Ledger:
        """A new scope inside this one, starting now."""
        return Ledger(limit, scope=scope, parent=self, clock=self._clock)

    def chain(self) -> list[Ledger]:
        """This ledger and its ancestors, innermost first."""
        out: list[Ledger] = []
        node: Ledger | None = self
        while node is not None:
            out.append(node)
            node = node.parent
        return out

    @property
    def spent(self) -> Spend:
        """What this scope has spent, wall time included."""
        return dataclasses.replace(self._spent, seconds=self._clock() - self._started)

    def add_seconds(self, seconds: float) -> None:
        """Count ``seconds`` of wall time spent before this scope started (a resumed run)."""
        self._started -= seconds

    def charge(self, usage: Usage) -> list[Ledger]:
        """Add one turn's usage here and in every enclosing scope.

        Returns:
            The budgeted scopes (with a limit) that were charged, innermost first.
        """
        touched = []
        for ledger in self.chain():
            ledger._spent = charged(ledger._spent, usage)
            if ledger.limit is not None:
                touched.append(ledger)
        return touched

    def count_iteration(self) -> list[Ledger]:
        """Count one loop iteration here and in every enclosing scope.

        Returns:
            The budgeted scopes (with a limit) that were counted, innermost first.
        """
        touched = []
        for ledger in self.chain():
            ledger._spent = dataclasses.replace(
                ledger._spent, iterations=ledger._spent.iterations + 1
            )
            if ledger.limit is not None:
                touched.append(ledger)
        return touched

    def check(self) -> tuple[Ledger, str] | None:
        """The innermost scope whose budget is reached, with the reason, or ``None``."""
        for ledger in self.chain():
            if ledger.limit is None:
                continue
            reason = exceeded(ledger.limit, ledger.spent)
            if reason is not None:
                return ledger, reason
        return None
