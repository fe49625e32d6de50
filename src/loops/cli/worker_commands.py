"""``loop worker`` and ``loop run-job``: run agents on queued tasks.

``loop worker`` leases through the gateway (``WORKER_API_BASE_URL``) unless ``--local``
is given; ``loop run-job`` runs one task from the local store (``QUEUE_DB_PATH``), or
through the gateway with ``--gateway``. Both stop cleanly on SIGTERM/SIGINT: running
agents get ``WORKER_SHUTDOWN_GRACE_MS`` to finish, then their process groups are killed
and their leases released without charging an attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from loops import config, engines, redact
from loops.cli.engine_flags import composition, engine_flags
from loops.cli.sandbox_flags import sandbox_flags, sandbox_from_flags
from loops.worker.client import QueueClient
from loops.worker.options import WorkerOptions

T = TypeVar("T")

#: exit code when interrupted before the task finished
EXIT_INTERRUPTED = 130


def _provider_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = engine_flags(fn)
    fn = click.option(
        "--agent-command",
        metavar="CMD",
        help="For --provider command: the agent executable and its arguments.",
    )(fn)
    fn = click.option(
        "--mock-script",
        type=click.Path(dir_okay=False, path_type=Path),
        help="For --provider mock: a JSON script of turns (offline runs and demos).",
    )(fn)
    return click.option(
        "--provider",
        type=click.Choice(engines.engine_names()),
        default="claude",
        show_default=True,
        help="Engine for tasks that name none.",
    )(fn)


def engine_options(
    provider: str, mock_script: Path | None, agent_command: str | None
) -> dict[str, Any]:
    """Engine options from the provider flags (checked against the provider)."""
    if mock_script is not None and provider != "mock":
        raise click.BadParameter("--mock-script needs --provider mock", param_hint="--mock-script")
    if agent_command is not None and provider != "command":
        raise click.BadParameter(
            "--agent-command needs --provider command", param_hint="--agent-command"
        )
    if provider == "command" and agent_command is None:
        raise click.BadParameter(
            "--provider command needs --agent-command 'prog --flag'", param_hint="--agent-command"
        )
    if mock_script is not None:
        return {"script": str(mock_script.resolve())}
    if agent_command is not None:
        return {"command": agent_command}
    return {}


def setup_logging() -> None:
    """Worker progress lines on stderr."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise
    redact.install_logging_filter()  # no secret reaches a log line


def local_client(settings: config.Settings) -> tuple[QueueClient, Callable[[], None]]:
    """A client over the local store, and how to close it."""
    from loops.services.queue import QueueService
    from loops.worker.local import LocalQueueClient

    service = QueueService.open(settings)
    env = {"QUEUE_DB_PATH": str(settings.queue.db_path)}
    if settings.queue.db_url:
        env["QUEUE_DB_URL"] = settings.queue.db_url
    client = LocalQueueClient(service, agent_env=env, poll_ms=settings.worker.poll_ms)
    return client, service.close


def gateway_client(settings: config.Settings) -> QueueClient:
    """A client over the gateway at ``WORKER_API_BASE_URL``."""
    from loops.worker.http import HttpQueueClient

    return HttpQueueClient(settings.worker.api_base_url, token=settings.api.token)


async def with_signals(stop: Callable[[], None], work: Awaitable[T]) -> T:
    """Await ``work`` with SIGTERM/SIGINT calling ``stop`` (graceful shutdown)."""
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop)
            installed.append(sig)
    try:
        return await work
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


@click.command("worker")
@click.option("--stream-job-logs", is_flag=True, help="Echo agent output live to stderr.")
@click.option("--concurrency", type=click.IntRange(min=1), default=1, show_default=True,
              help="Tasks run at once.")  # fmt: skip
@_provider_option
@click.option("--local", is_flag=True, help="Lease from the local store, not the gateway.")
@click.option("--max-tasks", type=click.IntRange(min=1), help="Exit after running N tasks.")
@click.option("--type", "types", multiple=True, help="Lease only tasks of this type (repeat).")
@click.option("--name", help="Worker name shown as the lease owner (default: host:pid).")
@click.option("--supervise", is_flag=True,
              help="Register each task's run for loop list/status/tail/records/watch.")  # fmt: skip
