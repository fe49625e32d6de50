"""Jobs: the one unit of work, ``async (ctx) -> Outcome``, and the leaf jobs.

Every job, leaf or composite, is run through :func:`execute`, which opens its budget
scope, emits ``job.started``/``job.finished`` and turns an exception into an
``error`` outcome, so loops and dags treat all children alike and nest both ways.
"""

from __future__ import annotations

import abc
import dataclasses
import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, ClassVar

from loops import errors
from loops.engines import base
from loops.flow import memory, paths, turns
from loops.flow.budget import Budget
from loops.flow.conditions import Condition, as_condition
from loops.flow.context import Context, EngineSpec
from loops.flow.events import EventType
from loops.flow.outcome import Outcome, OutcomeStatus, Verdict
from loops.git.grounding import GroundingOptions
from loops.git.milestone import CommitSpec

#: characters of an agent's final text kept as its outcome's summary
SUMMARY_CHARS = 500
#: characters of a failing gate's evidence folded into the next prompt
FEEDBACK_EVIDENCE_CHARS = 3000


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
    if job.budget is not None:
        ctx = ctx.evolve(ledger=ctx.ledger.child(job.budget, ctx.path_text))
    started = ctx.run.clock()
    ctx.emit(EventType.JOB_STARTED, kind=job.kind, name=job.name)
    try:
        outcome = await job.run(ctx)
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
    ctx.emit(EventType.VERDICT, slot=slot, iteration=ctx.iteration, **verdict.to_dict())
    return verdict


class GateJob(Job):
    """A job that passes when its condition is met (a reviewer as a dag node)."""

    kind: ClassVar[str] = "gate"

    def __init__(self, name: str, condition: Condition) -> None:
        self.name = name
        checked = as_condition(condition, slot="gate_job condition")
        if checked is None:
            raise errors.ConstructionError(f"gate_job({name!r}) needs a condition")
        self.condition = checked

    def fields(self) -> dict[str, Any]:
        """The condition."""
        return {"condition": self.condition.describe()}

    def conditions(self) -> Sequence[Condition]:
        """The gate's condition."""
        return (self.condition,)

    async def run(self, ctx: Context) -> Outcome:
        """Evaluate the condition against the previous outcome in the context."""
        verdict = await evaluate(ctx, "gate", self.condition, ctx.last)
        status = OutcomeStatus.PASS if verdict.met else OutcomeStatus.FAIL
        return Outcome(
            status,
            verdict.explain(),
            {"verdict": verdict.to_dict()},
            verdict.total_usage(),
        )


def gate_job(name: str, condition: Condition) -> Job:
    """A job that runs ``condition`` and passes exactly when it is met."""
    return GateJob(name, condition)


PromptFn = Callable[[Context], str]


def _failing_leaves(verdict: Verdict) -> list[Verdict]:
    if verdict.met:
        return []
    leaves = [leaf for detail in verdict.details for leaf in _failing_leaves(detail)]
    return leaves or [verdict]


def feedback_section(ctx: Context) -> str:
    """The fixed section ``consume_feedback=True`` appends to a prompt ('' when none).

    It names the previous iteration's failing gate (with the end of its evidence) and
    the findings of a failing review.
    """
    parts: list[str] = []
    gate = ctx.last_verdict
    if gate is not None and not gate.met:
        parts.append("## Why the previous attempt did not pass")
        for leaf in _failing_leaves(gate):
            parts.append(f"- {leaf.decided_by}: {leaf.reason}")
            if leaf.evidence:
                tail = leaf.evidence[-FEEDBACK_EVIDENCE_CHARS:]
                parts.append("```\n" + tail.rstrip() + "\n```")
    review = ctx.last_review
    if review is not None and not review.met:
        parts.append("## Review findings to address")
        parts.extend(f"- {leaf.decided_by}: {leaf.reason}" for leaf in _failing_leaves(review))
    return "\n".join(parts)


