"""DAG readiness as plain state (no I/O): which nodes may run, which are blocked.

:func:`check_graph` validates a graph once (unknown needs, cycles). A
:class:`Schedule` then tracks node states incrementally, so settling a node costs
only its dependents, even for thousands of nodes.

Rules: a node is ready once each of its needs has *released* it. A passed node, a
skipped one (unmet ``when``) and an optional node in any settled state release their
dependents. A required node that failed or was blocked blocks its dependents
(transitively). A paused node neither releases nor blocks: its dependents wait.
"""

from __future__ import annotations

import enum
import heapq
from collections.abc import Mapping, Sequence

from loops import errors


class NodeState(enum.StrEnum):
    """Where a dag node stands in one run."""

    PENDING = "pending"
    """Waiting for its needs."""
    READY = "ready"
    """All needs released it; it may start."""
    RUNNING = "running"
    """Started and not finished."""
    PASSED = "passed"
    """Finished with ``pass``."""
    FAILED = "failed"
    """Finished with ``fail`` or ``error``."""
    SKIPPED = "skipped"
    """Did not run: its ``when`` was not met (or it reported ``skipped``)."""
    BLOCKED = "blocked"
    """Will not run: a required need failed or was blocked."""
    PAUSED = "paused"
    """Finished with ``paused`` (e.g. a budget); its dependents wait."""


SETTLED = frozenset(
    {NodeState.PASSED, NodeState.FAILED, NodeState.SKIPPED, NodeState.BLOCKED, NodeState.PAUSED}
)


def check_graph(dag_name: str, needs: Mapping[str, Sequence[str]]) -> None:
    """Validate a graph's edges.

    Raises:
        ConstructionError: a need names no node, a node needs itself, or there is a cycle
            (the message shows it, e.g. ``a -> b -> a``).
    """
    names = list(needs)
    for node, wanted in needs.items():
        for need in wanted:
            if need == node:
                raise errors.ConstructionError(f"dag {dag_name!r}: node {node!r} needs itself")
            if need not in needs:
                raise errors.ConstructionError(
                    f"dag {dag_name!r}: node {node!r} needs {need!r}, which is not a node "
                    f"(nodes: {', '.join(names)})"
                )
    _check_cycles(dag_name, needs)


def _check_cycles(dag_name: str, needs: Mapping[str, Sequence[str]]) -> None:
    color: dict[str, int] = dict.fromkeys(needs, 0)  # 0 new, 1 on stack, 2 done
    for root in needs:
        if color[root]:
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        trail: list[str] = [root]
        color[root] = 1
        while stack:
            node, index = stack[-1]
            wanted = needs[node]
            if index == len(wanted):
                stack.pop()
                trail.pop()
                color[node] = 2
                continue
            stack[-1] = (node, index + 1)
            nxt = wanted[index]
            if color[nxt] == 1:
                cycle = [*trail[trail.index(nxt) :], nxt]
                raise errors.ConstructionError(
                    f"dag {dag_name!r} has a cycle in its needs: {' -> '.join(cycle)} "
                    "(each needs the next); remove one of these needs, and use loop() to "
                    "repeat work"
                )
            if color[nxt] == 0:
                color[nxt] = 1
                stack.append((nxt, 0))
                trail.append(nxt)


class Schedule:
    """Incremental node states of one dag run.

    Args:
        needs: node -> the nodes it needs, in declaration order (validated already).
        optional: the optional nodes.
    """

    def __init__(
        self, needs: Mapping[str, Sequence[str]], optional: frozenset[str] = frozenset()
    ) -> None:
        self._order = {name: i for i, name in enumerate(needs)}
        self._optional = optional
        self._dependents: dict[str, list[str]] = {name: [] for name in needs}
        self._waiting: dict[str, int] = {}
        self.states: dict[str, NodeState] = {}
        self._ready: list[tuple[int, str]] = []
        self._running = 0
        self._needs = {name: tuple(dict.fromkeys(wanted)) for name, wanted in needs.items()}
        for name, wanted in needs.items():
            for need in dict.fromkeys(wanted):
                self._dependents[need].append(name)
            self._waiting[name] = len(dict.fromkeys(wanted))
            self.states[name] = NodeState.PENDING
            if self._waiting[name] == 0:
                self._make_ready(name)

    def _make_ready(self, name: str) -> None:
        self.states[name] = NodeState.READY
        heapq.heappush(self._ready, (self._order[name], name))

    def has_ready(self) -> bool:
        """Whether some node may start now."""
        return bool(self._ready)

    def pop_ready(self) -> str:
        """The first ready node in declaration order, now considered taken."""
        return heapq.heappop(self._ready)[1]

    def start(self, name: str) -> None:
        """Mark a taken node as running."""
        self.states[name] = NodeState.RUNNING
        self._running += 1

    @property
    def running(self) -> int:
        """How many nodes are running."""
        return self._running

    def settle(self, name: str, state: NodeState) -> list[tuple[str, str]]:
        """Record a node's final state; release or block its dependents.

        Returns:
            The nodes newly blocked by this (transitively), each with the need that
            blocked it, in the order found.
        """
        if self.states[name] is NodeState.RUNNING:
            self._running -= 1
        self.states[name] = state
        blocked: list[tuple[str, str]] = []
        queue = [name]
        while queue:
            current = queue.pop()
            releases = self._releases(current)
            blocks = not releases and self.states[current] in (NodeState.FAILED, NodeState.BLOCKED)
            for dependent in self._dependents[current]:
                if self.states[dependent] is not NodeState.PENDING:
                    continue
                if blocks:
                    self.states[dependent] = NodeState.BLOCKED
                    blocked.append((dependent, current))
                    queue.append(dependent)
                elif releases:
                    self._waiting[dependent] -= 1
                    if self._waiting[dependent] == 0:
                        self._make_ready(dependent)
        return blocked

    def _releases(self, name: str) -> bool:
        state = self.states[name]
        if state in (NodeState.PASSED, NodeState.SKIPPED):
            return True
        return name in self._optional and state in (NodeState.FAILED, NodeState.BLOCKED)

    def downstream(self, name: str) -> list[str]:
        """The nodes that need ``name``, directly or transitively, in declaration order."""
        found: set[str] = set()
        stack = [name]
        while stack:
            for dependent in self._dependents[stack.pop()]:
                if dependent not in found:
                    found.add(dependent)
                    stack.append(dependent)
        return sorted(found, key=self._order.__getitem__)

    def reset(self, names: Sequence[str]) -> None:
        """Make ``names`` pending again (a kickback); those whose needs hold become ready."""
        chosen = set(names)
        for name in chosen:
            if self.states[name] is NodeState.RUNNING:
                self._running -= 1
            self.states[name] = NodeState.PENDING
        self._ready = [item for item in self._ready if item[1] not in chosen]
        heapq.heapify(self._ready)
        for name in sorted(chosen, key=self._order.__getitem__):
            wanted = self._needs[name]
            self._waiting[name] = sum(1 for need in wanted if not self._releases(need))
            if self._waiting[name] == 0:
                self._make_ready(name)

    def finished(self) -> bool:
        """Nothing runs and nothing can start."""
        return self._running == 0 and not self._ready

    def required_failures(self) -> list[str]:
        """Required nodes that failed or were blocked, in declaration order."""
        return [
            n
            for n, s in self.states.items()
            if n not in self._optional and s in (NodeState.FAILED, NodeState.BLOCKED)
        ]

    def unfinished(self) -> list[str]:
        """Nodes that are paused or still waiting (e.g. behind a paused node)."""
        return [n for n, s in self.states.items() if s not in SETTLED or s is NodeState.PAUSED]