@sandbox_flags()
@click.option(
    "--loop-dir",
    "loop_dirs",
    multiple=True,
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="With --sandbox: a folder of trusted loop files (repeat). A sandboxed worker "
    "imports loop files only from these, and refuses tasks whose cwd overlaps one.",
)
def worker_command(
    stream_job_logs: bool,
    concurrency: int,
    provider: str,
    mock_script: Path | None,
    agent_command: str | None,
    fallback: str | None,
    on_limit: str,
    max_usd: float | None,
    record_dir: Path | None,
    base_url: str | None,
    local: bool,
    max_tasks: int | None,
    types: tuple[str, ...],
    name: str | None,
    supervise: bool,
    sandbox: str,
    check_network: str | None,
    loop_dirs: tuple[Path, ...],
) -> None:
    """Lease tasks and run agents on them until stopped (SIGTERM/SIGINT stop cleanly)."""
    settings = config.load_settings()
    box, check_shares_network = sandbox_from_flags(sandbox, check_network)
    if loop_dirs and box is None:
        raise click.BadParameter(
            "--loop-dir needs --sandbox bwrap: without a sandbox the worker imports loop "
            "files from anywhere",
            param_hint="--loop-dir",
        )
    options = WorkerOptions.from_settings(
        settings.worker,
        supervise_home=settings.home if supervise else None,
        name=name,
        provider=provider,
        engine_options=engine_options(provider, mock_script, agent_command),
        concurrency=concurrency,
        stream_job_logs=stream_job_logs,
        types=types or None,
        sandbox=box,
        check_network=check_shares_network,
        loop_dirs=tuple(d.resolve() for d in loop_dirs),
        **composition(
            provider,
            fallback=fallback,
            on_limit=on_limit,
            max_usd=max_usd,
            record_dir=record_dir,
            base_url=base_url,
        ),
    )
    setup_logging()
    asyncio.run(_serve(settings, options, local=local, max_tasks=max_tasks))


async def _serve(
    settings: config.Settings, options: WorkerOptions, *, local: bool, max_tasks: int | None
) -> None:
    from loops.worker.worker import Worker

    close: Callable[[], None] = lambda: None  # noqa: E731
    if local:
        client, close = local_client(settings)
        where = f"the local store {settings.queue.db_url or settings.queue.db_path}"
    else:
        client = gateway_client(settings)
        where = settings.worker.api_base_url
    worker = Worker(client, options)
    logging.getLogger(__name__).info(
        "worker %s: leasing from %s (concurrency %d, provider %s)",
        options.name,
        where,
        options.concurrency,
        options.provider,
    )
    try:
        stats = await with_signals(worker.request_stop, worker.run(max_tasks=max_tasks))
    finally:
        await client.aclose()
        close()
    logging.getLogger(__name__).info(
        "worker %s stopped: %d leased, %d completed, %d released, %d cancelled, %d lost",
        options.name,
        stats.leased,
        stats.completed,
        stats.released,
        stats.cancelled,
        stats.lost,
    )


@click.command("run-job")
@click.argument("task_id")
@click.option("--stream-job-logs", is_flag=True, help="Echo agent output live to stderr.")
@_provider_option
@click.option("--gateway", "via_gateway", is_flag=True,
              help="Lease through the gateway instead of the local store.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the finished task as JSON.")
def run_job_command(
    task_id: str,
    stream_job_logs: bool,
    provider: str,
    mock_script: Path | None,
    agent_command: str | None,
    fallback: str | None,
    on_limit: str,
    max_usd: float | None,
    record_dir: Path | None,
    base_url: str | None,
    via_gateway: bool,
    as_json: bool,
) -> None:
    """Run one queued task now, in this process, and wait for it to finish.

    Exits 0 when the task is done, 1 when it failed, is blocked or will be retried,
    130 when interrupted (its lease is released).
    """
    settings = config.load_settings()
    options = WorkerOptions.from_settings(
        settings.worker,
        provider=provider,
        engine_options=engine_options(provider, mock_script, agent_command),
        stream_job_logs=stream_job_logs,
        **composition(
            provider,
            fallback=fallback,
            on_limit=on_limit,
            max_usd=max_usd,
            record_dir=record_dir,
            base_url=base_url,
        ),
    )
    setup_logging()
    sys.exit(asyncio.run(_run_job(settings, options, task_id, via_gateway, as_json)))


async def _run_job(
    settings: config.Settings,
    options: WorkerOptions,
    task_id: str,
    via_gateway: bool,
    as_json: bool,
) -> int:
    from loops.services.queue import parse_task_id
    from loops.worker.worker import Worker

    tid = parse_task_id(task_id)
    close: Callable[[], None] = lambda: None  # noqa: E731
    client = gateway_client(settings) if via_gateway else None
    if client is None:
        client, close = local_client(settings)
    try:
        leased = await client.lease_task(tid, worker=options.name, ttl_ms=options.lease_ttl_ms)
        worker = Worker(client, options)
        report = await with_signals(worker.request_stop, worker.run_one(leased))
        task = await client.get_task(tid)
    finally:
        await client.aclose()
        close()
    if as_json:
        import json

        click.echo(json.dumps(task.to_dict()))
    else:
        why = task.result if task.status.value == "done" else task.error
        click.echo(f"task {task.id} {task.status.value}: {why or ''}".rstrip(": "))
    if report is None:
        return EXIT_INTERRUPTED
    return 0 if task.status.value == "done" else 1


def register(group: click.Group) -> None:
    """Add ``worker`` and ``run-job`` to the root group."""
    group.add_command(worker_command)
    group.add_command(run_job_command)
