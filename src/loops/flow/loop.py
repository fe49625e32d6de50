"""``loop()``: run a body until an honest gate passes, a stop condition fires or ``max``.

Each iteration runs the body, then ``stop_on``, then ``until``, then ``review``. The
gate decides, not the body's report: a failed or erroring body still has the gate
evaluated. A paused body pauses the loop. ``stop_on`` met fails the loop with the stop
condition as reason; reaching ``max`` fails it; a failing review goes into
``ctx.last_review`` and the loop goes on. A loop's exit is its own: its parent (a loop
or a dag) carries on with the outcome like any other job's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from loops import errors
from loops.flow import checkpoint, memory, turns
from loops.flow.budget import Budget
from loops.flow.conditions import Condition, ConditionLike, as_condition
from loops.flow.context import Context
from loops.flow.events import EventType
from loops.flow.jobs import Child, Job, as_job, evaluate, execute, review_findings
from loops.flow.outcome import Outcome, OutcomeStatus, Verdict
from loops.usage import Usage

#: iterations a loop runs when ``max`` is not given
DEFAULT_MAX = 10


class Loop(Job):
    """A convergence loop (see the module docstring); build it with :func:`loop`."""

    kind: ClassVar[str] = "loop"
    marks_diff_baseline: ClassVar[bool] = True

    def __init__(
        self,
        *,
        name: str,
        body: Job,
        until: Condition,
        start: Condition | None,
        stop_on: Condition | None,
        max_iterations: int,
        review: Condition | None,
        budget: Budget | None,
    ) -> None:
        self.name = name
        self.body = body
        self.until = until
        self.start = start
        self.stop_on = stop_on
        self.max_iterations = max_iterations
        self.review = review
        self.budget = budget

    def fields(self) -> dict[str, Any]:
        """``max`` and the conditions by slot."""
        body: dict[str, Any] = {"max": self.max_iterations, "until": self.until.describe()}
        for slot in ("start", "stop_on", "review"):
            condition = getattr(self, slot)
            if condition is not None:
                body[slot] = condition.describe()
        return body

    def children(self) -> Sequence[Child]:
        """The body."""
        return (Child(self.body.name, self.body, {"role": "body"}),)

    def conditions(self) -> Sequence[Condition]:
        """The loop's own conditions."""
        return [c for c in (self.start, self.stop_on, self.until, self.review) if c is not None]

    async def run(self, ctx: Context) -> Outcome:
        """Iterate as described in the module docstring."""
        saved = ctx.run.checkpoints.loop_state(ctx.key) if ctx.run.checkpoints else None
        if saved is not None:
            state = _restored(ctx, saved)
            first = state.iterations + 1
        else:
            started = await self._started(ctx)
            if isinstance(started, Outcome):
                return started
            state, first = started, 1
        for iteration in range(first, self.max_iterations + 1):
            outcome = await self._iterate(ctx, iteration, state)
            if outcome is not None:
                return outcome
            await _checkpoint(ctx, state, body=self.body.name)
        last = state.last_verdict
        why = f"; last gate verdict: {last.explain()}" if last else ""
        return Outcome(
            OutcomeStatus.FAIL,
            f"max {self.max_iterations} iterations reached{why}",
            _data(state),
            state.usage,
        )

    async def _started(self, ctx: Context) -> _State | Outcome:
        """The state of a fresh run of the loop, or ``skipped`` when ``start`` is unmet."""
        usage = Usage()
        if self.start is not None:
            verdict = await evaluate(ctx, "start", self.start, ctx.last)
            usage += verdict.total_usage()
            if not verdict.met:
                return Outcome(
                    OutcomeStatus.SKIPPED, f"start not met: {verdict.reason}", usage=usage
                )
        return _State(usage=usage, last_review=ctx.last_review)

    async def _iterate(self, ctx: Context, iteration: int, state: _State) -> Outcome | None:
        blocked = turns.budget_block(ctx)
        if blocked is not None:
            return Outcome(OutcomeStatus.PAUSED, blocked, _data(state), state.usage)
        turns.report_spend(ctx, ctx.ledger.count_iteration())
        ictx = ctx.evolve(
            trail=(*ctx.trail, iteration),
            iteration=iteration,
            last=state.last,
            last_review=state.last_review,
            last_verdict=state.last_verdict,
        )
        ictx.emit(EventType.ITERATION_STARTED, iteration=iteration, max=self.max_iterations)
        body = await execute(self.body, ictx.child(self.body.name))
        state.usage += body.usage
        state.iterations = iteration
        result = await self._decide(ictx, body, state)
        decision = result.summary if result is not None else "gate not met, going on"
        ictx.emit(
            EventType.ITERATION_FINISHED,
            iteration=iteration,
            status=body.status.value,
            decision=decision,
        )
        state.last = body
        return result

    async def _decide(self, ctx: Context, body: Outcome, state: _State) -> Outcome | None:
        """The loop's outcome after this iteration, or ``None`` to go on."""
        if body.status is OutcomeStatus.PAUSED:
            return Outcome(OutcomeStatus.PAUSED, body.summary, _data(state), state.usage)
        if self.stop_on is not None:
            stop = await evaluate(ctx, "stop_on", self.stop_on, body)
            state.usage += stop.total_usage()
            if stop.met:
                return Outcome(
                    OutcomeStatus.FAIL,
                    f"stopped by {stop.explain()}",
                    _data(state),
                    state.usage,
                )
        gate = await evaluate(ctx, "until", self.until, body)
        state.usage += gate.total_usage()
        state.last_verdict = gate
        if not gate.met:
            return None
        review: Verdict | None = None
        if self.review is not None:
            review = await self._review(ctx, body)
            state.usage += review.total_usage()
            if not review.met:
                state.last_review = review
                self._route_review(ctx, review)
                return None
        passed = f"until met at iteration {ctx.iteration}: {gate.explain()}"
        verdicts = memory.gate_verdicts(gate, review)
        made = await memory.commit_on_convergence(
            ctx, self.body, summary=body.summary, verdicts=verdicts, usage=state.usage
        )
        data = _data(state) if made is None else {**_data(state), "milestone": made.sha}
        return Outcome(OutcomeStatus.PASS, passed, data, state.usage)

    async def _review(self, ctx: Context, body: Outcome) -> Verdict:
        assert self.review is not None
        verdict = await self.review(ctx, body)
        ctx.run.verdicts.append((ctx.path_text, "review", ctx.iteration, verdict))
        ctx.emit(EventType.REVIEW, iteration=ctx.iteration, **verdict.to_dict())
        return verdict

    def _route_review(self, ctx: Context, review: Verdict) -> None:
        """Surface a failing review's findings and route them to the next turn."""
        findings = review_findings(review)
        for finding in findings:
            ctx.emit(
                EventType.SURFACING,
                source=finding.source,
                severity=finding.severity,
                reason=finding.text,
            )
        ctx.emit(
            EventType.REVISION_EMITTED,
            source=review.decided_by,
            target=None,
            findings=[f.to_dict() for f in findings],
            reason=review.reason,
        )
        body_path = f"{ctx.path_text}/{self.body.name}"
        if ctx.iteration < self.max_iterations:
            ctx.emit(
                EventType.REVISION_ROUTED,
                source=review.decided_by,
                target=body_path,
                accepted=True,
                rerun=[body_path],
                reason=f"threaded into iteration {ctx.iteration + 1} as ctx.last_review",
            )
        else:
            ctx.emit(
                EventType.REVISION_ROUTED,
                source=review.decided_by,
                target=body_path,
                accepted=False,
                rerun=[],
                reason=f"max {self.max_iterations} iterations reached",
            )


