"""``HttpQueueClient``: the queue client over the gateway's REST API (DESIGN 3 and 13).

Leases long-poll (``wait_ms``) so an idle worker gets a new task within milliseconds
of its creation; many leases and completions travel in one request (``limit``,
``POST /tasks/complete``), and a busy worker's completions carry its next lease. These
hot calls ask for the lean answer form (``"form": "lean"``: leases hold only what a
worker needs, completion results no task objects) and are encoded and parsed with
orjson, and sent over the plain kept-alive connections of :mod:`loops.worker.connections`
(httpx for everything else, and for these too behind a proxy, over https, or with a
custom transport); so do creates (:meth:`HttpQueueClient.create_task`, ``create_child``),
sent again when their connection closed unanswered only if they carry an idempotency
key. Error bodies ``{"error": {"code", "message"}}`` become the
same exceptions the in-process service raises (409 ``lease_conflict`` is
:class:`~loops.errors.LeaseConflict`); a refused connection is
:class:`~loops.errors.GatewayUnavailable`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from loops import errors
from loops.queue.artifacts import ArtifactKind
from loops.queue.steps import Step
from loops.queue.tasks import LeasedTask, Task
from loops.worker import connections, wire
from loops.worker.client import Completion, CompletionAnswer, HeartbeatAnswer

#: seconds a request may take beyond its own long-poll wait
REQUEST_TIMEOUT_S = 30.0
_JSON_HEADERS = {"Content-Type": "application/json"}


def gateway_error(response: httpx.Response) -> errors.LoopsError:
    """The error a gateway's error answer (``{"error": {"code", "message"}}``) stands for."""
    return wire.error_for(response.status_code, response.content)


def _completion_body(c: Completion) -> dict[str, Any]:
    body: dict[str, Any] = {"lease_token": c.lease_token, "status": c.status}
    for key in ("result", "error", "output"):
        if getattr(c, key) is not None:
            body[key] = getattr(c, key)
    if c.usage is not None:
        body["usage"] = c.usage.to_dict()
    if c.waiting_on:
        body["waiting_on"] = list(c.waiting_on)
    return body


