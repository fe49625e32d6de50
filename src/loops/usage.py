"""Token and cost accounting shared by engines, tasks and budgets."""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True, slots=True)
class Usage:
    """Tokens and money spent by one or more agent turns.

    Attributes:
        input_tokens: prompt tokens, cached ones included.
        output_tokens: generated tokens.
        cached_input_tokens: the part of ``input_tokens`` served from a prompt cache.
        cost_usd: cost in US dollars, reported by the engine or computed from prices;
            ``None`` when unknown.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cost_usd: float | None = None

    @property
    def total_tokens(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        if self.cost_usd is None and other.cost_usd is None:
            cost = None
        else:
            cost = (self.cost_usd or 0.0) + (other.cost_usd or 0.0)
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cached_input_tokens=self.cached_input_tokens + other.cached_input_tokens,
            cost_usd=cost,
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form used by the REST API, events and the store."""
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cached_input_tokens": self.cached_input_tokens,
            "cost_usd": self.cost_usd,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Usage:
        """Parse the JSON form; missing keys are zero (cost unknown)."""
        if not data:
            return cls()
        cost = data.get("cost_usd")
        return cls(
            input_tokens=int(data.get("input_tokens") or 0),
            output_tokens=int(data.get("output_tokens") or 0),
            cached_input_tokens=int(data.get("cached_input_tokens") or 0),
            cost_usd=None if cost is None else float(cost),
        )
