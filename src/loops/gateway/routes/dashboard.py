"""Handlers the dashboard needs beyond the queue's REST contract: the page itself, its
static files, re-queue, workers and the run registry.

The page and its files are packaged with loops (``loops/gateway/static``): plain HTML,
CSS and JavaScript modules, no build step and nothing fetched from elsewhere.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated

from fastapi import Path as PathParam
from fastapi import Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import FileResponse, Response

from loops.gateway import schemas
from loops.gateway.routes.common import TaskId
from loops.gateway.routes.common import json_response as _json
from loops.gateway.state import gateway_of

#: URL prefix of the dashboard's static files
STATIC_PREFIX = "/ui"


def static_dir() -> Path:
    """The folder of the dashboard's packaged files."""
    return Path(str(resources.files("loops.gateway") / "static"))


#: what the page may load: only itself (no CDN, no inline script); data shown as text
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


async def root() -> Response:
    """The dashboard (one page; its views are chosen by the URL fragment)."""
    return FileResponse(
        static_dir() / "index.html",
        media_type="text/html; charset=utf-8",
        headers={"Content-Security-Policy": _CSP, "Cache-Control": "no-cache"},
    )


async def requeue_task(
    request: Request, task_id: TaskId, body: schemas.RequeueRequest | None = None
) -> Response:
    """Send a failed or blocked task back to the queue with fresh attempts (409 otherwise)."""
    gw = gateway_of(request)
    reason = body.reason if body is not None else None
    task = await run_in_threadpool(gw.service.requeue, task_id, reason=reason)
    return _json(task.to_dict())


async def list_workers(request: Request) -> Response:
    """Workers holding leases: each lease with since when and its last heartbeat."""
    gw = gateway_of(request)
    found = await run_in_threadpool(gw.service.workers)
    return _json({"workers": [w.to_dict() for w in found]})


async def list_runs(request: Request) -> Response:
    """Runs of the run registry (``loop list``), newest first."""
    from loops.runs import registry

    gw = gateway_of(request)
    found = await run_in_threadpool(registry.list_runs, home=gw.runs_home)
    return _json({"runs": [r.to_dict() for r in found]})


async def get_run(
    request: Request, run_id: Annotated[str, PathParam(description="a run id or unique prefix")]
) -> Response:
    """One run: its tree of loops and dag nodes, verdicts, budgets (``loop status <id>``)."""
    from loops.runs import registry

    gw = gateway_of(request)
    found = await run_in_threadpool(registry.read_run_status, run_id, home=gw.runs_home)
    return _json(found.to_dict())
