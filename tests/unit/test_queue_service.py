"""The queue service over the memory store: validation, settings, notifications."""

from __future__ import annotations

import random
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from loops import config, errors
from loops.queue import schedules
from loops.queue.responsibilities import ResponsibilityDef, TaskTemplate
from loops.queue.tasks import TaskStatus
from loops.services.queue import CompletionInput, QueueService, task_spec
from loops.store.memory import MemoryStore


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, ms: int) -> None:
        self.now += timedelta(milliseconds=ms)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def service(clock: Clock, tmp_path: Path) -> QueueService:
    settings = config.load_settings(env={"QUEUE_MAX_ATTEMPTS": "2"}, cwd=tmp_path)
    store = MemoryStore()
    store.migrate()
    triage = ResponsibilityDef("triage", schedules.every("1h"), TaskTemplate(prompt="triage"))
    return QueueService(
        store, settings.queue, responsibilities=[triage], clock=clock, rng=random.Random(1)
    )


def spec(**kw: object):  # type: ignore[no-untyped-def]
    return task_spec({"prompt": "do it", **kw})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "prompt is required"),
        ({"prompt": "   "}, "prompt is required"),
        ({"prompt": "p", "priority": 9}, "priority must be 1..5, got 9"),
        ({"prompt": "p", "priority": 0}, "priority must be 1..5"),
        ({"prompt": "p", "priority": "high"}, "priority must be 1..5"),
        ({"prompt": "p", "max_attempts": 0}, "max_attempts must be an integer >= 1"),
        ({"prompt": "p", "colour": "red"}, "unknown task field(s) colour"),
        ({"prompt": 5}, "prompt must be a string"),
    ],
)
def test_task_spec_rejects_bad_input(data: dict[str, object], message: str) -> None:
    with pytest.raises(errors.InputError) as info:
        task_spec(data)
    assert message in info.value.message


def test_task_spec_defaults_and_strings() -> None:
    parsed = task_spec({"prompt": "p", "priority": "2", "type": None, "min_tests": "3"})
    assert (parsed.priority, parsed.type, parsed.min_tests, parsed.title) == (2, "task", 3, "")


def test_settings_apply_to_created_tasks(service: QueueService) -> None:
    created = service.create_task(spec())
    assert created.created and created.task.max_attempts == 2
    again = service.create_task(spec(idempotency_key="k"))
    same = service.create_task(spec(idempotency_key="k"))
    assert not same.created and same.task.id == again.task.id


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda s: s.get_task("abc"), errors.TaskNotFound),
        (lambda s: s.get_task(424242), errors.TaskNotFound),
        (lambda s: s.list_tasks(status="sleeping"), errors.InputError),
        (lambda s: s.list_tasks(limit=0), errors.InputError),
        (lambda s: s.lease(worker=""), errors.InputError),
        (lambda s: s.lease(worker="w", ttl_ms=50), errors.InputError),
        (lambda s: s.list_artifacts(task_id=99), errors.TaskNotFound),
        (lambda s: s.store_artifact(1, name="x", kind="movie", content=b""), errors.InputError),
        (lambda s: s.get_artifact("nope"), errors.NotFound),
    ],
)
def test_bad_input_is_refused(service: QueueService, call, error) -> None:  # type: ignore[no-untyped-def]
    service.create_task(spec())
    with pytest.raises(error):
        call(service)


def test_unknown_status_names_the_allowed_ones(service: QueueService) -> None:
    with pytest.raises(errors.InputError, match="queued\\|leased\\|running"):
        service.list_tasks(status="sleeping")


def test_full_cycle_with_steps_and_usage(service: QueueService, clock: Clock) -> None:
    task = service.create_task(spec()).task
    (leased,) = service.lease(worker="w1")
    beat = service.heartbeat(task.id, lease_token=leased.lease.token, status="running")
    assert beat.task.status is TaskStatus.RUNNING
    with pytest.raises(errors.InputError, match="running"):
        service.heartbeat(task.id, lease_token=leased.lease.token, status="paused")
    done = service.complete(
        str(task.id),
        lease_token=leased.lease.token,
        status="done",
        result="ok",
        output="work\nSTEP[build]: DONE idempotency=b1 note=built\n",
        usage={"input_tokens": 3, "output_tokens": 4, "cost_usd": 0.5},
    )
    assert done.status is TaskStatus.DONE and done.usage.total_tokens == 7
    assert [s.name for s in service.list_steps(task.id)] == ["build"]
    detail = service.task_detail(task.id).to_dict()
    assert detail["steps_count"] == 1 and detail["children_count"] == 0


def test_complete_validates_status_and_token(service: QueueService) -> None:
    task = service.create_task(spec()).task
    (leased,) = service.lease(worker="w1")
    with pytest.raises(errors.InputError, match="done\\|failed\\|blocked\\|retry"):
        service.complete(task.id, lease_token=leased.lease.token, status="finished")
    with pytest.raises(errors.InputError, match="lease_token"):
        service.complete(task.id, lease_token="", status="done")
    with pytest.raises(errors.LeaseConflict):
        service.complete(task.id, lease_token="1.1.forged", status="done")


