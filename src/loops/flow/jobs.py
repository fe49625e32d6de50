"""Jobs: the unit of work, ``async (ctx) -> Outcome``, and the fn and gate jobs.

Every job, leaf or composite, is run through :func:`execute`, which opens its budget
scope, emits ``job.started``/``job.finished`` and turns an exception into an
``error`` outcome, so loops and dags treat all children alike and nest both ways.
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, ClassVar

from loops import errors
from loops.flow import checkpoint, gitstate
from loops.flow.budget import Budget
from loops.flow.conditions import Condition, as_condition
from loops.flow.context import Context
from loops.flow.events import EventType
from loops.flow.outcome import Finding, Outcome, OutcomeStatus, RevisionRequest, Verdict
from loops.usage import Usage


@dataclasses.dataclass(frozen=True, slots=True)
class Child:
    """A job's child as shown by ``describe``: its path segment, job and own fields."""

    segment: str
    job: Job
    fields: Mapping[str, Any] = dataclasses.field(default_factory=dict)


class Job(abc.ABC):
    """A unit of work of any size: ``await job(ctx)`` returns an :class:`Outcome`.

    Subclasses set :attr:`kind` and implement :meth:`run`; composites also list their
    :meth:`children` and the :meth:`conditions` they own, so a run can prepare them and
    ``describe`` can show them.
    """

    kind: ClassVar[str] = "job"
    #: loops and dags: reviewers may ask for "the diff since this began"
    marks_diff_baseline: ClassVar[bool] = False
    #: runs one other job at its own path (``isolated``): checkpointed under its own key
    wraps_job: ClassVar[bool] = False
    name: str = "job"
    budget: Budget | None = None

    async def __call__(self, ctx: Context) -> Outcome:
        return await execute(self, ctx)

    @abc.abstractmethod
    async def run(self, ctx: Context) -> Outcome:
        """Do the work in ``ctx`` (called through :func:`execute`, never directly)."""

    def fields(self) -> dict[str, Any]:
        """This job's own settings, for ``describe``."""
        return {}

    def children(self) -> Sequence[Child]:
        """The jobs this one runs."""
        return ()

    def conditions(self) -> Sequence[Condition]:
        """The conditions this job itself evaluates (not its children's)."""
        return ()

    def shape(self) -> dict[str, Any]:
        """The describe tree: ``name``, ``kind``, own fields and ``children``."""
        body: dict[str, Any] = {"name": self.name, "kind": self.kind, **self.fields()}
        if self.budget is not None:
            body["budget"] = self.budget.to_dict()
        body["children"] = [
            {**child.job.shape(), "name": child.segment, **child.fields}
            for child in self.children()
        ]
        return body


async def execute(job: Job, ctx: Context) -> Outcome:
    """Run ``job`` in ``ctx``: open its budget scope, emit its events, contain its errors.

    A :class:`~loops.errors.ConfigError` (no engine, unknown engine) propagates, since
    running on would only repeat it; any other exception becomes an ``error`` outcome.
    """
    checkpoints = ctx.run.checkpoints
    # a wrapper runs its job at its own path: the two need two records
    key = f"{ctx.key}{checkpoint.WRAPPER}" if job.wraps_job else ctx.key
    if checkpoints is not None:
        restored = checkpoints.finished(key)
        if restored is not None:
            return _restore(job, ctx, *restored)
    if job.budget is not None:
        ctx = ctx.evolve(ledger=ctx.ledger.child(job.budget, ctx.path_text))
    started = ctx.run.clock()
    if ctx.run.wants_diff and job.marks_diff_baseline:
        ctx.run.diff_baselines[ctx.path_text] = await gitstate.snapshot_tree(ctx.cwd)
    ctx.emit(EventType.JOB_STARTED, kind=job.kind, name=job.name)
    try:
        outcome = await job.run(ctx)
    except asyncio.CancelledError:  # keep started/finished paired for consumers, then stop
        ctx.emit(
            EventType.JOB_FINISHED,
            kind=job.kind,
            name=job.name,
            status="error",
            summary="cancelled",
            usage=Usage().to_dict(),
            duration_s=round(ctx.run.clock() - started, 6),
        )
        raise
    except errors.ConfigError:
        raise
    except errors.LoopsError as exc:
        outcome = Outcome(OutcomeStatus.ERROR, f"{job.kind} {job.name}: {exc.message}")
    except Exception as exc:  # a job boundary: report, do not crash the run
        outcome = Outcome(
            OutcomeStatus.ERROR, f"{job.kind} {job.name} raised {type(exc).__name__}: {exc}"
        )
    ctx.emit(
        EventType.JOB_FINISHED,
        kind=job.kind,
        name=job.name,
        status=outcome.status.value,
        summary=outcome.summary,
        usage=outcome.usage.to_dict(),
        duration_s=round(ctx.run.clock() - started, 6),
    )
    if checkpoints is not None:
        await checkpoints.finish(key, outcome)
    return outcome


def _restore(job: Job, ctx: Context, outcome: Outcome, attempt: int) -> Outcome:
    """A job finished by an earlier attempt: its outcome, its spend charged again."""
    ctx.emit(
        EventType.JOB_RESTORED,
        kind=job.kind,
        name=job.name,
        status=outcome.status.value,
        summary=outcome.summary,
        usage=outcome.usage.to_dict(),
        attempt=attempt,
    )
    ctx.ledger.charge(outcome.usage)
    return outcome


