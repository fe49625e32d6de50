"""``GatewayClient``: a producer's side of the gateway's REST contract (DESIGN section 3).

Create tasks (and children), read them back and cancel them, from any Python program
that can reach ``loop gateway``. The answers are the model's own :class:`Task` values,
and the gateway's error answers become the exceptions the in-process queue service
raises (``TaskNotFound``, ``InvalidTransition``, ``LimitExceeded``, ``InputError`` for
a refused spec, ...), as the worker's client does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlsplit

import orjson

from loops import errors
from loops.client import transports
from loops.queue.tasks import Task, TaskSpec
from loops.worker import wire

#: seconds to connect, and to wait for each part of an answer, unless told
TIMEOUT_S = 30.0
#: the TaskSpec fields ``POST /tasks`` takes (``run_after`` is not one of them)
_SPEC_FIELDS = tuple(f.name for f in dataclasses.fields(TaskSpec) if f.name != "run_after")


class GatewayClient:
    """A blocking client of ``loop gateway`` for producers::

        from loops.client import GatewayClient

        with GatewayClient("http://127.0.0.1:7070", token=token) as client:
            task = client.create_task({"prompt": "Fix the flaky test", "type": "fix"})
            print(client.get_task(task.id).status)

    Requests go over kept-alive HTTP/1.1 connections (plain sockets for ``http://``
    gateways, httpx for ``https://`` and behind a proxy: :mod:`loops.client.transports`).
    A request whose connection the gateway closed before answering is sent again only
    when that is safe: reads, and creates that carry an ``idempotency_key`` (the gateway
    then answers the task the first request made); any other is reported, never
    repeated. One client may be shared between threads: each request uses a
    connection of its own.

    Args:
        base_url: the gateway, e.g. ``http://127.0.0.1:7070``.
        token: the bearer token (``QUEUE_API_TOKEN``), if the gateway requires one.
        timeout_s: seconds to connect, and to wait for each part of an answer.

    Raises:
        ConfigError: ``base_url`` is not an ``http(s)://`` URL, or ``token`` holds a
            line break.
    """

    def __init__(
        self, base_url: str, *, token: str | None = None, timeout_s: float = TIMEOUT_S
    ) -> None:
        url = urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise errors.ConfigError(
                f"the gateway URL {base_url!r} is not http(s)://host[:port]; "
                "e.g. http://127.0.0.1:7070"
            )
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            self._transport = transports.transport_for(self.base_url, headers=headers)
        except ValueError as exc:
            raise errors.ConfigError(f"the API token cannot be sent: {exc}") from None

    # -- tasks -------------------------------------------------------------------------

    def create_task(self, spec: TaskSpec | Mapping[str, Any]) -> Task:
        """``POST /tasks``: the new task, or the existing one for a known idempotency key.

        Args:
            spec: the task's fields (``prompt`` and any of ``type``, ``title``,
                ``priority``, ``success``, ``check``, ``provider``, ``model``, ``cwd``,
                ``max_iterations``, ``min_tests``, ``max_attempts``, ``idempotency_key``),
                as a mapping or a :class:`TaskSpec`.

        Raises:
            InputError: the gateway refused the spec (422), naming the field.
            GatewayUnavailable: the gateway cannot be reached, or closed the connection
                before answering a create without an idempotency key.
        """
        return self.create(spec)[0]

    def create_child(self, parent_id: int | str, spec: TaskSpec | Mapping[str, Any]) -> Task:
        """``POST /tasks/:id/children``: like :meth:`create_task`, under ``parent_id``.

        Raises:
            TaskNotFound: no task ``parent_id``.
            LimitExceeded: the queue's depth or children-per-task limit.
            InvalidTransition: the parent is finished.
        """
        return self.create(spec, parent_id=parent_id)[0]

    def create(
        self, spec: TaskSpec | Mapping[str, Any], *, parent_id: int | str | None = None
    ) -> tuple[Task, bool]:
        """The task :meth:`create_task` (or :meth:`create_child`) makes, and whether this
        call made it (``False``: the existing task of a known idempotency key)."""
        fields = _spec_fields(spec)
        try:
            body = orjson.dumps(fields)
        except TypeError as exc:
            raise errors.InputError(f"the task's fields are not JSON: {exc}") from exc
        path = "/tasks" if parent_id is None else f"/tasks/{_task_id(parent_id)}/children"
        replayable = fields.get("idempotency_key") is not None
        status, content = self._send("POST", path, body, replayable=replayable)
        return wire.task_from_dict(_parsed(content, path)), status == 201

    def get_task(self, task_id: int | str) -> Task:
        """``GET /tasks/:id``.

        Raises:
            TaskNotFound: no such task.
        """
        path = f"/tasks/{_task_id(task_id)}"
        _, content = self._send("GET", path, None, replayable=True)
        return wire.task_from_dict(_parsed(content, path))

    def cancel_task(self, task_id: int | str, *, reason: str | None = None) -> Task:
        """``POST /tasks/:id/cancel``: cancel a task and its active children; the
        cancelled task.

        Raises:
            TaskNotFound: no such task.
            InvalidTransition: it already finished.
        """
        path = f"/tasks/{_task_id(task_id)}/cancel"
        body = None if reason is None else orjson.dumps({"reason": reason})
        # not replayable: a cancel that was applied is refused the second time
        _, content = self._send("POST", path, body, replayable=False)
        return wire.task_from_dict(_parsed(content, path))

    # -- connections -------------------------------------------------------------------

    def close(self) -> None:
        """Close the kept connections (a later request opens a new one)."""
        self._transport.close()

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _send(
        self, method: str, path: str, body: bytes | None, *, replayable: bool
    ) -> tuple[int, bytes]:
        try:
            status, content = self._transport.request(
                method, path, body, replayable=replayable, timeout_s=self.timeout_s
            )
        except transports.RequestNotAnswered as exc:
            raise errors.GatewayUnavailable(
                f"the gateway at {self.base_url} closed the connection before answering "
                f"{method} {path} ({exc}); it may have acted on it, so it was not sent "
                "again (a create with an idempotency_key is safe to repeat)"
            ) from exc
        except OSError as exc:  # refused, reset, timed out (TimeoutError is an OSError)
            raise errors.GatewayUnavailable(
                f"cannot reach the gateway at {self.base_url} "
                f"({type(exc).__name__}: {exc or 'no answer in time'})"
            ) from exc
        if status >= 400:
            raise wire.error_for(status, content)
        return status, content


def _spec_fields(spec: TaskSpec | Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(spec, TaskSpec):
        return dict(spec)
    if spec.run_after is not None:
        raise errors.InputError(
            "run_after cannot be sent to a gateway (POST /tasks has no such field); "
            "create the task without it"
        )
    return {name: value for name in _SPEC_FIELDS if (value := getattr(spec, name)) is not None}


def _task_id(value: int | str) -> str:
    return str(value) if isinstance(value, int) else quote(str(value), safe="")


def _parsed(content: bytes, path: str) -> Any:
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError as exc:
        raise errors.InputError(f"the gateway's answer to {path} is not JSON: {exc}") from exc
