"""Ids and integers the stores cannot hold are clear errors, not overflows."""

from __future__ import annotations

import pytest

from loops import errors
from loops.services import queue
from loops.services.queue import parse_task_id, task_spec


@pytest.mark.parametrize("value", [2**63, 10**30, "9223372036854775808", "\uff11", "²", 0, -1])
def test_ids_out_of_range_or_not_ascii_are_unknown(value: object) -> None:
    with pytest.raises(errors.TaskNotFound):
        parse_task_id(value)


def test_the_largest_id_is_accepted() -> None:
    assert parse_task_id(queue.MAX_INT) == queue.MAX_INT
    assert parse_task_id(f" {queue.MAX_INT} ") == queue.MAX_INT


@pytest.mark.parametrize("field", ["max_attempts", "max_iterations", "min_tests"])
def test_integers_over_64_bits_are_refused_by_name(field: str) -> None:
    with pytest.raises(errors.InputError, match=f"{field} must be at most {queue.MAX_INT}"):
        task_spec({"prompt": "p", field: 2**63})
