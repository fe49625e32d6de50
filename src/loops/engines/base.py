"""The engine protocol: run one agent turn and stream typed events.

An engine is a transport in httpx's sense: one small method, ``run_turn``, that runs
one turn of one agent and yields events, the last of which is always a
:class:`TurnResult`. Retries, budgets, rate-limit waits and fallbacks live in the
caller. Agent failures do not raise: they end the stream with a ``TurnResult`` whose
``error`` is a classified :class:`~loops.errors.EngineError` (like an HTTP response
with an error status); call :meth:`TurnResult.raise_for_error` to turn it into an
exception.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

from loops import errors
from loops.engines.sandbox import Sandbox
from loops.usage import Usage


class Permission(enum.StrEnum):
    """What the agent may do, in one vocabulary mapped per engine."""

    READ_ONLY = "read-only"
    """Read files and run read-only tools; no edits."""
    WORKSPACE_WRITE = "workspace-write"
    """Edit files inside the working directory and run commands there."""
    FULL = "full"
    """Everything the tool allows, without asking (bypass mode)."""


@dataclasses.dataclass(frozen=True, slots=True)
class TurnRequest:
    """Everything an engine needs to run one turn.

    Attributes:
        prompt: the user message for this turn.
        cwd: the agent's working directory.
        system: extra system prompt, appended to the tool's own.
        model: model name, or ``None`` for the engine's default.
        permission: the permission level.
        resume_session_id: continue this session instead of starting fresh.
        tools: tool names to allow, or ``None`` for the engine's default set.
        leaf: withhold the sub-agent tool where the engine has one.
        max_turns: the agent's own tool-use turn limit, where supported.
        timeout_s: wall-clock limit for the whole turn; the process group is killed past it.
        env: extra environment variables for the agent process.
        sandbox: confine the agent process (``loops.engines.sandbox.Sandbox``); engines
            pass it to their :class:`~loops.engines.process.ProcessSpec`.
        session_usage: the session's cumulative usage as of the end of the previous
            turn (``TurnResult.session_usage`` checkpointed by the caller). Engines
            whose tool reports session-cumulative usage (codex) subtract it to get
            this turn's usage; ``None`` lets the engine find the baseline itself.
    """

    prompt: str
    cwd: Path = dataclasses.field(default_factory=Path.cwd)
    system: str | None = None
    model: str | None = None
    permission: Permission = Permission.WORKSPACE_WRITE
    resume_session_id: str | None = None
    tools: tuple[str, ...] | None = None
    leaf: bool = False
    max_turns: int | None = None
    timeout_s: float | None = None
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    session_usage: Usage | None = None
    sandbox: Sandbox | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class AgentText:
    """A piece of the agent's visible text (a whole message or a streamed delta)."""

    text: str
    kind: ClassVar[str] = "text"


@dataclasses.dataclass(frozen=True, slots=True)
class ToolUse:
    """The agent called a tool."""

    id: str
    name: str
    input: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    kind: ClassVar[str] = "tool_use"


@dataclasses.dataclass(frozen=True, slots=True)
class ToolResult:
    """A tool call returned."""

    id: str
    output: str = ""
    is_error: bool = False
    kind: ClassVar[str] = "tool_result"


@dataclasses.dataclass(frozen=True, slots=True)
class SessionStarted:
    """The tool named the session this turn runs in, before the turn ends.

    A caller that records it can resume the conversation when the turn is cut short
    (the process killed mid-turn) by passing it back as ``resume_session_id``.
    """

    session_id: str
    kind: ClassVar[str] = "session"


@dataclasses.dataclass(frozen=True, slots=True)
class UsageReport:
    """Usage known so far in this turn (cumulative for the turn, not a delta)."""

    usage: Usage
    kind: ClassVar[str] = "usage"


@dataclasses.dataclass(frozen=True, slots=True)
class Notice:
    """A decision of the engine layer itself, for the record (not the agent's).

    Attributes:
        code: what happened, e.g. ``engine.fallback`` (the turn moved to another
            engine), ``engine.rate_limit_wait``, ``engine.budget``.
        message: one readable line.
        data: the details (engine names, the error, the wait...).
    """

    code: str
    message: str
    data: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    kind: ClassVar[str] = "notice"


class TurnStatus(enum.StrEnum):
    """How a turn ended."""

    OK = "ok"
    """The agent finished its turn normally."""
    ERROR = "error"
    """The turn failed; ``TurnResult.error`` says how."""
    INTERRUPTED = "interrupted"
    """The turn was cancelled by the caller (signal, cancel, timeout)."""


@dataclasses.dataclass(frozen=True, slots=True)
class TurnResult:
    """The last event of every turn.

    Attributes:
        status: how the turn ended.
        final_text: the agent's final message ('' when none).
        session_id: the session to resume, when the engine has sessions.
        usage: tokens and cost of this turn alone.
        error: the classified failure when ``status`` is not ``OK``.
        num_turns: the agent's internal turn count, when reported.
        duration_s: wall time of the turn.
        exit_code: the process exit code for subprocess engines.
        model: the model the agent actually used, when known.
        session_usage: the session's cumulative usage after this turn, when the tool
            reports it (checkpoint it and pass it back as ``TurnRequest.session_usage``).
        stderr_tail: the end of the agent's stderr, for diagnosis.
        cost_source: where ``usage.cost_usd`` comes from: ``"reported"`` by the tool,
            or ``"computed: genai-prices X.Y.Z"``; ``None`` when the cost is unknown.
    """

    status: TurnStatus
    final_text: str = ""
    session_id: str | None = None
    usage: Usage = dataclasses.field(default_factory=Usage)
    error: errors.EngineError | None = None
    num_turns: int | None = None
    duration_s: float = 0.0
    exit_code: int | None = None
    model: str | None = None
    session_usage: Usage | None = None
    stderr_tail: str = ""
    cost_source: str | None = None
    kind: ClassVar[str] = "result"

    @property
    def ok(self) -> bool:
        """True when the turn finished normally."""
        return self.status is TurnStatus.OK

    def raise_for_error(self) -> TurnResult:
        """Raise the classified error of a failed turn; return self otherwise."""
        if self.status is TurnStatus.OK:
            return self
        raise self.error or errors.EngineCrashed(f"turn ended with status {self.status}")


