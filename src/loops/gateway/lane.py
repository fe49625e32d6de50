"""The create lane: ``POST /tasks`` (and ``/jobs``) served without FastAPI's request path.

A create is the first step of every pickup (``POST /tasks`` sent -> a worker's handler
starts) and FastAPI's general machinery (routing, dependency solving, the body read
through ``Request``, anyio's thread hop, stdlib JSON) was most of the gateway's CPU per
create. The lane serves the ordinary create, a JSON object the model accepts, itself:
``orjson`` parses the body, :class:`~loops.gateway.schemas.TaskCreate` validates it once
(as FastAPI would), :func:`~loops.services.queue.task_spec` applies the queue's rules,
the create runs on the gateway's write thread (:class:`~loops.gateway.writes.WriteLane`),
and ``orjson`` writes the answer.

Everything else goes to the FastAPI route, which stays registered (it is what
``/openapi.json`` describes): a content type other than ``application/json``, a body
``orjson`` refuses (not JSON, not UTF-8, an integer beyond 64 bits, ``NaN``) or that is
not an object, and any body the model refuses. So every error answer (422 naming the
field, 400 from the service's rules) is FastAPI's own, word for word, and the lane only
ever answers what the route would have answered for the same body.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from pydantic import ValidationError
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from loops import errors as loops_errors
from loops.gateway import errors, schemas
from loops.gateway.routes.common import fast_json_response
from loops.gateway.state import Gateway
from loops.services.queue import task_spec

logger = logging.getLogger("loops.gateway")

#: the paths the lane serves (``POST`` only)
LANE_PATHS: frozenset[str] = frozenset({"/tasks", "/jobs"})
_JSON = b"application/json"
_validate = schemas.TaskCreate.model_validate


def accepted_body(headers: list[tuple[bytes, bytes]], body: bytes) -> dict[str, Any] | None:
    """The create's fields as the route's model would read them, or ``None`` when the
    lane should leave this body to the route (it may refuse it, or read it otherwise).

    Args:
        headers: the request's headers (ASGI: lowercase names).
        body: the whole request body.
    """
    content_type = next((v for k, v in headers if k == b"content-type"), None)
    # FastAPI reads JSON only under a JSON content type ("strict"), whatever its case
    if content_type is None or content_type.split(b";", 1)[0].strip().lower() != _JSON:
        return None
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if type(data) is not dict:
        return None
    try:
        model = _validate(data)
    except ValidationError:
        return None
    return model.model_dump(exclude_none=True)


class CreateLane:
    """Serves the ordinary ``POST /tasks`` itself; every other request goes on to ``app``."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        gateway: Callable[[], Gateway],
        routes: Mapping[str, BaseRoute],
    ) -> None:
        """Wrap ``app``.

        Args:
            app: the FastAPI app's inner stack.
            gateway: the gateway whose queue the creates go to.
            routes: the FastAPI route of each lane path (``scope["route"]`` of a
                request the lane answers, as the router would set it: the HTTP
                metrics label requests by its path).
        """
        self.app = app
        self.gateway = gateway
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or scope["path"] not in LANE_PATHS
            or scope.get("root_path")
        ):
            await self.app(scope, receive, send)
            return
        body, receive = await _read_body(receive)
        if body is None:
            return  # the client left before sending its body
        fields = accepted_body(scope["headers"], body)
        if fields is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = self.routes[scope["path"]]
        await self.create(scope, fields, receive, send)

    async def create(
        self, scope: Scope, fields: dict[str, Any], receive: Receive, send: Send
    ) -> None:
        """Create the task of ``fields`` and answer 201 (or 200 for a known idempotency
        key), or the error answer of the service's refusal."""
        gw = self.gateway()
        try:
            spec = task_spec(fields)
            created = await gw.writes.run(functools.partial(gw.leaser.create_and_offer, spec))
        except loops_errors.LoopsError as exc:
            response = errors.response_for(exc)
            if response.status_code >= 500:
                logger.error("%s %s failed: %s", scope["method"], scope["path"], exc.message)
            await response(scope, receive, send)
            return
        answer = fast_json_response(created.task.to_dict(), 201 if created.created else 200)
        await answer(scope, receive, send)


async def _read_body(receive: Receive) -> tuple[bytes | None, Receive]:
    """The whole request body, and a ``receive`` that hands it on again (for the route),
    then passes on what comes after; ``None`` when the client disconnected first."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None, receive
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    delivered = False

    async def replay() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return body, replay
