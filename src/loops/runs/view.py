"""A run's live picture, folded from its event stream: one reducer for every reader.

:class:`RunView` consumes events (as their flat JSON form) one at a time and keeps
what a person or a supervisor wants to see: the tree of loops and dag nodes with their
state, iteration and last verdict; usage against each budget; the last gate verdict
and outcome; and each node's recent agent output in a bounded buffer. The run registry
folds it into the live ``state.json``; the TUI draws it. It does no I/O.

It is deliberately a mutable accumulator (not a frozen value): it is fed thousands of
events a second, and copying the tree per event would cost more than drawing it.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

#: lines of agent output kept per node (older lines are dropped)
OUTPUT_LINES_PER_NODE = 400
#: characters kept of one output line
OUTPUT_LINE_CHARS = 2000


class NodeState(enum.StrEnum):
    """Where a node of the tree stands."""

    PENDING = "pending"
    """Seen in the tree, not started."""
    RUNNING = "running"
    """Started and not finished."""
    PASS = "pass"
    """Finished with ``pass``."""
    FAIL = "fail"
    """Finished with ``fail``."""
    ERROR = "error"
    """Finished with ``error``."""
    PAUSED = "paused"
    """Finished with ``paused`` (a budget ran out)."""
    SKIPPED = "skipped"
    """Will not run, or finished as skipped."""


@dataclasses.dataclass(frozen=True, slots=True)
class OutputLine:
    """One line of a node's live output.

    Attributes:
        seq: increasing number within the whole view (to draw only what is new).
        kind: ``text`` (agent text), ``tool`` (a tool call), ``result`` (a tool's
            answer), ``info`` (turn boundaries, verdicts).
        text: the line.
    """

    seq: int
    kind: str
    text: str


@dataclasses.dataclass(slots=True)
class VerdictView:
    """A gate's decision, as shown: which slot, met or not, confidence, reason."""

    path: str
    slot: str
    met: bool
    reason: str
    confidence: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form used in ``state.json``."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(slots=True)
class NodeView:
    """One node of the tree: a loop, dag, dag node or leaf job, keyed by its path."""

    path: str
    name: str
    kind: str = ""
    state: NodeState = NodeState.PENDING
    iteration: int | None = None
    max_iterations: int | None = None
    verdict: VerdictView | None = None
    summary: str = ""
    tokens: int = 0
    cost_usd: float = 0.0
    children: list[str] = dataclasses.field(default_factory=list)
    output: deque[OutputLine] = dataclasses.field(
        default_factory=lambda: deque(maxlen=OUTPUT_LINES_PER_NODE)
    )

    @property
    def depth(self) -> int:
        """How deep in the tree (the root is 0)."""
        return self.path.count("/")

    def to_dict(self) -> dict[str, Any]:
        """The JSON form used in ``state.json`` (without the output buffer)."""
        return {
            "path": self.path,
            "name": self.name,
            "kind": self.kind,
            "state": self.state.value,
            "iteration": self.iteration,
            "max": self.max_iterations,
            "verdict": self.verdict.to_dict() if self.verdict else None,
            "summary": self.summary,
            "tokens": self.tokens,
            "cost_usd": round(self.cost_usd, 6),
        }