def test_retry_uses_settings_backoff(service: QueueService, clock: Clock) -> None:
    task = service.create_task(spec()).task
    (leased,) = service.lease(worker="w")
    retried = service.complete(task.id, lease_token=leased.lease.token, status="retry")
    delay = retried.run_after - clock.now
    assert timedelta(milliseconds=500) <= delay <= timedelta(milliseconds=1000)
    assert service.lease(worker="w") == []
    clock.advance(1000)
    assert len(service.lease(worker="w")) == 1


def test_complete_many_mixes_valid_and_invalid(service: QueueService) -> None:
    ids = [service.create_task(spec()).task.id for _ in range(2)]
    leases = service.lease(worker="w", limit=2)
    outcomes = service.complete_many(
        [
            CompletionInput(ids[0], leases[0].lease.token, "done"),
            CompletionInput(ids[1], leases[1].lease.token, "bogus"),
            CompletionInput("x", "t", "done"),
        ]
    )
    assert [o.ok for o in outcomes] == [True, False, False]
    answers = [o.to_dict() for o in outcomes]
    assert answers[0]["task"]["status"] == "done"
    assert answers[1]["error"]["code"] == "invalid_input"
    assert answers[2] == {
        "id": 0, "ok": False, "error": {"code": "not_found", "message": "no task with id 'x'"}
    }  # fmt: skip
    assert service.get_task(ids[1]).status is TaskStatus.LEASED


def test_children_limits_come_from_settings(service: QueueService) -> None:
    parent = service.create_task(spec()).task
    kids = [service.create_child(parent.id, spec()).task for _ in range(5)]
    assert all(k.depth == 1 for k in kids)
    with pytest.raises(errors.LimitExceeded, match="QUEUE_MAX_CHILDREN_PER_TASK=5"):
        service.create_child(parent.id, spec())
    with pytest.raises(errors.LimitExceeded, match="QUEUE_MAX_CHILD_DEPTH"):
        service.create_child(kids[0].id, spec())
    assert len(service.list_children(parent.id)) == 5
    cancelled = service.cancel(parent.id)
    assert cancelled.status is TaskStatus.CANCELLED
    assert all(k.status is TaskStatus.CANCELLED for k in service.list_children(parent.id))


def test_tick_reclaims_and_dispatches(service: QueueService, clock: Clock) -> None:
    task = service.create_task(spec()).task
    service.lease(worker="w", ttl_ms=100)
    clock.advance(100)
    report = service.tick()
    assert [t.id for t in report.reclaimed] == [task.id]
    assert [d.responsibility for d in report.dispatched] == ["triage"]
    assert report.to_dict()["reclaimed"] == 1
    assert service.tick().dispatched == []
    assert service.list_events(limit=1)[0].type == "tick"


def test_creating_work_wakes_listeners_and_waiters(service: QueueService) -> None:
    calls: list[int] = []
    unsubscribe = service.subscribe(lambda: calls.append(1))
    service.create_task(spec())
    assert calls == [1]
    unsubscribe()
    service.create_task(spec())
    assert calls == [1]


def test_lease_wait_returns_as_soon_as_work_is_created(service: QueueService) -> None:
    result: list[object] = []

    def waiter() -> None:
        result.extend(service.lease_wait(worker="w", wait_ms=30_000, poll_ms=30_000))

    thread = threading.Thread(target=waiter)
    thread.start()
    time.sleep(0.05)
    assert thread.is_alive() and result == []
    service.create_task(spec())
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert len(result) == 1


def test_lease_wait_gives_up_after_wait_ms(service: QueueService) -> None:
    assert service.lease_wait(worker="w", wait_ms=10) == []
    with pytest.raises(errors.InputError, match="wait_ms"):
        service.lease_wait(worker="w", wait_ms=-1)


def test_state_round_trip(service: QueueService) -> None:
    task = service.create_task(spec()).task
    service.put_state("session", {"id": "s1"}, task_id=task.id)
    assert service.get_state("session", task_id=task.id) == {"id": "s1"}
    assert service.get_state("session") is None


def test_artifacts_round_trip(service: QueueService) -> None:
    task = service.create_task(spec()).task
    art = service.store_artifact(task.id, name="out", kind="log", content=b"x" * 10)
    assert service.read_artifact(str(art.id)) == b"x" * 10
    assert [a.id for a in service.list_artifacts(task_id=task.id)] == [art.id]


@pytest.mark.parametrize("spelling", ["done", " Done ", "DONE", "done\n"])
def test_a_completion_status_is_read_in_any_case_and_spacing(
    service: QueueService, spelling: str
) -> None:
    service.create_task(task_spec({"prompt": "p"}))
    (held,) = service.lease(worker="w1")
    (outcome,) = service.complete_many([CompletionInput(held.task.id, held.lease.token, spelling)])
    assert outcome.ok and outcome.task is not None
    assert outcome.task.status is TaskStatus.DONE
