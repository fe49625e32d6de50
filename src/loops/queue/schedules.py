"""Schedules of responsibilities: fixed intervals (``every``) and cron expressions."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from loops import errors

_EVERY = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclasses.dataclass(frozen=True, slots=True)
class Schedule:
    """When a responsibility is due: every fixed interval, or on a cron expression.

    Attributes:
        every_s: the interval in seconds, for an ``every`` schedule.
        cron: the cron expression (UTC), for a cron schedule.
    """

    every_s: int | None = None
    cron: str | None = None

    def __str__(self) -> str:
        if self.cron is not None:
            return f"cron: {self.cron}"
        return f"every: {_format_every(self.every_s or 0)}"

    def next_after(self, moment: datetime) -> datetime:
        """The first due time strictly after ``moment``."""
        if self.cron is not None:
            nxt = _croniter()(self.cron, moment.astimezone(UTC)).get_next(datetime)
            assert isinstance(nxt, datetime)
            return nxt.astimezone(UTC)
        return moment + timedelta(seconds=self.every_s or 0)

    def to_text(self) -> str:
        """The stored form: ``every:15m`` or ``cron:0 * * * *``."""
        if self.cron is not None:
            return f"cron:{self.cron}"
        return f"every:{_format_every(self.every_s or 0)}"

    @classmethod
    def from_text(cls, text: str) -> Schedule:
        """Parse the stored form written by :meth:`to_text`."""
        kind, _, value = text.partition(":")
        if kind == "cron":
            return cron(value)
        return every(value)


def _croniter() -> Any:
    """The croniter class, imported on first use (its import costs every CLI command ~0.1 s)."""
    from croniter import croniter  # type: ignore[import-untyped]

    return croniter


def every(text: str) -> Schedule:
    """An interval schedule from ``30s``, ``15m``, ``1h`` or ``1d``.

    Raises:
        ConfigError: the duration is not a positive number with a unit s, m, h or d.
    """
    match = _EVERY.match(text)
    if match is None or int(match[1]) <= 0:
        raise errors.ConfigError(
            f"invalid duration {text!r}: use a positive number with a unit s, m, h or d "
            "(e.g. 30s, 15m, 1h, 1d)"
        )
    return Schedule(every_s=int(match[1]) * _UNIT_SECONDS[match[2]])


def cron(expression: str) -> Schedule:
    """A cron schedule (five fields, evaluated in UTC).

    Raises:
        ConfigError: croniter rejects the expression.
    """
    expression = expression.strip()
    if len(expression.split()) != 5 or not _croniter().is_valid(expression):
        raise errors.ConfigError(
            f"invalid cron expression {expression!r}: use five fields, "
            "minute hour day-of-month month day-of-week (e.g. '0 * * * *')"
        )
    return Schedule(cron=expression)


def _format_every(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
