"""The REST JSON forms of tasks, leases, steps and errors, read back into model values.

The gateway answers with the objects of ``Task.to_dict()`` and friends (DESIGN section
3); an HTTP client turns them back into the same frozen values the in-process service
returns, so the worker handles both alike. An error answer (``{"error": {"code",
"message"}}``) becomes the exception the in-process service raises (:func:`error_for`).
The worker's :mod:`~loops.worker.http` and the producer's :mod:`loops.client` share this.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from loops import errors
from loops.queue.steps import Step, StepStatus
from loops.queue.tasks import Lease, LeasedTask, Task, TaskStatus, task_from_values
from loops.usage import Usage

#: error code in a gateway answer -> the exception raised for it
ERROR_CODES: dict[str, type[errors.LoopsError]] = {
    "lease_conflict": errors.LeaseConflict,
    "worker_stopped": errors.WorkerStopped,
    "not_found": errors.TaskNotFound,
    "invalid_transition": errors.InvalidTransition,
    "limit_exceeded": errors.LimitExceeded,
    "payload_too_large": errors.PayloadTooLarge,
    "unauthorized": errors.ConfigError,
}


def error_for(status: int, content: bytes) -> errors.LoopsError:
    """The error an answer with ``status`` and body ``content`` stands for."""
    code, message = "error", content[:500].decode(errors="replace")
    try:
        body = orjson.loads(content)
        code = str(body["error"]["code"])
        message = str(body["error"]["message"])
    except (ValueError, KeyError, TypeError):
        pass
    family = ERROR_CODES.get(code)
    if family is None:
        family = errors.InputError if 400 <= status < 500 else errors.StoreError
    text = f"{message} (gateway answered {status} {code})"
    if status == 401:
        text += "; set QUEUE_API_TOKEN to the gateway's token"
    return family(text)


def parse_time(value: object) -> datetime | None:
    """An aware UTC datetime from ISO 8601 text (``Z`` accepted), or ``None``."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise errors.InputError(f"expected an ISO 8601 time, got {value!r}")
    moment = datetime.fromisoformat(value)  # 3.11+ reads the trailing Z
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _time(value: object) -> datetime:
    moment = parse_time(value)
    if moment is None:
        raise errors.InputError("a required time is missing from the gateway's answer")
    return moment


def _opt_int(value: object) -> int | None:
    return None if value is None else int(str(value))


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


def task_from_dict(body: Mapping[str, Any], *, lease_token: str | None = None) -> Task:
    """A :class:`Task` from its REST object (the lease token, not part of it, is given)."""
    try:
        return Task(
            id=int(body["id"]),
            type=str(body.get("type") or "task"),
            title=str(body.get("title") or ""),
            prompt=str(body.get("prompt") or ""),
            success=_opt_str(body.get("success")),
            check=_opt_str(body.get("check")),
            provider=_opt_str(body.get("provider")),
            model=_opt_str(body.get("model")),
            cwd=_opt_str(body.get("cwd")),
            max_iterations=_opt_int(body.get("max_iterations")),
            min_tests=_opt_int(body.get("min_tests")),
            priority=int(body.get("priority") or 3),
            status=TaskStatus(body["status"]),
            attempts=int(body.get("attempts") or 0),
            max_attempts=int(body.get("max_attempts") or 1),
            lease_owner=_opt_str(body.get("lease_owner")),
            lease_token=lease_token,
            lease_expires_at=parse_time(body.get("lease_expires_at")),
            run_after=_time(body.get("run_after") or body["created_at"]),
            parent_id=_opt_int(body.get("parent_id")),
            depth=int(body.get("depth") or 0),
            idempotency_key=_opt_str(body.get("idempotency_key")),
            responsibility=_opt_str(body.get("responsibility")),
            result=_opt_str(body.get("result")),
            error=_opt_str(body.get("error")),
            usage=Usage.from_dict(body.get("usage")),
            created_at=_time(body["created_at"]),
            updated_at=_time(body.get("updated_at") or body["created_at"]),
            finished_at=parse_time(body.get("finished_at")),
            wake_each=bool(body.get("wake_each")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise errors.InputError(
            f"the gateway sent a task object this worker cannot read: {exc}"
        ) from exc


def lease_from_dict(body: Mapping[str, Any], task: Task) -> Lease:
    """A :class:`Lease` from its REST object."""
    return Lease(
        token=str(body["token"]),
        owner=str(body.get("owner") or task.lease_owner or ""),
        expires_at=_time(body["expires_at"]),
        attempt=int(body.get("attempt") or task.attempts),
    )


def leased_from_dict(body: Mapping[str, Any]) -> LeasedTask:
    """A :class:`LeasedTask` from ``{"task": ..., "lease": ...}``."""
    task = task_from_dict(body["task"], lease_token=str(body["lease"]["token"]))
    return LeasedTask(task=task, lease=lease_from_dict(body["lease"], task))


def leased_from_lean(body: Mapping[str, Any], *, worker: str) -> LeasedTask:
    """A :class:`LeasedTask` from a lean lease object (``"form": "lean"``), granted to
    ``worker``.

    The lean form leaves out what a just-leased task has by definition: it is
    ``leased`` by ``worker`` and has no result, error or finish time. Its bookkeeping
    is not carried either: here its usage so far reads as zero, its idempotency key and
    responsibility as none, and its run-after and update times as its creation time.
    """
    try:
        token = str(body["token"])
        expires_at = _time(body["expires_at"])
        created_at = _time(body["created_at"])
        attempts = int(body["attempts"])
        get = body.get
        # Task's fields in declaration order: the stores' fast path, a third of the cost
        # of Task(...) (a worker reads a lease per task it runs)
        task = task_from_values(
            (
                int(body["id"]),
                str(body["type"]),
                str(body["title"]),
                str(body["prompt"]),
                _opt_str(get("success")),
                _opt_str(get("check")),
                _opt_str(get("provider")),
                _opt_str(get("model")),
                _opt_str(get("cwd")),
                _opt_int(get("max_iterations")),
                _opt_int(get("min_tests")),
                int(body["priority"]),
                TaskStatus.LEASED,
                attempts,
                int(body["max_attempts"]),
                worker,  # lease_owner
                token,
                expires_at,
                created_at,  # run_after
                _opt_int(get("parent_id")),
                int(body["depth"]),
                None,  # idempotency_key
                None,  # responsibility
                None,  # result
                None,  # error
                Usage(),
                created_at,
                created_at,  # updated_at
                None,  # finished_at
                False,  # wake_each: the queue's bookkeeping, not the worker's
            )
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise errors.InputError(
            f"the gateway sent a lean lease this worker cannot read: {exc!r}"
        ) from exc
    lease = Lease(token=token, owner=worker, expires_at=expires_at, attempt=attempts)
    return LeasedTask(task=task, lease=lease)


def step_from_dict(body: Mapping[str, Any]) -> Step:
    """A :class:`Step` from its REST object."""
    created = _time(body["created_at"])
    return Step(
        task_id=int(body.get("task_id") or 0),
        name=str(body["name"]),
        status=StepStatus(str(body["status"]).upper()),
        idempotency_key=str(body.get("idempotency_key") or body["name"]),
        note=str(body.get("note") or ""),
        created_at=created,
        updated_at=parse_time(body.get("updated_at")) or created,
    )
