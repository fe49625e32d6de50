"""The gateway's front door: the one layer every HTTP request passes before anything else.

In order, as four middlewares did before: the HTTP metrics
(``loops_http_requests_total{method,route,code}`` and the duration histogram), the
bearer token (:mod:`loops.gateway.auth`, when ``QUEUE_API_TOKEN`` is set), the
cross-site request check (:mod:`loops.gateway.csrf`) and the body size limit
(:mod:`loops.gateway.limits`). Then the ordinary ``POST /tasks`` goes to the create
lane (:mod:`loops.gateway.lane`), every other request to FastAPI (its own error
middlewares, routing, the catch-all error answer, the routes).

One layer in front of FastAPI rather than four middlewares inside it: each middleware
was a coroutine wrapping the next (two of them wrapping ``send`` too), behind FastAPI's
own three (server errors, telemetry, its body limit), and a create paid for all of them
before its task was created (bench/RESULTS.md, branch ``gwcreate``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from loops.gateway import csrf, lane, limits
from loops.gateway.auth import BearerToken
from loops.gateway.metrics import UNMATCHED_ROUTE
from loops.gateway.state import Gateway


class FrontDoor:
    """Checks and measures each HTTP request, then serves it by the lane or by ``app``."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        gateway: Gateway,
        token: str | None,
        limit_for: Callable[[str], int],
    ) -> None:
        """Stand in front of ``app``.

        Args:
            app: FastAPI's own stack (routing and the routes).
            gateway: the gateway (its metrics, and the queue the lane creates in).
            token: the API token every route but the open ones requires (``None``: none).
            limit_for: the body size limit of a request path, in bytes.
        """
        self.app = app
        self.gateway = gateway
        self.bearer = BearerToken(token) if token else None
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        code = 500

        async def recording_send(message: Message) -> None:
            nonlocal code
            if message["type"] == "http.response.start":
                code = int(message["status"])
            await send(message)

        by_lane = False
        try:
            by_lane = await self._serve(scope, receive, recording_send)
        finally:
            # the route's template, as the router leaves it in the scope ("/tasks/{task_id}")
            route = scope["path"] if by_lane else getattr(scope.get("route"), "path", None)
            self.gateway.metrics.observe_request(
                scope["method"], route or UNMATCHED_ROUTE, code, time.perf_counter() - started
            )

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Answer the request; returns whether the create lane served it."""
        refusal = self.bearer.refusal(scope) if self.bearer is not None else None
        if refusal is None:
            refusal = csrf.refusal(scope)
        if refusal is not None:
            await refusal(scope, receive, send)
            return False
        method = scope["method"]
        if method not in limits.BODY_METHODS:
            await self.app(scope, receive, send)
            return False
        path = scope["path"]
        body = await limits.read_body(scope, receive, send, limit=self.limit_for(path))
        if body is None:
            return False  # refused (413 answered), or the client left
        if method == "POST" and path in lane.LANE_PATHS and not scope.get("root_path"):
            fields = lane.accepted_body(scope["headers"], body)
            if fields is not None:
                await lane.create(self.gateway, scope, fields, receive, send)
                return True
        await self.app(scope, limits.replaying(body, receive), send)
        return False
