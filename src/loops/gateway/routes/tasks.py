"""Handlers of the task routes: create, read, children, steps, leases, completions."""

from __future__ import annotations

import functools
from typing import Annotated, Any

from fastapi import Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from loops.gateway import schemas
from loops.gateway.routes.common import Limit, TaskId, fast_json_response
from loops.gateway.routes.common import json_response as _json
from loops.gateway.state import gateway_of
from loops.queue.tasks import LeasedTask, lean_dicts
from loops.services.queue import MAX_INT, CompletionInput, task_spec


async def create_task(request: Request, body: schemas.TaskCreate) -> Response:
    """Create a task (201), or return the existing one for a known idempotency key (200)."""
    gw = gateway_of(request)
    spec = task_spec(body.model_dump(exclude_none=True))
    created = await run_in_threadpool(gw.leaser.create_and_offer, spec)
    return _json(created.task.to_dict(), 201 if created.created else 200)


async def list_tasks(
    request: Request,
    status: Annotated[schemas.TaskStatusName | None, Query(description="only this status")] = None,
    limit: Limit = 50,
    before: Annotated[
        int | None, Query(ge=1, le=MAX_INT, description="only ids below this (paging)")
    ] = None,
    type: Annotated[
        str | None, Query(min_length=1, max_length=100, description="only this task type")
    ] = None,
) -> Response:
    """Tasks newest first, optionally of one status and/or type."""
    gw = gateway_of(request)
    tasks = await run_in_threadpool(
        gw.service.list_tasks, status=status, task_type=type, limit=limit, before_id=before
    )
    return _json({"tasks": [t.to_dict() for t in tasks]})


async def get_task(request: Request, task_id: TaskId) -> Response:
    """One task with its steps, children and artifacts counts."""
    gw = gateway_of(request)
    detail = await run_in_threadpool(gw.service.task_detail, task_id)
    return _json(detail.to_dict())


async def create_child(request: Request, task_id: TaskId, body: schemas.TaskCreate) -> Response:
    """Create a child task (within QUEUE_MAX_CHILD_DEPTH and QUEUE_MAX_CHILDREN_PER_TASK)."""
    gw = gateway_of(request)
    spec = task_spec(body.model_dump(exclude_none=True))
    created = await run_in_threadpool(gw.leaser.create_and_offer, spec, parent_id=task_id)
    return _json(created.task.to_dict(), 201 if created.created else 200)


async def list_children(request: Request, task_id: TaskId, limit: Limit = 1000) -> Response:
    """A task's children, newest first."""
    gw = gateway_of(request)
    children = await run_in_threadpool(gw.service.list_children, task_id, limit=limit)
    return _json({"children": [t.to_dict() for t in children]})


async def list_steps(request: Request, task_id: TaskId) -> Response:
    """The STEP markers recorded for a task."""
    gw = gateway_of(request)
    steps = await run_in_threadpool(gw.service.list_steps, task_id)
    return _json({"steps": [s.to_dict() for s in steps]})


async def record_steps(request: Request, task_id: TaskId, body: schemas.OutputIn) -> Response:
    """Record the STEP markers found in agent output (idempotent per key)."""
    gw = gateway_of(request)
    await run_in_threadpool(gw.service.get_task, task_id)
    steps = await run_in_threadpool(gw.service.record_output, task_id, body.output)
    return _json({"steps": [s.to_dict() for s in steps]})


async def cancel_task(
    request: Request, task_id: TaskId, body: schemas.CancelRequest | None = None
) -> Response:
    """Cancel a task and its active children; answers the cancelled task."""
    gw = gateway_of(request)
    reason = body.reason if body is not None else None
    task = await run_in_threadpool(gw.service.cancel, task_id, reason=reason)
    return _json(task.to_dict())


async def list_approvals(request: Request, task_id: TaskId) -> Response:
    """The human gates the task's run asked, each with its answer once given."""
    gw = gateway_of(request)
    gates = await run_in_threadpool(gw.service.approvals, task_id)
    return _json({"gates": [g.to_dict() for g in gates]})


async def answer_approval(
    request: Request, task_id: TaskId, body: schemas.ApprovalRequest
) -> Response:
    """Approve or reject a gate of the task's run; a waiting task is queued to go on.

    Who answered is ``by`` when given, else the client's address.
    """
    gw = gateway_of(request)
    client = request.client.host if request.client is not None else "unknown"
    task = await run_in_threadpool(
        functools.partial(
            gw.service.answer_approval,
            task_id,
            path=body.path,
            approved=body.approved,
            by=body.by or f"gateway client {client}",
            reason=body.reason,
        )
    )
    return _json(task.to_dict())


