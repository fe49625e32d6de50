"""``consolidate_job``: fold a long history into a bounded record that keeps decisions."""

from __future__ import annotations

from typing import Any, ClassVar

from loops import errors
from loops.flow import memory
from loops.flow.context import Context
from loops.flow.jobs import Job
from loops.flow.outcome import Outcome


class ConsolidateJob(Job):
    """Folds commits beyond the newest ``keep_recent`` into ``.loops/record.md``."""

    kind: ClassVar[str] = "consolidate"

    def __init__(self, *, name: str, keep_recent: int, max_chars: int, commit: bool) -> None:
        self.name = name
        self.keep_recent = keep_recent
        self.max_chars = max_chars
        self.commit = commit

    def fields(self) -> dict[str, Any]:
        """The bounds and whether the record is committed."""
        return {
            "keep_recent": self.keep_recent,
            "max_chars": self.max_chars,
            "commit_record": self.commit,
        }

    async def run(self, ctx: Context) -> Outcome:
        """Fold, write and (by default) commit the record."""
        return await memory.run_consolidation(
            ctx, keep_recent=self.keep_recent, max_chars=self.max_chars, commit=self.commit
        )


def consolidate_job(
    *,
    name: str = "consolidate",
    keep_recent: int = 20,
    max_chars: int = 8_000,
    commit: bool = True,
) -> Job:
    """A job that folds history beyond a bound into one record file.

    Commits older than the newest ``keep_recent`` (first-parent) are folded into
    ``.loops/record.md``: each one's decision (subject and summary) and reasons (gate
    verdicts, or the commit's stated why). The record stays under ``max_chars`` by
    condensing, then dropping, its oldest entries; grounding reads it.

    Args:
        name: the job's name.
        keep_recent: commits left out of the record (grounding shows them in full).
        max_chars: the record's size bound (at least 400).
        commit: commit the record file when it changed.

    Raises:
        ConstructionError: a bad bound.
    """
    if isinstance(keep_recent, bool) or not isinstance(keep_recent, int) or keep_recent < 0:
        raise errors.ConstructionError(f"consolidate_job keep_recent={keep_recent!r} must be >= 0")
    if isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 400:
        raise errors.ConstructionError(f"consolidate_job max_chars={max_chars!r} must be >= 400")
    return ConsolidateJob(name=name, keep_recent=keep_recent, max_chars=max_chars, commit=commit)
