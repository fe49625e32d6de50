"""Run one leased task: a prompt task as a converge loop built on the loop library.

Each iteration is one agent turn (``agent_job``); the gate after it is the task's
``check`` (``command_succeeds``, run for real as an argv in the task's cwd, with the
``min_tests`` guard) and its ``success`` criteria (``agent_check``, a separate judge
turn, fail-closed), combined with ``all_of`` so the judge is not asked when the check
fails. Reaching ``max_iterations`` fails the task with the last verdict as its error.
With neither check nor success the task is one plain agent turn, done when it
succeeds. A ``type=loop`` task runs the loop file named by its prompt.

A worker with a sandbox (``--sandbox bwrap``) gives every run it starts that sandbox as
the run's floor (:mod:`loops.flow.confinement`): every agent turn, judge and command
of a prompt task, a loop file or a dag node task runs at least that confined (checks
with the network cut unless ``--check-network shared``), whatever the loop file asks.

Progress is checkpointed in the task's ``state`` after every turn (session id,
iterations, the commit the task started from, the last verdict), so a retried task
resumes: fewer iterations left, the session resumed, the prompt told where it stopped.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import re
import shlex
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loops import engines, errors
from loops.engines import base, policy
from loops.flow import approval, durable, loopfile, runner
from loops.flow import budget as budget_mod
from loops.flow import events as flow_events
from loops.flow.agent_job import agent_job, feedback_section
from loops.flow.command import command_succeeds
from loops.flow.conditions import Condition
from loops.flow.context import Context
from loops.flow.jobs import Job
from loops.flow.judge import agent_check
from loops.flow.loop import loop
from loops.flow.outcome import OutcomeStatus
from loops.git import grounding, sandboxed
from loops.git.repo import Repo, is_repo
from loops.queue.artifacts import ArtifactKind
from loops.queue.steps import Step
from loops.queue.tasks import Task
from loops.usage import Usage
from loops.worker import checkpoints, loop_dirs, prompts
from loops.worker.agent import TaskAgent
from loops.worker.client import CHECKPOINT_KEY, QueueClient
from loops.worker.nodes import TaskNodeDispatcher
from loops.worker.options import WorkerOptions
from loops.worker.timeline import LiveLogSink, TimelineSink

if TYPE_CHECKING:
    from loops.runs.recorder import RunRecorder

log = logging.getLogger(__name__)

#: task type whose prompt names a loop file to run
LOOP_TASK_TYPE = "loop"
#: task types that run (part of) a loop file, checkpointed in the task's state
LOOP_FILE_TYPES = (LOOP_TASK_TYPE, durable.NODE_TASK_TYPE)
#: engine errors that need outside help: the task is blocked, not retried
BLOCKING_ERRORS: tuple[type[errors.EngineError], ...] = (
    errors.EngineNotFound,
    errors.EngineAuthError,
    errors.EnginePermissionDenied,
)


@dataclasses.dataclass(frozen=True, slots=True)
class TaskReport:
    """How a task run ended, ready to complete the lease with.

    Attributes:
        status: ``done``, ``failed``, ``blocked``, ``retry`` or ``waiting_approval``.
        result: why it is done (the passing verdicts), for ``done``.
        error: why it is not (the last verdict, the limit reached, the failure).
        output: the agent's last message (scanned for STEP markers on completion).
        usage: tokens and cost of this attempt, judges included.
        iterations: iterations completed, over all attempts.
        waiting_on: for ``waiting_children``, the child tasks the run last saw active.
    """

    status: str
    result: str | None = None
    error: str | None = None
    output: str | None = None
    usage: Usage = dataclasses.field(default_factory=Usage)
    iterations: int = 0
    waiting_on: tuple[int, ...] = ()


class _Progress:
    """What a task run learns as it goes: checkpoint, memory for the next prompt."""

    def __init__(self, task: Task, checkpoint: Mapping[str, Any]) -> None:
        self.task = task
        self.iterations = int(checkpoint.get("iterations") or 0)
        self.session_id: str | None = checkpoint.get("session_id")
        self.start_commit: str | None = checkpoint.get("start_commit")
        self.last_verdict: str | None = checkpoint.get("last_verdict")
        # any checkpoint means an earlier attempt began (it is written before the first turn)
        self.resumed = prompts.Resumed(self.iterations, self.last_verdict) if checkpoint else None
        self.steps: list[Step] = []
        self.grounding = ""
        self.turn_text: list[str] = []
        self.final_text = ""

    def checkpoint(self) -> dict[str, Any]:
        return {
            "iterations": self.iterations,
            "session_id": self.session_id,
            "start_commit": self.start_commit,
            "last_verdict": self.last_verdict,
        }

    def add_text(self, text: str) -> None:
        """Keep the lines of ``text`` that may be STEP markers, within a bound.

        Only markers are recorded from a turn's text, so an agent flooding its output
        costs neither memory here nor an oversized request to the gateway.
        """
        kept = sum(len(line) for line in self.turn_text)
        for line in marker_lines(text):
            if kept + len(line) > MAX_MARKER_TEXT_CHARS:
                return
            self.turn_text.append(line)
            kept += len(line)

    def on_event(self, event: flow_events.Event) -> None:
        """Collect the worker's text of this turn and the gate's verdicts."""
        data = event.data
        if event.type is flow_events.EventType.AGENT_TEXT and data.get("role") == "worker":
            self.add_text(str(data.get("text", "")))
        elif event.type is flow_events.EventType.VERDICT and data.get("slot") == "until":
            state = "met" if data.get("met") else "not met"
            self.last_verdict = f"{state}: {data.get('reason', '')}"


#: the most marker text one turn sends to be recorded as steps
MAX_MARKER_TEXT_CHARS = 256 * 1024
#: longer lines are cut (a marker's name, key and note are bounded far below this)
_MAX_MARKER_LINE_CHARS = 4096
#: as the parser matches it (its Unicode case folding matches more than "step[")
_STEP_OPENER = re.compile(r"STEP\[", re.IGNORECASE)


def marker_lines(text: str) -> list[str]:
    """The lines of ``text`` that contain ``STEP[`` (newline-terminated, each bounded).

    Lines end at ``\n`` only, as the marker parser reads them: ``str.splitlines`` would
    also split at ``\r``, ``\x85`` or ``\u2028`` and change what a note holds.
    """
    if not _STEP_OPENER.search(text):
        return []
    return [
        line[:_MAX_MARKER_LINE_CHARS] + "\n"
        for line in text.split("\n")
        if _STEP_OPENER.search(line)
    ]


def marker_text(text: str | None) -> str | None:
    """The STEP marker lines of ``text``, within ``MAX_MARKER_TEXT_CHARS`` (``None``: none).

    What a completion sends as its ``output``: the gateway only scans it for markers, and
    the whole message is stored as the ``final_message`` artifact, so an agent that
    printed megabytes must not make the completion body exceed the gateway's limit.
    """
    kept: list[str] = []
    size = 0
    for line in marker_lines(text or ""):
        if size + len(line) > MAX_MARKER_TEXT_CHARS:
            break
        kept.append(line)
        size += len(line)
    return "".join(kept) or None


class TaskRun:
    """One attempt at one task (build with the task, the client and the options)."""

    def __init__(
        self,
        task: Task,
        *,
        client: QueueClient,
        options: WorkerOptions,
        sinks: Iterable[flow_events.EventSink] = (),
        engine: base.Engine | None = None,
        sleep: policy.Sleep = asyncio.sleep,
    ) -> None:
        self.task = task
        self.client = client
        self.options = options
        self.extra_sinks = list(sinks)
        self.engine = engine
        self.sleep = sleep
        self.timeline = TimelineSink(client, task.id)
        self.repo: Repo | None = None
        self.progress = _Progress(task, {})
        self._worker_agent: TaskAgent | None = None
        #: a loop task's loop file, resolved (its durable dags' children load it)
        self.loop_path: Path | None = None
        #: a loop-node task's order: which node of which run it runs
        self.order: durable.NodeOrder | None = None
        #: where a loop task's durable dags dispatch their nodes (made per run)
        self.dispatcher: TaskNodeDispatcher | None = None

    async def run(self) -> TaskReport:
        """Run the task and store its artifacts; never raises for the task's own failures."""
        cwd = Path(self.task.cwd).expanduser() if self.task.cwd else self.options.cwd
        if not cwd.is_dir():
            return TaskReport("blocked", error=f"the task's cwd {cwd} is not a directory")
        try:
            loop_dirs.check_cwd(cwd, self.options.loop_dirs)
        except errors.ConfigError as exc:
            return TaskReport("blocked", error=exc.message)
        self.timeline.start()
        # the worker's own git (diff, grounding, snapshots, commits, landings) runs in
        # the sandbox too: the agent can write the repository's config and hooks
        async with sandboxed.confined(self.options.sandbox, cwd=cwd):
            try:
                report = await self._run(cwd)
            finally:
                await self.timeline.aclose()
            await self._store_artifacts(report)
        return report

    async def _run(self, cwd: Path) -> TaskReport:
        checkpoint = await self.client.get_state(self.task.id, CHECKPOINT_KEY)
        self.progress = _Progress(self.task, checkpoint if isinstance(checkpoint, dict) else {})
        if await is_repo(cwd):
            self.repo = await Repo.open(cwd)
            if self.progress.start_commit is None:
                self.progress.start_commit = await grounding.start_point(self.repo)
        await self._save_checkpoint()
        try:
            job = self._job()
        except (errors.ConfigError, errors.InputError) as exc:
            return TaskReport("blocked", error=exc.message)
        if job is None:
            return self._out_of_iterations()
        await self._refresh_memory()
        sinks: list[flow_events.EventSink] = [
            self.timeline,
            flow_events.CallbackSink(self.progress.on_event),
            flow_events.CallbackSink(self._log_floor_override),
            *self.extra_sinks,
        ]
        if self.options.stream_job_logs:
            sinks.append(LiveLogSink(f"[task {self.task.id}]"))
        provider = self.task.provider or self.options.provider
        loop_file = self.task.type in LOOP_FILE_TYPES
        run_id = self.order.run_id if self.order else f"task-{self.task.id}-{self.task.attempts}"
        kept: dict[str, Any] = {}
        resumed = False
        if loop_file:
            kept, run_id, resumed = await self._durable(run_id)
        registered = self._register(run_id, job, cwd, resume=resumed)
        self.dispatcher = self._nodes()
        if registered is not None:
            sinks.append(registered)
        try:
            result = await runner.run(
                job,
                cwd=cwd,
                sinks=sinks,
                run_id=run_id,
                # a loop file's agents that name no engine run on the task's provider
                engine=provider if loop_file else None,
                engine_options=self._engine_options(provider) if loop_file else None,
                **kept,
                wrap_engine=self._compose if loop_file else None,
                nodes=self.dispatcher,
                place=self.order,
                sandbox_floor=self.options.sandbox_floor,
            )
        except errors.ConfigError as exc:
            return TaskReport("blocked", error=exc.message, iterations=self.progress.iterations)
        finally:
            if registered is not None:
                registered.close()
        return self._report(result)

    def _log_floor_override(self, event: flow_events.Event) -> None:
        """Tell the worker's operator when a loop file asked for less than its sandbox."""
        if event.type is flow_events.EventType.SANDBOX_FLOOR:
            log.warning("task %s: %s: %s", self.task.id, event.path, event.data.get("reason"))

    def _nodes(self) -> TaskNodeDispatcher | None:
        """Where a loop task's durable dags run their nodes: its child tasks.

        A loop-node task runs its node's inner durable dags in process: its children
        would be grandchildren, past the queue's default depth limit.
        """
        if self.task.type != LOOP_TASK_TYPE or self.loop_path is None:
            return None
        return TaskNodeDispatcher(self.client, self.task, str(self.loop_path))

    async def _durable(self, run_id: str) -> tuple[dict[str, Any], str, bool]:
        """A loop task's checkpoint arguments for the runner, its run id, whether it resumes.

        The run id is the first attempt's (kept in the checkpoint), so milestones and
        landings made before a crash are recognised by their trailers.
        """
        store = checkpoints.TaskStateCheckpointer(self.client, self.task.id)
        saved = await store.load()
        kwargs: dict[str, Any] = {
            "checkpointer": store,
            "approvals": checkpoints.TaskStateApprovals(self.client, self.task.id),
        }
        if saved is not None:
            run_id = str((saved.get("run") or {}).get("run_id") or run_id)
        how = await self.client.get_state(self.task.id, checkpoints.RUN_RESUME_KEY)
        if isinstance(how, dict):
            limits = how.get("budget")
            if isinstance(limits, dict) and limits:
                kwargs["budget"] = budget_mod.Budget(**limits)
            kwargs["retry_failed"] = bool(how.get("retry_failed"))
        return kwargs, run_id, saved is not None

    def _register(
        self, run_id: str, job: Job, cwd: Path, *, resume: bool = False
    ) -> RunRecorder | None:
        """The run registry's recorder for this run (``--supervise``), or ``None``.

        A registry that cannot be written is logged and skipped: watching is not worth
        failing the task for.
        """
        if self.options.supervise_home is None or self.order is not None:
            return None  # a node's events are in its task's timeline; the run is its parent's
        from loops.runs import recorder

        title = self.task.title or " ".join(self.task.prompt.split())[:80]
        try:
            return recorder.open_run(
                run_id,
                home=self.options.supervise_home,
                title=title,
                shape=job.shape(),
                cwd=cwd,
                source=f"task {self.task.id}",
                resume=resume,
            )
        except (errors.StoreError, errors.InputError) as exc:
            log.warning("task %s: run %s not registered: %s", self.task.id, run_id, exc)
            return None

    # -- the job --------------------------------------------------------------------

    def _inner_engine(self) -> base.Engine:
        if self.engine is not None:
            return self.engine
        provider = self.task.provider or self.options.provider
        if provider is None:
            raise errors.ConfigError(
                f"task {self.task.id} names no provider and the worker has no default: "
                "start the worker with --provider claude|codex|mock|command"
            )
        return self._compose(engines.create_engine(provider, **self._engine_options(provider)))

    def _engine_options(self, provider: str | None) -> dict[str, Any]:
        """The options of ``provider``: ``--base-url`` and the like, then the worker's own."""
        own = dict(self.options.engine_options) if provider == self.options.provider else {}
        return {**self.options.engine_settings.get(provider or "", {}), **own}

    def _compose(self, engine: base.Engine) -> base.Engine:
        """``engine`` with the worker's ``--fallback``, ``--max-usd`` and ``--record``."""
        options = self.options
        fallbacks = [
            engines.create_engine(name, **dict(options.engine_settings.get(name, {})))
            for name in options.fallbacks
            if name != engine.name
        ]
        return engines.compose(
            engine,
            fallbacks=fallbacks,
            fallback_policy=options.fallback_policy,
            record_dir=options.record_dir,
        )

    def _agents(self) -> tuple[TaskAgent, TaskAgent]:
        inner = self._inner_engine()
        env = {**self.client.agent_env(), "LOOP_TASK_ID": str(self.task.id), **_loop_on_path()}

        def on_policy(event: policy.PolicyEvent) -> None:
            self.timeline.add(event.kind, dataclasses.asdict(event))

        worker = TaskAgent(
            inner,
            env=env,
            resume=True,
            session_id=self.progress.session_id,
            rate_limits=self.options.rate_limits,
            on_policy=on_policy,
            after_turn=self._after_turn,
            sleep=self.sleep,
        )
        judge = TaskAgent(
            inner,
            env=env,
            resume=False,
            rate_limits=self.options.rate_limits,
            on_policy=on_policy,
            sleep=self.sleep,
        )
        self._worker_agent = worker
        return worker, judge

    def _job(self) -> Job | None:
        """The task as a job; ``None`` when earlier attempts used every iteration."""
        if self.task.type == LOOP_TASK_TYPE:
            path = Path(self.task.prompt.strip()).expanduser()
            cwd = Path(self.task.cwd).expanduser() if self.task.cwd else self.options.cwd
            self.loop_path = (path if path.is_absolute() else cwd / path).resolve()
            return loopfile.load(self._trusted(self.loop_path)).job
        if self.task.type == durable.NODE_TASK_TYPE:
            loop_path, self.order = durable.NodeOrder.from_json(self.task.prompt)
            loaded = loopfile.load(self._trusted(Path(loop_path)))
            return durable.find_job(loaded.job, self.order.path)
        worker, judge = self._agents()
        # the worker's sandbox confines the agent, judge and check through the run's floor
        body = agent_job(self._prompt, name="agent", engine=worker, model=self.task.model)
        gate: list[Condition] = []
        if self.task.check:
            argv = _argv(self.task.check)
            gate.append(command_succeeds(argv[0], argv[1:], min_tests=self.task.min_tests))
        if self.task.success:
            gate.append(agent_check(self.task.success, engine=judge, model=self.task.model))
        if not gate:
            return body
        limit = self.task.max_iterations or self.options.max_iterations
        remaining = limit - self.progress.iterations
        if remaining < 1:
            return None
        return loop(name=f"task-{self.task.id}", body=body, until=gate, max=remaining)

    def _trusted(self, loop_file: Path) -> Path:
        """``loop_file``, once a sandboxed worker trusts it (see :mod:`loops.worker.loop_dirs`).

        Raises:
            ConfigError: the worker has a sandbox and the file is outside its --loop-dir.
        """
        if self.options.sandbox is not None:
            loop_dirs.check_loop_file(loop_file, self.options.loop_dirs)
        return loop_file

    @property
    def _check_offline(self) -> bool:
        box = self.options.check_sandbox
        return box is not None and not box.network

    def _prompt(self, ctx: Context) -> str:
        first = ctx.iteration <= 1
        facts = prompts.TurnFacts(
            prompt=self.task.prompt,
            check=self.task.check,
            check_offline=self._check_offline,
            success=self.task.success,
            steps=self.progress.steps,
            grounding=self.progress.grounding,
            feedback=feedback_section(ctx),
            resumed=self.progress.resumed if first else None,
        )
        return prompts.turn_prompt(facts)

    # -- after each turn ------------------------------------------------------------

    async def _after_turn(self, result: base.TurnResult) -> None:
        progress = self.progress
        progress.iterations += 1
        progress.session_id = result.session_id or progress.session_id
        progress.final_text = result.final_text
        progress.add_text(result.final_text)
        text = "".join(progress.turn_text)
        progress.turn_text.clear()
        await self.client.record_output(self.task.id, text)
        await self._save_checkpoint()
        await self._refresh_memory()

    async def _save_checkpoint(self) -> None:
        await self.client.put_state(self.task.id, CHECKPOINT_KEY, self.progress.checkpoint())

    async def _refresh_memory(self) -> None:
        self.progress.steps = await self.client.list_steps(self.task.id)
        if self.repo is not None:
            memory = await grounding.ground(
                self.repo, since=self.progress.start_commit, query=self.task.prompt
            )
            self.progress.grounding = memory.text

    # -- the outcome ----------------------------------------------------------------

    def _out_of_iterations(self) -> TaskReport:
        limit = self.task.max_iterations or self.options.max_iterations
        why = (
            f"; last gate verdict: {self.progress.last_verdict}"
            if self.progress.last_verdict
            else ""
        )
        return TaskReport(
            "failed",
            error=f"max {limit} iterations reached in earlier attempts{why}",
            iterations=self.progress.iterations,
        )

    def _report(self, result: runner.RunResult) -> TaskReport:
        outcome = result.outcome
        base_report = TaskReport(
            "failed",
            output=self.progress.final_text or None,
            usage=outcome.usage,
            iterations=self.progress.iterations,
        )
        if self.order is not None:
            return self._node_report(result, base_report)
        plain = self.task.type != LOOP_TASK_TYPE and not (self.task.check or self.task.success)
        status = outcome.status
        if status is OutcomeStatus.PASS and plain:
            reason = (
                "done after one successful agent turn (the task has no check and no success "
                f"criteria, so no gate was run); agent said: {outcome.summary}"
            )
            return dataclasses.replace(base_report, status="done", result=reason)
        if status in (OutcomeStatus.PASS, OutcomeStatus.SKIPPED):
            return dataclasses.replace(base_report, status="done", result=result.reason)
        if status is OutcomeStatus.FAIL:
            return dataclasses.replace(base_report, error=result.reason)
        if status is OutcomeStatus.PAUSED and not plain and self.task.type == LOOP_TASK_TYPE:
            if durable.WAITING_CHILDREN in result.reason:  # its dag's nodes run as children
                seen = self.dispatcher.seen_active if self.dispatcher is not None else set()
                return dataclasses.replace(
                    base_report,
                    status="waiting_children",
                    result=result.reason,
                    waiting_on=tuple(sorted(seen)),
                )
            if approval.WAITING in result.reason:
                return dataclasses.replace(
                    base_report,
                    status="waiting_approval",
                    # the status already says it waits: the reason starts at the gate
                    error=f"{result.reason.removeprefix(f'{approval.WAITING}: ')}; "
                    f"answer with: loop approve {result.run_id} PATH "
                    "[--reject --reason ...]",
                )
            # a retry would resume into the same exhausted budget: wait for a person
            return dataclasses.replace(
                base_report,
                status="blocked",
                error=f"paused: {result.reason}; resume with: loop resume {result.run_id} "
                "--budget-usd/--budget-tokens/--budget-seconds ...",
            )
        if status is OutcomeStatus.PAUSED:
            return dataclasses.replace(
                base_report, status="retry", error=f"paused: {result.reason}"
            )
        return dataclasses.replace(base_report, status=self._error_status(), error=result.reason)

    def _node_report(self, result: runner.RunResult, base: TaskReport) -> TaskReport:
        """A loop-node task ends ``done`` with its node's outcome as the result, whatever
        the outcome, so the parent's dag decides; only an error is retried here."""
        if result.status is OutcomeStatus.ERROR:
            return dataclasses.replace(base, status=self._error_status(), error=result.reason)
        return dataclasses.replace(base, status="done", result=durable.result_text(result.outcome))

    def _error_status(self) -> str:
        """``blocked`` for failures a retry cannot fix (no binary, no login), else ``retry``."""
        agent = self._worker_agent
        last = agent.last_result if agent is not None else None
        error = last.error if last is not None else None
        return "blocked" if isinstance(error, BLOCKING_ERRORS) else "retry"

    # -- artifacts ------------------------------------------------------------------

    async def _store_artifacts(self, report: TaskReport) -> None:
        items: list[tuple[str, ArtifactKind, bytes]] = []
        transcript = self.timeline.transcript_bytes()
        if transcript:
            items.append(("transcript.jsonl", ArtifactKind.TRANSCRIPT, transcript))
        if report.output:
            items.append(("final_message.md", ArtifactKind.FINAL_MESSAGE, report.output.encode()))
        if self.repo is not None:
            try:
                diff = await self.repo.diff(self.progress.start_commit)
            except errors.GitError as exc:
                log.warning("task %s: no diff artifact: %s", self.task.id, exc)
                diff = ""
            if diff:
                items.append(("changes.diff", ArtifactKind.DIFF, diff.encode()))
        for name, kind, content in items:
            try:
                await self.client.store_artifact(
                    self.task.id, name=name, kind=kind, content=content
                )
            except errors.LoopsError as exc:
                log.warning("task %s: artifact %s not stored: %s", self.task.id, name, exc)


def _loop_on_path() -> dict[str, str]:
    """``PATH`` with this installation's ``loop`` program last, so an agent finds it.

    A worker started as ``.venv/bin/loop worker`` (not activated) gives its agents a
    ``loop`` for ``loop tasks:create-child`` all the same; a ``loop`` already on the
    PATH comes first.
    """
    folder = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    if not (Path(folder) / "loop").exists() or folder in path.split(os.pathsep):
        return {}
    return {"PATH": f"{path}{os.pathsep}{folder}" if path else folder}


def _argv(check: str) -> list[str]:
    try:
        argv = shlex.split(check)
    except ValueError as exc:
        raise errors.InputError(f"the task's check {check!r} cannot be parsed: {exc}") from exc
    if not argv:
        raise errors.InputError("the task's check command is empty")
    return argv
