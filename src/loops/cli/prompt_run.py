"""``loop run "<prompt>"``: the simplest converge loop, recorded in the local task store.

``loop run X`` dispatches here when X is not a loop file. The prompt becomes a task in
the local store (``QUEUE_DB_PATH``, so it shows in ``loop tasks:list``), leased by this
process and run in-process by the worker's task runner: agent turns until the gate
(``--check`` run for real, ``--success`` judged by a separate judge turn) passes or
``--max-iterations`` is reached. No gateway is needed. A turn that fails in a way a
retry may fix (the agent crashed) is retried in-process while attempts remain.

Exit codes follow ``loop run``: 0 done, 1 failed or blocked, 2 bad usage, 130
interrupted (the lease is released, no attempt charged).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from loops import config
from loops.cli import run_display
from loops.engines.sandbox import Sandbox
from loops.flow import events as events_mod

if TYPE_CHECKING:
    from loops.queue.tasks import Task
    from loops.tui.app import LiveRunApp
    from loops.worker.worker import Worker

#: the engine a prompt run uses when neither --provider nor --engine is given
DEFAULT_PROVIDER = "claude"
#: exit code when interrupted
EXIT_INTERRUPTED = run_display.EXIT_INTERRUPTED


@dataclasses.dataclass(frozen=True, slots=True)
class PromptRunOptions:
    """What ``loop run`` passes to a prompt run.

    Attributes:
        cwd: the working directory.
        engine: the engine name from ``--engine``, if given.
        display: the live TUI, log lines or NDJSON (as ``loop run FILE`` chooses).
        provider: the engine from ``--provider`` (wins over ``engine``).
        success: success criteria for the judge.
        check: the check command (run as an argv, never through a shell).
        max_iterations: the iteration limit.
        min_tests: the check's vacuous-pass guard.
        model: the model for the engine.
        engine_options: options for the engine (a mock script, a command).
        composition: worker options from the engine flags (``--fallback``,
            ``--on-limit``, ``--max-usd``, ``--record``, ``--base-url``).
        supervise: register the run for ``loop list``/``status``/``tail``/``records``.
        sandbox: run the agent and the check under this sandbox (``--sandbox bwrap``).
        check_network: with a sandbox, the check shares the host's network
            (``--check-network shared``); cut off by default.
    """

    cwd: Path
    engine: str | None = None
    display: run_display.Display = run_display.Display.LOG
    provider: str | None = None
    success: str | None = None
    check: str | None = None
    max_iterations: int | None = None
    min_tests: int | None = None
    model: str | None = None
    engine_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    composition: dict[str, Any] = dataclasses.field(default_factory=dict)
    supervise: bool = False
    sandbox: Sandbox | None = None
    check_network: bool = False


def options_from_flags(
    cwd: Path,
    *,
    engine: str | None,
    display: run_display.Display,
    provider: str | None = None,
    mock_script: Path | None = None,
    agent_command: str | None = None,
    replay_dir: Path | None = None,
    composition: dict[str, Any] | None = None,
    **flags: Any,
) -> PromptRunOptions:
    """Options of a prompt run from ``loop run``'s flags (checked, one clear error each)."""
    from loops import engines
    from loops.cli.worker_commands import engine_options

    chosen = "replay" if replay_dir else provider or engine or DEFAULT_PROVIDER
    if chosen not in engines.REGISTRY:
        raise click.BadParameter(
            f"unknown provider {chosen!r}; choose one of: {', '.join(engines.engine_names())}",
            param_hint="--provider",
        )
    return PromptRunOptions(
        cwd=cwd,
        engine=engine,
        display=display,
        provider=chosen,
        engine_options=(
            {"dir": str(replay_dir.resolve())}
            if replay_dir
            else engine_options(chosen, mock_script, agent_command)
        ),
        composition=dict(composition or {}),
        **flags,
    )


def run_prompt(prompt: str, options: PromptRunOptions) -> int:
    """Record ``prompt`` as a task in the local store, run it, and return the exit code.

    On a terminal the run is drawn by the live TUI that ``loop run FILE`` uses; quitting
    it asks first, and stopping releases the lease with no attempt charged, as Ctrl-C
    does without the UI.
    """
    settings = config.load_settings()
    run = PromptRun(prompt, options, settings)
    try:
        if options.display is run_display.Display.TUI:
            return _show_live(run)
        return _show_plain(run, options.display)
    finally:
        run.close()


def _show_plain(run: PromptRun, display: run_display.Display) -> int:
    plain = display is not run_display.Display.JSON
    if plain:
        click.echo(f"task {run.task.id}: {run.task.title}")
    sink = run_display.plain_sink(display, sys.stdout)
    outcome = asyncio.run(run.drive([sink], note=lambda text: click.echo(text, err=True)))
    return _finish(outcome, plain=plain)


def live_app(run: PromptRun) -> LiveRunApp[PromptOutcome]:
    """The live TUI of ``loop run FILE``, driving ``run``: quitting asks, then stops it."""
    return run_display.live_app(
        run.drive,
        run_id=f"task-{run.task.id}",
        title=run.task.title or "",
        stop=run.request_stop,
    )


