"""Run a root job: a run id, the event stream from ``run.started`` to ``run.finished``.

:func:`run` is async (the core); the CLI calls it through ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import datetime as dt
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from loops import errors
from loops.engines import base
from loops.flow import budget as budget_mod
from loops.flow import checkpoint, durable, memory
from loops.flow import events as events_mod
from loops.flow.approval import Approvals
from loops.flow.conditions import Condition, walk
from loops.flow.confinement import SandboxFloor
from loops.flow.context import Context, EngineDefaults, EngineSpec, RunState
from loops.flow.events import EventType
from loops.flow.jobs import Job, evaluate, execute
from loops.flow.outcome import Outcome, OutcomeStatus, Verdict

#: process exit code per root status (``loop run``)
EXIT_CODES: Mapping[OutcomeStatus, int] = {
    OutcomeStatus.PASS: 0,
    OutcomeStatus.SKIPPED: 0,
    OutcomeStatus.FAIL: 1,
    OutcomeStatus.ERROR: 1,
    OutcomeStatus.PAUSED: 3,
}


def new_run_id(now: dt.datetime | None = None, token: str | None = None) -> str:
    """A sortable run id: UTC time and six random hex digits, e.g. ``20261127T150405-3f2a9c``."""
    moment = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    return f"{moment:%Y%m%dT%H%M%S}-{token or secrets.token_hex(3)}"


@dataclasses.dataclass(frozen=True, slots=True)
class RunResult:
    """How a run ended.

    Attributes:
        run_id: the run's id.
        outcome: the root job's outcome.
        reason: why it ended (never empty).
        duration_s: wall time of the run.
    """

    run_id: str
    outcome: Outcome
    reason: str
    duration_s: float

    @property
    def status(self) -> OutcomeStatus:
        """The root outcome's status."""
        return self.outcome.status

    @property
    def exit_code(self) -> int:
        """0 pass (or skipped), 1 fail or error, 3 paused."""
        return EXIT_CODES[self.outcome.status]


def tree_conditions(job: Job) -> list[Condition]:
    """Every condition in the job tree, members included, each once."""
    seen: dict[int, Condition] = {}
    stack = [job]
    while stack:
        current = stack.pop()
        for condition in current.conditions():
            for item in walk(condition):
                seen.setdefault(id(item), item)
        stack.extend(child.job for child in current.children())
    return list(seen.values())


