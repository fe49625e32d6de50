"""Handlers of the routes around tasks: events (and their stream), artifacts, state,
responsibilities, tick, status, health, metrics."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Header, Path, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response, StreamingResponse

from loops import errors
from loops.gateway import schemas, stream
from loops.gateway.routes.common import Limit, TaskId
from loops.gateway.routes.common import json_response as _json
from loops.gateway.state import Gateway, gateway_of
from loops.queue.artifacts import ArtifactKind
from loops.services.queue import MAX_INT, parse_task_id


async def list_events(
    request: Request,
    limit: Limit = 100,
    after: Annotated[
        int | None, Query(ge=0, le=MAX_INT, description="only events after this id")
    ] = None,
    task_id: Annotated[str | None, Query(description="only events of this task")] = None,
) -> Response:
    """Events in id order: the first ``limit`` after ``after``, or the latest ``limit``."""
    gw = gateway_of(request)
    found = await run_in_threadpool(
        gw.service.list_events, after_id=after, limit=limit, task_id=task_id
    )
    return _json({"events": [e.to_dict() for e in found]})


async def list_task_events(
    request: Request,
    task_id: TaskId,
    limit: Limit = 100,
    after: Annotated[int | None, Query(ge=0, le=MAX_INT)] = None,
) -> Response:
    """The events of one task, in id order."""
    return await list_events(request, limit=limit, after=after, task_id=task_id)


async def append_events(request: Request, task_id: TaskId, body: schemas.EventBatchIn) -> Response:
    """Append events about a task (a worker's run events), in order."""
    gw = gateway_of(request)

    def append() -> int:
        tid = parse_task_id(task_id)
        gw.service.get_task(tid)  # an empty batch still names a task that must exist
        return gw.service.append_events(tid, [(e.type, e.data) for e in body.events])

    appended = await run_in_threadpool(append)
    return _json({"appended": appended}, 201)


async def stream_events(
    request: Request,
    after: Annotated[
        int | None, Query(ge=0, le=MAX_INT, description="start after this event id")
    ] = None,
    task_id: Annotated[str | None, Query(description="only events of this task")] = None,
    last_event_id: Annotated[
        str,
        Header(alias="Last-Event-ID", description="resume after this id", pattern=r"^\s*\d*\s*$"),
    ] = "",
) -> Response:
    """Server-sent events: stored events after ``after``, then new ones live."""
    gw = gateway_of(request)
    if last_event_id is not None and last_event_id.strip():
        text = last_event_id.strip()
        if not (text.isascii() and text.isdigit() and int(text) <= MAX_INT):
            raise errors.InputError(
                f"Last-Event-ID must be an event id (an integer up to {MAX_INT}), "
                f"got {last_event_id!r}"
            )
        after = int(text)
    tid = None
    if task_id is not None:
        tid = parse_task_id(task_id)
        await run_in_threadpool(gw.service.get_task, tid)
    await gw.feed.ensure_started()
    body = stream.events(gw.service, gw.feed, after=after, task_id=tid)
    return StreamingResponse(
        body,
        media_type=stream.MEDIA_TYPE,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


# -- artifacts and state --------------------------------------------------------------

_MEDIA_TYPES = {
    ArtifactKind.TRANSCRIPT: "application/x-ndjson",
    ArtifactKind.FINAL_MESSAGE: "text/plain; charset=utf-8",
    ArtifactKind.DIFF: "text/x-diff; charset=utf-8",
    ArtifactKind.LOG: "text/plain; charset=utf-8",
    ArtifactKind.FILE: "application/octet-stream",
}


async def list_artifacts(
    request: Request,
    task_id: Annotated[str | None, Query(description="only this task's artifacts")] = None,
    limit: Limit = 50,
) -> Response:
    """Artifacts newest first (unknown ``task_id``: 404)."""
    gw = gateway_of(request)
    found = await run_in_threadpool(gw.service.list_artifacts, task_id=task_id, limit=limit)
    return _json({"artifacts": [a.to_dict() for a in found]})


async def get_artifact(request: Request, artifact_id: Annotated[str, Path()]) -> Response:
    """One artifact's record."""
    gw = gateway_of(request)
    artifact = await run_in_threadpool(gw.service.get_artifact, artifact_id)
    return _json(artifact.to_dict())


async def artifact_content(request: Request, artifact_id: Annotated[str, Path()]) -> Response:
    """One artifact's content, with a media type by its kind."""
    gw = gateway_of(request)

    def read() -> tuple[str, str, bytes]:
        artifact = gw.service.get_artifact(artifact_id)
        return _MEDIA_TYPES[artifact.kind], artifact.sha256, gw.service.read_artifact(artifact.id)

    media_type, sha256, content = await run_in_threadpool(read)
    return Response(content, media_type=media_type, headers={"ETag": f'"{sha256}"'})


async def store_artifact(
    request: Request,
    task_id: TaskId,
    name: Annotated[str, Query(min_length=1, max_length=500, description="a label")],
    kind: Annotated[
        schemas.ArtifactKindName, Query(description="transcript, final_message, diff, log, file")
    ],
) -> Response:
    """Store the raw request body as an artifact of the task (content-addressed)."""
    gw = gateway_of(request)
    content = await request.body()
    artifact = await run_in_threadpool(
        gw.service.store_artifact, task_id, name=name, kind=kind, content=content
    )
    return _json(artifact.to_dict(), 201)


async def get_state(request: Request, task_id: TaskId, key: Annotated[str, Path()]) -> Response:
    """A task's checkpoint value (``null`` when none)."""
    gw = gateway_of(request)
    value = await run_in_threadpool(_task_state, gw, task_id, key)
    return _json({"key": key, "value": value})


def _task_state(gw: Gateway, task_id: str, key: str) -> Any:
    gw.service.get_task(task_id)
    return gw.service.get_state(key, task_id=task_id)


async def put_state(
    request: Request, task_id: TaskId, key: Annotated[str, Path()], body: schemas.StateIn
) -> Response:
    """Store a task's checkpoint value (replacing any)."""
    gw = gateway_of(request)
    await run_in_threadpool(gw.service.put_state, key, body.value, task_id=task_id)
    return _json({"key": key, "value": body.value})


# -- the rest -------------------------------------------------------------------------


async def list_responsibilities(request: Request) -> Response:
    """Recurring responsibilities and their dispatch bookkeeping."""
    gw = gateway_of(request)
    found = await run_in_threadpool(gw.service.list_responsibilities)
    return _json({"responsibilities": [r.to_dict() for r in found]})


async def tick(request: Request) -> Response:
    """Reclaim expired leases and dispatch due responsibilities."""
    gw = gateway_of(request)
    report = await run_in_threadpool(gw.service.tick)
    return _json(report.to_dict())


async def status(request: Request) -> Response:
    """Counts by status, leases, due responsibilities, recent failures (``loop status``)."""
    gw = gateway_of(request)
    summary = await run_in_threadpool(gw.service.status)
    return _json(summary.to_dict())


async def healthz(request: Request) -> Response:
    """Liveness: the gateway answers and its store can be read (503 otherwise)."""
    gw = gateway_of(request)
    await run_in_threadpool(gw.service.list_events, limit=1)
    return _json({"status": "ok", "store": gw.service.store.backend})


async def metrics(request: Request) -> Response:
    """Prometheus metrics in the text exposition format."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    gw = gateway_of(request)
    text = await run_in_threadpool(generate_latest, gw.metrics.registry)
    return Response(text, media_type=CONTENT_TYPE_LATEST)
