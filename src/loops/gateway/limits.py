"""Request body size limits, enforced before anything parses the body.

A declared ``Content-Length`` over the limit is refused at once; a chunked body is
read up to the limit and refused as soon as it passes it. Accepted bodies are handed
on unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from loops.gateway.errors import error_response

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class BodyLimitMiddleware:
    """Refuses request bodies larger than the limit with 413 ``payload_too_large``."""

    def __init__(self, app: ASGIApp, *, limit_for: Callable[[str], int]) -> None:
        """Wrap ``app``.

        Args:
            app: the inner ASGI app.
            limit_for: the byte limit of a request path (artifact uploads may allow more).
        """
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _too_large(scope, receive, send, limit, f"{int(declared)} bytes")
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _too_large(scope, receive, send, limit, "more")
                return
            chunks.append(chunk)
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

        await self.app(scope, replay, send)


async def _too_large(scope: Scope, receive: Receive, send: Send, limit: int, got: str) -> None:
    message = (
        f"the request body is {got} than the limit of {limit} bytes"
        if got == "more"
        else f"the request body is {got}, over the limit of {limit} bytes"
    ) + " (QUEUE_MAX_BODY_BYTES); send less, or split it into batches"
    await error_response(413, "payload_too_large", message, headers={"Connection": "close"})(
        scope, receive, send
    )
