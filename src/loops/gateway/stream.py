"""The live event stream (``GET /events/stream``) as server-sent events.

Each event is sent as ``id: <event id>`` and ``data: <event JSON>`` (no ``event:``
field, so a browser's ``EventSource.onmessage`` receives them all; the JSON carries
``type``). A client resumes with ``?after=ID`` or the standard ``Last-Event-ID`` header
(which wins, being the later position); without either the stream starts with the
events written from now on. A comment line is sent every :data:`KEEPALIVE_S` so
proxies keep the connection open.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from starlette.concurrency import run_in_threadpool

from loops.gateway.feed import EventFeed
from loops.queue.events import Event
from loops.services.queue import QueueService

#: seconds between keep-alive comments on an idle stream
KEEPALIVE_S = 15.0
#: events read per store query
PAGE = 500
#: how long a client waits before reconnecting, sent as the stream's ``retry:`` field
RETRY_MS = 1000
#: the media type of the stream
MEDIA_TYPE = "text/event-stream"


def encode(event: Event) -> bytes:
    """One event as an SSE message."""
    data = json.dumps(event.to_dict(), separators=(",", ":"), ensure_ascii=False)
    return f"id: {event.id}\ndata: {data}\n\n".encode()


async def events(
    service: QueueService,
    feed: EventFeed,
    *,
    after: int | None,
    task_id: int | None = None,
    keepalive_s: float = KEEPALIVE_S,
) -> AsyncIterator[bytes]:
    """The SSE byte stream: stored events after ``after``, then new ones as they come.

    Ends when the gateway stops (or the client goes away, which cancels it).
    """
    signal = feed.events
    with feed.demand(stream=True):
        cursor = after if after is not None else await feed.latest_id()
        yield f"retry: {RETRY_MS}\n: loops event stream after {cursor}\n\n".encode()
        while not signal.closed:
            generation = signal.generation
            page = await run_in_threadpool(
                service.list_events, after_id=cursor, limit=PAGE, task_id=task_id
            )
            if page:
                cursor = page[-1].id
                yield b"".join(encode(e) for e in page)
                if len(page) == PAGE:
                    continue
            if not await signal.wait(since=generation, timeout_s=keepalive_s):
                yield b": keepalive\n\n"
        # the gateway is stopping: flush what was written meanwhile, then end
        page = await run_in_threadpool(
            service.list_events, after_id=cursor, limit=PAGE, task_id=task_id
        )
        if page:
            yield b"".join(encode(e) for e in page)
