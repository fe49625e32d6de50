"""``dag()``: jobs with dependencies, ready ones run concurrently; ``sequence``/``parallel``.

A node is a job, or ``{"job": ..., "needs": [...], "optional": bool, "when": ...}``.
Ready nodes run concurrently, at most ``concurrency`` at a time. A failed required
node skips its dependents and fails the dag; optional nodes never block (their
dependents run whatever they did); an unmet ``when`` skips the node. The readiness
decisions are :class:`~loops.flow.schedule.Schedule`'s.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Literal

from loops import errors
from loops.flow import checkpoint, durable, schedule
from loops.flow import isolation as isolation_mod
from loops.flow.budget import Budget
from loops.flow.conditions import Condition, as_condition
from loops.flow.context import Context, GraphPosition
from loops.flow.events import EventType
from loops.flow.jobs import Child, Job, as_job, evaluate, execute
from loops.flow.outcome import Outcome, OutcomeStatus, RevisionRequest, Verdict
from loops.flow.schedule import NodeState
from loops.git.worktrees import LandMode
from loops.usage import Usage

#: the keys a node given as a dict may have
NODE_KEYS = ("job", "needs", "optional", "when", "accepts_kickback_to", "isolate")

_STATE_OF: dict[OutcomeStatus, NodeState] = {
    OutcomeStatus.PASS: NodeState.PASSED,
    OutcomeStatus.FAIL: NodeState.FAILED,
    OutcomeStatus.ERROR: NodeState.FAILED,
    OutcomeStatus.SKIPPED: NodeState.SKIPPED,
    OutcomeStatus.PAUSED: NodeState.PAUSED,
}


@dataclasses.dataclass(frozen=True, slots=True)
class Node:
    """One node of a dag.

    Attributes:
        job: what the node runs.
        needs: the nodes that must settle first.
        optional: a failure of this node neither fails the dag nor blocks dependents.
        when: checked when the node becomes ready; unmet skips it.
        accepts_kickback_to: the only nodes this node may kick work back to
            (``None``: any node upstream of it, or itself).
        isolate: run the node in its own git worktree (``None``: as the dag's
            ``isolation`` says).
    """

    job: Job
    needs: tuple[str, ...] = ()
    optional: bool = False
    when: Condition | None = None
    accepts_kickback_to: tuple[str, ...] | None = None
    isolate: bool | None = None


NodeLike = Job | Node | Mapping[str, Any] | Callable[..., Any]


def _node(dag_name: str, key: str, value: NodeLike) -> Node:
    where = f"dag {dag_name!r} node {key!r}"
    if isinstance(value, Node):
        return value
    if not isinstance(value, Mapping):
        return Node(as_job(value, slot=where))
    unknown = [k for k in value if k not in NODE_KEYS]
    if unknown:
        raise errors.ConstructionError(
            f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(NODE_KEYS)})"
        )
    if "job" not in value:
        raise errors.ConstructionError(f"{where} has no 'job'")
    needs = value.get("needs") or ()
    if isinstance(needs, str):
        needs = (needs,)
    if not all(isinstance(n, str) for n in needs):
        raise errors.ConstructionError(f"{where}: needs={needs!r} must be node names")
    optional = value.get("optional", False)
    if not isinstance(optional, bool):
        raise errors.ConstructionError(f"{where}: optional={optional!r} must be True or False")
    targets = value.get("accepts_kickback_to")
    if isinstance(targets, str):
        targets = (targets,)
    if targets is not None and not all(isinstance(t, str) for t in targets):
        raise errors.ConstructionError(
            f"{where}: accepts_kickback_to={targets!r} must be node names"
        )
    isolate = value.get("isolate")
    if isolate is not None and not isinstance(isolate, bool):
        raise errors.ConstructionError(f"{where}: isolate={isolate!r} must be True or False")
    return Node(
        job=as_job(value["job"], slot=where),
        needs=tuple(needs),
        optional=optional,
        when=as_condition(value.get("when"), slot=f"{where} when", unary=True),
        accepts_kickback_to=None if targets is None else tuple(targets),
        isolate=isolate,
    )


class _DagRun:
    """The state of one run of a dag."""

    def __init__(self, dag: Dag) -> None:
        self.plan = schedule.Schedule(
            {k: n.needs for k, n in dag.nodes.items()},
            frozenset(k for k, n in dag.nodes.items() if n.optional),
        )
        self.outcomes: dict[str, Outcome] = {}
        self.running: dict[asyncio.Task[Outcome], str] = {}
        self.reviews: dict[str, Verdict] = {}
        self.kickbacks = 0
        self.usage = Usage()


def _kickbacks_key(ctx: Context) -> str:
    """The checkpoint key of how many kickbacks the dag at ``ctx`` has used."""
    return f"dag.kickbacks:{ctx.key}"


async def _cancel(tasks: list[asyncio.Task[Outcome]]) -> None:
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)


class Dag(Job):
    """A graph of jobs (see the module docstring); build it with :func:`dag`."""

    kind: ClassVar[str] = "dag"
    marks_diff_baseline: ClassVar[bool] = True

    def __init__(
        self,
        *,
        name: str,
        nodes: Mapping[str, Node],
        concurrency: int | None,
        max_kickbacks: int,
        budget: Budget | None,
        durable: bool = False,
    ) -> None:
        self.name = name
        self.nodes = dict(nodes)
        self.concurrency = concurrency
        self.max_kickbacks = max_kickbacks
        self.budget = budget
        self.durable = durable
        self._dependents: dict[str, list[str]] = {k: [] for k in self.nodes}
        for key, node in self.nodes.items():
            for need in node.needs:
                self._dependents[need].append(key)

    def fields(self) -> dict[str, Any]:
        """The concurrency bound and kickback allowance."""
        body: dict[str, Any] = {}
        if self.concurrency is not None:
            body["concurrency"] = self.concurrency
        if self.max_kickbacks:
            body["max_kickbacks"] = self.max_kickbacks
        if self.durable:
            body["durable"] = True
        return body

    def children(self) -> Sequence[Child]:
        """The nodes, with their needs, optional flag and ``when``."""
        out = []
        for key, node in self.nodes.items():
            fields: dict[str, Any] = {"needs": list(node.needs), "optional": node.optional}
            if node.when is not None:
                fields["when"] = node.when.describe()
            if node.accepts_kickback_to is not None:
                fields["accepts_kickback_to"] = list(node.accepts_kickback_to)
            if node.job.name != key:
                fields["job"] = node.job.name
            out.append(Child(key, node.job, fields))
        return out

    def conditions(self) -> Sequence[Condition]:
        """The nodes' ``when`` conditions."""
        return [n.when for n in self.nodes.values() if n.when is not None]

    async def run(self, ctx: Context) -> Outcome:
        """Run the nodes as they become ready, routing kickbacks."""
        if self.durable:
            if ctx.run.nodes is not None and ctx.run.checkpoints is not None:
                return await self._run_as_tasks(ctx, ctx.run.nodes)
            ctx.emit(
                EventType.DAG_IN_PROCESS,
                reason="no queue runs this dag (it is not a worker's loop task), "
                "so its nodes run in this process",
            )
        state = _DagRun(self)
        checkpoints = ctx.run.checkpoints
        # kickbacks used before a crash still count: a resumed run continues the tally
        state.kickbacks = int(checkpoints.extra(_kickbacks_key(ctx)) or 0) if checkpoints else 0
        try:
            while True:
                await self._launch(ctx, state)
                if not state.running:
                    break
                done, _ = await asyncio.wait(state.running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    key = state.running.pop(task, None)
                    if key is None or task.cancelled():
                        continue  # reset by a kickback routed a moment ago: its result is stale
                    outcome = task.result()
                    state.usage += outcome.usage
                    settled = await self._routed(ctx, state, key, outcome)
                    if settled is not None:
                        self._settle(ctx, state, key, settled)
        finally:
            await _cancel(list(state.running))
        return self._outcome(state.plan, state.outcomes, state.usage)

    # -- durable: the nodes run as child tasks -----------------------------------------

    async def _run_as_tasks(self, ctx: Context, dispatcher: durable.NodeDispatcher) -> Outcome:
        """Dispatch each node as a child task once its needs are met, until the outcome.

        A turn restores the nodes earlier turns took (from the checkpoint), takes the
        outcome of every child that finished, and dispatches every node that became
        ready, again and again while children finish. Once only active children are
        left it ends ``paused`` (:data:`~loops.flow.durable.WAITING_CHILDREN`): the
        worker completes the task ``waiting_children``, the queue wakes it as soon as
        any child finishes, and the next turn resumes here. A node whose child ended
        failed, blocked or cancelled (its worker could not run it) ends ``error``.

        A kickback re-runs its target and everything downstream; a child still running
        an older attempt of one of those nodes is cancelled (its outcome is stale) and
        the node runs again as a new attempt once its needs are met.
        """
        book = durable.Book.load(ctx)
        state = _DagRun(self)
        state.kickbacks = book.kickbacks
        for name, record in book.reviews.items():
            review = checkpoint.verdict_from_record(record)
            if review is not None:
                state.reviews[name] = review
        await self._cancel_abandoned(ctx, book, dispatcher)
        # what earlier turns announced is in the timeline, unless the last one died
        recorded = ctx.run.checkpoints is None or not ctx.run.checkpoints.interrupted
        running: dict[str, tuple[int, int]] = {}  # node -> (child task, attempt)
        while True:
            running.update(await self._dispatch(ctx, state, book, dispatcher, recorded))
            if not running:
                break
            outcomes = {key: await dispatcher.outcome(tid) for key, (tid, _) in running.items()}
            finished = {key: found for key, found in outcomes.items() if found is not None}
            if not finished:
                await book.save(ctx)
                nodes = ", ".join(f"{k} (task {t})" for k, (t, _) in running.items())
                return Outcome(
                    OutcomeStatus.PAUSED,
                    f"{durable.WAITING_CHILDREN}: dag {self.name} runs {nodes} as child tasks",
                    {"waiting_children": [tid for tid, _ in running.values()]},
                    state.usage,
                )
            for key, found in finished.items():
                child = running.pop(key)
                if state.plan.states[key] is NodeState.RUNNING:
                    await self._take(ctx, state, book, key, child, found)
                else:  # reset by a kickback taken a moment ago: this outcome is stale
                    book.take(key, child[1])
            for key in [k for k in running if state.plan.states[k] is not NodeState.RUNNING]:
                tid, attempt = running.pop(key)  # a kickback re-runs a node still running
                book.take(key, attempt)
                book.abandoned.append(tid)
            book.kickbacks = state.kickbacks
            book.reviews = {k: checkpoint.verdict_record(v) for k, v in state.reviews.items()}
            await book.save(ctx)
            await self._cancel_abandoned(ctx, book, dispatcher)
        return self._outcome(state.plan, state.outcomes, state.usage)

    async def _cancel_abandoned(
        self, ctx: Context, book: durable.Book, dispatcher: durable.NodeDispatcher
    ) -> None:
        """Cancel the children of node attempts a kickback made stale (noted in the
        book first, so a turn that crashes in between cancels them next time)."""
        if not book.abandoned:
            return
        for tid in book.abandoned:
            await dispatcher.cancel(
                tid, reason=f"dag {self.name}: a kickback re-runs this node as a new attempt"
            )
        book.abandoned = []
        await book.save(ctx)

    async def _dispatch(
        self,
        ctx: Context,
        state: _DagRun,
        book: durable.Book,
        dispatcher: durable.NodeDispatcher,
        recorded: bool,
    ) -> dict[str, tuple[int, int]]:
        """Start the ready nodes: restored from the checkpoint, found running since an
        earlier turn, or dispatched as a child task each (node -> its child task and
        attempt).

        The dag runs again on every turn (each wake), so only what this turn decides
        is announced: a node's start and dispatch once per attempt, its end once.
        Unless ``recorded`` (the earlier turns' events reached the timeline), the
        nodes earlier turns started or settled are announced again.
        """
        started: dict[str, tuple[int, int]] = {}
        plan = state.plan
        checkpoints = ctx.run.checkpoints
        while plan.has_ready() and (self.concurrency is None or plan.running < self.concurrency):
            key = plan.pop_ready()
            node = self.nodes[key]
            upstream = {n: state.outcomes[n] for n in node.needs if n in state.outcomes}
            last = upstream[node.needs[0]] if len(node.needs) == 1 and upstream else None
            nctx = ctx.child(key, upstream=upstream, graph=self._position(key))
            restored = checkpoints.finished(nctx.key) if checkpoints is not None else None
            if restored is not None:
                self._restore_node(ctx, state, key, *restored, recorded=recorded)
                continue
            running = book.running(key)
            if running is not None:  # its `when` was met and its start recorded then
                plan.start(key)
                if not recorded:
                    task_id, attempt = running
                    nctx.emit(EventType.NODE_STARTED, node=key, needs=list(node.needs))
                    nctx.emit(EventType.NODE_DISPATCHED, node=key, task_id=task_id, attempt=attempt)
                started[key] = running
                continue
            if not await self._start(ctx, state, key, nctx, last):
                if checkpoints is not None:  # skipped for good: `when` is not asked again
                    await checkpoints.finish(nctx.key, state.outcomes[key])
                continue
            attempt = book.attempt(key)
            await book.save(ctx)  # the attempt is part of the child's idempotency key
            order = durable.NodeOrder(
                run_id=ctx.run_id,
                path=nctx.path,
                trail=nctx.trail,
                iteration=nctx.iteration,
                attempt=attempt,
                upstream=upstream,
                last=node.needs[0] if len(node.needs) == 1 and upstream else None,
                review=state.reviews.get(key, ctx.last_review),
                graph=self._position(key),
            )
            task_id = await dispatcher.dispatch(order)
            nctx.emit(EventType.NODE_DISPATCHED, node=key, task_id=task_id, attempt=attempt)
            book.dispatch(key, attempt, task_id)
            started[key] = (task_id, attempt)
        return started

    def _restore_node(
        self,
        ctx: Context,
        state: _DagRun,
        key: str,
        outcome: Outcome,
        attempt: int,
        *,
        recorded: bool,
    ) -> None:
        """A node an earlier turn settled: its outcome, its spend charged again.

        Silent when ``recorded``: the turn that settled it recorded its events
        (``run.resumed`` lists what each turn restores).
        """
        if not recorded and outcome.status is not OutcomeStatus.SKIPPED:
            self._announce_restored(ctx, state, key, outcome, attempt)
        ctx.ledger.charge(outcome.usage)
        state.usage += outcome.usage
        self._settle(ctx, state, key, outcome, quiet=recorded)

    def _announce_restored(
        self, ctx: Context, state: _DagRun, key: str, outcome: Outcome, attempt: int
    ) -> None:
        """Record a restored node's start and restore (its settling records its end)."""
        job = self.nodes[key].job
        state.plan.start(key)
        nctx = ctx.child(key)
        nctx.emit(EventType.NODE_STARTED, node=key, needs=list(self.nodes[key].needs))
        nctx.emit(
            EventType.JOB_RESTORED,
            kind=job.kind,
            name=job.name,
            status=outcome.status.value,
            summary=outcome.summary,
            usage=outcome.usage.to_dict(),
            attempt=attempt,
        )

    async def _take(
        self,
        ctx: Context,
        state: _DagRun,
        book: durable.Book,
        key: str,
        child: tuple[int, int],
        outcome: Outcome,
    ) -> None:
        """Take a finished child's outcome: charge it, route its kickback or settle it."""
        task_id, attempt = child
        ctx.ledger.charge(outcome.usage)
        state.usage += outcome.usage
        book.take(key, attempt)
        state.reviews.pop(key, None)
        settled = await self._routed(ctx, state, key, outcome)
        if settled is None:
            return
        if ctx.run.checkpoints is not None:
            await ctx.run.checkpoints.finish(ctx.child(key).key, settled)
        self._settle(ctx, state, key, settled, task_id=task_id)

    def _position(self, key: str) -> GraphPosition:
        return GraphPosition(self.name, key, self.nodes[key].needs, tuple(self._dependents[key]))

    async def _launch(self, ctx: Context, state: _DagRun) -> None:
        plan = state.plan
        while plan.has_ready() and (self.concurrency is None or plan.running < self.concurrency):
            key = plan.pop_ready()
            node = self.nodes[key]
            upstream = {n: state.outcomes[n] for n in node.needs if n in state.outcomes}
            last = upstream[node.needs[0]] if len(node.needs) == 1 and upstream else None
            review = state.reviews.pop(key, ctx.last_review)
            nctx = ctx.child(
                key, upstream=upstream, last=last, last_review=review, graph=self._position(key)
            )
            if await self._start(ctx, state, key, nctx, last):
                state.running[asyncio.ensure_future(execute(node.job, nctx))] = key

    async def _start(
        self, ctx: Context, state: _DagRun, key: str, nctx: Context, last: Outcome | None
    ) -> bool:
        """Start node ``key`` unless its ``when`` is not met (it then settles as skipped)."""
        node = self.nodes[key]
        if node.when is not None:
            verdict = await evaluate(nctx, "when", node.when, last)
            state.usage += verdict.total_usage()
            if not verdict.met:
                skipped = Outcome(OutcomeStatus.SKIPPED, f"when not met: {verdict.reason}")
                self._settle(ctx, state, key, skipped)
                return False
        state.plan.start(key)
        nctx.emit(EventType.NODE_STARTED, node=key, needs=list(node.needs))
        return True

    async def _routed(
        self, ctx: Context, state: _DagRun, key: str, outcome: Outcome
    ) -> Outcome | None:
        """Route node ``key``'s kickback, if it asks for one; what is left to settle.

        Returns:
            ``None`` when the kickback was routed (the node runs again); else the
            outcome to settle: ``outcome`` itself, or marked with why its kickback
            was refused.
        """
        revision = outcome.revision
        if revision is None or revision.target is None:
            return outcome
        refusal = await self._route(ctx, state, key, outcome)
        if refusal is None:
            return None
        summary = f"{outcome.summary} (kickback refused: {refusal})"
        return Outcome(outcome.status, summary, outcome.data, outcome.usage)

    async def _route(self, ctx: Context, state: _DagRun, key: str, outcome: Outcome) -> str | None:
        """Route a kickback from node ``key``; ``None`` when accepted, else why it was refused."""
        revision = outcome.revision
        assert revision is not None and revision.target is not None
        target: str = revision.target
        findings = tuple(dataclasses.replace(f, source=f.source or key) for f in revision.findings)
        path = f"{ctx.path_text}/{key}"
        ctx.events.emit(
            EventType.REVISION_EMITTED,
            path,
            source=key,
            target=target,
            findings=[f.to_dict() for f in findings],
            reason=revision.reason,
        )
        for finding in findings:
            ctx.events.emit(
                EventType.SURFACING,
                path,
                source=finding.source,
                severity=finding.severity,
                reason=finding.text,
            )
        refusal = self.kickback_refusal(key, target, state.kickbacks)
        if refusal is not None:
            ctx.events.emit(
                EventType.REVISION_ROUTED,
                path,
                source=key,
                target=target,
                accepted=False,
                rerun=[],
                reason=refusal,
            )
            return refusal
        rerun = [target, *state.plan.downstream(target)]
        await _cancel([t for t, k in state.running.items() if k in rerun])
        state.running = {t: k for t, k in state.running.items() if k not in rerun}
        state.plan.reset(rerun)
        state.kickbacks += 1
        if ctx.run.checkpoints is not None:
            # counted first: a crash between the two saves never grants an extra kickback
            await ctx.run.checkpoints.put_extra(_kickbacks_key(ctx), state.kickbacks)
            await ctx.run.checkpoints.forget(ctx.child(name).key for name in rerun)
        review = Verdict(
            False,
            revision.reason,
            decided_by=key,
            kind="kickback",
            revision=RevisionRequest(target, findings, revision.reason),
        )
        for name in rerun:
            state.reviews[name] = review
            state.outcomes.pop(name, None)
        ctx.events.emit(
            EventType.REVISION_ROUTED,
            path,
            source=key,
            target=target,
            accepted=True,
            rerun=rerun,
            reason=f"kickback {state.kickbacks} of {self.max_kickbacks}",
        )
        return None

    def kickback_refusal(self, source: str, target: str, used: int) -> str | None:
        """Why a kickback from ``source`` to ``target`` may not run now, or ``None``."""
        if target not in self.nodes:
            return f"{target!r} is not a node of dag {self.name!r} (nodes: {', '.join(self.nodes)})"
        allowed = self.nodes[source].accepts_kickback_to
        if allowed is not None and target not in allowed:
            return f"node {source!r} may kick back only to: {', '.join(allowed) or 'none'}"
        if target != source and target not in self._upstream(source):
            return f"{target!r} is not upstream of {source!r}; a kickback goes to earlier work"
        if used >= self.max_kickbacks:
            return f"dag {self.name!r} allows max_kickbacks={self.max_kickbacks} and used {used}"
        return None

    def _upstream(self, key: str) -> set[str]:
        found: set[str] = set()
        stack = [key]
        while stack:
            for need in self.nodes[stack.pop()].needs:
                if need not in found:
                    found.add(need)
                    stack.append(need)
        return found

    def _settle(
        self,
        ctx: Context,
        state: _DagRun,
        key: str,
        outcome: Outcome,
        *,
        quiet: bool = False,
        **extra: Any,
    ) -> None:
        """Settle node ``key`` with ``outcome`` and block the dependents it fails;
        ``quiet`` when an earlier turn recorded that already."""
        plan = state.plan
        state.outcomes[key] = outcome
        was_running = plan.states[key] is NodeState.RUNNING
        blocked = plan.settle(key, _STATE_OF[outcome.status])
        path = f"{ctx.path_text}/{key}"
        if not quiet and was_running:
            ctx.events.emit(
                EventType.NODE_FINISHED,
                path,
                node=key,
                status=outcome.status.value,
                summary=outcome.summary,
                optional=self.nodes[key].optional,
                **extra,
            )
        elif not quiet:
            ctx.events.emit(EventType.NODE_SKIPPED, path, node=key, reason=outcome.summary)
        for name, via in blocked:
            if via == key:
                reason = f"needs {key}, which ended {outcome.status.value}"
            else:
                reason = f"needs {via}, which was skipped ({key} ended {outcome.status.value})"
            state.outcomes[name] = Outcome(OutcomeStatus.SKIPPED, reason)
            if not quiet:
                ctx.events.emit(
                    EventType.NODE_SKIPPED, f"{ctx.path_text}/{name}", node=name, reason=reason
                )

    def _outcome(
        self, plan: schedule.Schedule, outcomes: dict[str, Outcome], usage: Usage
    ) -> Outcome:
        data: dict[str, Any] = {"nodes": {k: plan.states[k].value for k in self.nodes}}
        failures = plan.required_failures()
        if failures:
            first = next(k for k in failures if plan.states[k] is NodeState.FAILED)
            skipped = [k for k in failures if plan.states[k] is NodeState.BLOCKED]
            tail = f"; skipped: {', '.join(skipped)}" if skipped else ""
            return Outcome(
                OutcomeStatus.FAIL,
                f"node {first} {outcomes[first].status.value}: {outcomes[first].summary}{tail}",
                data,
                usage,
            )
        unfinished = plan.unfinished()
        if unfinished:
            paused = [k for k in unfinished if plan.states[k] is NodeState.PAUSED]
            reason = outcomes[paused[0]].summary if paused else "nodes could not start"
            return Outcome(
                OutcomeStatus.PAUSED,
                # the status is not repeated: whoever shows the outcome says paused
                f"{reason} (not finished: {', '.join(unfinished)})",
                data,
                usage,
            )
        branches = [b for o in outcomes.values() for b in o.data.get("branches", ())]
        if branches:
            data["branches"] = branches
        counts: dict[str, int] = {}
        for state in plan.states.values():
            counts[state.value] = counts.get(state.value, 0) + 1
        text = ", ".join(f"{n} {s}" for s, n in counts.items())
        return Outcome(OutcomeStatus.PASS, f"{len(self.nodes)} nodes: {text}", data, usage)


def dag(
    *,
    name: str = "dag",
    nodes: Mapping[str, NodeLike],
    concurrency: int | None = None,
    max_kickbacks: int = 0,
    budget: Budget | None = None,
    isolation: Literal["worktree"] | None = None,
    land: LandMode = "merge",
    durable: bool = False,
) -> Job:
    """A graph of jobs run as their needs settle.

    Args:
        name: the dag's name (its path segment).
        nodes: node name -> a job, or ``{"job", "needs", "optional", "when"}``.
            ``when`` takes a condition or a plain ``(ctx) -> bool``.
        concurrency: at most this many nodes run at once (``None``: no bound).
        max_kickbacks: how many kickbacks (a node sending work back to an upstream
            node, which re-runs with its dependents) one run of the dag may route.
        budget: limits for the dag and everything it runs; crossing one pauses.
        isolation: ``"worktree"`` runs every node (unless ``isolate: False``) in its
            own git worktree; a node's work lands on the parent branch only when it
            passes, and a conflict fails the node naming the files.
        land: how isolated nodes' passing work comes back: ``"merge"`` (one merge
            commit on the parent branch) or ``"branch"`` (left on a review branch;
            the dag's outcome lists them under ``data["branches"]``).
        durable: run each node as a child task of the worker's loop task that runs
            the dag, so nodes run on any worker in parallel; the task waits in
            ``waiting_children`` without holding a worker, woken as each child
            finishes to dispatch the nodes whose needs are now met. Without a
            queue (``loop run FILE``) the nodes run in process, as a
            ``dag.in_process`` event says. The queue's ``QUEUE_MAX_CHILDREN_PER_TASK``
            must cover every node, plus one per node a kickback re-runs.

    Raises:
        ConstructionError: no nodes, an unknown need, a cycle, an unknown node key, a
            bad concurrency, isolation or land.
    """
    if not isinstance(name, str) or not name or "/" in name:
        raise errors.ConstructionError(f"dag name {name!r} must be a non-empty string without '/'")
    if not isinstance(nodes, Mapping) or not nodes:
        raise errors.ConstructionError(
            f"dag {name!r} needs nodes={{name: job, ...}} with at least one node"
        )
    for key in nodes:
        if not isinstance(key, str) or not key or "/" in key:
            raise errors.ConstructionError(
                f"dag {name!r}: node name {key!r} must be a non-empty string without '/'"
            )
    if concurrency is not None and (
        isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1
    ):
        raise errors.ConstructionError(
            f"dag {name!r}: concurrency={concurrency!r} must be a whole number >= 1 or None"
        )
    if budget is not None and not isinstance(budget, Budget):
        raise errors.ConstructionError(f"dag {name!r}: budget= takes budget(...), got {budget!r}")
    if isinstance(max_kickbacks, bool) or not isinstance(max_kickbacks, int) or max_kickbacks < 0:
        raise errors.ConstructionError(
            f"dag {name!r}: max_kickbacks={max_kickbacks!r} must be a whole number >= 0"
        )
    if not isinstance(durable, bool):
        raise errors.ConstructionError(f"dag {name!r}: durable={durable!r} must be True or False")
    if isolation not in (None, "worktree"):
        raise errors.ConstructionError(
            f"dag {name!r}: isolation={isolation!r} must be None or 'worktree'"
        )
    mode = isolation_mod.check_land(land, where=f"dag {name!r}")
    built = {key: _node(name, key, value) for key, value in nodes.items()}
    for key, node in built.items():
        wanted = node.isolate if node.isolate is not None else isolation == "worktree"
        if wanted:
            built[key] = dataclasses.replace(node, job=isolation_mod.isolated(node.job, land=mode))
    schedule.check_graph(name, {k: n.needs for k, n in built.items()})
    job = Dag(
        name=name,
        nodes=built,
        concurrency=concurrency,
        max_kickbacks=max_kickbacks,
        budget=budget,
        durable=durable,
    )
    _check_kickbacks(job)
    return job


def _check_kickbacks(job: Dag) -> None:
    """Static kickback checks: named targets exist, gates' targets are allowed."""
    for key, node in job.nodes.items():
        for target in node.accepts_kickback_to or ():
            if target not in job.nodes:
                raise errors.ConstructionError(
                    f"dag {job.name!r} node {key!r}: accepts_kickback_to names {target!r}, "
                    f"which is not a node (nodes: {', '.join(job.nodes)})"
                )
        kickback_to = getattr(node.job, "kickback_to", None)
        if not isinstance(kickback_to, str):
            continue
        target = kickback_to
        refusal = job.kickback_refusal(key, target, used=0)
        if refusal is not None:
            raise errors.ConstructionError(
                f"dag {job.name!r} node {key!r} kicks back to {target!r}, but {refusal}"
            )


def _keyed(jobs: Sequence[Job | Callable[..., Any]], slot: str) -> list[tuple[str, Job]]:
    out: list[tuple[str, Job]] = []
    seen: dict[str, int] = {}
    for value in jobs:
        job = as_job(value, slot=slot)
        count = seen.get(job.name, 0) + 1
        seen[job.name] = count
        out.append((job.name if count == 1 else f"{job.name}-{count}", job))
    return out


def sequence(*jobs: Job | Callable[..., Any], name: str | None = None) -> Job:
    """Run ``jobs`` one after another (a dag where each needs the previous).

    Nodes are named after their jobs (``-2``, ``-3`` added to repeats). A failed job
    skips the rest.
    """
    if not jobs:
        raise errors.ConstructionError("sequence() needs at least one job")
    keyed = _keyed(jobs, "sequence item")
    nodes: dict[str, NodeLike] = {}
    previous: str | None = None
    for key, job in keyed:
        nodes[key] = Node(job, needs=() if previous is None else (previous,))
        previous = key
    return dag(name=name or "sequence", nodes=nodes)


def parallel(
    *jobs: Job | Callable[..., Any], name: str | None = None, concurrency: int | None = None
) -> Job:
    """Run ``jobs`` concurrently (a dag without needs); fails if any fails."""
    if not jobs:
        raise errors.ConstructionError("parallel() needs at least one job")
    return dag(
        name=name or "parallel", nodes=dict(_keyed(jobs, "parallel item")), concurrency=concurrency
    )
