"""The run event stream: typed events, the emitter, and the sinks that consume them.

Every run emits one stream of :class:`Event` objects; each names its type, time, run
and the path of the job in the tree that emitted it. Consumers (the NDJSON writer,
the log printer, the TUI, the supervision registry, a worker's queue timeline) only
implement :class:`EventSink` and never reach into the running jobs.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol, TextIO, runtime_checkable


class EventType(enum.StrEnum):
    """Every event type a run emits; the values are the ``type`` field of the JSON."""

    RUN_STARTED = "run.started"
    """The run began: ``name``, ``kind`` of the root job, ``cwd``, ``shape`` (the describe tree)."""
    RUN_FINISHED = "run.finished"
    """The run ended (always last): ``status``, non-empty ``reason``, ``usage``, ``duration_s``."""
    JOB_STARTED = "job.started"
    """A job (loop, dag, agent, fn, gate, ...) began: ``kind``, ``name``."""
    RUN_RESUMED = "run.resumed"
    """The run resumed from a checkpoint: ``attempt``, ``restored`` (finished job keys),
    ``loops`` (loop key -> iterations already done)."""
    JOB_RESTORED = "job.restored"
    """A job finished by an earlier attempt was not run again: ``kind``, ``name``,
    ``status``, ``summary``, ``usage``, ``attempt`` (the attempt that ran it)."""
    JOB_FINISHED = "job.finished"
    """A job ended: ``kind``, ``name``, ``status``, ``summary``, ``usage``, ``duration_s``."""
    ITERATION_STARTED = "iteration.started"
    """A loop began an iteration: ``iteration``, ``max``."""
    ITERATION_FINISHED = "iteration.finished"
    """A loop iteration ended: ``iteration``, ``status`` of the body, ``decision``."""
    NODE_STARTED = "node.started"
    """A dag node began: ``node``, ``needs``."""
    NODE_FINISHED = "node.finished"
    """A dag node ended: ``node``, ``status``, ``summary``, ``optional``."""
    NODE_SKIPPED = "node.skipped"
    """A dag node will not run: ``node``, ``reason``."""
    NODE_DISPATCHED = "node.dispatched"
    """A durable dag's node runs as a child task: ``node``, ``task_id``, ``attempt``."""
    DAG_IN_PROCESS = "dag.in_process"
    """A durable dag runs its nodes in this process: ``reason`` (no queue to spread them on)."""
    AGENT_STARTED = "agent.started"
    """An agent turn began: ``engine``, ``model``, ``role`` (``worker`` or ``judge``)."""
    AGENT_TEXT = "agent.text"
    """The agent wrote text: ``text``, ``role``."""
    AGENT_TOOL_USE = "agent.tool_use"
    """The agent called a tool: ``id``, ``tool``, ``input``, ``role``."""
    AGENT_TOOL_RESULT = "agent.tool_result"
    """A tool call returned: ``id``, ``output`` (truncated), ``is_error``, ``role``."""
    AGENT_USAGE = "agent.usage"
    """Usage so far in this turn: ``usage``, ``role``."""
    AGENT_NOTICE = "agent.notice"
    """The engine layer decided something (a fallback, a wait): ``code``, ``message``,
    ``data``, ``role``."""
    AGENT_TURN_RESUMED = "agent.turn_resumed"
    """A turn cut short by a crash runs again: ``session_id`` (the one it had),
    ``resumed`` (the conversation goes on) or not (the engine cannot resume: a fresh
    start), ``engine``, ``role``."""
    AGENT_FINISHED = "agent.finished"
    """An agent turn ended: ``status``, ``usage``, ``session_id``, ``error``, ``role``."""
    VERDICT = "verdict"
    """A condition decided: ``slot`` (until, stop_on, start, when, gate, ...) and the verdict."""
    REVIEW = "review"
    """A loop's review decided after ``until`` was met: the verdict, ``iteration``."""
    SURFACING = "surfacing"
    """A review or kickback raised a concern: ``source``, ``severity``, ``reason``."""
    REVISION_EMITTED = "revision.emitted"
    """Work was sent back: ``source``, ``target`` (None: next turn), ``findings``, ``reason``."""
    REVISION_ROUTED = "revision.routed"
    """A revision was routed (``accepted``) or refused: ``target``, ``rerun``, ``reason``."""
    APPROVAL_REQUESTED = "approval.requested"
    """A human gate asked its question: ``name``, ``question``, ``timeout_s``, ``on_timeout``."""
    APPROVAL_ANSWERED = "approval.answered"
    """A human gate got its answer: ``name``, ``approved``, ``by``, ``reason``, ``at``."""
    BUDGET = "budget"
    """Spending changed in a budgeted scope: ``scope``, ``spent``, ``limits``."""
    BUDGET_EXCEEDED = "budget.exceeded"
    """A budget was crossed and the job pauses: ``scope``, ``reason``."""
    SANDBOX_FLOOR = "sandbox.floor"
    """A job or condition asked for a weaker sandbox than the run's floor (a sandboxed
    worker's) and runs under the floor instead: ``subject``, ``overridden`` (what it
    asked beyond the floor), ``reason``."""


