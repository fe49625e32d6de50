"""Exponential backoff with injected jitter."""

from __future__ import annotations

import pytest

from loops.queue.backoff import Backoff


@pytest.mark.parametrize(
    ("attempt", "jitter", "expected"),
    [
        (1, 0.0, 500),
        (1, 1.0, 1000),
        (2, 0.0, 1000),
        (3, 0.5, 3000),
        (30, 1.0, 300_000),
        (1000, 0.0, 150_000),
        (0, 1.0, 1000),
    ],
)
def test_delay(attempt: int, jitter: float, expected: int) -> None:
    assert Backoff().delay_ms(attempt, jitter=jitter) == expected


def test_delay_grows_until_the_cap() -> None:
    policy = Backoff(base_ms=100, factor=3, cap_ms=5_000)
    delays = [policy.delay_ms(n, jitter=1.0) for n in range(1, 8)]
    assert delays == [100, 300, 900, 2700, 5000, 5000, 5000]


def test_jitter_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="jitter"):
        Backoff().delay_ms(1, jitter=1.5)
