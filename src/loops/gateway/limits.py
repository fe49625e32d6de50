"""Request body size limits, enforced before anything parses the body.

A declared ``Content-Length`` over the limit is refused at once; a chunked body is
read up to the limit and refused as soon as it passes it. Accepted bodies are handed
on unchanged (:class:`~loops.gateway.front.FrontDoor` reads them).
"""

from __future__ import annotations

from starlette.types import Message, Receive, Scope, Send

from loops.gateway.errors import error_response

#: methods whose body is read (and limited) before the request goes on
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


async def read_body(scope: Scope, receive: Receive, send: Send, *, limit: int) -> bytes | None:
    """The whole request body, read up to ``limit`` bytes.

    Returns:
        The body; ``None`` when it was refused (413 ``payload_too_large`` answered
        here) or the client left before sending all of it (nothing to answer).
    """
    declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
    if declared is not None and declared.isdigit() and int(declared) > limit:
        await _too_large(scope, receive, send, limit, f"{int(declared)} bytes")
        return None
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            await _too_large(scope, receive, send, limit, "more")
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def replaying(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands ``body`` on (one message), then passes on what follows."""
    delivered = False

    async def replay() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _too_large(scope: Scope, receive: Receive, send: Send, limit: int, got: str) -> None:
    message = (
        f"the request body is {got} than the limit of {limit} bytes"
        if got == "more"
        else f"the request body is {got}, over the limit of {limit} bytes"
    ) + " (QUEUE_MAX_BODY_BYTES); send less, or split it into batches"
    await error_response(413, "payload_too_large", message, headers={"Connection": "close"})(
        scope, receive, send
    )