def as_job(value: Job | Callable[..., Any], *, slot: str) -> Job:
    """Coerce a job or a plain function (wrapped with :func:`fn_job`) to a job.

    Raises:
        ConstructionError: ``value`` is neither.
    """
    if isinstance(value, Job):
        return value
    if callable(value):
        return fn_job(value)
    raise errors.ConstructionError(
        f"{slot} must be a job (loop, dag, agent_job, fn_job, ...) or a function, "
        f"got {type(value).__name__} {value!r}"
    )


FnResult = Outcome | bool | None
JobFn = Callable[[Context], FnResult | Awaitable[FnResult]]


def _fn_outcome(name: str, value: Any) -> Outcome:
    if isinstance(value, Outcome):
        return value
    if value is None or value is True:
        return Outcome(OutcomeStatus.PASS, f"{name} returned {value!r}")
    if value is False:
        return Outcome(OutcomeStatus.FAIL, f"{name} returned False")
    return Outcome(
        OutcomeStatus.ERROR,
        f"{name} returned {type(value).__name__}; return an Outcome, a bool or None",
    )


class FnJob(Job):
    """A job that calls a Python function ``(ctx) -> Outcome | bool | None``."""

    kind: ClassVar[str] = "fn"

    def __init__(self, fn: JobFn, name: str | None = None) -> None:
        if not callable(fn):
            raise errors.ConstructionError(f"fn_job() takes a function, got {fn!r}")
        self.fn = fn
        self.name = name or str(getattr(fn, "__name__", None) or "fn")
        if self.name == "<lambda>":
            self.name = "fn"

    async def run(self, ctx: Context) -> Outcome:
        """Call the function and map its result."""
        try:
            value: Any = self.fn(ctx)
            if inspect.isawaitable(value):
                value = await value
        except errors.ConfigError:
            raise
        except Exception as exc:  # the user's function failed: that is this job's error
            return Outcome(OutcomeStatus.ERROR, f"{self.name} raised {type(exc).__name__}: {exc}")
        return _fn_outcome(self.name, value)


def fn_job(fn: JobFn, name: str | None = None) -> Job:
    """A job running ``fn(ctx)``, sync or async.

    ``None`` or ``True`` is ``pass``, ``False`` is ``fail``, an :class:`Outcome` is kept
    as is, and an exception is ``error`` with the exception as its summary.
    """
    return FnJob(fn, name)


async def evaluate(ctx: Context, slot: str, condition: Condition, last: Outcome | None) -> Verdict:
    """Evaluate ``condition`` for ``slot`` (until, stop_on, gate, ...) and emit the verdict."""
    verdict = await condition(ctx, last)
    ctx.run.verdicts.append((ctx.path_text, slot, ctx.iteration, verdict))
    ctx.emit(EventType.VERDICT, slot=slot, iteration=ctx.iteration, **verdict.to_dict())
    return verdict


class GateJob(Job):
    """A job that passes when its condition is met (a reviewer as a dag node)."""

    kind: ClassVar[str] = "gate"

    def __init__(self, name: str, condition: Condition, kickback_to: str | None = None) -> None:
        self.name = name
        checked = as_condition(condition, slot="gate_job condition")
        if checked is None:
            raise errors.ConstructionError(f"gate_job({name!r}) needs a condition")
        if kickback_to is not None and (not isinstance(kickback_to, str) or not kickback_to):
            raise errors.ConstructionError(
                f"gate_job({name!r}) kickback_to= takes a dag node's name, got {kickback_to!r}"
            )
        self.condition = checked
        self.kickback_to = kickback_to

    def fields(self) -> dict[str, Any]:
        """The condition and kickback target."""
        body: dict[str, Any] = {"condition": self.condition.describe()}
        if self.kickback_to is not None:
            body["kickback_to"] = self.kickback_to
        return body

    def conditions(self) -> Sequence[Condition]:
        """The gate's condition."""
        return (self.condition,)

    async def run(self, ctx: Context) -> Outcome:
        """Evaluate the condition against the previous outcome in the context."""
        verdict = await evaluate(ctx, "gate", self.condition, ctx.last)
        status = OutcomeStatus.PASS if verdict.met else OutcomeStatus.FAIL
        revision = None
        if not verdict.met and self.kickback_to is not None:
            findings = (
                verdict.revision.findings
                if verdict.revision
                else tuple(
                    Finding(leaf.decided_by, leaf.reason) for leaf in failing_leaves(verdict)
                )
            )
            revision = RevisionRequest(self.kickback_to, findings, verdict.explain())
        return Outcome(
            status,
            verdict.explain(),
            {"verdict": verdict.to_dict()},
            verdict.total_usage(),
            revision,
        )


def gate_job(name: str, condition: Condition, *, kickback_to: str | None = None) -> Job:
    """A job that runs ``condition`` and passes exactly when it is met.

    Args:
        name: the job's name.
        condition: the gate.
        kickback_to: in a dag with ``max_kickbacks``, a failing gate sends the work back
            to this node (which re-runs with its dependents, this gate included), with
            the failing verdict's findings as their ``ctx.last_review``.
    """
    return GateJob(name, condition, kickback_to)


def failing_leaves(verdict: Verdict) -> list[Verdict]:
    """The innermost unmet verdicts under ``verdict`` (itself when it has no details)."""
    if verdict.met:
        return []
    leaves = [leaf for detail in verdict.details for leaf in failing_leaves(detail)]
    return leaves or [verdict]


def review_findings(review: Verdict) -> tuple[Finding, ...]:
    """A failing review's findings: its revision's, else one per failing leaf verdict."""
    if review.revision is not None and review.revision.findings:
        return review.revision.findings
    return tuple(Finding(leaf.decided_by, leaf.reason) for leaf in failing_leaves(review))