def utc_now() -> dt.datetime:
    """The current time in UTC (the default clock of an emitter)."""
    return dt.datetime.now(dt.UTC)


def format_ts(moment: dt.datetime) -> str:
    """ISO 8601 in UTC with milliseconds and a ``Z``, e.g. ``2026-11-27T15:04:05.123Z``."""
    if moment.tzinfo is not dt.UTC:
        moment = moment.astimezone(dt.UTC)
    # isoformat is several times faster than strftime, and this runs for every event
    return moment.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    """One event of a run.

    Attributes:
        type: what happened.
        ts: when, as ISO 8601 UTC (see :func:`format_ts`).
        run_id: the run it belongs to.
        path: the emitting job's place in the tree, slash-separated (``feature/agent``).
        data: the type's own fields (see :class:`EventType`).
    """

    type: EventType
    ts: str
    run_id: str
    path: str
    data: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The flat JSON object: ``type``, ``ts``, ``run_id``, ``path`` and the data fields."""
        return {
            "type": self.type.value,
            "ts": self.ts,
            "run_id": self.run_id,
            "path": self.path,
            **self.data,
        }

    @classmethod
    def from_dict(cls, body: Mapping[str, Any]) -> Event:
        """Parse the flat JSON form written by :meth:`to_dict`."""
        rest = {k: v for k, v in body.items() if k not in ("type", "ts", "run_id", "path")}
        return cls(
            EventType(body["type"]), str(body["ts"]), str(body["run_id"]), str(body["path"]), rest
        )


@runtime_checkable
class EventSink(Protocol):
    """Anything that consumes a run's events.

    ``emit`` is called in order, on the run's event loop, and must not block: a sink
    that does slow work hands events to its own queue or thread.
    """

    def emit(self, event: Event) -> None:
        """Consume one event."""
        ...


class MemorySink:
    """Keeps every event in a list, for tests and in-process consumers."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        """Append ``event`` to :attr:`events`."""
        self.events.append(event)

    def of_type(self, *types: EventType | str) -> list[Event]:
        """The events whose type is one of ``types``."""
        wanted = {str(t) for t in types}
        return [e for e in self.events if e.type.value in wanted]


class NdjsonSink:
    """Writes each event as one JSON object per line (``loop run --json``)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def emit(self, event: Event) -> None:
        """Write ``event`` as one line and flush."""
        self._stream.write(json.dumps(event.to_dict(), default=str) + "\n")
        self._stream.flush()


