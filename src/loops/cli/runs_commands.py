"""``loop list``, ``loop status <runId>``, ``loop tail``, ``loop records``, ``loop watch``
and ``loop runs:prune``: reading supervised runs from another process.

Every command here only reads the registry (``runs:prune`` deletes ended runs), and
works while the run is live and after it ended.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import click

from loops import errors
from loops.flow import describe as describe_mod
from loops.flow import events as events_mod
from loops.runs import records, registry


def _json_line(document: Any) -> str:
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"), default=str)


def format_age(seconds: float) -> str:
    """A compact age: ``45s``, ``12m``, ``3h``, ``2d``."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def _cut(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def runs_table(runs: list[registry.RunInfo], now: dt.datetime) -> str:
    """``loop list`` as aligned columns."""
    if not runs:
        return "No supervised runs (start one with `loop run FILE --supervise`)."
    rows = [["RUN ID", "STATE", "ITER", "AGE", "TITLE"]]
    for run in runs:
        iteration = (
            "-"
            if run.iteration is None
            else f"{run.iteration}/{run.max_iterations if run.max_iterations else '?'}"
        )
        age = format_age(run.age_s(now))
        rows.append([run.run_id, run.state.value, iteration, age, _cut(run.title, 60)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


@click.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array of runs.")
def list_command(as_json: bool) -> None:
    """List supervised runs, newest first: id, state, iteration, age, title.

    STATE is running, dead (its process is gone), or how it ended (pass, fail, paused, ...).
    """
    runs = registry.list_runs()
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in runs], indent=2))
        return
    click.echo(runs_table(runs, dt.datetime.now(dt.UTC)))


def _verdict_text(verdict: Any) -> str:
    if not isinstance(verdict, dict):
        return "-"
    state = "met" if verdict.get("met") else "not met"
    confidence = verdict.get("confidence")
    conf = f" ({confidence:.2f})" if isinstance(confidence, int | float) else ""
    return (
        f"{verdict.get('path')} {verdict.get('slot')}: {state}{conf}: "
        f"{_cut(str(verdict.get('reason') or ''), 300)}"
    )


def _outcome_text(outcome: Any) -> str:
    if not isinstance(outcome, dict):
        return "-"
    return (
        f"{outcome.get('path')} {outcome.get('kind')} {outcome.get('status')}: "
        f"{_cut(str(outcome.get('summary') or ''), 300)}"
    )


def _budget_text(budget: Any) -> str:
    spent, limits = budget.get("spent") or {}, budget.get("limits") or {}
    parts = [f"{key} {spent.get(key, 0)}/{limit}" for key, limit in limits.items()]
    tail = f" (exceeded: {budget['exceeded']})" if budget.get("exceeded") else ""
    return f"{budget.get('scope') or 'run'}: {', '.join(parts) or 'no limits'}{tail}"


def status_text(status: registry.RunStatus, now: dt.datetime) -> str:
    """``loop status <runId>`` as readable lines."""
    info = status.info
    iteration = "-" if info.iteration is None else f"{info.iteration}/{info.max_iterations}"
    lines = [
        f"run {info.run_id}: {info.state.value}  {info.title}",
        f"  started   {info.started_at} ({format_age(info.age_s(now))} ago), "
        f"pid {info.pid} on {info.host}",
        f"  iteration {iteration}",
        f"  verdict   {_verdict_text(status.last_verdict)}",
        f"  outcome   {_outcome_text(status.last_outcome)}",
        f"  usage     {info.tokens} tokens, ${info.cost_usd:.4f}",
    ]
    lines.extend(f"  budget    {_budget_text(b)}" for b in status.budgets)
    if info.reason:
        lines.append(f"  reason    {_cut(info.reason, 400)}")
    if info.state is registry.RunState.DEAD:
        lines.append("  the run's process is gone and it never reported an end")
    if status.shape:
        lines.append("shape:")
        lines.append(describe_mod.shape_to_text(status.shape, "  "))
    return "\n".join(lines)


def show_run_status(run_id: str, *, as_json: bool) -> None:
    """Print ``loop status <runId>``.

    Raises:
        RunNotFound: no registered run has that id.
    """
    status = registry.read_run_status(run_id)
    if as_json:
        click.echo(json.dumps(status.to_dict(), indent=2, default=str))
        return
    click.echo(status_text(status, dt.datetime.now(dt.UTC)))


def _describe_raw(event: dict[str, Any]) -> str | None:
    try:
        parsed = events_mod.Event.from_dict(event)
    except (KeyError, ValueError):  # a type this version does not know: show it plainly
        return f"{str(event.get('ts', ''))[11:19]} {event.get('path') or '-'}  {event.get('type')}"
    return events_mod.describe_event(parsed)


@click.command("tail")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print each event as one JSON line.")
@click.option(
    "--new", "only_new", is_flag=True, help="Skip the events written so far; only new ones."
)
def tail_command(run_id: str, as_json: bool, only_new: bool) -> None:
    """Stream a supervised run's events as they happen.

    Ends on its own when the run ends or its process dies (Ctrl-C stops earlier).
    """
    last_type = None
    try:
        for event in registry.follow_events(run_id, from_start=not only_new):
            last_type = event.get("type")
            if as_json:
                click.echo(_json_line(event))
                continue
            line = _describe_raw(event)
            if line is not None:
                click.echo(line)
    except KeyboardInterrupt:
        return
    if last_type != "run.finished" and not as_json:
        state = registry.read_run_status(run_id).info.state
        if state is registry.RunState.DEAD:
            click.echo(f"run {run_id} is dead: its process ended without finishing")
        else:  # it ended before the events followed (--new skips what was written)
            click.echo(f"run {run_id} already ended: {state.value}")


