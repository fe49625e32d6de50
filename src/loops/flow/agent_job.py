"""``agent_job``: one agent turn as a job, with feedback and graph context in its prompt."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from loops import errors
from loops.engines import base
from loops.engines.sandbox import Sandbox
from loops.flow import memory, paths, turns
from loops.flow.agents import Agent
from loops.flow.context import Context, EngineSpec, GraphPosition
from loops.flow.jobs import Job, failing_leaves, review_findings
from loops.flow.outcome import Outcome, OutcomeStatus
from loops.git.grounding import GroundingOptions
from loops.git.milestone import CommitSpec

#: characters of an agent's final text kept as its outcome's summary
SUMMARY_CHARS = 500
#: characters of a failing gate's evidence folded into the next prompt
FEEDBACK_EVIDENCE_CHARS = 3000

PromptFn = Callable[[Context], str]


def feedback_section(ctx: Context) -> str:
    """The fixed section ``consume_feedback=True`` appends to a prompt ('' when none).

    It names the previous iteration's failing gate (with the end of its evidence) and
    the findings of a failing review.
    """
    parts: list[str] = []
    gate = ctx.last_verdict
    if gate is not None and not gate.met:
        parts.append("## Why the previous attempt did not pass")
        for leaf in failing_leaves(gate):
            parts.append(f"- {leaf.decided_by}: {leaf.reason}")
            if leaf.evidence:
                tail = leaf.evidence[-FEEDBACK_EVIDENCE_CHARS:]
                parts.append("```\n" + tail.rstrip() + "\n```")
    review = ctx.last_review
    if review is not None and not review.met:
        parts.append("## Review findings to address")
        parts.extend(
            f"- {f.source or 'review'}"
            + (f" ({f.severity})" if f.severity != "should-fix" else "")
            + f": {f.text}"
            for f in review_findings(review)
        )
    return "\n".join(parts)


def graph_section(position: GraphPosition) -> str:
    """The section ``graph_context=True`` appends: this node, its needs and dependents."""
    needs = ", ".join(position.needs) or "nothing"
    dependents = ", ".join(position.dependents) or "nothing"
    return (
        "## Your place in the graph\n"
        f"You are node `{position.node}` of `{position.dag}`. "
        f"You build on: {needs}. Waiting on your work: {dependents}."
    )


class AgentJob(Job):
    """One agent turn on an engine; passes when the turn completes (its gate decides more)."""

    kind: ClassVar[str] = "agent"

    def __init__(
        self,
        prompt: str | PromptFn,
        *,
        name: str | None = None,
        agent: Agent | None = None,
        engine: EngineSpec = None,
        engine_options: Mapping[str, Any] | None = None,
        model: str | None = None,
        system: str | None = None,
        tools: Sequence[str] | None = None,
        permission: base.Permission | str = base.Permission.WORKSPACE_WRITE,
        timeout_s: float | None = None,
        max_turns: int | None = None,
        consume_feedback: bool = False,
        graph_context: bool = False,
        leaf: bool | None = None,
        ground: bool | Mapping[str, Any] | GroundingOptions | None = None,
        commit: bool | str | Mapping[str, Any] | CommitSpec | None = None,
        sandbox: str | Sandbox | None = None,
    ) -> None:
        if agent is not None and not isinstance(agent, Agent):
            raise errors.ConstructionError(
                f"agent_job agent= takes define_agent(...), got {agent!r}"
            )
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
        self.agent = agent
        self.name = name or (agent.name if agent is not None else "agent")
        self.engine = engine
        self.engine_options = paths.resolve_options(engine_options)
        # inline settings override the agent's
        self.model = model if model is not None or agent is None else agent.model
        self.system = system
        if tools is None and agent is not None:
            tools = agent.tools
        self.tools = None if tools is None else tuple(tools)
        self.leaf = leaf if leaf is not None else (agent.leaf if agent is not None else False)
        self.timeout_s = timeout_s
        try:
            self.sandbox = sandbox if isinstance(sandbox, Sandbox) else Sandbox.parse(sandbox)
        except errors.ConfigError as exc:
            raise errors.ConstructionError(f"agent_job sandbox=: {exc.message}") from exc
        self.max_turns = max_turns
        self.consume_feedback = consume_feedback
        self.graph_context = graph_context
        try:
            self.ground = GroundingOptions.parse(ground)
            self.commit = CommitSpec.parse(commit)
        except errors.InputError as exc:
            raise errors.ConstructionError(f"agent_job {self.name!r}: {exc.message}") from None

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
        for flag in ("consume_feedback", "graph_context", "leaf"):
            if getattr(self, flag):
                body[flag] = True
        if self.ground is not None:
            body["ground"] = {"retrieve": self.ground.retrieve, "max_chars": self.ground.max_chars}
        if self.commit is not None:
            body["commit"] = {"subject": self.commit.subject}
        if self.agent is not None:
            body["agent"] = self.agent.contract()
        return body

    def system_prompt(self) -> str | None:
        """The turn's system prompt: the agent's persona and skills, or the inline system."""
        if self.agent is None:
            return self.system
        return self.agent.system_prompt(self.system)

    def build_prompt(self, ctx: Context) -> str:
        """The prompt for this turn, with the feedback section when asked for."""
        text = self.prompt(ctx) if callable(self.prompt) else self.prompt
        if self.graph_context and ctx.graph is not None:
            text = f"{text}\n\n{graph_section(ctx.graph)}"
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
            system=self.system_prompt(),
            model=self.model,
            permission=self.permission,
            tools=self.tools,
            max_turns=self.max_turns,
            timeout_s=self.timeout_s,
            leaf=self.leaf,
            sandbox=self.sandbox,
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
    name: str | None = None,
    agent: Agent | None = None,
    engine: EngineSpec = None,
    engine_options: Mapping[str, Any] | None = None,
    model: str | None = None,
    system: str | None = None,
    tools: Sequence[str] | None = None,
    permission: base.Permission | str = base.Permission.WORKSPACE_WRITE,
    timeout_s: float | None = None,
    max_turns: int | None = None,
    consume_feedback: bool = False,
    graph_context: bool = False,
    leaf: bool | None = None,
    ground: bool | Mapping[str, Any] | GroundingOptions | None = None,
    commit: bool | str | Mapping[str, Any] | CommitSpec | None = None,
    sandbox: str | Sandbox | None = None,
) -> Job:
    """A job that runs one agent turn.

    Args:
        prompt: the task, or a function ``(ctx) -> str`` building it per turn.
        name: the job's name (its path segment; default the agent's name, else "agent").
        agent: a ``define_agent(...)`` persona: its system prompt (with its skills), model
            and tools, each overridden by the inline ``system``, ``model``, ``tools``.
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
        graph_context: append this dag node's name, direct needs and dependents.
        leaf: withhold the sub-agent tool (default: the agent's ``leaf``).
        ground: ``True`` appends the run's memory to the prompt: the commits made since
            the run began (subjects, bodies, trailers, files), this run's scratch notes
            and the consolidated record, within a size bound; ``{"retrieve": True}``
            picks the commits most relevant to the prompt (BM25) instead of the newest.
            See :class:`loops.git.grounding.GroundingOptions` for the other keys.
        commit: ``True`` or ``{"subject": ...}``: on convergence of the enclosing loop
            (or this job's own pass outside a loop) write one milestone commit with the
            summary, every gate verdict and machine-readable trailers. Nothing is
            committed when the loop does not pass.
        sandbox: ``"bwrap"`` (or a :class:`loops.engines.sandbox.Sandbox`) runs the
            agent process under bubblewrap: its cwd writable, the rest read-only, a
            private /tmp, the homes hidden, the environment filtered. A sandbox that
            cannot start fails the turn; it never runs unconfined instead. The gate's
            check runs confined only when asked too: ``command_succeeds(...,
            sandbox="bwrap")`` (network cut off unless ``network=True``). In a run with
            a sandbox floor (a task on ``loop worker --sandbox bwrap``) the turn runs
            at least under the floor, whatever this asks (:mod:`loops.flow.confinement`).

    Raises:
        ConstructionError: an empty prompt, a bad engine, permission or tools value.
    """
    return AgentJob(
        prompt,
        name=name,
        agent=agent,
        engine=engine,
        engine_options=engine_options,
        model=model,
        system=system,
        tools=tools,
        permission=permission,
        timeout_s=timeout_s,
        max_turns=max_turns,
        consume_feedback=consume_feedback,
        graph_context=graph_context,
        leaf=leaf,
        ground=ground,
        commit=commit,
        sandbox=sandbox,
    )