class LogSink:
    """Writes readable log lines (``loop run --no-tui``)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def emit(self, event: Event) -> None:
        """Write ``event`` as one readable line, when it is worth a line."""
        line = describe_event(event)
        if line is not None:
            self._stream.write(line + "\n")
            self._stream.flush()


class CallbackSink:
    """Calls a function with every event."""

    def __init__(self, fn: Callable[[Event], None]) -> None:
        self._fn = fn

    def emit(self, event: Event) -> None:
        """Pass ``event`` to the function."""
        self._fn(event)


class Emitter:
    """Stamps events with the run id and time and hands them to every sink.

    Args:
        run_id: the run's id.
        sinks: the consumers, called in order.
        clock: returns the current time (a parameter so tests are exact).
    """

    def __init__(
        self,
        run_id: str,
        sinks: Iterable[EventSink] = (),
        *,
        clock: Callable[[], dt.datetime] = utc_now,
    ) -> None:
        self.run_id = run_id
        self.sinks = list(sinks)
        self._clock = clock

    def emit(self, type_: EventType, path: str, **data: Any) -> Event:
        """Build an event and give it to every sink; returns it."""
        event = Event(type_, format_ts(self._clock()), self.run_id, path, data)
        for sink in self.sinks:
            sink.emit(event)
        return event


def _short(text: str, limit: int = 160) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _usage_text(usage: Mapping[str, Any] | None) -> str:
    if not usage:
        return ""
    tokens = int(usage.get("input_tokens") or 0) + int(usage.get("output_tokens") or 0)
    cost = usage.get("cost_usd")
    if not tokens and not cost:
        return ""
    return f" [{tokens} tok" + (f", ${cost:.4f}]" if cost else "]")


def _verdict_text(d: Mapping[str, Any]) -> str:
    state = "met" if d.get("met") else "not met"
    conf = d.get("confidence")
    conf_text = f" ({conf:.2f})" if isinstance(conf, int | float) else ""
    if d.get("kind") in ("all_of", "any_of"):  # the reason names the deciding member
        return f"{state}{conf_text}: {_short(d.get('reason', ''), 240)}"
    who = d.get("decided_by") or d.get("kind")
    return f"{state}{conf_text} by {who}: {_short(d.get('reason', ''), 240)}"


_LINES: dict[EventType, Callable[[Mapping[str, Any]], str | None]] = {
    EventType.RUN_STARTED: lambda d: f"run started: {d.get('name')} in {d.get('cwd')}",
    EventType.RUN_FINISHED: lambda d: (
        f"run finished: {d.get('status')}: {_short(d.get('reason', ''), 400)}"
        + _usage_text(d.get("usage"))
    ),
    EventType.JOB_STARTED: lambda d: (
        f"{d.get('kind')} started" if d.get("kind") in ("loop", "dag") else None
    ),
    EventType.JOB_FINISHED: lambda d: (
        f"{d.get('kind')} {d.get('status')}: {_short(d.get('summary', ''))}"
        + _usage_text(d.get("usage"))
    ),
    EventType.ITERATION_STARTED: lambda d: f"iteration {d.get('iteration')}/{d.get('max')}",
    EventType.ITERATION_FINISHED: lambda d: (
        f"iteration {d.get('iteration')} done: {_short(d.get('decision', ''))}"
    ),
    EventType.NODE_STARTED: lambda d: f"node {d.get('node')} started",
    EventType.NODE_FINISHED: lambda d: None,
    EventType.NODE_SKIPPED: lambda d: f"node {d.get('node')} skipped: {_short(d['reason'])}",
    EventType.NODE_DISPATCHED: lambda d: (
        f"node {d.get('node')} runs as child task {d.get('task_id')} (attempt {d.get('attempt')})"
    ),
    EventType.DAG_IN_PROCESS: lambda d: f"durable dag: {d.get('reason')}",
    EventType.SANDBOX_FLOOR: lambda d: f"! sandbox: {_short(d.get('reason', ''), 240)}",
    EventType.AGENT_STARTED: lambda d: f"{d.get('role')} turn on {d.get('engine')}",
    EventType.AGENT_TEXT: lambda d: f"│ {_short(d.get('text', ''), 240)}",
    EventType.AGENT_TOOL_USE: lambda d: f"→ {d.get('tool')} {_short(json.dumps(d.get('input')))}",
    EventType.AGENT_TOOL_RESULT: lambda d: None,
    EventType.AGENT_USAGE: lambda d: None,
    EventType.AGENT_NOTICE: lambda d: f"! {_short(d.get('message', ''), 240)}",
    EventType.AGENT_FINISHED: lambda d: (
        f"{d.get('role')} turn {d.get('status')}"
        + (f": {d['error']}" if d.get("error") else "")
        + _usage_text(d.get("usage"))
    ),
    EventType.VERDICT: lambda d: f"{d.get('slot')}: {_verdict_text(d)}",
    EventType.REVIEW: lambda d: f"review: {_verdict_text(d)}",
    EventType.SURFACING: lambda d: (
        f"{d.get('severity')} from {d.get('source')}: {_short(d['reason'])}"
    ),
    EventType.REVISION_EMITTED: lambda d: (
        f"revision of {d.get('target') or 'the next turn'} asked by {d.get('source')}"
    ),
    EventType.REVISION_ROUTED: lambda d: (
        ("revision routed: re-running " + ", ".join(d.get("rerun") or [d.get("target") or "-"]))
        if d.get("accepted")
        else f"revision refused: {d.get('reason')}"
    ),
    EventType.RUN_RESUMED: lambda d: (
        f"resumed (attempt {d.get('attempt')}): {len(d.get('restored') or [])} jobs finished "
        f"earlier, loops at {d.get('loops') or '-'}"
    ),
    EventType.JOB_RESTORED: lambda d: (
        f"{d.get('kind')} {d.get('name')} restored: {d.get('status')} "
        f"(attempt {d.get('attempt')}) {_short(str(d.get('summary', '')))}"
    ),
    EventType.APPROVAL_REQUESTED: lambda d: f"waiting for approval: {d.get('question')}",
    EventType.APPROVAL_ANSWERED: lambda d: (
        f"{'approved' if d.get('approved') else 'rejected'} by {d.get('by')}"
        + (f": {d.get('reason')}" if d.get("reason") else "")
    ),
    EventType.AGENT_TURN_RESUMED: lambda d: (
        f"interrupted turn re-run in session {d.get('session_id')}"
        if d.get("resumed")
        else f"interrupted turn re-run fresh: {d.get('reason')}"
    ),
    EventType.BUDGET: lambda d: None,
    EventType.BUDGET_EXCEEDED: lambda d: f"budget exceeded: {d.get('reason')}",
}


def describe_event(event: Event) -> str | None:
    """One readable line for ``event`` (time, path, what happened), or ``None`` to skip it."""
    text = _LINES[event.type](event.data)
    if text is None:
        return None
    clock = event.ts[11:19]
    return f"{clock} {event.path or '-'}  {text}"