# -- leases ---------------------------------------------------------------------------


async def lease_next(request: Request, body: schemas.LeaseRequest) -> Response:
    """Lease the next ready task(s), long polling up to ``wait_ms``; 204 when none."""
    gw = gateway_of(request)
    await gw.feed.ensure_started()

    async def disconnected() -> None:
        # the body is read: the next message is the client leaving (or the answer sent)
        while (await request.receive())["type"] != "http.disconnect":
            pass

    leased = await gw.leaser.lease(
        worker=body.worker,
        ttl_ms=body.ttl_ms,
        wait_ms=body.wait_ms,
        limit=body.limit,
        types=body.types,
        disconnected=disconnected,
    )
    if not leased:
        return Response(status_code=204)
    gw.metrics.observe_leases(leased, now=gw.service.now())
    if body.form == "lean":
        return fast_json_response({"leases": [item.to_lean_dict() for item in leased]})
    if body.limit > 1:
        return fast_json_response({"leases": [item.to_dict() for item in leased]})
    return fast_json_response(leased[0].to_dict())


async def lease_task(request: Request, task_id: TaskId, body: schemas.LeaseTaskRequest) -> Response:
    """Lease one given task (409 when it is not queued)."""
    gw = gateway_of(request)
    leased = await run_in_threadpool(
        gw.service.lease_task, task_id, worker=body.worker, ttl_ms=body.ttl_ms
    )
    gw.metrics.observe_leases([leased], now=gw.service.now())
    return _json(leased.to_dict())


async def heartbeat(request: Request, task_id: TaskId, body: schemas.HeartbeatRequest) -> Response:
    """Extend a lease; answers ``cancel_requested: true`` for a cancelled task."""
    gw = gateway_of(request)
    beat = await run_in_threadpool(
        gw.service.heartbeat,
        task_id,
        lease_token=body.lease_token,
        ttl_ms=body.ttl_ms,
        status=body.status,
    )
    return _json(beat.to_dict())


async def complete_task(
    request: Request, task_id: TaskId, body: schemas.CompleteRequest
) -> Response:
    """End a lease: done, failed, blocked or retry (409 for a stale token)."""
    gw = gateway_of(request)
    task = await run_in_threadpool(
        gw.service.complete,
        task_id,
        lease_token=body.lease_token,
        status=body.status,
        result=body.result,
        error=body.error,
        output=body.output,
        usage=body.usage.model_dump() if body.usage is not None else None,
        waiting_on=body.waiting_on,
    )
    return _json(task.to_dict())


async def release_task(request: Request, task_id: TaskId, body: schemas.ReleaseRequest) -> Response:
    """Give a lease back unfinished (clean worker shutdown): queued again, attempt not charged."""
    gw = gateway_of(request)
    task = await run_in_threadpool(
        gw.service.release, task_id, lease_token=body.lease_token, reason=body.reason
    )
    return _json(task.to_dict())


async def complete_many(request: Request, body: schemas.CompleteBatchRequest) -> Response:
    """Apply many completions; answers item by item (one stale token fails only itself).

    With ``lease``, the next batch is leased in the same call (one transaction where the
    store can) and the answer also carries ``leases``.
    """
    gw = gateway_of(request)
    items = [
        CompletionInput(
            task_id=item.id,
            lease_token=item.lease_token,
            status=item.status,
            result=item.result,
            error=item.error,
            output=item.output,
            usage=item.usage.model_dump() if item.usage is not None else None,
            waiting_on=item.waiting_on,
        )
        for item in body.completions
    ]
    then = body.lease
    leased: list[LeasedTask] = []
    if then is None:
        outcomes = await gw.writes.run(functools.partial(gw.service.complete_many, items))
    else:
        outcomes, leased = await gw.writes.run(
            functools.partial(
                gw.service.complete_and_lease,
                items,
                worker=then.worker,
                ttl_ms=then.ttl_ms,
                limit=then.limit,
                types=then.types,
            )
        )
        gw.metrics.observe_leases(leased, now=gw.service.now())
    lean = body.form == "lean"
    results: list[dict[str, Any]] = []
    for item, outcome in zip(body.completions, outcomes, strict=True):
        result: dict[str, Any] = {"id": item.id, "ok": outcome.ok}
        if outcome.task is not None and not lean:
            result["task"] = outcome.task.to_dict()
        if outcome.error is not None:
            code = getattr(outcome.error, "code", "error")
            result["error"] = {"code": code, "message": str(outcome.error)}
        results.append(result)
    if then is None:
        return fast_json_response({"results": results})
    grants = lean_dicts(leased) if lean else [item.to_dict() for item in leased]
    return fast_json_response({"results": results, "leases": grants})