@dataclasses.dataclass(slots=True)
class BudgetView:
    """Spending against one budget scope: ``spent`` and ``limits`` as budget events carry."""

    scope: str
    spent: dict[str, Any]
    limits: dict[str, Any]
    exceeded: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form used in ``state.json``."""
        return dataclasses.asdict(self)


def _short(text: object, limit: int = OUTPUT_LINE_CHARS) -> str:
    flat = str(text)
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _tokens(usage: Mapping[str, Any] | None) -> tuple[int, float]:
    if not usage:
        return 0, 0.0
    tokens = int(usage.get("input_tokens") or 0) + int(usage.get("output_tokens") or 0)
    return tokens, float(usage.get("cost_usd") or 0.0)


class RunView:
    """The live picture of one run, folded from its events by :meth:`apply`.

    Attributes:
        run_id: the run's id (from the first event).
        title: the root job's name.
        status: ``running`` until ``run.finished``, then the root status.
        reason: why the run ended (empty while it runs).
        started_ts / finished_ts / last_ts: ISO times of the first, final and last event.
        nodes: every node by path; ``order`` keeps first-seen order.
        budgets: spending per budgeted scope.
        last_verdict / last_outcome: the latest gate verdict and job completion.
        tokens / cost_usd: usage of every finished agent turn.
        events_seen: events applied so far.
        active_path: the node that most recently produced output.
        seq: the number of the latest output line.
    """

    def __init__(self) -> None:
        self.run_id = ""
        self.title = ""
        self.status = "running"
        self.reason = ""
        self.started_ts = ""
        self.finished_ts = ""
        self.last_ts = ""
        self.nodes: dict[str, NodeView] = {}
        self.order: list[str] = []
        self.roots: list[str] = []
        self.budgets: dict[str, BudgetView] = {}
        self.last_verdict: VerdictView | None = None
        self.last_outcome: dict[str, Any] | None = None
        self.tokens = 0
        self.cost_usd = 0.0
        self.events_seen = 0
        self.active_path = ""
        self.seq = 0
        self.duration_s: float | None = None

    # -- the reducer ---------------------------------------------------------------

    def apply(self, event: Mapping[str, Any]) -> None:
        """Fold one event (its flat JSON form) into the view; unknown types only count."""
        self.events_seen += 1
        ts = str(event.get("ts", ""))
        self.last_ts = ts or self.last_ts
        if not self.run_id:
            self.run_id = str(event.get("run_id", ""))
        handler = _HANDLERS.get(str(event.get("type")))
        if handler is not None:
            handler(self, event, str(event.get("path", "")))

    def node(self, path: str) -> NodeView:
        """The node at ``path``, created (with its ancestors) when first seen."""
        found = self.nodes.get(path)
        if found is not None:
            return found
        parent_path, _, name = path.rpartition("/")
        node = NodeView(path=path, name=name or path)
        self.nodes[path] = node
        self.order.append(path)
        if parent_path:
            self.node(parent_path).children.append(path)
        else:
            self.roots.append(path)
        return node

    def seed(self, shape: Mapping[str, Any], parent: str = "") -> None:
        """Add the job tree's nodes as ``pending`` before they run (``describe --json`` form).

        Paths follow the tree's names, as the events' paths do; a node the run never
        reaches stays pending, so the UI shows the whole plan from the start.
        """
        name = str(shape.get("name") or "")
        if not name:
            return
        path = f"{parent}/{name}" if parent else name
        node = self.node(path)
        node.kind = node.kind or str(shape.get("kind") or "")
        maximum = shape.get("max")
        if isinstance(maximum, int) and node.max_iterations is None:
            node.max_iterations = maximum
        for child in shape.get("children") or ():
            if isinstance(child, Mapping):
                self.seed(child, path)

    def add_output(self, path: str, kind: str, text: str) -> None:
        """Append output lines (one per line of ``text``) to the node at ``path``."""
        node = self.node(path)
        for line in text.splitlines() or [""]:
            self.seq += 1
            node.output.append(OutputLine(self.seq, kind, _short(line)))
        self.active_path = path

    # -- reading -------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        """Whether ``run.finished`` has been seen."""
        return self.status != "running"

    def iteration(self) -> tuple[int | None, int | None]:
        """The iteration and max of the outermost loop that has started one."""
        for path in self.order:
            node = self.nodes[path]
            if node.iteration is not None:
                return node.iteration, node.max_iterations
        return None, None

    def summary(self) -> dict[str, Any]:
        """The small JSON form written to ``state.json``: what ``loop list`` needs."""
        iteration, maximum = self.iteration()
        return {
            "run_id": self.run_id,
            "title": self.title,
            "status": self.status,
            "reason": self.reason,
            "started_ts": self.started_ts,
            "finished_ts": self.finished_ts,
            "last_ts": self.last_ts,
            "iteration": iteration,
            "max": maximum,
            "tokens": self.tokens,
            "cost_usd": round(self.cost_usd, 6),
            "duration_s": self.duration_s,
            "events": self.events_seen,
        }

    def detail(self) -> dict[str, Any]:
        """The rest, written to ``tree.json``: the tree, budgets, last verdict and outcome."""
        return {
            "last_verdict": self.last_verdict.to_dict() if self.last_verdict else None,
            "last_outcome": self.last_outcome,
            "budgets": [b.to_dict() for b in self.budgets.values()],
            "nodes": [self.nodes[p].to_dict() for p in self.order],
        }


# -- one small function per event type ---------------------------------------------


def _run_started(view: RunView, e: Mapping[str, Any], path: str) -> None:
    # a title given up front (a prompt run's prompt) says more than the root job's name
    view.title = view.title or str(e.get("name") or path)
    view.run_id = str(e.get("run_id") or view.run_id)
    view.started_ts = str(e.get("ts", ""))
    # a run that starts again (a prompt run's next attempt) is running again
    view.status, view.reason, view.finished_ts, view.duration_s = "running", "", "", None
    shape = e.get("shape")
    if isinstance(shape, Mapping):
        view.seed(shape)
    view.node(path).kind = str(e.get("kind") or view.node(path).kind)


def _run_finished(view: RunView, e: Mapping[str, Any], path: str) -> None:
    view.status = str(e.get("status") or "error")
    view.reason = str(e.get("reason") or "")
    view.finished_ts = str(e.get("ts", ""))
    duration = e.get("duration_s")
    view.duration_s = float(duration) if isinstance(duration, int | float) else None
    tokens, cost = _tokens(e.get("usage"))
    view.tokens, view.cost_usd = max(view.tokens, tokens), max(view.cost_usd, cost)
    for node in view.nodes.values():
        if node.state is NodeState.RUNNING:
            node.state = NodeState.ERROR if view.status == "error" else NodeState.SKIPPED


def _job_started(view: RunView, e: Mapping[str, Any], path: str) -> None:
    node = view.node(path)
    node.kind = str(e.get("kind") or node.kind)
    node.state = NodeState.RUNNING


def _job_finished(view: RunView, e: Mapping[str, Any], path: str) -> None:
    node = view.node(path)
    status = str(e.get("status") or "error")
    node.state = NodeState(status) if status in NodeState.__members__.values() else NodeState.ERROR
    node.summary = str(e.get("summary") or "")
    tokens, cost = _tokens(e.get("usage"))
    node.tokens, node.cost_usd = max(node.tokens, tokens), max(node.cost_usd, cost)
    view.last_outcome = {
        "path": path,
        "kind": node.kind,
        "status": status,
        "summary": node.summary,
        "ts": str(e.get("ts", "")),
    }


def _node_skipped(view: RunView, e: Mapping[str, Any], path: str) -> None:
    node = view.node(path)
    node.state = NodeState.SKIPPED
    node.summary = str(e.get("reason") or "")


def _iteration_started(view: RunView, e: Mapping[str, Any], path: str) -> None:
    node = view.node(path)
    iteration, maximum = e.get("iteration"), e.get("max")
    node.iteration = iteration if isinstance(iteration, int) else node.iteration
    node.max_iterations = maximum if isinstance(maximum, int) else node.max_iterations
    view.add_output(path, "info", f"── iteration {iteration}/{maximum} ──")


def _verdict(view: RunView, e: Mapping[str, Any], path: str) -> None:
    confidence = e.get("confidence")
    verdict = VerdictView(
        path=path,
        slot=str(e.get("slot") or ("review" if e.get("type") == "review" else "gate")),
        met=bool(e.get("met")),
        reason=str(e.get("reason") or ""),
        confidence=float(confidence) if isinstance(confidence, int | float) else None,
    )
    if verdict.slot not in ("when", "start"):
        view.node(path).verdict = verdict
        view.last_verdict = verdict
    state = "met" if verdict.met else "not met"
    view.add_output(path, "info", f"{verdict.slot}: {state}: {verdict.reason}")


def _agent_started(view: RunView, e: Mapping[str, Any], path: str) -> None:
    view.add_output(path, "info", f"── {e.get('role')} turn on {e.get('engine')} ──")


def _agent_text(view: RunView, e: Mapping[str, Any], path: str) -> None:
    view.add_output(path, "text", str(e.get("text") or ""))


def _tool_use(view: RunView, e: Mapping[str, Any], path: str) -> None:
    args = json.dumps(e.get("input"), ensure_ascii=False, default=str)
    view.add_output(path, "tool", f"→ {e.get('tool')} {_short(args, 300)}")


def _tool_result(view: RunView, e: Mapping[str, Any], path: str) -> None:
    output = " ".join(str(e.get("output") or "").split())
    mark = "✗" if e.get("is_error") else "←"
    view.add_output(path, "result", f"{mark} {_short(output, 300)}")


def _agent_finished(view: RunView, e: Mapping[str, Any], path: str) -> None:
    tokens, cost = _tokens(e.get("usage"))
    view.tokens += tokens
    view.cost_usd += cost
    parts = path.split("/")
    for depth in range(1, len(parts) + 1):
        node = view.node("/".join(parts[:depth]))
        node.tokens += tokens
        node.cost_usd += cost
    error = f": {e.get('error')}" if e.get("error") else ""
    view.add_output(path, "info", f"── turn {e.get('status')}{error} ({tokens} tok) ──")


def _budget(view: RunView, e: Mapping[str, Any], path: str) -> None:
    scope = str(e.get("path") or path)
    spent, limits = e.get("spent"), e.get("limits")
    current = view.budgets.get(scope)
    view.budgets[scope] = BudgetView(
        scope=scope,
        spent=dict(spent) if isinstance(spent, Mapping) else {},
        limits=dict(limits) if isinstance(limits, Mapping) else {},
        exceeded=current.exceeded if current else None,
    )


def _budget_exceeded(view: RunView, e: Mapping[str, Any], path: str) -> None:
    _budget(view, e, path)
    view.budgets[str(e.get("path") or path)].exceeded = str(e.get("reason") or "")
    view.add_output(path, "info", f"budget exceeded: {e.get('reason')}")


def _surfacing(view: RunView, e: Mapping[str, Any], path: str) -> None:
    view.add_output(path, "info", f"⚑ {e.get('severity')}: {e.get('reason')}")


def _revision_emitted(view: RunView, e: Mapping[str, Any], path: str) -> None:
    target = e.get("target") or "the next turn"
    view.add_output(path, "info", f"↺ revision for {target}: {e.get('reason')}")


def _revision_routed(view: RunView, e: Mapping[str, Any], path: str) -> None:
    verdict = "routed to" if e.get("accepted") else "refused for"
    view.add_output(path, "info", f"↪ revision {verdict} {e.get('target')}: {e.get('reason')}")


def _approval_requested(view: RunView, e: Mapping[str, Any], path: str) -> None:
    view.add_output(path, "info", f"? waiting for approval: {e.get('question')}")


_HANDLERS: Mapping[str, Callable[[RunView, Mapping[str, Any], str], None]] = {
    "run.started": _run_started,
    "run.finished": _run_finished,
    "job.started": _job_started,
    "job.finished": _job_finished,
    # a job an earlier attempt finished shows as it ended then
    "job.restored": _job_finished,
    "approval.requested": _approval_requested,
    "node.skipped": _node_skipped,
    "iteration.started": _iteration_started,
    "verdict": _verdict,
    "review": _verdict,
    "agent.started": _agent_started,
    "agent.text": _agent_text,
    "agent.tool_use": _tool_use,
    "agent.tool_result": _tool_result,
    "agent.finished": _agent_finished,
    "budget": _budget,
    "budget.exceeded": _budget_exceeded,
    "surfacing": _surfacing,
    "revision.emitted": _revision_emitted,
    "revision.routed": _revision_routed,
}