class _State:
    """What one run of a loop carries from iteration to iteration."""

    def __init__(self, usage: Usage, last_review: Verdict | None) -> None:
        self.usage = usage
        self.iterations = 0
        self.last: Outcome | None = None
        # feedback routed to this loop from outside (a kickback) reaches its first turn
        self.last_review = last_review
        self.last_verdict: Verdict | None = None


async def _checkpoint(ctx: Context, state: _State, *, body: str) -> None:
    """Record the loop's state after an iteration that did not end it."""
    if ctx.run.checkpoints is None:
        return
    finished = ctx.child(body).evolve(trail=(*ctx.trail, state.iterations))
    await ctx.run.checkpoints.save_loop(
        ctx.key,
        {
            "iteration": state.iterations,
            "usage": state.usage.to_dict(),
            "last": checkpoint.outcome_record(state.last) if state.last else None,
            "last_review": checkpoint.verdict_record(state.last_review),
            "last_verdict": checkpoint.verdict_record(state.last_verdict),
            # the wall time of the loop's own budget, so it goes on counting after a restart
            "seconds": ctx.ledger.spent.seconds if ctx.ledger.scope == ctx.path_text else None,
        },
        done=[finished.key],
    )


def _restored(ctx: Context, saved: dict[str, Any]) -> _State:
    """The loop's state from its checkpoint; its spend is charged to the budgets again."""
    state = _State(Usage.from_dict(saved.get("usage")), None)
    state.iterations = int(saved["iteration"])
    last = saved.get("last")
    state.last = checkpoint.outcome_from_record(last) if last else None
    state.last_review = checkpoint.verdict_from_record(saved.get("last_review"))
    state.last_verdict = checkpoint.verdict_from_record(saved.get("last_verdict"))
    ctx.ledger.charge(state.usage)
    seconds = saved.get("seconds")
    if seconds and ctx.ledger.scope == ctx.path_text:
        ctx.ledger.add_seconds(float(seconds))
    for _ in range(state.iterations):
        ctx.ledger.count_iteration()
    return state