TurnEvent = AgentText | ToolUse | ToolResult | UsageReport | Notice | SessionStarted | TurnResult


@dataclasses.dataclass(frozen=True, slots=True)
class Capabilities:
    """What an engine supports; the README's capability table is generated from it.

    Attributes:
        resume: continues a session (``resume_session_id``).
        streaming: yields events while the turn runs (not only at its end).
        cost_reported: the tool itself reports the USD cost.
        cost_computed: the engine prices the tokens (genai-prices) when the model is known.
        subagents: the agent can start sub-agents (withheld for ``leaf`` requests).
        permissions: the levels the engine enforces (empty: it cannot enforce any).
    """

    resume: bool = False
    streaming: bool = False
    cost_reported: bool = False
    cost_computed: bool = False
    subagents: bool = False
    permissions: tuple[Permission, ...] = tuple(Permission)


@runtime_checkable
class Engine(Protocol):
    """Runs one agent turn and streams its events.

    Implementations must yield a :class:`TurnResult` as the last event, whatever
    happens to the agent, and must not raise for agent failures (classify them into
    ``TurnResult.error``). Cancelling the iteration (``aclose`` or task cancellation)
    must stop the agent, killing its process group if it has one.
    """

    name: str
    capabilities: Capabilities

    def run_turn(self, request: TurnRequest) -> AsyncIterator[TurnEvent]:
        """Run one turn; yield events ending with a ``TurnResult``."""
        ...


EventCallback = Callable[[TurnEvent], None]


async def run_turn(
    engine: Engine, request: TurnRequest, *, on_event: EventCallback | None = None
) -> TurnResult:
    """Drive ``engine`` through one turn and return its result.

    Args:
        engine: the engine to run.
        request: the turn to run.
        on_event: called with every event, the result included.

    Returns:
        The turn's result. A stream that ends without one counts as a crash.
    """
    result: TurnResult | None = None
    async for event in engine.run_turn(request):
        if on_event is not None:
            on_event(event)
        if isinstance(event, TurnResult):
            result = event
    if result is None:
        result = TurnResult(
            status=TurnStatus.ERROR,
            error=errors.EngineCrashed(f"engine {engine.name!r} ended without a result"),
        )
    return result


def event_to_dict(event: TurnEvent) -> dict[str, Any]:
    """The JSON form of an event, for transcripts and event streams.

    ``{"type": kind, ...fields}``; usage is its ``Usage.to_dict()`` form and a result's
    error is ``{"code", "message"}`` (plus ``retry_after_s`` for rate limits).
    """
    data: dict[str, Any] = {"type": event.kind}
    for field in dataclasses.fields(event):
        value = getattr(event, field.name)
        if isinstance(value, Usage):
            value = value.to_dict()
        elif isinstance(value, errors.EngineError):
            error: dict[str, Any] = {"code": value.code, "message": value.message}
            if isinstance(value, errors.EngineRateLimited):
                error["retry_after_s"] = value.retry_after_s
            value = error
        elif isinstance(value, enum.Enum):
            value = value.value
        elif isinstance(value, Mapping):
            value = dict(value)
        data[field.name] = value
    return data


def _engine_error_classes() -> dict[str, type[errors.EngineError]]:
    found: dict[str, type[errors.EngineError]] = {}
    stack: list[type[errors.EngineError]] = [errors.EngineError]
    while stack:
        cls = stack.pop()
        found[cls.code] = cls
        stack.extend(cls.__subclasses__())
    return found


def event_from_dict(data: Mapping[str, Any]) -> TurnEvent:
    """The event ``data`` describes: the inverse of :func:`event_to_dict`.

    Raises:
        InputError: an unknown ``type`` or fields the event does not have.
    """
    kinds: dict[str, type[Any]] = {
        cls.kind: cls
        for cls in (AgentText, ToolUse, ToolResult, UsageReport, Notice, SessionStarted, TurnResult)
    }
    kind = data.get("type")
    cls = kinds.get(str(kind))
    if cls is None:
        raise errors.InputError(f"unknown event type {kind!r}; known: {', '.join(sorted(kinds))}")
    names = {f.name for f in dataclasses.fields(cls)}
    fields = {k: v for k, v in data.items() if k != "type"}
    unknown = set(fields) - names
    if unknown:
        raise errors.InputError(f"{kind} event has unknown fields {sorted(unknown)}")
    for key in ("usage", "session_usage"):
        if isinstance(fields.get(key), Mapping):
            fields[key] = Usage.from_dict(dict(fields[key]))
    if cls is TurnResult:
        fields["status"] = TurnStatus(fields.get("status", "ok"))
        error = fields.get("error")
        if isinstance(error, Mapping):
            error_class = _engine_error_classes().get(str(error.get("code")), errors.EngineError)
            message = str(error.get("message", ""))
            if issubclass(error_class, errors.EngineRateLimited):
                fields["error"] = error_class(message, retry_after_s=error.get("retry_after_s"))
            else:
                fields["error"] = error_class(message)
    event: TurnEvent = cls(**fields)
    return event