async def run(
    job: Job,
    *,
    cwd: str | Path | None = None,
    sinks: Iterable[events_mod.EventSink] = (),
    engine: EngineSpec = None,
    engine_options: Mapping[str, Any] | None = None,
    force_engine: bool = False,
    wrap_engine: Callable[[base.Engine], base.Engine] | None = None,
    run_id: str | None = None,
    checkpointer: checkpoint.Checkpointer | None = None,
    budget: budget_mod.Budget | None = None,
    retry_failed: bool = False,
    approvals: Approvals | None = None,
    nodes: durable.NodeDispatcher | None = None,
    place: durable.NodeOrder | None = None,
    sandbox_floor: SandboxFloor | None = None,
    now: Callable[[], dt.datetime] = events_mod.utc_now,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> RunResult:
    """Run ``job`` as the root of a new run.

    Args:
        job: the root job.
        cwd: the working directory (default: the current one); commands and agents run there.
        sinks: consumers of the event stream.
        engine: the engine name for agents that name none; an engine object is used
            for every agent that names none or names one by string.
        engine_options: options for a named ``engine``.
        force_engine: a named ``engine`` also replaces engines named by the jobs
            (``loop run --engine``).
        wrap_engine: applied once to every engine the run uses (``loop run
            --fallback``/``--record``: :func:`loops.engines.compose`).
        run_id: the run id (default: :func:`new_run_id`); a resumed run keeps the id
            its checkpoint recorded.
        checkpointer: where the run's checkpoint lives; with one, every finished job
            and loop iteration is checkpointed, and what an earlier attempt finished
            is restored instead of run again (``run.resumed`` says from where).
        budget: limits replacing the root job's own budget (``loop resume --budget-*``).
        retry_failed: when resuming, run again the jobs that ended ``fail``.
        approvals: where ``human_gate`` jobs find their answers
            (:class:`~loops.flow.approval.Approvals`).
        nodes: where ``dag(..., durable=True)`` runs its nodes as child tasks (a
            worker's loop task); without it such dags run their nodes in process.
        place: run ``job`` as this node of a durable dag (a child task): at the
            node's path, with its upstream outcomes and review.
        sandbox_floor: confine every agent turn and command of the run at least this
            much, whatever the jobs ask (a sandboxed worker's ``--sandbox``; see
            :mod:`loops.flow.confinement`).
        now: wall clock for event times; clock: monotonic seconds; sleep: async sleep.

    Returns:
        The result; ``run.finished`` has been emitted with its status and reason.

    Raises:
        ConfigError: the working directory does not exist, or an agent has no usable engine.
    """
    workdir = Path(cwd).expanduser().resolve() if cwd is not None else Path.cwd()
    if not workdir.is_dir():
        raise errors.ConfigError(f"working directory {workdir} does not exist")
    checkpoints = (
        await checkpoint.Checkpoints.open(checkpointer, retry_failed=retry_failed)
        if checkpointer is not None
        else None
    )
    rid = (checkpoints.run_id if checkpoints else None) or run_id or new_run_id(now())
    if budget is not None:
        job = copy.copy(job)
        job.budget = budget
    emitter = events_mod.Emitter(rid, sinks, clock=now)
    defaults = dataclasses.replace(
        _defaults(engine, engine_options, force_engine), wrap=wrap_engine
    )
    state = RunState(
        run_id=rid,
        cwd=workdir,
        events=emitter,
        engines=defaults,
        clock=clock,
        sleep=sleep,
        now=now,
    )
    state.approvals = approvals
    state.nodes = nodes
    state.sandbox_floor = sandbox_floor
    state.wants_diff = any(c.wants_diff for c in tree_conditions(job))
    state.checkpoints = checkpoints
    root = Context(state, (job.name,), budget_mod.Ledger(clock=clock))
    if place is not None:
        root = place.place(root)
    started = clock()
    emitter.emit(
        EventType.RUN_STARTED,
        root.path_text,
        name=job.name,
        kind=job.kind,
        cwd=str(workdir),
        shape=job.shape(),
    )
    try:
        if checkpoints is not None:
            await _begin(root, checkpoints)
        if memory.uses_memory(job):
            await memory.mark_start(state)
        outcome = await _prepare(job, root) or await execute(job, root)
    except errors.ConfigError as exc:
        outcome = Outcome(OutcomeStatus.ERROR, exc.message)
        _finish(root, outcome, started)
        raise
    except asyncio.CancelledError:
        _finish(root, Outcome(OutcomeStatus.ERROR, "the run was interrupted"), started)
        raise
    result = _finish(root, outcome, started)
    if checkpoints is not None:
        await checkpoints.end(outcome.status)
    return result


async def _begin(ctx: Context, checkpoints: checkpoint.Checkpoints) -> None:
    """Say where a resumed run resumes from, and note this attempt in the checkpoint."""
    if checkpoints.resumed:
        ctx.emit(
            EventType.RUN_RESUMED,
            attempt=checkpoints.attempt,
            restored=checkpoints.resumed_from["jobs"],
            loops=checkpoints.resumed_from["loops"],
        )
    await checkpoints.begin(ctx.run_id)


async def _prepare(job: Job, ctx: Context) -> Outcome | None:
    """Let every condition in the tree prepare (take baselines); an error outcome on failure."""
    for condition in tree_conditions(job):
        try:
            await condition.prepare(ctx)
        except (errors.ConfigError, asyncio.CancelledError):
            raise
        except Exception as exc:  # the run cannot start honestly without its baselines
            reason = f"{condition.name} could not prepare: {type(exc).__name__}: {exc}"
            return Outcome(OutcomeStatus.ERROR, reason)
    return None


def _defaults(engine: EngineSpec, options: Mapping[str, Any] | None, force: bool) -> EngineDefaults:
    if engine is None or isinstance(engine, str):
        return EngineDefaults(name=engine, force=force, options=dict(options or {}))
    return EngineDefaults(engine=engine, force=force)


def _finish(ctx: Context, outcome: Outcome, started: float) -> RunResult:
    duration = ctx.run.clock() - started
    reason = outcome.summary.strip() or f"the root job ended with status {outcome.status.value}"
    ctx.events.emit(
        EventType.RUN_FINISHED,
        ctx.path_text,
        status=outcome.status.value,
        reason=reason,
        usage=outcome.usage.to_dict(),
        duration_s=round(duration, 6),
    )
    return RunResult(ctx.run_id, outcome, reason, duration)


async def check_condition(
    condition: Condition,
    *,
    cwd: str | Path,
    last: Outcome | None = None,
    engine: EngineSpec = None,
    sinks: Iterable[events_mod.EventSink] = (),
    run_id: str | None = None,
    path: str = "check",
) -> Verdict:
    """Evaluate one condition outside a loop (e.g. a worker's ``success`` judge).

    Args:
        condition: the condition, e.g. ``agent_check(question=...)``.
        cwd: the working directory it checks.
        last: the outcome being judged (the agent turn's), if any.
        engine: the engine for judges that name none (a name or an engine object).
        sinks: consumers of the events it emits (judge turns, the verdict).
        run_id: the id stamped on those events.
        path: the path stamped on those events.

    Returns:
        The verdict, also emitted as a ``verdict`` event with slot ``check``.
    """
    rid = run_id or new_run_id()
    emitter = events_mod.Emitter(rid, sinks)
    state = RunState(
        run_id=rid, cwd=Path(cwd), events=emitter, engines=_defaults(engine, None, False)
    )
    ctx = Context(state, (path,), budget_mod.Ledger(clock=state.clock))
    return await evaluate(ctx, "check", condition, last)
