"""Responsibility schedules and the dispatch decision."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from loops import errors
from loops.queue import responsibilities as resp_mod
from loops.queue import schedules
from loops.queue.tasks import TaskStatus

T0 = datetime(2026, 11, 27, 10, 7, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("15m", 900), ("1h", 3600), ("1d", 86400), (" 2h ", 7200)]
)
def test_every_parses_durations(text: str, seconds: int) -> None:
    schedule = schedules.every(text)
    assert schedule.every_s == seconds
    assert schedule.next_after(T0) == T0 + timedelta(seconds=seconds)
    assert schedules.Schedule.from_text(schedule.to_text()) == schedule


@pytest.mark.parametrize("text", ["", "15", "m", "0m", "-1m", "1w", "1.5h", "15 minutes"])
def test_every_refuses_bad_durations(text: str) -> None:
    with pytest.raises(errors.ConfigError, match="30s, 15m, 1h, 1d"):
        schedules.every(text)


def test_cron_next_due() -> None:
    schedule = schedules.cron("0 * * * *")
    assert schedule.next_after(T0) == datetime(2026, 11, 27, 11, 0, tzinfo=UTC)
    assert schedules.Schedule.from_text(schedule.to_text()) == schedule
    assert str(schedule) == "cron: 0 * * * *"


@pytest.mark.parametrize("text", ["", "* * *", "61 * * * *", "not cron at all", "* * * * * *"])
def test_cron_refuses_bad_expressions(text: str) -> None:
    with pytest.raises(errors.ConfigError, match="cron expression"):
        schedules.cron(text)


def _definition(schedule: schedules.Schedule) -> resp_mod.ResponsibilityDef:
    return resp_mod.ResponsibilityDef(
        name="triage", schedule=schedule, template=resp_mod.TaskTemplate(prompt="triage")
    )


def test_new_responsibility_is_due_at_once_and_not_twice() -> None:
    resp = resp_mod.synced(None, _definition(schedules.every("15m")), now=T0)
    assert resp_mod.decide(resp, now=T0, previous_status=None) is resp_mod.DispatchDecision.DISPATCH
    after = resp_mod.after_dispatch(resp, now=T0, task_id=7)
    assert after.next_due_at == T0 + timedelta(minutes=15)
    assert after.last_task_id == 7
    later = T0 + timedelta(minutes=5)
    assert resp_mod.decide(after, now=later, previous_status=TaskStatus.DONE) is (
        resp_mod.DispatchDecision.NOT_DUE
    )


@pytest.mark.parametrize(
    ("previous", "decision"),
    [
        (TaskStatus.QUEUED, resp_mod.DispatchDecision.PREVIOUS_ACTIVE),
        (TaskStatus.RUNNING, resp_mod.DispatchDecision.PREVIOUS_ACTIVE),
        (TaskStatus.WAITING_CHILDREN, resp_mod.DispatchDecision.PREVIOUS_ACTIVE),
        (TaskStatus.FAILED, resp_mod.DispatchDecision.DISPATCH),
        (TaskStatus.DONE, resp_mod.DispatchDecision.DISPATCH),
        (None, resp_mod.DispatchDecision.DISPATCH),
    ],
)
def test_no_dispatch_while_the_previous_task_is_active(
    previous: TaskStatus | None, decision: resp_mod.DispatchDecision
) -> None:
    resp = resp_mod.synced(None, _definition(schedules.every("1h")), now=T0)
    assert resp_mod.decide(resp, now=T0, previous_status=previous) is decision


def test_disabled_never_dispatches() -> None:
    definition = _definition(schedules.every("1h"))
    resp = resp_mod.synced(None, definition, now=T0)
    import dataclasses

    disabled = resp_mod.synced(resp, dataclasses.replace(definition, enabled=False), now=T0)
    assert resp_mod.decide(disabled, now=T0, previous_status=None) is (
        resp_mod.DispatchDecision.DISABLED
    )


def test_changed_schedule_recomputes_next_due_from_last_dispatch() -> None:
    resp = resp_mod.synced(None, _definition(schedules.every("1h")), now=T0)
    resp = resp_mod.after_dispatch(resp, now=T0, task_id=1)
    resynced = resp_mod.synced(resp, _definition(schedules.every("15m")), now=T0)
    assert resynced.next_due_at == T0 + timedelta(minutes=15)
    assert resynced.last_task_id == 1
