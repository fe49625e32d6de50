"""``review_context``: real evidence for a judge, each kind bounded.

A reviewer that only sees the worker's claim grades homework it cannot read. A
:class:`ReviewContext` gathers, when the judge is asked: the diff since the enclosing
loop or dag began (git), the run's ledger of verdicts so far, a test command's output,
and the contents of files by glob.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from loops import errors
from loops.flow import command, confinement, gitstate, globs, unchanged
from loops.flow.context import Context

#: default limit of each evidence section, in characters
DEFAULT_MAX_CHARS = 12_000
#: verdicts of the ledger shown, the most recent
LEDGER_ENTRIES = 30
#: wall-clock limit of the test command, in seconds
TESTS_TIMEOUT_S = 600.0


def _bounded(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[: limit - 60] + f"\n… [{len(text) - limit + 60} more characters cut]"


def _read_head(path: Path, limit: int) -> str:
    """The start of a text file, at most ``limit`` characters (and a marker if cut)."""
    with path.open(encoding="utf-8", errors="replace") as handle:
        text = handle.read(limit)
        if handle.read(1):
            text += "\n… [cut]"
    return text


@dataclasses.dataclass(frozen=True, slots=True)
class ReviewContext:
    """What evidence to gather; see :func:`review_context`."""

    diff: bool = False
    ledger: bool = False
    tests: tuple[str, ...] | None = None
    files: tuple[str, ...] = ()
    max_chars: int = DEFAULT_MAX_CHARS

    def fields(self) -> dict[str, Any]:
        """The settings, for ``describe``."""
        body: dict[str, Any] = {"diff": self.diff, "ledger": self.ledger}
        if self.tests is not None:
            body["tests"] = list(self.tests)
        if self.files:
            body["files"] = list(self.files)
        return body

    async def gather(self, ctx: Context) -> str:
        """The evidence sections, in a fixed order (diff, ledger, tests, files)."""
        sections: list[str] = []
        if self.diff:
            sections.append(await self._diff(ctx))
        if self.ledger:
            sections.append(self._ledger(ctx))
        if self.tests is not None:
            sections.append(await self._tests(ctx, self.tests))
        if self.files:
            sections.append(await self._files(ctx))
        return "\n\n".join(sections)

    async def _diff(self, ctx: Context) -> str:
        baselines = ctx.run.diff_baselines
        scope = next(
            (
                "/".join(ctx.path[:n])
                for n in range(len(ctx.path), 0, -1)
                if "/".join(ctx.path[:n]) in baselines
            ),
            None,
        )
        before = baselines.get(scope) if scope is not None else None
        after = await gitstate.snapshot_tree(ctx.cwd)
        if before is None or after is None:
            return "## Diff\n(unavailable: the working directory is not a git work tree)"
        patch = await gitstate.diff_trees(ctx.cwd, before, after)
        body = _bounded(patch, self.max_chars) if patch else "(no changes)"
        return f"## Diff since {scope} began\n```diff\n{body}\n```"

    def _ledger(self, ctx: Context) -> str:
        entries = ctx.run.verdicts[-LEDGER_ENTRIES:]
        lines = [
            f"- {path} {slot}"
            + (f" (iteration {iteration})" if iteration else "")
            + f": {'met' if v.met else 'not met'}: {v.explain()}"
            for path, slot, iteration, v in entries
        ]
        body = _bounded("\n".join(lines), self.max_chars) if lines else "(no verdicts yet)"
        return f"## Ledger of this run's verdicts\n{body}"

    async def _tests(self, ctx: Context, argv: Sequence[str]) -> str:
        shown = shlex.join(argv)
        try:
            box = confinement.for_command(ctx, None, subject=f"judge tests {shown}").sandbox
            code, output = await command.run_command(
                argv, ctx.cwd, TESTS_TIMEOUT_S, {}, sandbox=box
            )
        except (FileNotFoundError, PermissionError) as exc:
            return f"## Test run: `{shown}`\n(cannot run: {exc})"
        except TimeoutError:
            return f"## Test run: `{shown}`\n(timed out after {TESTS_TIMEOUT_S:g}s)"
        tail = output[-self.max_chars :]
        return f"## Test run: `{shown}` (exit {code})\n```\n{tail.rstrip()}\n```"

    async def _files(self, ctx: Context) -> str:
        patterns = globs.compile_patterns(self.files)
        listed = await gitstate.listed_files(ctx.cwd)
        if listed is None:
            listed = await asyncio.to_thread(unchanged.walk_files, ctx.cwd)
        chosen = sorted(p for p in listed if globs.matches(patterns, p))
        parts: list[str] = []
        budget = self.max_chars
        for rel in chosen:
            if budget <= 0:
                parts.append(f"… {len(chosen) - len(parts)} more files not shown")
                break
            try:
                text = await asyncio.to_thread(_read_head, ctx.cwd / rel, budget + 1000)
            except OSError:
                continue
            shown = _bounded(text, budget)
            budget -= len(shown)
            parts.append(f"### {rel}\n```\n{shown.rstrip()}\n```")
        body = "\n".join(parts) if parts else "(no files match)"
        return f"## Files ({', '.join(self.files)})\n{body}"


def review_context(
    *,
    diff: bool = False,
    ledger: bool = False,
    tests: Sequence[str] | None = None,
    files: Sequence[str] | str | None = None,
    max_chars: int = DEFAULT_MAX_CHARS,
) -> ReviewContext:
    """Evidence for ``agent_check(context=...)``.

    Args:
        diff: the diff since the enclosing loop or dag began (git work trees).
        ledger: this run's verdicts so far (the most recent 30).
        tests: an argv to run, e.g. ``["pytest", "-q"]``; its output is shown.
        files: gitignore-style globs of files whose contents are shown.
        max_chars: the limit of each section.

    Raises:
        ConstructionError: nothing asked for, a shell string for ``tests``, a bad limit.
    """
    if isinstance(tests, str):
        raise errors.ConstructionError(
            f"review_context tests= takes an argv list such as ['pytest', '-q'], got {tests!r}"
        )
    if isinstance(files, str):
        files = [files]
    if not (diff or ledger or tests or files):
        raise errors.ConstructionError(
            "review_context() needs some evidence: "
            "diff=True, ledger=True, tests=[...] or files=[...]"
        )
    if isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 200:
        raise errors.ConstructionError(f"review_context max_chars={max_chars!r} must be >= 200")
    globs.compile_patterns(files or ())
    return ReviewContext(
        diff=bool(diff),
        ledger=bool(ledger),
        tests=None if tests is None else tuple(tests),
        files=tuple(files or ()),
        max_chars=max_chars,
    )