def _show_live(run: PromptRun) -> int:
    outcome = run_display.show_live(live_app(run))
    # retries were kept, not printed: a line written under the UI tears its picture
    for text in run.notes:
        click.echo(text, err=True)
    if outcome is None:  # the UI closed under the run: its lease expires, not released
        click.echo(f"stopped: task {run.task.id}", err=True)
        return EXIT_INTERRUPTED
    return _finish(outcome, plain=True)


def _finish(outcome: PromptOutcome, *, plain: bool) -> int:
    task = outcome.task
    if outcome.interrupted:
        click.echo(f"interrupted: task {task.id} released", err=True)
        return EXIT_INTERRUPTED
    if plain:
        why = task.result if task.status.value == "done" else task.error
        click.echo(f"task {task.id} {task.status.value}: {why}")
    return outcome.exit_code


@dataclasses.dataclass(frozen=True, slots=True)
class PromptOutcome:
    """How a prompt run ended.

    Attributes:
        task: the task as the store holds it at the end.
        interrupted: the run was stopped (Ctrl-C, SIGTERM, or from the UI) and its
            lease released.
    """

    task: Task
    interrupted: bool = False

    @property
    def exit_code(self) -> int:
        """0 when the task is done, 130 when interrupted, else 1."""
        if self.interrupted:
            return EXIT_INTERRUPTED
        return 0 if self.task.status.value == "done" else 1


class PromptRun:
    """One prompt run: its task in the local store, leased and run by this process.

    Building it records the task; :meth:`drive` runs it (retrying in-process while
    attempts remain) with the given sinks; :meth:`request_stop` stops it gracefully
    from a signal handler or the UI; :meth:`close` closes the store.

    Args:
        prompt: the prompt.
        options: the run's options.
        settings: the loaded settings (the local store, worker defaults, home).
    """

    def __init__(self, prompt: str, options: PromptRunOptions, settings: config.Settings) -> None:
        from loops.cli.worker_commands import local_client
        from loops.services.queue import task_spec
        from loops.worker.local import LocalQueueClient
        from loops.worker.options import WorkerOptions

        provider = options.provider or options.engine or DEFAULT_PROVIDER
        spec = task_spec(
            {
                "prompt": prompt,
                "title": " ".join(prompt.split())[:80],
                "success": options.success,
                "check": options.check,
                "provider": provider,
                "model": options.model,
                "cwd": str(options.cwd.resolve()),
                "max_iterations": options.max_iterations,
                "min_tests": options.min_tests,
            }
        )
        client, self._close_store = local_client(settings)
        assert isinstance(client, LocalQueueClient)
        self.client = client
        self.task: Task = client.service.create_task(spec).task
        self.worker_options = WorkerOptions.from_settings(
            settings.worker,
            name=f"loop-run:{os.getpid()}",
            supervise_home=settings.home if options.supervise else None,
            provider=provider,
            engine_options=options.engine_options,
            cwd=options.cwd,
            sandbox=options.sandbox,
            check_network=options.check_network,
            **options.composition,
        )
        #: why attempts were retried (when :meth:`drive` was given no ``note``)
        self.notes: list[str] = []
        self._worker: Worker | None = None
        self._stop_requested = False

    def request_stop(self) -> None:
        """Stop the run: the running attempt is stopped and its lease released."""
        self._stop_requested = True
        if self._worker is not None:
            self._worker.request_stop()

    async def drive(
        self, sinks: list[events_mod.EventSink], *, note: Callable[[str], None] | None = None
    ) -> PromptOutcome:
        """Lease the task and run it until it ends, is stopped, or has no attempt left.

        Args:
            sinks: consumers of the run's events (log lines, NDJSON, the UI).
            note: told why an attempt is retried (default: kept in :attr:`notes`).
        """
        tell = note or self.notes.append
        from loops.cli.worker_commands import with_signals
        from loops.worker.runner import TaskRun
        from loops.worker.worker import Worker

        async def handler(leased: Any) -> Any:
            run = TaskRun(leased.task, client=self.client, options=self.worker_options, sinks=sinks)
            return await run.run()

        try:
            while not self._stop_requested:
                leased = await self.client.lease_task(
                    self.task.id,
                    worker=self.worker_options.name,
                    ttl_ms=self.worker_options.lease_ttl_ms,
                )
                self._worker = Worker(self.client, self.worker_options, handler=handler)
                if self._stop_requested:  # asked while the lease was being taken
                    self._worker.request_stop()
                report = await with_signals(self.request_stop, self._worker.run_one(leased))
                final = await self.client.get_task(self.task.id)
                if report is None:
                    return PromptOutcome(final, interrupted=True)
                if final.status.value != "queued":
                    return PromptOutcome(final)
                tell(f"attempt {final.attempts} did not finish: {final.error}; retrying")
            return PromptOutcome(await self.client.get_task(self.task.id), interrupted=True)
        finally:
            await self.client.aclose()

    def close(self) -> None:
        """Close the local store."""
        self._close_store()