def _data(state: _State) -> dict[str, Any]:
    data: dict[str, Any] = {"iterations": state.iterations}
    if state.last is not None:
        data["last"] = state.last.to_dict()
    return data


def loop(
    *,
    name: str = "loop",
    body: Job | Callable[..., Any],
    until: ConditionLike,
    start: ConditionLike | None = None,
    stop_on: ConditionLike | None = None,
    max: int = DEFAULT_MAX,
    review: ConditionLike | None = None,
    budget: Budget | None = None,
) -> Job:
    """A convergence loop: run ``body`` until ``until`` holds, at most ``max`` times.

    Args:
        name: the loop's name (its path segment).
        body: the job run each iteration (a function is wrapped with ``fn_job``).
        until: the gate: a condition, a list (all must hold) or ``any_of(...)``.
        start: checked once before the first iteration; unmet skips the loop.
        stop_on: checked after each body; met ends the loop with ``fail``.
        max: the iteration limit; reaching it fails the loop.
        review: checked after ``until`` is met; a failing review is put in
            ``ctx.last_review`` and the loop goes on.
        budget: limits for this loop and everything it runs; crossing one pauses.

    Raises:
        ConstructionError: a missing ``until``, a bad ``max``, body or condition.
    """
    if not isinstance(name, str) or not name or "/" in name:
        raise errors.ConstructionError(f"loop name {name!r} must be a non-empty string without '/'")
    gate = as_condition(until, slot="until")
    if gate is None:
        raise errors.ConstructionError(
            f"loop {name!r} needs until=: the gate that decides it is done "
            "(e.g. command_succeeds('pytest', ['-q']))"
        )
    if isinstance(max, bool) or not isinstance(max, int) or max < 1:
        raise errors.ConstructionError(f"loop {name!r}: max={max!r} must be a whole number >= 1")
    if budget is not None and not isinstance(budget, Budget):
        raise errors.ConstructionError(f"loop {name!r}: budget= takes budget(...), got {budget!r}")
    return Loop(
        name=name,
        body=as_job(body, slot=f"loop {name!r} body"),
        until=gate,
        start=as_condition(start, slot="start"),
        stop_on=as_condition(stop_on, slot="stop_on"),
        max_iterations=max,
        review=as_condition(review, slot="review"),
        budget=budget,
    )
