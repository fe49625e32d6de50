"""What the route handlers share: path and query parameter types, JSON answers."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path, Query
from starlette.responses import JSONResponse

TaskId = Annotated[str, Path(description="the task id (an integer)")]
Limit = Annotated[int, Query(ge=1, le=10_000, description="page size")]


def json_response(content: Any, status_code: int = 200) -> JSONResponse:
    """A JSON answer."""
    return JSONResponse(content, status_code=status_code)
