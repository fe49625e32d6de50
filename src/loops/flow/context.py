"""The context a job runs in: where it is in the tree and what the run shares.

:class:`Context` is an immutable value handed to every job and condition; parents
derive children's contexts with :meth:`Context.child` (a new path segment) or
:meth:`Context.evolve`. What all jobs of one run share (the run id, the working
directory, the event emitter, engine defaults and per-run memos) lives in one
:class:`RunState`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loops import engines as engine_registry
from loops import errors
from loops.engines import base
from loops.flow import budget as budget_mod
from loops.flow import checkpoint as checkpoint_mod
from loops.flow import events as events_mod
from loops.flow.outcome import Outcome, Verdict

if TYPE_CHECKING:
    from loops.flow.approval import Approvals
    from loops.flow.confinement import SandboxFloor
    from loops.flow.durable import NodeDispatcher

EngineSpec = str | base.Engine | None


@dataclasses.dataclass(frozen=True, slots=True)
class EngineDefaults:
    """How agent jobs and judges pick their engine in one run.

    Attributes:
        name: the engine for jobs that name none (``None``: such jobs fail clearly).
        engine: an engine object to use instead of ``name`` (tests, embedding).
        force: when true, the default also replaces every engine a job names by string
            (``loop run --engine mock`` runs a loop file written for ``claude`` offline).
            Engine objects built in the loop file itself are always kept.
        options: options for ``name`` (passed to :func:`loops.engines.create_engine`).
        wrap: applied once to every engine the run uses (fallbacks, recording:
            :func:`loops.engines.compose`), ``None`` for none.
    """

    name: str | None = None
    engine: base.Engine | None = None
    force: bool = False
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    wrap: Callable[[base.Engine], base.Engine] | None = None


class RunState:
    """What every job of one run shares.

    Args:
        run_id: the run's id.
        cwd: the run's working directory (commands and agents run there).
        events: the run's event emitter.
        engines: engine defaults.
        clock: monotonic seconds, for durations and wall-time budgets.
        sleep: the async sleep used for waits (rate limits), a parameter for tests.
        now: wall-clock time in UTC (human gates' timeouts, counted across restarts).
    """

    def __init__(
        self,
        *,
        run_id: str,
        cwd: Path,
        events: events_mod.Emitter,
        engines: EngineDefaults | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        now: Callable[[], dt.datetime] = events_mod.utc_now,
    ) -> None:
        self.run_id = run_id
        self.now = now
        self.cwd = cwd
        self.events = events
        self.engines = engines or EngineDefaults()
        self.clock = clock
        self.sleep = sleep
        #: per-run memos of jobs and conditions, keyed by the object (e.g. file baselines)
        self.memo: dict[int, Any] = {}
        #: every verdict of the run so far: (path, slot, iteration, verdict)
        self.verdicts: list[tuple[str, str, int, Verdict]] = []
        #: whether some condition wants the diff since its loop or dag began
        self.wants_diff = False
        #: loop/dag path -> git tree snapshot taken when it began (None outside git)
        self.diff_baselines: dict[str, str | None] = {}
        self._engine_cache: dict[tuple[str, str], base.Engine] = {}
        #: the durable checkpoint of this run (``None``: nothing is checkpointed)
        self.checkpoints: checkpoint_mod.Checkpoints | None = None
        #: where human gates find their answers (``None``: the run cannot wait for one)
        self.approvals: Approvals | None = None
        #: where durable dags run their nodes as child tasks (``None``: in process)
        self.nodes: NodeDispatcher | None = None
        #: the least confinement of every agent and command of the run (a sandboxed
        #: worker's; ``None``: each runs as its job asks)
        self.sandbox_floor: SandboxFloor | None = None
        #: (path, subject) pairs whose override of the floor was reported already
        self.floor_reported: set[tuple[str, str]] = set()
        self._wrapped: dict[int, tuple[base.Engine, base.Engine]] = {}

    def engine(self, spec: EngineSpec, options: Mapping[str, Any] | None = None) -> base.Engine:
        """The engine for ``spec`` (see :meth:`_engine`), wrapped once as the defaults ask."""
        engine = self._engine(spec, options)
        wrap = self.engines.wrap
        if wrap is None:
            return engine
        known = self._wrapped.get(id(engine))
        if known is None or known[0] is not engine:
            known = (engine, wrap(engine))
            self._wrapped[id(engine)] = known
        return known[1]

    def _engine(self, spec: EngineSpec, options: Mapping[str, Any] | None = None) -> base.Engine:
        """The engine for a job that asked for ``spec`` with ``options``.

        Engines are built once per run and per (name, options), so a scripted engine's
        script plays across the whole run.

        Raises:
            ConfigError: no engine was given anywhere, or the name is unknown.
        """
        if spec is not None and not isinstance(spec, str):
            return spec
        defaults = self.engines
        if defaults.engine is not None and (spec is None or defaults.force):
            return defaults.engine
        name = spec
        opts: Mapping[str, Any] = options or {}
        if defaults.name is not None and (name is None or defaults.force):
            if name != defaults.name:
                opts = defaults.options
            name = defaults.name
        if name is None:
            raise errors.ConfigError(
                "this agent has no engine: pass engine= to it, or run with --engine NAME "
                f"({', '.join(engine_registry.engine_names())})"
            )
        key = (name, repr(sorted(opts.items())))
        engine = self._engine_cache.get(key)
        if engine is None:
            engine = engine_registry.create_engine(name, **opts)
            self._engine_cache[key] = engine
        return engine


@dataclasses.dataclass(frozen=True, slots=True)
class GraphPosition:
    """Where a dag node sits: for ``graph_context=True`` and kickbacks.

    Attributes:
        dag: the dag's name.
        node: this node's name.
        needs: its direct dependencies.
        dependents: the nodes that directly need it.
    """

    dag: str
    node: str
    needs: tuple[str, ...] = ()
    dependents: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class Context:
    """Where a job runs and what it knows.

    Attributes:
        run: what the whole run shares (see :class:`RunState`).
        path: the job's place in the tree, root first (``("feature", "agent")``).
        ledger: the innermost budget scope's ledger.
        iteration: the enclosing loop's iteration, 1-based (0 outside loops).
        last: the previous iteration's body outcome, or a dag node's single dependency's.
        last_review: the failing review of the previous iteration, if any.
        last_verdict: the previous iteration's ``until`` verdict, if any.
        upstream: a dag node's direct dependencies' outcomes by node name.
        graph: the innermost dag node this job runs in, if any.
        workdir: where this job works when not in the run's directory (an isolated
            node's worktree); ``None`` means the run's working directory.
        trail: the iterations of the enclosing loops, outermost first (part of the
            job's checkpoint key).
    """

    run: RunState
    path: tuple[str, ...]
    ledger: budget_mod.Ledger
    iteration: int = 0
    last: Outcome | None = None
    last_review: Verdict | None = None
    last_verdict: Verdict | None = None
    upstream: Mapping[str, Outcome] = dataclasses.field(default_factory=dict)
    graph: GraphPosition | None = None
    workdir: Path | None = None
    trail: tuple[int, ...] = ()

    @property
    def cwd(self) -> Path:
        """The job's working directory: its worktree when isolated, else the run's."""
        return self.workdir or self.run.cwd

    @property
    def key(self) -> str:
        """This job's checkpoint key: its path and the iterations of its enclosing loops."""
        return checkpoint_mod.job_key(self.path, self.trail)

    @property
    def run_id(self) -> str:
        """The run's id."""
        return self.run.run_id

    @property
    def path_text(self) -> str:
        """The path, slash-separated, as it appears in events."""
        return "/".join(self.path)

    @property
    def engines(self) -> EngineDefaults:
        """The run's engine defaults."""
        return self.run.engines

    @property
    def events(self) -> events_mod.Emitter:
        """The run's event emitter."""
        return self.run.events

    def emit(self, type_: events_mod.EventType, **data: Any) -> events_mod.Event:
        """Emit an event at this context's path."""
        return self.run.events.emit(type_, self.path_text, **data)

    def child(self, segment: str, **changes: Any) -> Context:
        """The context of a child job one level down, at ``path + (segment,)``."""
        return dataclasses.replace(self, path=(*self.path, segment), **changes)

    def evolve(self, **changes: Any) -> Context:
        """A copy with ``changes`` applied (same path)."""
        return dataclasses.replace(self, **changes)
