"""One agent turn inside a run: stream its events, charge its usage, wait out rate limits.

Shared by ``agent_job`` (the worker) and ``agent_check`` (the judge). Budgets are
checked by the caller before a turn starts (:func:`budget_block`); a running turn is
never cut short by a budget, which is what bounds a run to one turn past a limit.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from loops import errors
from loops.engines import base
from loops.flow import confinement
from loops.flow.budget import Ledger
from loops.flow.context import Context
from loops.flow.events import EventType

#: rate-limit waits per turn before the turn counts as failed
MAX_RATE_LIMIT_WAITS = 3
#: wait used when a rate limit gives no retry-after, doubled on each wait
DEFAULT_RATE_LIMIT_WAIT_S = 15.0
#: characters of tool output kept in events
TOOL_OUTPUT_CHARS = 2000


def budget_block(ctx: Context) -> str | None:
    """The reason this context may not start more work, or ``None`` when within budget.

    Emits ``budget.exceeded`` when a budget is reached.
    """
    found = ctx.ledger.check()
    if found is None:
        return None
    ledger, reason = found
    text = f"budget of {ledger.scope or 'the run'} exhausted: {reason}"
    ctx.events.emit(
        EventType.BUDGET_EXCEEDED,
        ledger.scope,
        reason=text,
        spent=ledger.spent.to_dict(),
        limits=ledger.limit.to_dict() if ledger.limit else {},
    )
    return text


def report_spend(ctx: Context, ledgers: list[Ledger]) -> None:
    """Emit a ``budget`` event for each budgeted scope whose spend just changed."""
    for ledger in ledgers:
        ctx.events.emit(
            EventType.BUDGET,
            ledger.scope,
            spent=ledger.spent.to_dict(),
            limits=ledger.limit.to_dict() if ledger.limit else {},
        )


def _emit_turn_event(ctx: Context, event: base.TurnEvent, role: str) -> None:
    if isinstance(event, base.AgentText):
        ctx.emit(EventType.AGENT_TEXT, text=event.text, role=role)
    elif isinstance(event, base.ToolUse):
        ctx.emit(
            EventType.AGENT_TOOL_USE,
            id=event.id,
            tool=event.name,
            input=dict(event.input),
            role=role,
        )
    elif isinstance(event, base.ToolResult):
        ctx.emit(
            EventType.AGENT_TOOL_RESULT,
            id=event.id,
            is_error=event.is_error,
            output=event.output[:TOOL_OUTPUT_CHARS],
            role=role,
        )
    elif isinstance(event, base.UsageReport):
        ctx.emit(EventType.AGENT_USAGE, usage=event.usage.to_dict(), role=role)
    elif isinstance(event, base.Notice):
        ctx.emit(
            EventType.AGENT_NOTICE,
            code=event.code,
            message=event.message,
            data=dict(event.data),
            role=role,
        )


def _session_key(ctx: Context, role: str) -> str:
    """The checkpoint key of the session of the turn running at ``ctx`` for ``role``."""
    return f"agent.session:{ctx.key}:{role}"


def _resumed(
    ctx: Context, engine: base.Engine, request: base.TurnRequest, role: str
) -> base.TurnRequest:
    """``request``, resuming the session of a turn a crash cut short, where there is one.

    A durable run records the session of each running turn in its checkpoint; finding
    one when a turn starts means the earlier attempt died inside it. An engine that can
    resume continues that conversation; one that cannot starts fresh, and the event
    says which.
    """
    checkpoints = ctx.run.checkpoints
    saved = checkpoints.extra(_session_key(ctx, role)) if checkpoints is not None else None
    session_id = saved.get("session_id") if isinstance(saved, dict) else None
    if not isinstance(session_id, str) or request.resume_session_id is not None:
        return request
    resumed = engine.capabilities.resume
    ctx.emit(
        EventType.AGENT_TURN_RESUMED,
        session_id=session_id,
        resumed=resumed,
        engine=engine.name,
        role=role,
        reason=None if resumed else f"engine {engine.name!r} cannot resume a session",
    )
    return dataclasses.replace(request, resume_session_id=session_id) if resumed else request


async def _remember_session(ctx: Context, role: str, session_id: str | None) -> None:
    """Record (or, with ``None``, clear) the session of the turn running at ``ctx``."""
    checkpoints = ctx.run.checkpoints
    if checkpoints is None:
        return
    key = _session_key(ctx, role)
    value = {"session_id": session_id} if session_id is not None else None
    if checkpoints.extra(key) != value:
        await checkpoints.put_extra(key, value)


async def _one_turn(
    ctx: Context, engine: base.Engine, request: base.TurnRequest, role: str
) -> base.TurnResult:
    request = _resumed(ctx, engine, request, role)
    ctx.emit(EventType.AGENT_STARTED, engine=engine.name, model=request.model, role=role)
    result: base.TurnResult | None = None
    try:
        async for event in engine.run_turn(request):
            if isinstance(event, base.TurnResult):
                result = event
            elif isinstance(event, base.SessionStarted):
                await _remember_session(ctx, role, event.session_id)
            else:
                _emit_turn_event(ctx, event, role)
    except errors.EngineError as exc:  # engines should not raise, but classify if one does
        result = base.TurnResult(status=base.TurnStatus.ERROR, error=exc)
    if result is None:
        result = base.TurnResult(
            status=base.TurnStatus.ERROR,
            error=errors.EngineCrashed(f"engine {engine.name!r} ended without a result"),
        )
    await _remember_session(ctx, role, None)  # the turn ended: nothing to resume
    report_spend(ctx, ctx.ledger.charge(result.usage))
    finished: dict[str, Any] = {
        "status": result.status.value,
        "usage": result.usage.to_dict(),
        "session_id": result.session_id,
        "error": None if result.error is None else result.error.message,
        "role": role,
    }
    ctx.emit(EventType.AGENT_FINISHED, **finished)
    return result


async def agent_turn(
    ctx: Context, engine: base.Engine, request: base.TurnRequest, *, role: str
) -> base.TurnResult:
    """Run one turn with ``engine``, streaming its events into the run.

    A rate-limited turn waits (the advertised retry-after, else a doubling default)
    and runs again, up to :data:`MAX_RATE_LIMIT_WAITS` times, without counting as an
    attempt of the enclosing loop. Every turn's usage is charged to the budget chain.

    Args:
        ctx: the context of the job or condition running the turn.
        engine: the engine to run.
        request: the turn.
        role: ``worker`` or ``judge``, carried on every event.

    The turn runs under the run's sandbox floor, if it has one (its own ``sandbox``
    only where that is stricter: :mod:`loops.flow.confinement`).

    Returns:
        The turn's result; failures are in ``result.error``, never raised.
    """
    confined = confinement.for_agent(ctx, request.sandbox, subject=f"the {role}'s agent turn")
    request = dataclasses.replace(request, sandbox=confined.sandbox)
    wait_s = DEFAULT_RATE_LIMIT_WAIT_S
    for _ in range(MAX_RATE_LIMIT_WAITS):
        result = await _one_turn(ctx, engine, request, role)
        if not isinstance(result.error, errors.EngineRateLimited):
            return result
        delay = result.error.retry_after_s or wait_s
        wait_s *= 2
        await ctx.run.sleep(delay)
    return await _one_turn(ctx, engine, request, role)
