"""The create lane: ``POST /tasks`` (and ``/jobs``) served without FastAPI's request path.

A create is the first step of every pickup (``POST /tasks`` sent -> a worker's handler
starts) and FastAPI's general machinery (routing, dependency solving, the body read
through ``Request``, anyio's thread hop, stdlib JSON) was most of the gateway's CPU per
create. The front door (:class:`~loops.gateway.front.FrontDoor`) hands the ordinary
create, a JSON object the model accepts, to the lane instead of to FastAPI:
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
from typing import Any

import orjson
from pydantic import ValidationError
from starlette.types import Receive, Scope, Send

from loops import errors as loops_errors
from loops.gateway import errors, schemas
from loops.gateway.routes.common import fast_json_response
from loops.gateway.state import Gateway
from loops.services.queue import task_spec

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


async def create(
    gw: Gateway, scope: Scope, fields: dict[str, Any], receive: Receive, send: Send
) -> None:
    """Create the task of ``fields`` (from :func:`accepted_body`) and answer 201 (200 for a
    known idempotency key), or the error answer of a refusal, as the route would."""
    try:
        spec = task_spec(fields)
        created = await gw.writes.run(functools.partial(gw.leaser.create_and_offer, spec))
        answer = fast_json_response(created.task.to_dict(), 201 if created.created else 200)
    except loops_errors.LoopsError as exc:
        answer = errors.answer_for(exc, scope["method"], scope["path"])
    except Exception as exc:  # a request handler is a loop boundary: 500, logged
        await errors.unexpected(scope, receive, send, exc, started=False)
        return
    await answer(scope, receive, send)
