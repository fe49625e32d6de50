"""Rendering for the CLI: readable tables by default, JSON documents with ``--json``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from loops.queue.artifacts import Artifact
from loops.queue.events import Event
from loops.queue.responsibilities import Responsibility
from loops.queue.steps import Step
from loops.queue.summary import StatusSummary
from loops.queue.tasks import Task, TaskStatus

#: widest a free-text cell gets before it is cut with an ellipsis
MAX_CELL = 48


def to_json(document: Any) -> str:
    """One JSON document, pretty-printed with stable key order of the objects given."""
    return json.dumps(document, indent=2, ensure_ascii=False)


def to_json_line(document: Any) -> str:
    """One JSON document on one line (NDJSON streams)."""
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"))


def when(moment: datetime | None) -> str:
    """A compact UTC time, ``2026-11-27 12:00:00``, or ``-``."""
    return "-" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S")


def cut(text: str | None, width: int = MAX_CELL) -> str:
    """One line of at most ``width`` characters (``-`` for nothing)."""
    if not text:
        return "-"
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Left-aligned columns with a header line, two spaces apart."""
    cells = [[str(c) for c in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in cells]  # fmt: skip
    return "\n".join(lines)


def tasks_table(tasks: Sequence[Task]) -> str:
    """Tasks, one per line."""
    if not tasks:
        return "No tasks."
    return table(
        ["ID", "STATUS", "PRI", "TYPE", "ATTEMPTS", "TITLE", "UPDATED"],
        [
            [t.id, t.status.value, t.priority, cut(t.type, 16), f"{t.attempts}/{t.max_attempts}",
             cut(t.title or t.prompt), when(t.updated_at)]
            for t in tasks
        ],
    )  # fmt: skip


def task_text(task: Task, counts: dict[str, int] | None = None) -> str:
    """One task as labelled lines."""
    usage = task.usage
    cost = "-" if usage.cost_usd is None else f"${usage.cost_usd:.4f}"
    fields: list[tuple[str, object]] = [
        ("id", task.id),
        ("status", task.status.value),
        ("type", task.type),
        ("title", task.title or "-"),
        ("priority", task.priority),
        ("attempts", f"{task.attempts}/{task.max_attempts}"),
        ("prompt", task.prompt),
        ("success", task.success or "-"),
        ("check", task.check or "-"),
        ("provider", task.provider or "-"),
        ("model", task.model or "-"),
        ("cwd", task.cwd or "-"),
        ("max iterations", task.max_iterations if task.max_iterations is not None else "-"),
        ("min tests", task.min_tests if task.min_tests is not None else "-"),
        ("parent", task.parent_id if task.parent_id is not None else "-"),
        ("responsibility", task.responsibility or "-"),
        ("lease", f"{task.lease_owner} until {when(task.lease_expires_at)}"
         if task.status.is_held else "-"),
        ("run after", when(task.run_after)),
        ("result", task.result or "-"),
        ("error", task.error or "-"),
        ("usage", f"{usage.input_tokens} in / {usage.output_tokens} out tokens, {cost}"),
        ("created", when(task.created_at)),
        ("updated", when(task.updated_at)),
        ("finished", when(task.finished_at)),
    ]  # fmt: skip
    if counts is not None:
        fields += [(name, n) for name, n in counts.items()]
    width = max(len(name) for name, _ in fields)
    return "\n".join(f"{name.ljust(width)}  {value}" for name, value in fields)


def events_lines(events: Sequence[Event]) -> str:
    """Events, one per line."""
    return "\n".join(event_line(e) for e in events) if events else "No events."


def event_line(event: Event) -> str:
    """One event: id, time, type, task and data."""
    task = f"task {event.task_id}" if event.task_id is not None else "-"
    data = " ".join(f"{k}={v}" for k, v in event.data.items() if v is not None)
    return f"{event.id:>6}  {when(event.ts)}  {event.type:<24}  {task:<10}  {cut(data, 80)}"


def steps_table(steps: Sequence[Step]) -> str:
    """Steps of one task."""
    if not steps:
        return "No steps."
    return table(
        ["NAME", "STATUS", "IDEMPOTENCY KEY", "NOTE", "UPDATED"],
        [[cut(s.name, 32), s.status.value, cut(s.idempotency_key, 32), cut(s.note),
          when(s.updated_at)] for s in steps],
    )  # fmt: skip


def artifacts_table(artifacts: Sequence[Artifact]) -> str:
    """Artifacts, newest first."""
    if not artifacts:
        return "No artifacts."
    return table(
        ["ID", "TASK", "KIND", "NAME", "SIZE", "SHA256", "CREATED"],
        [[a.id, a.task_id, a.kind.value, cut(a.name, 32), a.size, a.sha256[:12],
          when(a.created_at)] for a in artifacts],
    )  # fmt: skip


def responsibilities_table(items: Sequence[Responsibility]) -> str:
    """Responsibilities by name."""
    if not items:
        return "No responsibilities (define them in loops.toml as [[responsibilities]])."
    return table(
        ["NAME", "SCHEDULE", "ENABLED", "LAST DISPATCHED", "NEXT DUE", "LAST TASK", "PROMPT"],
        [[r.name, str(r.schedule), "yes" if r.enabled else "no", when(r.last_dispatched_at),
          when(r.next_due_at), r.last_task_id or "-", cut(r.template.prompt, 40)]
         for r in items],
    )  # fmt: skip


def status_text(summary: StatusSummary) -> str:
    """The status summary in sections."""
    counts = "  ".join(f"{s.value}={summary.counts.get(s, 0)}" for s in TaskStatus)
    parts = [f"Tasks: {counts}"]
    if summary.leases:
        parts.append(
            "Active leases:\n"
            + table(
                ["TASK", "STATUS", "WORKER", "EXPIRES", "ATTEMPTS"],
                [[t.id, t.status.value, t.lease_owner or "-", when(t.lease_expires_at),
                  f"{t.attempts}/{t.max_attempts}"] for t in summary.leases],
            )
        )  # fmt: skip
    else:
        parts.append("Active leases: none")
    due = ", ".join(r.name for r in summary.responsibilities_due) or "none"
    parts.append(f"Responsibilities due: {due}")
    if summary.recent_failures:
        parts.append(
            "Recent failures:\n"
            + table(
                ["TASK", "STATUS", "FINISHED", "ERROR"],
                [[t.id, t.status.value, when(t.finished_at), cut(t.error, 70)]
                 for t in summary.recent_failures],
            )
        )  # fmt: skip
    else:
        parts.append("Recent failures: none")
    return "\n\n".join(parts)
