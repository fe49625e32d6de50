"""Conditions: the gates of loops and dags, and how they combine.

A :class:`Condition` is ``async (ctx, last) -> Verdict``. This module holds the base
class, :func:`predicate` (any sync or async function), and the combinators
:func:`all_of`, :func:`any_of` and :func:`quorum`. The deterministic checks
(``command_succeeds``, ``unchanged``) and the judge (``agent_check``) live in their own
modules. How a verdict combines its members is a plain function
(:func:`combine_all`, :func:`combine_any`, :func:`quorum_decided`).
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
import inspect
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar

from loops import errors
from loops.flow.context import Context
from loops.flow.outcome import Outcome, Verdict


class Condition(abc.ABC):
    """A yes/no gate: ``await condition(ctx, last)`` returns a :class:`Verdict`.

    Subclasses implement :meth:`check`. Calling the condition stamps the verdict with
    the condition's name and kind (who decided), and turns an exception raised while
    checking into an unmet verdict (fail-closed) that names it.
    """

    kind: ClassVar[str] = "condition"
    name: str = "condition"

    async def __call__(self, ctx: Context, last: Outcome | None) -> Verdict:
        try:
            verdict = await self.check(ctx, last)
        except errors.ConfigError:
            raise  # no engine, unknown engine: asking again will not help
        except errors.LoopsError as exc:
            verdict = Verdict(False, f"{self.name} could not decide: {exc}")
        except Exception as exc:  # a user's predicate or check raised: fail closed
            verdict = Verdict(False, f"{self.name} raised {type(exc).__name__}: {exc}")
        if not verdict.decided_by:
            verdict = _stamped(verdict, self)
        return verdict

    @abc.abstractmethod
    async def check(self, ctx: Context, last: Outcome | None) -> Verdict:
        """Decide; ``last`` is the outcome being judged (a loop body's, a node's need's)."""

    async def prepare(self, ctx: Context) -> None:  # noqa: B027 (optional hook)
        """Called once when a run starts, before any job runs (e.g. to take baselines)."""

    def members(self) -> Sequence[Condition]:
        """The conditions this one combines (empty for a leaf)."""
        return ()

    @property
    def wants_diff(self) -> bool:
        """Whether this condition reads the diff since its loop or dag began."""
        return False

    def fields(self) -> dict[str, Any]:
        """This condition's own settings, for ``describe``."""
        return {}

    def describe(self) -> dict[str, Any]:
        """The condition's shape: ``kind``, ``name``, its fields and its members."""
        body: dict[str, Any] = {"kind": self.kind, "name": self.name, **self.fields()}
        if self.members():
            body["members"] = [m.describe() for m in self.members()]
        return body


def _stamped(verdict: Verdict, condition: Condition) -> Verdict:
    return dataclasses.replace(verdict, decided_by=condition.name, kind=condition.kind)


PredicateFn = Callable[[Context, Outcome | None], "bool | Verdict | Awaitable[bool | Verdict]"]


class Predicate(Condition):
    """A condition computed by a function ``(ctx, last) -> bool`` (sync or async)."""

    kind: ClassVar[str] = "predicate"

    def __init__(self, fn: PredicateFn, name: str | None = None) -> None:
        if not callable(fn):
            raise errors.ConstructionError(f"predicate() takes a function, got {fn!r}")
        self.fn = fn
        self.name = name or str(getattr(fn, "__name__", None) or "predicate")
        if self.name == "<lambda>":
            self.name = "predicate"

    async def check(self, ctx: Context, last: Outcome | None) -> Verdict:
        """Call the function; ``True`` is met, anything else is not."""
        value: Any = self.fn(ctx, last)
        if inspect.isawaitable(value):
            value = await value
        if isinstance(value, Verdict):
            return value
        met = value is True
        return Verdict(met, f"{self.name} returned {value!r}")


def predicate(fn: PredicateFn, name: str | None = None) -> Condition:
    """Wrap a sync or async function ``(ctx, last) -> bool`` as a condition.

    The function may also return a :class:`Verdict` to give its own reason. Anything
    but ``True`` is "not met"; an exception is "not met" with the exception as reason.
    """
    return Predicate(fn, name)


ConditionLike = Condition | Sequence[Condition] | Callable[..., Any]


def as_condition(
    value: ConditionLike | None, *, slot: str, unary: bool = False
) -> Condition | None:
    """Coerce what a user passed to ``until=``, ``stop_on=``, ``when=``... to a condition.

    A list means all must hold; a plain function becomes a :func:`predicate` (taking
    ``(ctx)`` when ``unary``, as ``when=`` does, else ``(ctx, last)``).

    Raises:
        ConstructionError: the value is none of those, or an empty list.
    """
    if value is None or isinstance(value, Condition):
        return value
    if isinstance(value, list | tuple):
        items = [as_condition(v, slot=slot, unary=unary) for v in value]
        conditions = [c for c in items if c is not None]
        if not conditions:
            raise errors.ConstructionError(
                f"{slot}= got an empty list; give at least one condition"
            )
        return conditions[0] if len(conditions) == 1 else AllOf(conditions)
    if callable(value):
        fn = value
        if unary:
            return Predicate(lambda ctx, _last: fn(ctx), getattr(fn, "__name__", None))
        return Predicate(fn)
    raise errors.ConstructionError(
        f"{slot}= takes a condition, a list of conditions, any_of(...) or a function; "
        f"got {type(value).__name__} {value!r}"
    )


def _members(slot: str, conditions: Sequence[ConditionLike]) -> list[Condition]:
    out = []
    for item in conditions:
        condition = as_condition(item, slot=slot)
        if condition is not None:
            out.append(condition)
    return out


def _min_confidence(verdicts: Sequence[Verdict]) -> float | None:
    known = [v.confidence for v in verdicts if v.confidence is not None]
    return min(known) if known else None


def combine_all(verdicts: Sequence[Verdict], total: int) -> tuple[bool, str]:
    """Decide ``all_of`` from the verdicts so far (evaluation stops at the first unmet)."""
    for verdict in verdicts:
        if not verdict.met:
            return False, verdict.explain()
    if len(verdicts) < total:
        return False, f"only {len(verdicts)} of {total} conditions were checked"
    if total == 1:
        return True, verdicts[0].reason
    return True, "; ".join(v.explain() for v in verdicts)


def combine_any(verdicts: Sequence[Verdict]) -> tuple[bool, str]:
    """Decide ``any_of`` from the verdicts so far (evaluation stops at the first met)."""
    for verdict in verdicts:
        if verdict.met:
            return True, verdict.explain()
    return False, "none met: " + "; ".join(v.explain() for v in verdicts)


class AllOf(Condition):
    """Met when every member is met; checked in order, stopping at the first unmet one.

    Put cheap deterministic checks first: a judge after a failing test run is never asked.
    """

    kind: ClassVar[str] = "all_of"

    def __init__(self, conditions: Sequence[Condition], name: str | None = None) -> None:
        if not conditions:
            raise errors.ConstructionError("all_of() needs at least one condition")
        self.conditions = list(conditions)
        self.name = name or "all_of(" + ", ".join(c.name for c in self.conditions) + ")"

    def members(self) -> Sequence[Condition]:
        """The members, in checking order."""
        return self.conditions

    async def check(self, ctx: Context, last: Outcome | None) -> Verdict:
        """Check members in order until one is unmet."""
        verdicts: list[Verdict] = []
        for condition in self.conditions:
            verdict = await condition(ctx, last)
            verdicts.append(verdict)
            if not verdict.met:
                break
        met, reason = combine_all(verdicts, len(self.conditions))
        return Verdict(met, reason, _min_confidence(verdicts), details=tuple(verdicts))


class AnyOf(Condition):
    """Met when some member is met; checked in order, stopping at the first met one."""

    kind: ClassVar[str] = "any_of"

    def __init__(self, conditions: Sequence[Condition], name: str | None = None) -> None:
        if not conditions:
            raise errors.ConstructionError("any_of() needs at least one condition")
        self.conditions = list(conditions)
        self.name = name or "any_of(" + ", ".join(c.name for c in self.conditions) + ")"

    def members(self) -> Sequence[Condition]:
        """The members, in checking order."""
        return self.conditions

    async def check(self, ctx: Context, last: Outcome | None) -> Verdict:
        """Check members in order until one is met."""
        verdicts: list[Verdict] = []
        for condition in self.conditions:
            verdict = await condition(ctx, last)
            verdicts.append(verdict)
            if verdict.met:
                break
        met, reason = combine_any(verdicts)
        confidence = verdicts[-1].confidence if met else _min_confidence(verdicts)
        return Verdict(met, reason, confidence, details=tuple(verdicts))


def all_of(*conditions: ConditionLike, name: str | None = None) -> Condition:
    """Met when all ``conditions`` are met (checked in order, stopping at the first unmet)."""
    return AllOf(_members("all_of", conditions), name)


def any_of(*conditions: ConditionLike, name: str | None = None) -> Condition:
    """Met when any of ``conditions`` is met (checked in order, stopping at the first met)."""
    return AnyOf(_members("any_of", conditions), name)


def quorum_decided(k: int, n: int, met: int, unmet: int) -> bool | None:
    """Whether a k-of-n vote is decided: ``True`` met, ``False`` cannot be met, ``None`` open."""
    if met >= k:
        return True
    if unmet > n - k:
        return False
    return None


class Quorum(Condition):
    """Met when at least ``k`` of its members are met (a k-of-n jury).

    Members are checked concurrently; once the vote is decided the rest are cancelled,
    so a jury stops spending as soon as the answer is known.
    """

    kind: ClassVar[str] = "quorum"

    def __init__(self, k: int, conditions: Sequence[Condition], name: str | None = None) -> None:
        if not conditions:
            raise errors.ConstructionError("quorum() needs at least one condition to vote")
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(conditions):
            raise errors.ConstructionError(
                f"quorum k={k!r} must be a whole number from 1 to {len(conditions)} "
                f"(the number of conditions)"
            )
        self.k = k
        self.conditions = list(conditions)
        self.name = name or f"quorum({k} of {len(conditions)})"

    def members(self) -> Sequence[Condition]:
        """The voters."""
        return self.conditions

    def fields(self) -> dict[str, Any]:
        """The required votes."""
        return {"k": self.k}

    async def check(self, ctx: Context, last: Outcome | None) -> Verdict:
        """Run the voters concurrently until the vote is decided."""
        tasks = {asyncio.ensure_future(c(ctx, last)): i for i, c in enumerate(self.conditions)}
        results: dict[int, Verdict] = {}
        decided: bool | None = None
        pending = set(tasks)
        try:
            while pending and decided is None:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    results[tasks[task]] = task.result()
                met = sum(1 for v in results.values() if v.met)
                decided = quorum_decided(self.k, len(self.conditions), met, len(results) - met)
        finally:
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        verdicts = [results[i] for i in sorted(results)]
        met_count = sum(1 for v in verdicts if v.met)
        votes = "; ".join(
            f"{v.decided_by}: {'met' if v.met else 'not met'}: {v.reason}" for v in verdicts
        )
        reason = f"{met_count} of {len(self.conditions)} met (need {self.k}): {votes}"
        confidences = [v.confidence for v in verdicts if v.met and v.confidence is not None]
        confidence = math.fsum(confidences) / len(confidences) if confidences else None
        return Verdict(bool(decided), reason, confidence, details=tuple(verdicts))


def quorum(k: int, *conditions: ConditionLike, name: str | None = None) -> Condition:
    """Met when at least ``k`` of ``conditions`` are met; stops early once decided.

    Raises:
        ConstructionError: no conditions, or ``k`` outside 1..n.
    """
    return Quorum(k, _members("quorum", conditions), name)


def walk(condition: Condition) -> list[Condition]:
    """``condition`` and all its members, depth first."""
    out = [condition]
    for member in condition.members():
        out.extend(walk(member))
    return out
