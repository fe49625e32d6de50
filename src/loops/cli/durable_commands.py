"""``loop resume``: resume a paused or failed durable run from its checkpoint.

A run started with ``loop run FILE --supervise`` is resumed here, in this process,
from the checkpoint in its registry folder. A run of a ``type=loop`` task (run id
``task-<id>-<attempt>``) is resumed by queuing its task again: the next worker to
lease it resumes the run from the checkpoint in the task's state.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import click

from loops import config, errors

#: a worker's run id: ``task-<task id>-<attempt>``
_TASK_RUN = re.compile(r"task-(\d+)-\d+")


def _budget(usd: float | None, tokens: int | None, seconds: float | None) -> Any:
    if usd is None and tokens is None and seconds is None:
        return None
    from loops.flow import budget

    return budget.budget(tokens=tokens, usd=usd, seconds=seconds)


def _task_source(run_id: str) -> int | None:
    """The task whose run ``run_id`` is, if it is a worker's run."""
    match = _TASK_RUN.fullmatch(run_id)
    return int(match.group(1)) if match else None


@click.command("resume")
@click.argument("run_id")
@click.option("--budget-usd", type=click.FloatRange(min=0), help="New cost limit (USD).")
@click.option("--budget-tokens", type=click.IntRange(min=0), help="New token limit.")
@click.option("--budget-seconds", type=click.FloatRange(min=0), help="New wall-time limit.")
@click.option("--engine", help="Run every agent on this engine (local runs).")
@click.option("--no-tui", is_flag=True, help="Print plain log lines (local runs).")
@click.option("--json", "as_json", is_flag=True, help="NDJSON events (local runs) or the task.")
@click.option("--db", "db_path", default=None, help="Queue database (default: QUEUE_DB_PATH).")
def resume_command(
    run_id: str,
    budget_usd: float | None,
    budget_tokens: int | None,
    budget_seconds: float | None,
    engine: str | None,
    no_tui: bool,
    as_json: bool,
    db_path: str | None,
) -> None:
    """Resume RUN_ID (paused by a budget, or failed) from its checkpoint.

    What finished is not run again; jobs that failed run again. The --budget-*
    limits replace the root job's budget; what was already spent still counts.
    """
    limits = _budget(budget_usd, budget_tokens, budget_seconds)
    task_id = _task_source(run_id)
    if task_id is not None:
        _requeue(task_id, run_id, limits, db_path, as_json)
        return
    sys.exit(_resume_local(run_id, limits, engine=engine, no_tui=no_tui, as_json=as_json))


def _requeue(task_id: int, run_id: str, limits: Any, db_path: str | None, as_json: bool) -> None:
    from loops.cli import render
    from loops.services.queue import QueueService
    from loops.worker import checkpoints

    settings = config.load_settings(overrides={"queue.db_path": db_path})
    service = QueueService.open(settings)
    try:
        task = service.get_task(task_id)
        if task.type != "loop":
            raise errors.InputError(
                f"run {run_id} is task {task_id}'s, a {task.type!r} task; only loop tasks resume"
            )
        if task.status.value not in ("failed", "blocked"):
            raise errors.InputError(
                f"task {task_id} is {task.status.value}; only a failed or blocked (paused) "
                "task's run can be resumed"
            )
        if service.get_state(checkpoints.RUN_CHECKPOINT_KEY, task_id=task_id) is None:
            raise errors.InputError(f"task {task_id} has no run checkpoint to resume from")
        how = {"budget": limits.to_dict() if limits else None, "retry_failed": True}
        service.put_state(checkpoints.RUN_RESUME_KEY, how, task_id=task_id)
        task = service.requeue(task_id, reason=f"loop resume {run_id}")
    finally:
        service.close()
    if as_json:
        click.echo(render.to_json(task.to_dict()))
        return
    budget_text = f" with budget {limits}" if limits else ""
    click.echo(f"Queued task {task_id} again{budget_text}: a worker resumes run {run_id}")


