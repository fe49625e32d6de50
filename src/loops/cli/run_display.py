"""How ``loop run`` shows a run: the live TUI, plain log lines or NDJSON; and ``--supervise``.

The run's event stream has one producer (the runner) and pluggable consumers: this
module only picks the sinks. ``--supervise`` adds the registry's recorder as one more
sink; the TUI is one more consumer of the same stream.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import sys
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

import click

from loops.flow import approval, checkpoint, runner
from loops.flow import budget as budget_mod
from loops.flow import events as events_mod
from loops.flow.jobs import Job
from loops.runs import layout

if TYPE_CHECKING:
    from loops.tui.app import LiveRunApp

#: exit code of ``loop run`` when interrupted (Ctrl-C, or stopped from the TUI)
EXIT_INTERRUPTED = 130

T = TypeVar("T")


class Display(enum.StrEnum):
    """How a run is shown on stdout."""

    TUI = "tui"
    """The live terminal UI."""
    LOG = "log"
    """Readable log lines (``--no-tui``, or stdout is not a terminal)."""
    JSON = "json"
    """One JSON event per line (``--json``)."""


def choose_display(*, as_json: bool, no_tui: bool, stream: TextIO | None = None) -> Display:
    """The display for ``loop run``: JSON when asked, the TUI on a terminal, else logs."""
    if as_json:
        return Display.JSON
    out = sys.stdout if stream is None else stream
    if no_tui or not out.isatty():
        return Display.LOG
    return Display.TUI


@dataclasses.dataclass(frozen=True, slots=True)
class RunRequest:
    """One run for ``loop run`` to execute.

    Attributes:
        job: the root job.
        title: a short title (the root job's name, or the prompt).
        source: the loop file or prompt it came from.
        cwd: the working directory.
        engine: ``--engine``, if given.
        force_engine: the engine replaces those the jobs name.
        display: how to show it.
        supervise: register it in the run registry (``--supervise``).
        engine_options: options for a named engine.
        run_id: the run id (default: a new one); with ``resume``, the run to resume.
        resume: resume the registered run ``run_id`` from its checkpoint.
        budget: limits replacing the root job's budget (``loop resume --budget-*``).
        retry_failed: when resuming, run the jobs that failed again.
        wrap_engine: applied to every engine the run uses (``--fallback``, ``--record``).
    """

    job: Job
    title: str
    source: str
    cwd: Path
    engine: str | None = None
    force_engine: bool = True
    display: Display = Display.LOG
    supervise: bool = False
    engine_options: Mapping[str, Any] | None = None
    run_id: str | None = None
    resume: bool = False
    budget: budget_mod.Budget | None = None
    retry_failed: bool = False
    wrap_engine: Callable[[Any], Any] | None = None


#: starts the run with extra sinks (the TUI passes its own)
RunStarter = Callable[[list[events_mod.EventSink]], Coroutine[Any, Any, runner.RunResult]]


def execute(request: RunRequest) -> int:
    """Run ``request``, showing it as asked; return the process exit code.

    Raises:
        ConfigError: the registry cannot be written, or an agent has no usable engine.
    """
    run_id = request.run_id or runner.new_run_id()
    sinks: list[events_mod.EventSink] = []
    recorder = None
    checkpointer: checkpoint.Checkpointer | None = None
    approvals: approval.Approvals | None = None
    if request.supervise:
        from loops.runs import recorder as recorder_mod
        from loops.runs import registry

        recorder = recorder_mod.open_run(
            run_id,
            home=registry.resolve_home(),
            title=request.title,
            shape=request.job.shape(),
            cwd=request.cwd,
            source=request.source,
            resume=request.resume,
        )
        sinks.append(recorder)
        # a supervised run is durable: `loop resume` picks it up from this checkpoint
        checkpointer = checkpoint.FileCheckpointer(recorder.run_dir / layout.CHECKPOINT_FILE)
        approvals = approval.FileApprovals(recorder.run_dir / layout.APPROVALS_FILE)
        if request.display is not Display.TUI:
            click.echo(f"supervised run {run_id} (watch it: loop watch {run_id})", err=True)

    def start(extra: list[events_mod.EventSink]) -> Coroutine[Any, Any, runner.RunResult]:
        return runner.run(
            request.job,
            cwd=request.cwd,
            sinks=[*sinks, *extra],
            engine=request.engine,
            engine_options=request.engine_options,
            force_engine=request.force_engine,
            wrap_engine=request.wrap_engine,
            run_id=run_id,
            checkpointer=checkpointer,
            budget=request.budget,
            retry_failed=request.retry_failed,
            approvals=approvals,
        )

    try:
        if request.display is Display.TUI:
            return _run_tui(request, run_id, start)
        return _run_plain(request, start)
    finally:
        if recorder is not None:
            recorder.close()


def plain_sink(display: Display, stream: TextIO) -> events_mod.EventSink:
    """The sink that prints a run without the TUI: NDJSON for ``--json``, else log lines."""
    if display is Display.JSON:
        return events_mod.NdjsonSink(stream)
    return events_mod.LogSink(stream)


def _run_plain(request: RunRequest, start: RunStarter) -> int:
    try:
        result = asyncio.run(start([plain_sink(request.display, sys.stdout)]))
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return EXIT_INTERRUPTED
    if request.display is not Display.JSON:
        click.echo(f"{result.status.value}: {result.reason}")
    return result.exit_code


def live_app(
    start: Callable[[list[events_mod.EventSink]], Coroutine[Any, Any, T]],
    *,
    run_id: str,
    title: str,
    shape: Mapping[str, Any] | None = None,
    stop: Callable[[], None] | None = None,
) -> LiveRunApp[T]:
    """The live TUI for one run; every kind of run (a loop file, a prompt) gets this one.

    Args:
        start: starts the run with the UI's sink among its sinks.
        run_id: the run's id, shown until its first event names it.
        title: the run's title.
        shape: the job tree, drawn as pending nodes before they run.
        stop: asks the run to stop gracefully when the user quits it (default: cancel).
    """
    from loops.tui import app as tui_app

    return tui_app.LiveRunApp(start=start, run_id=run_id, title=title, shape=shape, stop=stop)


def show_live(app: LiveRunApp[T]) -> T | None:
    """Run ``app`` on this terminal until the user leaves it; return what the run returned.

    Returns:
        The run's result, or ``None`` when it was cancelled from the UI.

    Raises:
        Exception: whatever the run raised (re-raised here, after the UI closed).
    """
    result = app.run()
    if app.error is not None:
        raise app.error
    return result


def _run_tui(request: RunRequest, run_id: str, start: RunStarter) -> int:
    result = show_live(
        live_app(start, run_id=run_id, title=request.title, shape=request.job.shape())
    )
    if result is None:
        click.echo("stopped", err=True)
        return EXIT_INTERRUPTED
    click.echo(f"{result.status.value}: {result.reason}")
    return result.exit_code