class HttpQueueClient:
    """A :class:`~loops.worker.client.QueueClient` talking to ``loop gateway``.

    Args:
        base_url: the gateway (``WORKER_API_BASE_URL``).
        token: the bearer token (``QUEUE_API_TOKEN``), if the gateway requires one.
        transport: an httpx transport (tests pass an ASGI transport).
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(REQUEST_TIMEOUT_S),
            transport=transport,
            # idle connections are dropped before the server's keep-alive timeout (5 s
            # for uvicorn) so that a request rarely meets a connection closing under it
            limits=httpx.Limits(
                max_keepalive_connections=32, max_connections=64, keepalive_expiry=2.0
            ),
        )
        #: the hot calls' connections (None: they go through httpx as well)
        self._pool = (
            connections.ConnectionPool.for_url(self.base_url, headers=headers)
            if transport is None
            else None
        )

    def agent_env(self) -> dict[str, str]:
        """``LOOP_API_BASE_URL`` (and ``LOOP_API_TOKEN``) for the agent."""
        env = {"LOOP_API_BASE_URL": self.base_url, "WORKER_API_BASE_URL": self.base_url}
        if self._token:
            env["LOOP_API_TOKEN"] = self._token
            env["QUEUE_API_TOKEN"] = self._token
        return env

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        fast_json: Any = None,
        params: Mapping[str, Any] | None = None,
        timeout_s: float | None = None,
        idempotent: bool | None = None,
    ) -> httpx.Response:
        """Send a request; ``fast_json`` is a body of plain values encoded by orjson."""
        content = None if fast_json is None else orjson.dumps(fast_json)
        headers = None if content is None else _JSON_HEADERS
        # A kept-alive connection the server closed at that moment fails the request;
        # one that is safe to repeat is tried once more on a fresh connection.
        tries = 2 if (method in ("GET", "PUT") if idempotent is None else idempotent) else 1
        for attempt in range(1, tries + 1):
            try:
                response = await self._http.request(
                    method,
                    path,
                    json=json,
                    content=content,
                    headers=headers,
                    params=params,
                    timeout=REQUEST_TIMEOUT_S if timeout_s is None else timeout_s,
                )
                break
            except (httpx.ReadError, httpx.RemoteProtocolError, httpx.WriteError) as exc:
                if attempt < tries:
                    continue
                raise self._unavailable(exc) from exc
            except httpx.TransportError as exc:
                raise self._unavailable(exc) from exc
        if response.status_code >= 400:
            raise self._error(response)
        return response

    async def _post_fast(
        self, path: str, body: Any, *, timeout_s: float, replayable: bool = False
    ) -> tuple[int, bytes]:
        """``POST`` a body of plain values (orjson), the hot calls' way; the answer's status
        and body. Like :meth:`_request`, a POST whose connection closed before its answer
        is sent once more only when ``replayable`` (a create with an idempotency key):
        otherwise it may have been acted on."""
        if self._pool is None:
            response = await self._request(
                "POST", path, fast_json=body, timeout_s=timeout_s, idempotent=replayable
            )
            return response.status_code, response.content
        content = orjson.dumps(body)
        for attempt in (1, 2):
            try:
                status, answer = await self._pool.post(path, content, timeout_s=timeout_s)
                break
            except connections.ConnectionClosed as exc:
                if replayable and attempt == 1:
                    continue
                raise self._unavailable(exc) from exc
            except (OSError, TimeoutError) as exc:
                raise self._unavailable(exc) from exc
        if status >= 400:
            raise wire.error_for(status, answer)
        return status, answer

    def _unavailable(self, exc: Exception) -> errors.GatewayUnavailable:
        return errors.GatewayUnavailable(
            f"cannot reach the gateway at {self.base_url} ({type(exc).__name__}: {exc}); "
            "start it with `loop gateway` or set WORKER_API_BASE_URL"
        )

    def _error(self, response: httpx.Response) -> errors.LoopsError:
        return gateway_error(response)

    async def lease(
        self,
        *,
        worker: str,
        ttl_ms: int,
        wait_ms: int,
        limit: int = 1,
        types: Sequence[str] | None = None,
    ) -> list[LeasedTask]:
        """``POST /tasks/lease`` (lean); 204 means nothing became ready within ``wait_ms``."""
        body: dict[str, Any] = {"worker": worker, "ttl_ms": ttl_ms, "wait_ms": wait_ms}
        if limit > 1:
            body["limit"] = limit
        if types is not None:
            body["types"] = list(types)
        body["form"] = "lean"
        status, content = await self._post_fast(
            "/tasks/lease", body, timeout_s=REQUEST_TIMEOUT_S + wait_ms / 1000
        )
        if status == 204 or not content:
            return []
        return _leases(_parsed(content, "/tasks/lease"), worker=worker)

    async def lease_task(self, task_id: int, *, worker: str, ttl_ms: int) -> LeasedTask:
        """``POST /tasks/:id/lease``."""
        response = await self._request(
            "POST", f"/tasks/{task_id}/lease", json={"worker": worker, "ttl_ms": ttl_ms}
        )
        return wire.leased_from_dict(response.json())

    async def heartbeat(
        self, task_id: int, *, lease_token: str, ttl_ms: int, start: bool = False
    ) -> HeartbeatAnswer:
        """``POST /tasks/:id/heartbeat``."""
        body: dict[str, Any] = {"lease_token": lease_token, "ttl_ms": ttl_ms}
        if start:
            body["status"] = "running"
        response = await self._request(
            "POST", f"/tasks/{task_id}/heartbeat", json=body, idempotent=True
        )
        return HeartbeatAnswer(cancel_requested=bool(response.json().get("cancel_requested")))

    async def complete(self, completion: Completion) -> Task:
        """``POST /tasks/:id/complete``."""
        response = await self._request(
            "POST", f"/tasks/{completion.task_id}/complete", json=_completion_body(completion)
        )
        data = response.json()
        return wire.task_from_dict(data.get("task", data))

    async def complete_many(self, completions: Sequence[Completion]) -> list[CompletionAnswer]:
        """``POST /tasks/complete`` (lean), answered item by item."""
        answers, _ = await self._complete(completions, lease=None)
        return answers

    async def complete_and_lease(
        self,
        completions: Sequence[Completion],
        *,
        worker: str,
        ttl_ms: int,
        limit: int,
        types: Sequence[str] | None = None,
    ) -> tuple[list[CompletionAnswer], list[LeasedTask]]:
        """``POST /tasks/complete`` with ``"lease"`` (lean): the next batch in the same call."""
        lease: dict[str, Any] = {"worker": worker, "ttl_ms": ttl_ms, "limit": limit}
        if types is not None:
            lease["types"] = list(types)
        return await self._complete(completions, lease=lease)

    async def _complete(
        self, completions: Sequence[Completion], *, lease: dict[str, Any] | None
    ) -> tuple[list[CompletionAnswer], list[LeasedTask]]:
        items = [{"id": c.task_id, **_completion_body(c)} for c in completions]
        body: dict[str, Any] = {"completions": items, "form": "lean"}
        if lease is not None:
            body["lease"] = lease
        _, content = await self._post_fast("/tasks/complete", body, timeout_s=REQUEST_TIMEOUT_S)
        data = _parsed(content, "/tasks/complete")
        answers = [
            _completion_answer(completion.task_id, item)
            for completion, item in zip(completions, data["results"], strict=True)
        ]
        leased = _leases(data, worker=lease["worker"]) if lease is not None else []
        return answers, leased

    async def release(self, task_id: int, *, lease_token: str, reason: str) -> Task:
        """``POST /tasks/:id/release``."""
        response = await self._request(
            "POST",
            f"/tasks/{task_id}/release",
            json={"lease_token": lease_token, "reason": reason},
        )
        data = response.json()
        return wire.task_from_dict(data.get("task", data))

    async def stop_worker(self, worker: str, *, holding: Sequence[str]) -> list[int]:
        """``POST /workers/:name/stop``; returns the ids of the leases given back."""
        response = await self._request(
            "POST",
            f"/workers/{quote(worker, safe='')}/stop",
            json={"holding": list(holding)},
            idempotent=True,
        )
        return [int(i) for i in response.json()["released"]]

    async def start_worker(self, worker: str) -> None:
        """``POST /workers/:name/start``."""
        await self._request("POST", f"/workers/{quote(worker, safe='')}/start", idempotent=True)

    async def get_task(self, task_id: int) -> Task:
        """``GET /tasks/:id``."""
        data = (await self._request("GET", f"/tasks/{task_id}")).json()
        return wire.task_from_dict(data.get("task", data))

    async def cancel_task(self, task_id: int, *, reason: str) -> Task:
        """``POST /tasks/:id/cancel``."""
        response = await self._request(
            "POST", f"/tasks/{task_id}/cancel", json={"reason": reason}, idempotent=True
        )
        data = response.json()
        return wire.task_from_dict(data.get("task", data))

    async def create_task(self, spec: Mapping[str, Any]) -> Task:
        """``POST /tasks`` from task fields (``prompt``, ``type``, ...): the new task, or
        the existing one for a known ``idempotency_key`` (then sent again safely when its
        connection closed unanswered)."""
        return await self._create("/tasks", spec)

    async def create_child(self, parent_id: int, spec: Mapping[str, Any]) -> Task:
        """``POST /tasks/:id/children`` (repeated safely when it has an idempotency key)."""
        return await self._create(f"/tasks/{parent_id}/children", spec)

    async def _create(self, path: str, spec: Mapping[str, Any]) -> Task:
        replayable = spec.get("idempotency_key") is not None
        _, content = await self._post_fast(
            path, dict(spec), timeout_s=REQUEST_TIMEOUT_S, replayable=replayable
        )
        return wire.task_from_dict(_parsed(content, path))

    async def append_events(
        self, task_id: int, events: Sequence[tuple[str, Mapping[str, Any]]]
    ) -> None:
        """``POST /tasks/:id/events`` with the whole batch."""
        if not events:
            return
        body = {"events": [{"type": kind, "data": dict(data)} for kind, data in events]}
        await self._request("POST", f"/tasks/{task_id}/events", json=body)

    async def record_output(self, task_id: int, output: str) -> None:
        """``POST /tasks/:id/steps`` with the output to scan for STEP markers."""
        await self._request(
            "POST", f"/tasks/{task_id}/steps", json={"output": output}, idempotent=True
        )

    async def list_steps(self, task_id: int) -> list[Step]:
        """``GET /tasks/:id/steps``."""
        data = (await self._request("GET", f"/tasks/{task_id}/steps")).json()
        return [wire.step_from_dict(item) for item in data["steps"]]

    async def get_state(self, task_id: int, key: str) -> Any:
        """``GET /tasks/:id/state/:key`` (``value`` is null when unset)."""
        path = f"/tasks/{task_id}/state/{quote(key, safe='')}"
        return (await self._request("GET", path)).json().get("value")

    async def put_state(self, task_id: int, key: str, value: Any) -> None:
        """``PUT /tasks/:id/state/:key``."""
        path = f"/tasks/{task_id}/state/{quote(key, safe='')}"
        await self._request("PUT", path, json={"value": value})

    async def store_artifact(
        self, task_id: int, *, name: str, kind: ArtifactKind, content: bytes
    ) -> None:
        """``POST /tasks/:id/artifacts?name=&kind=`` with the raw content as the body."""
        try:
            response = await self._http.post(
                f"/tasks/{task_id}/artifacts",
                params={"name": name, "kind": kind.value},
                content=content,
                headers={"Content-Type": "application/octet-stream"},
            )
        except httpx.TransportError as exc:
            raise errors.GatewayUnavailable(
                f"cannot reach the gateway at {self.base_url} to store artifact {name!r}: {exc}"
            ) from exc
        if response.status_code >= 400:
            raise self._error(response)

    async def aclose(self) -> None:
        """Close the connection pools."""
        if self._pool is not None:
            self._pool.close()
        await self._http.aclose()


def _parsed(content: bytes, path: str) -> Any:
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError as exc:
        raise errors.InputError(f"the gateway's answer to {path} is not JSON: {exc}") from exc


def _leases(data: Mapping[str, Any], *, worker: str) -> list[LeasedTask]:
    try:
        items = data["leases"]
    except (KeyError, TypeError) as exc:
        raise errors.InputError(f"the gateway's lease answer has no leases: {exc!r}") from exc
    return [wire.leased_from_lean(item, worker=worker) for item in items]


def _completion_answer(task_id: int, item: Mapping[str, Any]) -> CompletionAnswer:
    error = item.get("error")
    if error:
        if isinstance(error, Mapping):
            return CompletionAnswer(
                task_id, error=str(error.get("message")), code=str(error.get("code"))
            )
        return CompletionAnswer(task_id, error=str(error), code="error")
    return CompletionAnswer(task_id)  # the worker needs only whether it was applied
