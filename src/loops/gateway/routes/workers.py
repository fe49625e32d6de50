"""Handlers of a worker's own lifecycle: it starts, it stops (and gives back what it
does not hold)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path as PathParam
from fastapi import Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from loops.gateway import schemas
from loops.gateway.routes.common import json_response as _json
from loops.gateway.state import gateway_of

WorkerName = Annotated[str, PathParam(min_length=1, max_length=200, pattern=r"\S")]


async def stop_worker(
    request: Request, name: WorkerName, body: schemas.WorkerStopRequest | None = None
) -> Response:
    """A worker stopped: no lease is granted to ``name`` any more, and the leases it
    holds but did not list in ``holding`` go back to the queue without an attempt
    charged (a long poll answered just as the worker gave up on it, on any gateway)."""
    gw = gateway_of(request)
    holding = body.holding if body is not None else []
    released = await run_in_threadpool(gw.service.stop_worker, name, holding=holding)
    gw.leaser.drop(name)  # this gateway's waiting polls for it answer at once
    return _json({"worker": name, "released": [t.id for t in released]})


async def start_worker(request: Request, name: WorkerName) -> Response:
    """A worker starts under ``name``: a stop mark left under that name is cleared."""
    gw = gateway_of(request)
    await run_in_threadpool(gw.service.start_worker, name)
    return Response(status_code=204)
