"""Queue commands of the ``loop`` CLI: thin edges over :class:`QueueService`.

Each command parses its options, calls one service method and renders the result:
a readable table by default, JSON with ``--json`` (the bare object, or an array for
lists; NDJSON for ``events:tail --follow``). Bad input raises a
:class:`~loops.errors.LoopsError`, rendered once by the root group.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click

from loops import config, errors
from loops.cli import render
from loops.services.queue import QueueService, task_spec

F = TypeVar("F", bound=Callable[..., Any])


def _db_option(func: F) -> F:
    return click.option(
        "--db",
        "db_path",
        metavar="PATH",
        default=None,
        help="SQLite database file (default: QUEUE_DB_PATH or ./data/queue.sqlite).",
    )(func)


def _json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(
        func
    )


@contextlib.contextmanager
def _service(db_path: str | None, *, migrating: bool = False) -> Iterator[QueueService]:
    settings = config.load_settings(overrides={"queue.db_path": db_path})
    service = QueueService.open(settings, migrating=migrating)
    try:
        yield service
    finally:
        service.close()


def _task_options(func: F) -> F:
    options = [
        click.option("--prompt", default=None, help="What the agent should do (required)."),
        click.option("--loop-file", default=None, metavar="FILE",
                     help="Run this *.loop.py file (a type=loop task; instead of --prompt)."),
        click.option("--type", "task_type", default=None, help="Task type (default: task)."),
        click.option("--title", default=None, help="Short human label."),
        click.option("--priority", default=None, metavar="1..5",
                     help="1 is the most urgent (default: 3)."),
        click.option("--success", default=None, help="Success criteria for the judge."),
        click.option("--check", default=None, help="Deterministic check command (e.g. pytest -q)."),
        click.option("--provider", default=None, help="Engine: claude, codex, mock, ..."),
        click.option("--model", default=None, help="Model name for the engine."),
        click.option("--cwd", default=None, help="Working directory for the agent."),
        click.option("--max-iterations", default=None, metavar="N",
                     help="Converge-loop iteration limit."),
        click.option("--max-attempts", default=None, metavar="N",
                     help="Leases allowed (default: QUEUE_MAX_ATTEMPTS)."),
        click.option("--min-tests", default=None, metavar="N",
                     help="Fail a check that ran fewer than N tests."),
        click.option("--idempotency-key", default=None,
                     help="Creating twice with one key returns the first task."),
    ]  # fmt: skip
    for option in reversed(options):
        func = option(func)
    return func


#: the task type that runs a loop file (``loops.worker.runner.LOOP_TASK_TYPE``; not
#: imported, to keep the worker's imports out of the queue commands)
LOOP_TASK_TYPE = "loop"


def _loop_file(options: dict[str, Any]) -> tuple[str | None, str | None]:
    """The prompt and type of the task: ``--loop-file`` names the file a loop task runs."""
    given = options.get("loop_file")
    if given is None:
        return options["prompt"], options["task_type"]
    if options["prompt"] is not None:
        raise errors.InputError("give --loop-file or --prompt, not both")
    if options["task_type"] not in (None, LOOP_TASK_TYPE):
        raise errors.InputError(
            f"--loop-file makes a --type {LOOP_TASK_TYPE} task, not {options['task_type']!r}"
        )
    from loops.flow import loopfile

    if not loopfile.is_loop_file_name(given):
        raise errors.InputError(
            f"--loop-file {given} is not a loop file: its name must end in {loopfile.SUFFIX}"
        )
    path = Path(given).expanduser()
    under_cwd = not path.is_absolute() and bool(options.get("cwd"))
    if under_cwd:
        path = Path(options["cwd"]).expanduser() / path
    if not path.is_file():
        where = f" {path.absolute()} (a relative path is read under --cwd)" if under_cwd else ""
        raise errors.InputError(f"--loop-file {given}: no such file{where}")
    return str(path.resolve()), LOOP_TASK_TYPE


def _spec_data(options: dict[str, Any]) -> dict[str, object]:
    prompt, task_type = _loop_file(options)
    return {
        "prompt": prompt,
        "type": task_type,
        "title": options["title"],
        "priority": options["priority"],
        "success": options["success"],
        "check": options["check"],
        "provider": options["provider"],
        "model": options["model"],
        "cwd": options["cwd"],
        "max_iterations": options["max_iterations"],
        "max_attempts": options["max_attempts"],
        "min_tests": options["min_tests"],
        "idempotency_key": options["idempotency_key"],
    }


@click.command("db:migrate")
@_db_option
@_json_option
def db_migrate(db_path: str | None, as_json: bool) -> None:
    """Create or upgrade the queue database (idempotent) and sync responsibilities."""
    settings = config.load_settings(overrides={"queue.db_path": db_path})
    with _service(db_path, migrating=True) as service:
        applied = service.migrate()
        synced = service.list_responsibilities()
    where = str(settings.queue.db_url or settings.queue.db_path)
    if as_json:
        click.echo(render.to_json({"database": where, "applied": applied,
                                   "responsibilities": [r.name for r in synced]}))  # fmt: skip
        return
    if applied:
        click.echo(f"Applied {', '.join(applied)} to {where}")
    else:
        click.echo(f"Nothing to apply: {where} is up to date")
    if synced:
        click.echo(f"Responsibilities synced: {', '.join(r.name for r in synced)}")


def _api_option(func: F) -> F:
    return click.option(
        "--api",
        "api_url",
        metavar="URL",
        envvar="LOOP_API_BASE_URL",
        default=None,
        help="Create through this gateway instead of the local database (default: "
        "LOOP_API_BASE_URL, which a worker gives its agents; --db wins over it).",
    )(func)


def _create(db_path: str | None, api_url: str | None, parent_id: str | None,
            options: dict[str, Any], as_json: bool) -> None:  # fmt: skip
    spec = task_spec(_spec_data(options))
    if api_url and db_path is None:
        from loops.cli import remote

        token = config.load_settings().api.token
        task, created = remote.create(api_url, spec, token=token, parent_id=parent_id)
    else:
        with _service(db_path) as service:
            answer = (
                service.create_task(spec)
                if parent_id is None
                else service.create_child(parent_id, spec)
            )
        task, created = answer.task, answer.created
    _print_created(task, created, as_json)


@click.command("tasks:create")
@_task_options
@_db_option
@_api_option
@_json_option
def tasks_create(db_path: str | None, api_url: str | None, as_json: bool, **options: Any) -> None:
    """Create a task (prints the existing one for a known --idempotency-key)."""
    _create(db_path, api_url, None, options, as_json)


@click.command("tasks:create-child")
@click.argument("parent_id", envvar="LOOP_TASK_ID")
@_task_options
@_db_option
@_api_option
@_json_option
def tasks_create_child(
    parent_id: str, db_path: str | None, api_url: str | None, as_json: bool, **options: Any
) -> None:
    """Create a child of PARENT_ID (within QUEUE_MAX_CHILD_DEPTH and ..._CHILDREN_PER_TASK).

    PARENT_ID defaults to LOOP_TASK_ID: an agent run by a worker creates children of
    its own task with `loop tasks:create-child --prompt ...`.
    """
    _create(db_path, api_url, parent_id, options, as_json)


def _print_created(task: Any, created: bool, as_json: bool) -> None:
    if as_json:
        click.echo(render.to_json(task.to_dict()))
        return
    verb = "Created" if created else "Exists (same idempotency key):"
    parent = f" (child of {task.parent_id})" if task.parent_id is not None else ""
    click.echo(f"{verb} task {task.id}{parent} [{task.status.value}, priority {task.priority}]"
               f" {render.cut(task.title or task.prompt, 60)}")  # fmt: skip


@click.command("tasks:get")
@click.argument("task_id")
@_db_option
@_json_option
def tasks_get(task_id: str, db_path: str | None, as_json: bool) -> None:
    """Show one task with its steps, children and artifacts counts."""
    with _service(db_path) as service:
        detail = service.task_detail(task_id)
    if as_json:
        click.echo(render.to_json(detail.to_dict()))
        return
    counts = {"steps": detail.counts.steps, "children": detail.counts.children,
              "artifacts": detail.counts.artifacts}  # fmt: skip
    click.echo(render.task_text(detail.task, counts))


@click.command("tasks:list")
@click.option(
    "--status",
    default=None,
    metavar="STATUS",
    help="queued|leased|running|waiting_children|waiting_approval|done|failed|blocked|cancelled",
)
@click.option("--type", "task_type", default=None, help="Only tasks of this type.")
@click.option("--limit", default="50", metavar="N", help="At most N tasks (default: 50).")
@_db_option
@_json_option
def tasks_list(
    status: str | None, task_type: str | None, limit: str, db_path: str | None, as_json: bool
) -> None:
    """List tasks, newest first."""
    with _service(db_path) as service:
        tasks = service.list_tasks(status=status, task_type=task_type, limit=limit)
    if as_json:
        click.echo(render.to_json([t.to_dict() for t in tasks]))
    else:
        click.echo(render.tasks_table(tasks))


@click.command("tasks:cancel")
@click.argument("task_id")
@click.option("--reason", default=None, help="Why (recorded on the task and its event).")
@_db_option
@_json_option
def tasks_cancel(task_id: str, reason: str | None, db_path: str | None, as_json: bool) -> None:
    """Cancel a queued, leased, running or waiting task and its active children."""
    with _service(db_path) as service:
        task = service.cancel(task_id, reason=reason)
    if as_json:
        click.echo(render.to_json(task.to_dict()))
    else:
        click.echo(f"Cancelled task {task.id}")


@click.command("tasks:requeue")
@click.argument("task_id")
@click.option("--reason", default=None, help="Why (recorded in its task.requeued event).")
@_db_option
@_json_option
def tasks_requeue(task_id: str, reason: str | None, db_path: str | None, as_json: bool) -> None:
    """Send a failed or blocked task back to the queue with fresh attempts."""
    with _service(db_path) as service:
        task = service.requeue(task_id, reason=reason)
    if as_json:
        click.echo(render.to_json(task.to_dict()))
    else:
        click.echo(f"Re-queued task {task.id}")


@click.command("status")
@_db_option
@_json_option
def status(db_path: str | None, as_json: bool) -> None:
    """Counts by status, active leases, due responsibilities and recent failures."""
    with _service(db_path) as service:
        summary = service.status()
    if as_json:
        click.echo(render.to_json(summary.to_dict()))
    else:
        click.echo(render.status_text(summary))


@click.command("events:prune")
@click.option("--older-than", required=True, metavar="AGE",
              help="Delete events older than this: 30d, 12h, 90m, 600s.")  # fmt: skip
@_db_option
@_json_option
def events_prune(older_than: str, db_path: str | None, as_json: bool) -> None:
    """Delete old events from the timeline (tasks, steps and artifacts are kept)."""
    with _service(db_path) as service:
        pruned = service.prune_events(older_than)
    if as_json:
        click.echo(render.to_json(pruned.to_dict()))
        return
    click.echo(f"Deleted {pruned.deleted} events older than {pruned.before.isoformat()}")


@click.command("events:tail")
@click.option("--limit", default="20", metavar="N", help="Show the last N events (default: 20).")
@click.option("--task-id", default=None, help="Only events of this task.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events until interrupted.")
@click.option("--interval-ms", default=500, type=click.IntRange(10, 60_000), metavar="MS",
              help="Polling interval with --follow (default: 500).")  # fmt: skip
@_db_option
@_json_option
def events_tail(
    limit: str,
    task_id: str | None,
    follow: bool,
    interval_ms: int,
    db_path: str | None,
    as_json: bool,
) -> None:
    """Show the latest events; --json prints an array, or NDJSON with --follow."""
    with _service(db_path) as service:
        events = service.list_events(limit=limit, task_id=task_id)
        if not follow:
            if as_json:
                click.echo(render.to_json([e.to_dict() for e in events]))
            else:
                click.echo(render.events_lines(events))
            return
        last = events[-1].id if events else 0
        try:
            while True:
                for event in events:
                    line = (
                        render.to_json_line(event.to_dict())
                        if as_json
                        else render.event_line(event)
                    )
                    click.echo(line)
                    last = event.id
                time.sleep(interval_ms / 1000)
                events = service.list_events(after_id=last, limit=1000, task_id=task_id)
        except KeyboardInterrupt:
            return


@click.command("steps:list")
@click.argument("task_id")
@_db_option
@_json_option
def steps_list(task_id: str, db_path: str | None, as_json: bool) -> None:
    """List the steps (STEP markers) recorded for a task."""
    with _service(db_path) as service:
        steps = service.list_steps(task_id)
    if as_json:
        click.echo(render.to_json([s.to_dict() for s in steps]))
    else:
        click.echo(render.steps_table(steps))


@click.command("artifacts:list")
@click.option("--task-id", default=None, help="Only artifacts of this task.")
@click.option("--limit", default="50", metavar="N", help="At most N artifacts (default: 50).")
@_db_option
@_json_option
def artifacts_list(task_id: str | None, limit: str, db_path: str | None, as_json: bool) -> None:
    """List stored artifacts, newest first."""
    with _service(db_path) as service:
        artifacts = service.list_artifacts(task_id=task_id, limit=limit)
    if as_json:
        click.echo(render.to_json([a.to_dict() for a in artifacts]))
    else:
        click.echo(render.artifacts_table(artifacts))


@click.command("responsibilities:list")
@_db_option
@_json_option
def responsibilities_list(db_path: str | None, as_json: bool) -> None:
    """List responsibilities (from loops.toml) with their last and next dispatch."""
    with _service(db_path) as service:
        items = service.list_responsibilities()
    if as_json:
        click.echo(render.to_json([r.to_dict() for r in items]))
    else:
        click.echo(render.responsibilities_table(items))


@click.command("tick")
@_db_option
@_json_option
def tick(db_path: str | None, as_json: bool) -> None:
    """Reclaim expired leases and dispatch due responsibilities."""
    with _service(db_path) as service:
        report = service.tick()
    if as_json:
        click.echo(render.to_json(report.to_dict()))
        return
    click.echo(f"Reclaimed {len(report.reclaimed)} expired lease(s)")
    if report.dispatched:
        for dispatch in report.dispatched:
            click.echo(f"Dispatched {dispatch.responsibility}: task {dispatch.task.id}")
    else:
        click.echo("Dispatched nothing (no responsibility due, or its last task still active)")


COMMANDS = (
    db_migrate, tasks_create, tasks_create_child, tasks_get, tasks_list, tasks_cancel,
    tasks_requeue, status, events_tail, events_prune, steps_list, artifacts_list,
    responsibilities_list, tick,
)  # fmt: skip


def register(group: click.Group) -> None:
    """Add the queue commands to the root group."""
    for command in COMMANDS:
        group.add_command(command)
