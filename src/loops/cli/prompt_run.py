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
from pathlib import Path
from typing import Any

import click

from loops import config
from loops.engines.sandbox import Sandbox
from loops.flow import events as events_mod

#: the engine a prompt run uses when neither --provider nor --engine is given
DEFAULT_PROVIDER = "claude"
#: exit code when interrupted
EXIT_INTERRUPTED = 130


@dataclasses.dataclass(frozen=True, slots=True)
class PromptRunOptions:
    """What ``loop run`` passes to a prompt run.

    Attributes:
        cwd: the working directory.
        engine: the engine name from ``--engine``, if given.
        json_output: print NDJSON events.
        tui: draw the live TUI (``--no-tui`` turns it off).
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
    json_output: bool = False
    tui: bool = False
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
    json_output: bool,
    tui: bool,
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
        json_output=json_output,
        tui=tui,
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
    """Record ``prompt`` as a task in the local store, run it, and return the exit code."""
    settings = config.load_settings()
    return asyncio.run(_run(prompt, options, settings))


async def _run(prompt: str, options: PromptRunOptions, settings: config.Settings) -> int:
    from loops.cli.worker_commands import local_client, with_signals
    from loops.services.queue import task_spec
    from loops.worker.local import LocalQueueClient
    from loops.worker.options import WorkerOptions
    from loops.worker.runner import TaskRun
    from loops.worker.worker import Worker

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
    client, close = local_client(settings)
    assert isinstance(client, LocalQueueClient)
    task = client.service.create_task(spec).task
    stream = sys.stdout
    sink: events_mod.EventSink = (
        events_mod.NdjsonSink(stream) if options.json_output else events_mod.LogSink(stream)
    )
    worker_options = WorkerOptions.from_settings(
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

    async def handler(leased: Any) -> Any:
        run = TaskRun(leased.task, client=client, options=worker_options, sinks=[sink])
        return await run.run()

    if not options.json_output:
        click.echo(f"task {task.id}: {spec.title}")
    try:
        while True:
            leased = await client.lease_task(
                task.id, worker=worker_options.name, ttl_ms=worker_options.lease_ttl_ms
            )
            worker = Worker(client, worker_options, handler=handler)
            report = await with_signals(worker.request_stop, worker.run_one(leased))
            final = await client.get_task(task.id)
            if report is None:
                click.echo(f"interrupted: task {task.id} released", err=True)
                return EXIT_INTERRUPTED
            if final.status.value != "queued":
                break
            note = f"attempt {final.attempts} did not finish: {final.error}; retrying"
            click.echo(note, err=True)
    finally:
        await client.aclose()
        close()
    if not options.json_output:
        why = final.result if final.status.value == "done" else final.error
        click.echo(f"task {final.id} {final.status.value}: {why}")
    return 0 if final.status.value == "done" else 1
