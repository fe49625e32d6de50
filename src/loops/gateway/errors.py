"""How the gateway answers errors: one table from error family to HTTP status.

Every error body is ``{"error": {"code": "...", "message": "..."}}``. Domain errors
(:mod:`loops.errors`) carry their own ``code``; request validation errors become 422
``invalid_input`` naming the field; anything unexpected is logged with its context and
answered 500 ``internal_error`` with no traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from loops import errors

logger = logging.getLogger("loops.gateway")

#: HTTP status of each error family, most specific first (the first match wins)
STATUS_BY_FAMILY: tuple[tuple[type[errors.LoopsError], int], ...] = (
    (errors.TaskNotFound, 404),
    (errors.NotFound, 404),
    (errors.RunNotFound, 404),
    (errors.PayloadTooLarge, 413),
    (errors.InvalidTransition, 409),
    (errors.LimitExceeded, 409),
    (errors.InputError, 400),
    (errors.LeaseError, 409),
    (errors.MigrationRequired, 503),
    (errors.StoreError, 503),
    (errors.ConfigError, 500),
)

#: error codes of HTTP statuses raised by the framework itself (unknown route, ...)
CODE_BY_STATUS: dict[int, str] = {
    400: "invalid_input",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    500: "internal_error",
    503: "unavailable",
}


class HttpError(errors.LoopsError):
    """An error the gateway itself answers with a given status (auth, body size)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def status_for(exc: errors.LoopsError) -> int:
    """The HTTP status that answers ``exc``."""
    if isinstance(exc, HttpError):
        return exc.status
    for family, status in STATUS_BY_FAMILY:
        if isinstance(exc, family):
            return status
    return 500


def error_body(code: str, message: str) -> dict[str, Any]:
    """The JSON body of every error answer."""
    return {"error": {"code": code, "message": message}}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """A JSON error answer."""
    return JSONResponse(error_body(code, message), status_code=status, headers=headers)


def response_for(exc: errors.LoopsError) -> JSONResponse:
    """The answer to a domain error."""
    status = status_for(exc)
    message = exc.message
    if isinstance(exc, errors.StoreError):
        message = f"the queue's database is unavailable: {message}"
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return error_response(status, exc.code, message, headers)


def describe_validation(problems: Sequence[Any]) -> str:
    """One line naming each invalid field of a request and what is wrong with it."""
    parts: list[str] = []
    for problem in problems:
        location = [str(p) for p in problem.get("loc", ()) if p not in ("body",)]
        field = ".".join(location) or "body"
        kind = problem.get("type", "")
        if kind == "json_invalid":
            parts.append("the body is not valid JSON")
        elif kind == "missing":
            parts.append(f"{field} is required")
        elif field == "body" and kind in ("model_attributes_type", "dict_type"):
            parts.append("the body must be a JSON object (sent as Content-Type: application/json)")
        elif kind == "extra_forbidden":
            parts.append(f"{field} is not a known field")
        else:
            parts.append(f"{field}: {problem.get('msg', 'is invalid')}")
    return "; ".join(dict.fromkeys(parts)) or "the request is invalid"


def answer_for(exc: errors.LoopsError, method: str, path: str) -> JSONResponse:
    """The answer to a domain error raised serving ``method path``; a 5xx is logged."""
    response = response_for(exc)
    if response.status_code >= 500:
        logger.error("%s %s failed: %s", method, path, exc.message)
    return response


async def unexpected(
    scope: Scope, receive: Receive, send: Send, exc: Exception, *, started: bool
) -> None:
    """Log an unexpected exception with its traceback, and answer 500 ``internal_error``
    (no traceback) unless the answer was ``started`` (the client then sees the
    connection end)."""
    logger.error(
        "unexpected error answering %s %s", scope.get("method"), scope.get("path"), exc_info=exc
    )
    if not started:
        message = f"the gateway failed unexpectedly ({type(exc).__name__}); see its log"
        await error_response(500, "internal_error", message)(scope, receive, send)


async def _loops_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.LoopsError)
    return answer_for(exc, request.method, request.url.path)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return error_response(422, "invalid_input", describe_validation(exc.errors()))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = CODE_BY_STATUS.get(exc.status_code, "error")
    message = str(exc.detail) if exc.detail else code.replace("_", " ")
    if exc.status_code == 404 and message == "Not Found":
        message = f"no route {request.method} {request.url.path}; see /docs for the routes"
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        allowed = allowed_methods(request)
        headers["Allow"] = ", ".join(allowed) if allowed else headers.get("Allow", "")
        message = (
            f"{request.method} is not allowed on {request.url.path}; "
            f"use {' or '.join(allowed) or 'another method'} (see /docs)"
        )
    return error_response(exc.status_code, code, message, headers or None)


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at the request's path (a path may have several
    routes, one per method: Starlette's own ``Allow`` names only the first one's)."""
    literal: set[str] = set()
    templated: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches({**request.scope, "method": "GET"})
        if match is not Match.NONE:
            exact = getattr(route, "path", None) == request.url.path
            (literal if exact else templated).update(getattr(route, "methods", None) or ())
    # "/tasks/lease" is POST only, though "/tasks/{task_id}" would also take it
    return sorted((literal or templated) - {"HEAD"})


class CatchAllMiddleware:
    """Answers an unexpected exception with a 500 error body (no traceback), logged once.

    Domain and validation errors never get here: their handlers answer them first.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            await unexpected(scope, receive, send, exc, started=started)


def install(app: FastAPI) -> None:
    """Register the error handlers and the catch-all on ``app``."""
    app.add_exception_handler(errors.LoopsError, _loops_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_middleware(CatchAllMiddleware)
