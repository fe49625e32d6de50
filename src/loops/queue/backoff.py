"""Exponential backoff with jitter for retried tasks (randomness is a parameter)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True, slots=True)
class Backoff:
    """Retry delay policy: ``base_ms * factor**(attempt-1)``, capped, with equal jitter.

    Attributes:
        base_ms: delay after the first attempt, before jitter.
        factor: growth per further attempt.
        cap_ms: the largest delay.
    """

    base_ms: int = 1_000
    factor: float = 2.0
    cap_ms: int = 300_000

    def delay_ms(self, attempt: int, *, jitter: float) -> int:
        """The delay before the next attempt.

        Args:
            attempt: attempts made so far (1 after the first lease).
            jitter: a random number in [0, 1); the delay is drawn uniformly from the
                upper half of the exponential ceiling ("equal jitter"), so retries of
                many tasks spread out but never come back sooner than half the ceiling.

        Returns:
            Milliseconds, between ``ceiling / 2`` and ``ceiling``.
        """
        if not 0.0 <= jitter <= 1.0:
            raise ValueError(f"jitter must be in [0, 1], got {jitter}")
        exponent = max(attempt - 1, 0)
        if exponent >= 64:
            ceiling = float(self.cap_ms)
        else:
            ceiling = min(float(self.cap_ms), self.base_ms * self.factor**exponent)
        return int(ceiling / 2 + jitter * ceiling / 2)