def _record_text(record: dict[str, Any]) -> str:
    kind = str(record.get("kind"))
    ts, path = str(record.get("ts", ""))[:19], record.get("path") or "-"
    if kind == records.RecordKind.DISPATCH:
        detail = f"{record.get('job_kind')} started"
    elif kind == records.RecordKind.COMPLETION:
        detail = f"{record.get('status')}: {_cut(str(record.get('summary') or ''), 200)}"
    elif kind == records.RecordKind.SURFACING:
        detail = f"[{record.get('severity')}] {_cut(str(record.get('reason') or ''), 200)}"
    else:
        target = record.get("target") or "the next turn"
        accepted = "" if "accepted" not in record else f" accepted={record.get('accepted')}"
        detail = f"-> {target}{accepted}: {_cut(str(record.get('reason') or ''), 200)}"
    return f"{ts}  {kind:<16} {path}  {detail}"


@click.command("records")
@click.argument("run_id")
@click.option(
    "--kind",
    "kinds",
    multiple=True,
    metavar="KIND",
    help="dispatch, completion, surfacing, revision-emitted, revision-routed, or "
    "revision (both revision kinds); repeat or comma-separate for several.",
)
@click.option("--path", default=None, help="Only records at this tree path or under it.")
@click.option("--since", default=None, metavar="ISO", help="Only records at or after this time.")
@click.option("--last", type=click.IntRange(min=0), default=None, metavar="N",
              help="Only the last N matching records.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print each record as one JSON line.")
def records_command(
    run_id: str,
    kinds: tuple[str, ...],
    path: str | None,
    since: str | None,
    last: int | None,
    as_json: bool,
) -> None:
    """Print a supervised run's decisions: dispatches, completions, surfacings, revisions."""
    selection = records.RecordFilter(
        kinds=records.parse_kinds(kinds),
        path=path,
        since=records.parse_since(since) if since is not None else None,
        last=last,
    )
    lines = registry.read_record_lines(run_id, selection)
    if as_json:  # the stored lines are already one compact JSON object each
        click.echo("\n".join(lines), nl=bool(lines))
        return
    if not lines:
        click.echo("No matching records.")
        return
    click.echo("\n".join(_record_text(json.loads(line)) for line in lines))


@click.command("runs:prune")
@click.option(
    "--older-than",
    required=True,
    metavar="DURATION",
    help="Delete ended or dead runs last updated this long ago (30s, 15m, 12h, 7d).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the deleted run ids as JSON.")
def prune_command(older_than: str, as_json: bool) -> None:
    """Delete supervised runs that ended (or died) long enough ago; running ones are kept."""
    from loops.queue import schedules

    try:
        seconds = schedules.every(older_than).every_s
    except errors.ConfigError as exc:
        raise errors.InputError(f"--older-than: {exc.message}") from None
    assert seconds is not None
    removed = registry.prune_runs(seconds)
    if as_json:
        click.echo(json.dumps({"removed": removed}))
        return
    click.echo(f"removed {len(removed)} run{'s' if len(removed) != 1 else ''}")


@click.command("watch")
@click.argument("run_id")
def watch_command(run_id: str) -> None:
    """Open the live UI on a supervised run from another terminal (q leaves; the run goes on)."""
    folder = registry.run_dir(run_id)
    from loops.tui import app as tui_app

    tui_app.WatchApp(run_id=folder.name, home=registry.resolve_home()).run()


class _StatusCommand(click.Command):
    """``loop status [RUN_ID]``: one run's snapshot, or without an id the queue's summary.

    The queue's options are borrowed from its own ``status`` command when first needed
    (parsing or help), so registering this one imports nothing of the queue:
    ``loop list`` shares this module and stays fast.
    """

    def __init__(self) -> None:
        super().__init__(
            "status",
            callback=self._dispatch,
            params=[click.Argument(["run_id"], required=False)],
            help=(
                "The queue's summary, or with RUN_ID a supervised run's snapshot.\n\n"
                "With RUN_ID: the run's state, shape, last gate verdict and outcome, tokens "
                "and cost against its budgets (a unique prefix of the id is enough).\n\n"
                "Without: counts by status, active leases, due responsibilities and recent "
                "failures."
            ),
        )
        self._borrowed = False

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        """The RUN_ID argument, then the queue status command's options."""
        if not self._borrowed:
            self._borrowed = True
            self.params.extend(p for p in _queue_status().params if p.name != "run_id")
        return super().get_params(ctx)

    @staticmethod
    @click.pass_context
    def _dispatch(ctx: click.Context, /, run_id: str | None, **options: Any) -> Any:
        if run_id is not None:
            show_run_status(run_id, as_json=bool(options.get("as_json")))
            return None
        queue_status = _queue_status()
        assert queue_status.callback is not None
        return ctx.invoke(queue_status.callback, **options)


def _queue_status() -> click.Command:
    from loops.cli.queue_commands import status

    return status


def register(group: click.Group) -> None:
    """Add the run registry's commands; ``status`` takes over the queue's, dispatching on RUN_ID."""
    group.add_command(list_command)
    group.add_command(list_command, name="ls")
    group.add_command(_StatusCommand())
    group.add_command(tail_command)
    group.add_command(records_command)
    group.add_command(prune_command)
    group.add_command(watch_command)
