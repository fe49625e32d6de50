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
from loops.flow import isolation as isolation_mod
from loops.flow import schedule
from loops.flow.budget import Budget
from loops.flow.conditions import Condition, as_condition
from loops.flow.context import Context
from loops.flow.events import EventType
from loops.flow.jobs import Child, Job, as_job, evaluate, execute
from loops.flow.outcome import Outcome, OutcomeStatus
from loops.flow.schedule import NodeState
from loops.git.worktrees import LandMode
from loops.usage import Usage

#: the keys a node given as a dict may have
NODE_KEYS = ("job", "needs", "optional", "when", "isolate")

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
        isolate: run the node in its own git worktree (``None``: as the dag's
            ``isolation`` says).
    """

    job: Job
    needs: tuple[str, ...] = ()
    optional: bool = False
    when: Condition | None = None
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
    isolate = value.get("isolate")
    if isolate is not None and not isinstance(isolate, bool):
        raise errors.ConstructionError(f"{where}: isolate={isolate!r} must be True or False")
    return Node(
        job=as_job(value["job"], slot=where),
        needs=tuple(needs),
        optional=optional,
        when=as_condition(value.get("when"), slot=f"{where} when", unary=True),
        isolate=isolate,
    )


class Dag(Job):
    """A graph of jobs (see the module docstring); build it with :func:`dag`."""

    kind: ClassVar[str] = "dag"

    def __init__(
        self,
        *,
        name: str,
        nodes: Mapping[str, Node],
        concurrency: int | None,
        budget: Budget | None,
    ) -> None:
        self.name = name
        self.nodes = dict(nodes)
        self.concurrency = concurrency
        self.budget = budget

    def fields(self) -> dict[str, Any]:
        """The concurrency bound."""
        return {} if self.concurrency is None else {"concurrency": self.concurrency}

    def children(self) -> Sequence[Child]:
        """The nodes, with their needs, optional flag and ``when``."""
        out = []
        for key, node in self.nodes.items():
            fields: dict[str, Any] = {"needs": list(node.needs), "optional": node.optional}
            if node.when is not None:
                fields["when"] = node.when.describe()
            if node.job.name != key:
                fields["job"] = node.job.name
            out.append(Child(key, node.job, fields))
        return out

    def conditions(self) -> Sequence[Condition]:
        """The nodes' ``when`` conditions."""
        return [n.when for n in self.nodes.values() if n.when is not None]

    async def run(self, ctx: Context) -> Outcome:
        """Run the nodes as they become ready."""
        plan = schedule.Schedule(
            {k: n.needs for k, n in self.nodes.items()},
            frozenset(k for k, n in self.nodes.items() if n.optional),
        )
        outcomes: dict[str, Outcome] = {}
        running: dict[asyncio.Task[Outcome], str] = {}
        usage = Usage()
        try:
            while True:
                usage += await self._launch(ctx, plan, outcomes, running)
                if not running:
                    break
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    key = running.pop(task)
                    outcome = task.result()
                    usage += outcome.usage
                    self._settle(ctx, plan, key, outcome, outcomes)
        finally:
            for task in running:
                task.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)
        return self._outcome(plan, outcomes, usage)

    async def _launch(
        self,
        ctx: Context,
        plan: schedule.Schedule,
        outcomes: dict[str, Outcome],
        running: dict[asyncio.Task[Outcome], str],
    ) -> Usage:
        usage = Usage()
        while plan.has_ready() and (self.concurrency is None or plan.running < self.concurrency):
            key = plan.pop_ready()
            node = self.nodes[key]
            upstream = {n: outcomes[n] for n in node.needs if n in outcomes}
            last = upstream[node.needs[0]] if len(node.needs) == 1 and upstream else None
            nctx = ctx.child(key, upstream=upstream, last=last)
            if node.when is not None:
                verdict = await evaluate(nctx, "when", node.when, last)
                usage += verdict.total_usage()
                if not verdict.met:
                    skipped = Outcome(OutcomeStatus.SKIPPED, f"when not met: {verdict.reason}")
                    self._settle(ctx, plan, key, skipped, outcomes)
                    continue
            plan.start(key)
            nctx.emit(EventType.NODE_STARTED, node=key, needs=list(node.needs))
            running[asyncio.ensure_future(execute(node.job, nctx))] = key
        return usage

    def _settle(
        self,
        ctx: Context,
        plan: schedule.Schedule,
        key: str,
        outcome: Outcome,
        outcomes: dict[str, Outcome],
    ) -> None:
        outcomes[key] = outcome
        was_running = plan.states[key] is NodeState.RUNNING
        blocked = plan.settle(key, _STATE_OF[outcome.status])
        path = f"{ctx.path_text}/{key}"
        if was_running:
            ctx.events.emit(
                EventType.NODE_FINISHED,
                path,
                node=key,
                status=outcome.status.value,
                summary=outcome.summary,
                optional=self.nodes[key].optional,
            )
        else:
            ctx.events.emit(EventType.NODE_SKIPPED, path, node=key, reason=outcome.summary)
        for name in blocked:
            reason = f"needs {key}, which ended {outcome.status.value}"
            outcomes[name] = Outcome(OutcomeStatus.SKIPPED, reason)
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
                f"paused: {reason} (not finished: {', '.join(unfinished)})",
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
    budget: Budget | None = None,
    isolation: Literal["worktree"] | None = None,
    land: LandMode = "merge",
) -> Job:
    """A graph of jobs run as their needs settle.

    Args:
        name: the dag's name (its path segment).
        nodes: node name -> a job, or ``{"job", "needs", "optional", "when"}``.
            ``when`` takes a condition or a plain ``(ctx) -> bool``.
        concurrency: at most this many nodes run at once (``None``: no bound).
        budget: limits for the dag and everything it runs; crossing one pauses.
        isolation: ``"worktree"`` runs every node (unless ``isolate: False``) in its
            own git worktree; a node's work lands on the parent branch only when it
            passes, and a conflict fails the node naming the files.
        land: how isolated nodes' passing work comes back: ``"merge"`` (one merge
            commit on the parent branch) or ``"branch"`` (left on a review branch;
            the dag's outcome lists them under ``data["branches"]``).

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
    return Dag(name=name, nodes=built, concurrency=concurrency, budget=budget)


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