def _resume_local(
    run_id: str, limits: Any, *, engine: str | None, no_tui: bool, as_json: bool
) -> int:
    from loops.cli import run_display
    from loops.flow import loopfile
    from loops.runs import files, layout, registry

    folder = registry.run_dir(run_id)
    if registry.read_run_status(folder.name).info.state is registry.RunState.RUNNING:
        raise errors.InputError(
            f"run {folder.name} is still running (its process is alive); stop it first"
        )
    meta = files.read_json(folder / layout.RUN_FILE) or {}
    checkpoint = files.read_json(folder / layout.CHECKPOINT_FILE)
    if not checkpoint:
        raise errors.InputError(f"run {folder.name} has no checkpoint to resume from")
    status = (checkpoint.get("run") or {}).get("status")
    if status == "pass":
        raise errors.InputError(f"run {folder.name} passed; there is nothing to resume")
    source = meta.get("source")
    if not source or not str(source).endswith(".loop.py"):
        raise errors.InputError(f"run {folder.name} did not run a loop file ({source!r})")
    loaded = loopfile.load(Path(source))
    request = run_display.RunRequest(
        job=loaded.job,
        title=loaded.job.name,
        source=str(loaded.path),
        cwd=Path(meta.get("cwd") or Path.cwd()),
        engine=engine,
        display=run_display.choose_display(as_json=as_json, no_tui=no_tui),
        supervise=True,
        run_id=folder.name,
        resume=True,
        budget=limits,
        retry_failed=True,
    )
    return run_display.execute(request)


@click.command("approve")
@click.argument("run_id")
@click.argument("path")
@click.option("--reject", is_flag=True, help="Reject instead of approving.")
@click.option("--reason", default=None, help="Why (recorded with the answer).")
@click.option("--by", default=None, help="Who answers (default: the current user).")
@click.option("--db", "db_path", default=None, help="Queue database (default: QUEUE_DB_PATH).")
def approve_command(
    run_id: str, path: str, reject: bool, reason: str | None, by: str | None, db_path: str | None
) -> None:
    """Answer the human gate at PATH of run RUN_ID (approve, or --reject).

    A task's run is queued again to go on; a local run goes on with `loop resume`.
    """
    import getpass

    from loops.flow import approval

    who = by or getpass.getuser()
    verb = "Rejected" if reject else "Approved"
    task_id = _task_source(run_id)
    if task_id is not None:
        status = _answer_task(
            task_id, path, approved=not reject, by=who, reason=reason, db_path=db_path
        )
        click.echo(f"{verb} {path} of run {run_id}: task {task_id} is {status}")
        return
    answer = approval.make_answer(approved=not reject, by=who, reason=reason)
    from loops.runs import files, layout, registry

    folder = registry.run_dir(run_id)
    events = files.read_complete_lines(folder / layout.EVENTS_FILE)
    _require_asked(path, run_id, [_parse(line) for line in events])
    approval.FileApprovals(folder / layout.APPROVALS_FILE).record(path, answer)
    click.echo(f"{verb} {path} of run {folder.name}; go on with: loop resume {folder.name}")


def _parse(line: str) -> dict[str, Any]:
    import json

    try:
        body = json.loads(line)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _require_asked(path: str, run_id: str, events: list[dict[str, Any]]) -> None:
    """Refuse to answer a gate the run never asked (a typo in the path)."""
    asked = sorted({str(e.get("path")) for e in events if e.get("type") == "approval.requested"})
    if path not in asked:
        raise errors.InputError(
            f"run {run_id} has no human gate waiting at {path!r}; "
            f"gates asked: {', '.join(asked) or 'none'}"
        )


def _answer_task(
    task_id: int, path: str, *, approved: bool, by: str, reason: str | None, db_path: str | None
) -> str:
    """Record the answer on the task (it goes back to the queue); its status after."""
    from loops.flow import approval
    from loops.queue.tasks import TaskStatus
    from loops.services.queue import QueueService

    settings = config.load_settings(overrides={"queue.db_path": db_path})
    service = QueueService.open(settings)
    try:
        task = service.get_task(task_id)
        if task.status is TaskStatus.BLOCKED and approval.WAITING in (task.error or ""):
            # paused at a gate by a worker from before the waiting_approval status
            service.requeue(task_id, reason=f"answering the human gate at {path}")
        task = service.answer_approval(task_id, path=path, approved=approved, by=by, reason=reason)
    finally:
        service.close()
    return task.status.value


def register(group: click.Group) -> None:
    """Add the durable-run commands to the root group."""
    group.add_command(resume_command)
    group.add_command(approve_command)
