"""Durable dags: each node of ``dag(..., durable=True)`` runs as a child task.

The dag still decides everything (readiness, ``when``, kickbacks, its outcome) in the
run of the task that runs it; only the nodes' jobs run elsewhere. This module holds
what both sides share:

- :class:`NodeOrder`: what a child task carries (the loop file, the node's path and
  place in the run, its upstream outcomes and review), as JSON in the task's prompt,
  so a child is complete the moment it exists;
- :class:`NodeDispatcher`: how a dag creates child tasks and reads their outcomes
  (the worker implements it over its queue client; without one, a durable dag runs
  its nodes in process);
- the node's outcome as the child task's result (:func:`result_text`,
  :func:`outcome_from_result`), and :func:`find_job`, which finds a node's job by path.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from loops import errors
from loops.flow import checkpoint
from loops.flow.context import Context, GraphPosition
from loops.flow.jobs import Job
from loops.flow.outcome import Outcome, Verdict

#: task type of a child task that runs one node of a durable dag
NODE_TASK_TYPE = "loop-node"
#: what the summary of a dag waiting for its nodes' child tasks starts with
WAITING_CHILDREN = "waiting_children"


@dataclasses.dataclass(frozen=True, slots=True)
class NodeOrder:
    """One node of a durable dag, as a child task runs it.

    Attributes:
        run_id: the run the node belongs to (the parent task's run).
        path: the node's path in the job tree, root first.
        trail: the iterations of the loops around it (part of its checkpoint key).
        iteration: the enclosing loop's iteration (0 outside loops).
        attempt: the node's attempt (1, then one more per kickback or retry).
        upstream: the outcomes of its direct dependencies, by node name.
        last: the dependency whose outcome is the node's ``ctx.last``, if any.
        review: the kickback review the node re-runs with, if any.
        graph: where the node sits in its dag.
    """

    run_id: str
    path: tuple[str, ...]
    trail: tuple[int, ...]
    iteration: int
    attempt: int
    upstream: Mapping[str, Outcome]
    last: str | None
    review: Verdict | None
    graph: GraphPosition

    @property
    def key(self) -> str:
        """The node's checkpoint key."""
        return checkpoint.job_key(self.path, self.trail)

    @property
    def path_text(self) -> str:
        """The node's path, slash-separated."""
        return "/".join(self.path)

    def place(self, root: Context) -> Context:
        """``root`` moved to the node's place: path, iteration, upstream and review."""
        return root.evolve(
            path=self.path,
            trail=self.trail,
            iteration=self.iteration,
            upstream=dict(self.upstream),
            last=self.upstream.get(self.last) if self.last is not None else None,
            last_review=self.review,
            graph=self.graph,
        )

    def to_json(self, loop_file: str) -> str:
        """The order as a child task's prompt, with the loop file that holds the node."""
        return json.dumps(
            {
                "loop_node": 1,
                "loop_file": loop_file,
                "run_id": self.run_id,
                "path": list(self.path),
                "trail": list(self.trail),
                "iteration": self.iteration,
                "attempt": self.attempt,
                "upstream": {k: checkpoint.outcome_record(o) for k, o in self.upstream.items()},
                "last": self.last,
                "review": checkpoint.verdict_record(self.review),
                "graph": dataclasses.asdict(self.graph),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> tuple[str, NodeOrder]:
        """Read back :meth:`to_json`: the loop file and the order.

        Raises:
            InputError: ``text`` is not a node order.
        """
        try:
            body = json.loads(text)
            if not isinstance(body, dict) or body.get("loop_node") != 1:
                raise ValueError("not a loop-node order")
            graph = body["graph"]
            return str(body["loop_file"]), cls(
                run_id=str(body["run_id"]),
                path=tuple(str(p) for p in body["path"]),
                trail=tuple(int(i) for i in body["trail"]),
                iteration=int(body["iteration"]),
                attempt=int(body["attempt"]),
                upstream={
                    str(k): checkpoint.outcome_from_record(v) for k, v in body["upstream"].items()
                },
                last=body.get("last"),
                review=checkpoint.verdict_from_record(body.get("review")),
                graph=GraphPosition(
                    str(graph["dag"]),
                    str(graph["node"]),
                    tuple(graph["needs"]),
                    tuple(graph["dependents"]),
                ),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise errors.InputError(
                f"a {NODE_TASK_TYPE} task's prompt must be the node order its dag wrote "
                f"(JSON); this one cannot be read: {exc}"
            ) from exc


class NodeDispatcher(Protocol):
    """Creates a durable dag's child tasks and reads what they ended with."""

    async def dispatch(self, order: NodeOrder) -> int:
        """The id of the child task running ``order``, created unless it exists.

        Idempotent: the same node and attempt of the same run is one task, however
        often this is called (after a crash, on every resume).

        Raises:
            ConfigError: the queue refused the child (its depth or children limit),
                naming the setting to raise.
        """
        ...

    async def cancel(self, task_id: int, *, reason: str) -> None:
        """Cancel the child task ``task_id`` if it is still active (a kickback made the
        node attempt it runs stale); a finished one is left as it is."""
        ...

    async def outcome(self, task_id: int) -> Outcome | None:
        """The node's outcome once its child task finished, ``None`` while it is active.

        A child that finished ``done`` gives the outcome it stored in its result; one
        that failed, was blocked or cancelled gives an ``error`` outcome naming it.
        """
        ...


def result_text(outcome: Outcome) -> str:
    """A node's outcome as its child task's result (JSON)."""
    return json.dumps({"outcome": checkpoint.outcome_record(outcome)})


def outcome_from_result(text: str | None) -> Outcome:
    """Read back :func:`result_text`.

    Raises:
        InputError: ``text`` is not a node's result.
    """
    try:
        body = json.loads(text or "")
        return checkpoint.outcome_from_record(body["outcome"])
    except (ValueError, KeyError, TypeError) as exc:
        raise errors.InputError(f"not a dag node's result: {(text or '')[:200]!r}") from exc


def find_job(root: Job, path: Sequence[str]) -> Job:
    """The job at ``path`` in the tree under ``root`` (``path[0]`` is the root's name).

    Raises:
        InputError: no job is at ``path`` (the loop file changed since the dag ran).
    """
    if not path or path[0] != root.name:
        raise errors.InputError(
            f"no job at {'/'.join(path)!r}: the loop file's root job is {root.name!r}"
        )
    job = root
    for depth, segment in enumerate(path[1:], start=1):
        found = {child.segment: child.job for child in job.children()}
        if segment not in found:
            raise errors.InputError(
                f"no job at {'/'.join(path)!r}: {'/'.join(path[:depth])!r} has "
                f"{', '.join(found) or 'no children'}; was the loop file changed?"
            )
        job = found[segment]
    return job


def book_key(ctx: Context) -> str:
    """The checkpoint ``extra`` key of a durable dag's bookkeeping."""
    return f"dag:{ctx.key}"


@dataclasses.dataclass(slots=True)
class Book:
    """What a durable dag keeps in the run's checkpoint across its turns.

    Attributes:
        attempts: node -> the attempt of its latest child task.
        taken: ``node#attempt`` of the children whose outcome the dag already took
            (a node taken and no longer recorded, after a kickback or a retry, runs
            again as the next attempt).
        kickbacks: kickbacks routed so far (not reset by a resume).
        reviews: node -> the kickback review its next attempt runs with.
        abandoned: child tasks of node attempts a kickback made stale, to cancel.
        dispatched: ``node#attempt`` -> its child task, for the attempts dispatched
            and not taken yet: a later turn finds them running without dispatching
            (and announcing) them again.
    """

    attempts: dict[str, int] = dataclasses.field(default_factory=dict)
    taken: list[str] = dataclasses.field(default_factory=list)
    kickbacks: int = 0
    reviews: dict[str, Any] = dataclasses.field(default_factory=dict)
    abandoned: list[int] = dataclasses.field(default_factory=list)
    dispatched: dict[str, int] = dataclasses.field(default_factory=dict)

    @classmethod
    def load(cls, ctx: Context) -> Book:
        """The dag's book in the run's checkpoint (an empty one at first)."""
        saved = ctx.run.checkpoints.extra(book_key(ctx)) if ctx.run.checkpoints else None
        if not isinstance(saved, dict):
            return cls()
        return cls(
            attempts={str(k): int(v) for k, v in (saved.get("attempts") or {}).items()},
            taken=[str(t) for t in saved.get("taken") or ()],
            kickbacks=int(saved.get("kickbacks") or 0),
            reviews=dict(saved.get("reviews") or {}),
            abandoned=[int(t) for t in saved.get("abandoned") or ()],
            dispatched={str(k): int(v) for k, v in (saved.get("dispatched") or {}).items()},
        )

    async def save(self, ctx: Context) -> None:
        """Store the book in the run's checkpoint."""
        if ctx.run.checkpoints is not None:
            await ctx.run.checkpoints.put_extra(book_key(ctx), dataclasses.asdict(self))

    def attempt(self, node: str) -> int:
        """The attempt of ``node`` to run now: the next one once the last was taken."""
        current = self.attempts.get(node, 1)
        if f"{node}#{current}" in self.taken:
            current += 1
        self.attempts[node] = current
        return current

    def running(self, node: str) -> tuple[int, int] | None:
        """The child task and attempt of ``node`` an earlier turn dispatched and whose
        outcome is not taken yet, or ``None``."""
        attempt = self.attempts.get(node)
        if attempt is None:
            return None
        task_id = self.dispatched.get(f"{node}#{attempt}")
        return None if task_id is None else (task_id, attempt)

    def dispatch(self, node: str, attempt: int, task_id: int) -> None:
        """Note that ``node``'s ``attempt`` runs as child task ``task_id``."""
        self.dispatched[f"{node}#{attempt}"] = task_id

    def take(self, node: str, attempt: int) -> None:
        """Note that the outcome of ``node``'s ``attempt`` was taken."""
        mark = f"{node}#{attempt}"
        self.dispatched.pop(mark, None)
        if mark not in self.taken:
            self.taken.append(mark)
