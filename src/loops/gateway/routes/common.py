"""What the route handlers share: path and query parameter types, JSON answers."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import Path, Query
from starlette.responses import JSONResponse, Response

TaskId = Annotated[str, Path(description="the task id (an integer)")]
Limit = Annotated[int, Query(ge=1, le=10_000, description="page size")]


def json_response(content: Any, status_code: int = 200) -> JSONResponse:
    """A JSON answer."""
    return JSONResponse(content, status_code=status_code)


def fast_json_response(content: Any, status_code: int = 200) -> Response:
    """A JSON answer encoded by orjson, for the hot worker routes.

    orjson is several times faster than the standard encoder, which matters when every
    lease and completion of a busy fleet is encoded. It refuses what JSON allows but it
    cannot hold (an integer beyond 64 bits, echoed from a request); such an answer is
    encoded by :func:`json_response` instead.
    """
    try:
        body = orjson.dumps(content)
    except TypeError:
        return json_response(content, status_code)
    return Response(body, status_code=status_code, media_type="application/json")