class AgentJob(Job):
    """One agent turn on an engine; passes when the turn completes (its gate decides more)."""

    kind: ClassVar[str] = "agent"

    def __init__(
        self,
        prompt: str | PromptFn,
        *,
        name: str = "agent",
        engine: EngineSpec = None,
        engine_options: Mapping[str, Any] | None = None,
        model: str | None = None,
        system: str | None = None,
        tools: Sequence[str] | None = None,
        permission: base.Permission | str = base.Permission.WORKSPACE_WRITE,
        timeout_s: float | None = None,
        max_turns: int | None = None,
        consume_feedback: bool = False,
        ground: bool | Mapping[str, Any] | GroundingOptions | None = None,
        commit: bool | str | Mapping[str, Any] | CommitSpec | None = None,
    ) -> None:
        if not (callable(prompt) or (isinstance(prompt, str) and prompt.strip())):
            raise errors.ConstructionError(
                "agent_job() needs a prompt: a non-empty string or a function (ctx) -> str"
            )
        if (
            engine is not None
            and not isinstance(engine, str)
            and not isinstance(engine, base.Engine)
        ):
            raise errors.ConstructionError(
                f"agent_job engine= takes an engine name or an engine object, got {engine!r}"
            )
        try:
            self.permission = base.Permission(permission)
        except ValueError:
            valid = ", ".join(p.value for p in base.Permission)
            raise errors.ConstructionError(
                f"permission {permission!r} is unknown; use one of: {valid}"
            ) from None
        if isinstance(tools, str):
            raise errors.ConstructionError(
                f"tools= takes a list of tool names, got the string {tools!r}"
            )
        self.prompt = prompt
        self.name = name
        self.engine = engine
        self.engine_options = paths.resolve_options(engine_options)
        self.model = model
        self.system = system
        self.tools = None if tools is None else tuple(tools)
        self.timeout_s = timeout_s
        self.max_turns = max_turns
        self.consume_feedback = consume_feedback
        try:
            self.ground = GroundingOptions.parse(ground)
            self.commit = CommitSpec.parse(commit)
        except errors.InputError as exc:
            raise errors.ConstructionError(f"agent_job {name!r}: {exc.message}") from None

    def fields(self) -> dict[str, Any]:
        """The prompt, engine, model, tools and feedback setting."""
        body: dict[str, Any] = {
            "prompt": self.prompt
            if isinstance(self.prompt, str)
            else f"<{getattr(self.prompt, '__name__', 'fn')}(ctx)>",
            "engine": self.engine
            if self.engine is None or isinstance(self.engine, str)
            else self.engine.name,
            "permission": self.permission.value,
        }
        for key in ("model", "system", "timeout_s", "max_turns"):
            if getattr(self, key) is not None:
                body[key] = getattr(self, key)
        if self.tools is not None:
            body["tools"] = list(self.tools)
        if self.consume_feedback:
            body["consume_feedback"] = True
        if self.ground is not None:
            body["ground"] = {"retrieve": self.ground.retrieve, "max_chars": self.ground.max_chars}
        if self.commit is not None:
            body["commit"] = {"subject": self.commit.subject}
        return body

    def build_prompt(self, ctx: Context) -> str:
        """The prompt for this turn, with the feedback section when asked for."""
        text = self.prompt(ctx) if callable(self.prompt) else self.prompt
        if self.consume_feedback:
            feedback = feedback_section(ctx)
            if feedback:
                text = f"{text}\n\n{feedback}"
        return text

    async def run(self, ctx: Context) -> Outcome:
        """Run one turn unless a budget is exhausted (then pause)."""
        blocked = turns.budget_block(ctx)
        if blocked is not None:
            return Outcome(OutcomeStatus.PAUSED, blocked)
        engine = ctx.run.engine(self.engine, self.engine_options)
        prompt = self.build_prompt(ctx)
        if self.ground is not None:
            prompt = await memory.grounded_prompt(ctx, self.ground, prompt)
        request = base.TurnRequest(
            prompt=prompt,
            cwd=ctx.cwd,
            system=self.system,
            model=self.model,
            permission=self.permission,
            tools=self.tools,
            max_turns=self.max_turns,
            timeout_s=self.timeout_s,
        )
        result = await turns.agent_turn(ctx, engine, request, role="worker")
        data = {
            "final_text": result.final_text,
            "session_id": result.session_id,
            "engine": engine.name,
        }
        if not result.ok:
            error = result.error.message if result.error else result.status.value
            return Outcome(OutcomeStatus.ERROR, f"agent turn failed: {error}", data, result.usage)
        summary = " ".join(result.final_text.split())[:SUMMARY_CHARS] or "(no text)"
        outcome = Outcome(OutcomeStatus.PASS, summary, data, result.usage)
        if self.commit is not None and ctx.iteration == 0:  # inside a loop, the loop commits
            made = await memory.commit_single(ctx, self.commit, outcome)
            if made is not None:
                data["milestone"] = made.sha
                outcome = Outcome(OutcomeStatus.PASS, summary, data, result.usage)
        return outcome


def agent_job(
    prompt: str | PromptFn,
    *,
    name: str = "agent",
    engine: EngineSpec = None,
    engine_options: Mapping[str, Any] | None = None,
    model: str | None = None,
    system: str | None = None,
    tools: Sequence[str] | None = None,
    permission: base.Permission | str = base.Permission.WORKSPACE_WRITE,
    timeout_s: float | None = None,
    max_turns: int | None = None,
    consume_feedback: bool = False,
    ground: bool | Mapping[str, Any] | GroundingOptions | None = None,
    commit: bool | str | Mapping[str, Any] | CommitSpec | None = None,
) -> Job:
    """A job that runs one agent turn.

    Args:
        prompt: the task, or a function ``(ctx) -> str`` building it per turn.
        name: the job's name (its path segment).
        engine: an engine name (``"claude"``, ``"mock"``, ...) or an engine object;
            ``None`` uses the run's engine (``loop run --engine``).
        engine_options: options for a named engine; a relative ``script`` path resolves
            against the loop file's folder.
        model: the model, or ``None`` for the engine's default.
        system: extra system prompt.
        tools: tool names to allow, or ``None`` for the engine's default set.
        permission: ``read-only``, ``workspace-write`` (default) or ``full``.
        timeout_s: wall-clock limit of the turn.
        max_turns: the agent's own tool-use turn limit, where supported.
        consume_feedback: append why the previous iteration did not pass (the failing
            gate with its evidence, the failing review's findings) to the prompt.
        ground: ``True`` appends the run's memory to the prompt: the commits made since
            the run began (subjects, bodies, trailers, files), this run's scratch notes
            and the consolidated record, within a size bound; ``{"retrieve": True}``
            picks the commits most relevant to the prompt (BM25) instead of the newest.
            See :class:`loops.git.grounding.GroundingOptions` for the other keys.
        commit: ``True`` or ``{"subject": ...}``: on convergence of the enclosing loop
            (or this job's own pass outside a loop) write one milestone commit with the
            summary, every gate verdict and machine-readable trailers. Nothing is
            committed when the loop does not pass.

    Raises:
        ConstructionError: an empty prompt, a bad engine, permission or tools value.
    """
    return AgentJob(
        prompt,
        name=name,
        engine=engine,
        engine_options=engine_options,
        model=model,
        system=system,
        tools=tools,
        permission=permission,
        timeout_s=timeout_s,
        max_turns=max_turns,
        consume_feedback=consume_feedback,
        ground=ground,
        commit=commit,
    )
