"""Grounding: what a fresh-context agent turn is told about the work done so far.

The text holds the commits made since the run (or task) began, newest first, with
their subjects, bodies, structured trailers and changed files; this run's scratch notes;
and the consolidated record of older decisions; all within a size bound. With
``retrieve=True`` the commits are picked by BM25 relevance to the prompt
(:mod:`loops.git.relevance`) instead of recency.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from loops import errors
from loops.git import commits, layout, relevance
from loops.git.repo import Repo, is_repo

Scope = Literal["run", "all"]


@dataclasses.dataclass(frozen=True, slots=True)
class GroundingOptions:
    """How much memory goes into a prompt, and how it is chosen.

    Attributes:
        retrieve: pick commits by relevance to the prompt (BM25 over messages and
            paths) instead of the most recent ones.
        max_chars: the bound on the whole grounding text.
        max_commits: at most this many commits are shown.
        scope: ``"run"`` looks at commits since the run began; ``"all"`` at the whole
            history (up to ``candidates`` commits), e.g. to retrieve earlier runs' work.
        candidates: how many commits retrieval considers at most.
        max_files: changed files listed per commit before ``(+N more)``.
    """

    retrieve: bool = False
    max_chars: int = 12_000
    max_commits: int = 20
    scope: Scope = "run"
    candidates: int = 1_000
    max_files: int = 20

    @classmethod
    def parse(
        cls, value: bool | Mapping[str, Any] | GroundingOptions | None
    ) -> GroundingOptions | None:
        """Read the ``ground=`` argument of a job: ``True``, a dict, options or off.

        Raises:
            InputError: an unknown key or a bad value, naming the allowed ones.
        """
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        if isinstance(value, GroundingOptions):
            return value
        if isinstance(value, Mapping):
            allowed = {f.name for f in dataclasses.fields(cls)}
            unknown = sorted(set(value) - allowed)
            if unknown:
                raise errors.InputError(
                    f"ground= has unknown key(s) {', '.join(unknown)}; "
                    f"allowed: {', '.join(sorted(allowed))}"
                )
            options = cls(**value)
            options.validate()
            return options
        raise errors.InputError(
            f"ground= must be True, False or a dict like {{'retrieve': True}}, not {value!r}"
        )

    def validate(self) -> None:
        """Raise :class:`~loops.errors.InputError` for an out-of-range setting."""
        if self.scope not in ("run", "all"):
            raise errors.InputError(f"ground scope must be 'run' or 'all', not {self.scope!r}")
        for name in ("max_chars", "max_commits", "candidates", "max_files"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise errors.InputError(f"ground {name} must be a positive integer")


@dataclasses.dataclass(frozen=True, slots=True)
class Grounding:
    """The grounding text and what went into it.

    Attributes:
        text: the text to put into the prompt (empty when there is nothing to say).
        commits: the commits shown, in the order shown.
        considered: how many commits were candidates.
        notes: the scratch notes as read (before trimming), or ``None``.
        record: the consolidated record as read, or ``None``.
        truncated: whether anything was cut to respect the size bound.
    """

    text: str
    commits: tuple[commits.Commit, ...]
    considered: int
    notes: str | None
    record: str | None
    truncated: bool


def commit_document(commit: commits.Commit) -> str:
    """The text BM25 scores for ``commit``: message, trailer values and file paths."""
    paths = " ".join(f.path for f in commit.files)
    trailers = " ".join(t.value for t in commit.trailers)
    return f"{commit.subject}\n{commit.body}\n{trailers}\n{paths}"


def select(
    candidates: Sequence[commits.Commit], *, query: str, options: GroundingOptions
) -> tuple[commits.Commit, ...]:
    """The commits to show: the most recent, or with ``retrieve`` the most relevant.

    Retrieval falls back to recency when no commit shares a word with the query.
    """
    if options.retrieve and query.strip():
        ranked = relevance.rank(query, [commit_document(c) for c in candidates])
        if ranked:
            return tuple(candidates[i] for i, _ in ranked[: options.max_commits])
    return tuple(candidates[: options.max_commits])


def render_commit(commit: commits.Commit, *, max_files: int) -> str:
    """One commit as grounding text: header, body, trailers, changed files."""
    when = datetime.datetime.fromtimestamp(commit.authored_at_s, datetime.UTC)
    lines = [f"### {commit.short_sha} {commit.subject} ({when:%Y-%m-%d %H:%M}Z)"]
    if commit.body:
        lines.append(commit.body)
    if commit.trailers:
        lines.append("Trailers:")
        lines += [f"  {t.key}: {t.value}" for t in commit.trailers]
    if commit.files:
        shown = ", ".join(f"{f.status} {f.path}" for f in commit.files[:max_files])
        more = len(commit.files) - max_files
        lines.append(f"Files: {shown}" + (f" (+{more} more)" if more > 0 else ""))
    return "\n".join(lines)


def _clip_tail(text: str, limit: int) -> tuple[str, bool]:
    """The last ``limit`` characters of ``text`` (recent notes matter most)."""
    if len(text) <= limit:
        return text, False
    return "[... earlier notes cut ...]\n" + text[-limit:], True


def _clip_head(text: str, limit: int) -> tuple[str, bool]:
    if len(text) <= limit:
        return text, False
    return text[:limit] + "\n[... cut ...]", True


def render(
    shown: Sequence[commits.Commit],
    *,
    considered: int,
    notes: str | None,
    notes_name: str,
    record: str | None,
    options: GroundingOptions,
) -> tuple[str, int, bool]:
    """Lay out the grounding text within ``options.max_chars``.

    The notes and the record each get at most a quarter of the bound; the commits get
    what is left, whole commits first, then a cut one.

    Returns:
        ``(text, number of commits included, whether anything was cut)``.
    """
    budget = options.max_chars
    truncated = False
    tail: list[str] = []
    if notes and notes.strip():
        clipped, cut = _clip_tail(notes.strip(), budget // 4)
        truncated |= cut
        tail.append(f"## Memory: this run's scratch notes ({notes_name})\n{clipped}")
    if record and record.strip():
        clipped, cut = _clip_head(record.strip(), budget // 4)
        truncated |= cut
        tail.append(f"## Memory: consolidated record of earlier work\n{clipped}")
    room = budget - sum(len(part) + 2 for part in tail)
    how = "most relevant to this task" if options.retrieve else "newest first"
    blocks: list[str] = []
    used = 0
    for commit in shown:
        block = render_commit(commit, max_files=options.max_files)
        if used + len(block) + 2 > room - 120:
            if room - used > 400:
                blocks.append(_clip_head(block, room - used - 200)[0])
            truncated = True
            break
        blocks.append(block)
        used += len(block) + 2
    included = len(blocks)
    parts: list[str] = []
    if considered:
        header = f"## Memory: commits since this run began ({included} of {considered}, {how})"
        if options.scope == "all":
            header = f"## Memory: commits ({included} of {considered} considered, {how})"
        parts.append("\n\n".join([header, *blocks]))
    parts += tail
    return "\n\n".join(parts), included, truncated or included < considered


async def start_point(repo: Repo) -> str | None:
    """The commit a run or task starts from (``None`` before the first commit).

    Record it when the run begins and pass it as ``since`` to :func:`ground`.
    """
    return await repo.head()


async def ground(
    repo: Repo,
    *,
    since: str | None,
    query: str = "",
    run_id: str | None = None,
    notes_file: Path | None = None,
    record_file: Path | None = None,
    options: GroundingOptions | None = None,
) -> Grounding:
    """Build the grounding text for the next prompt.

    Args:
        repo: the working tree the agent works in.
        since: the commit the run began at (from :func:`start_point`); ``None`` means
            the repository had no commits then, so all history is the run's.
        query: the next prompt, used by ``retrieve``.
        run_id: the run whose scratch notes to read (``.loops/scratch/<run_id>.md``).
        notes_file: the scratch notes file, when not the default for ``run_id``.
        record_file: the consolidated record; ``.loops/record.md`` by default.
        options: the bounds and the selection method.

    Returns:
        The grounding; its ``text`` is empty when there is no commit, note or record.
    """
    opts = options or GroundingOptions()
    opts.validate()
    bound_since = since if opts.scope == "run" else None
    limit = opts.candidates if opts.retrieve or opts.scope == "all" else opts.max_commits
    candidates = await repo.log(bound_since, limit=limit)
    capped = len(candidates) >= limit
    if capped and opts.scope == "run" and not opts.retrieve:
        considered = await _count_since(repo, since, fallback=len(candidates))
    else:
        considered = len(candidates)
    shown = select(candidates, query=query, options=opts)
    notes_at = notes_file or (layout.notes_path(repo.root, run_id) if run_id else None)
    notes = _read(notes_at)
    record = _read(record_file or layout.record_path(repo.root))
    notes_name = _relative(notes_at, repo.root) if notes_at else ""
    text, included, truncated = render(
        shown,
        considered=considered,
        notes=notes,
        notes_name=notes_name,
        record=record,
        options=opts,
    )
    return Grounding(
        text=text,
        commits=tuple(shown[:included]),
        considered=considered,
        notes=notes,
        record=record,
        truncated=truncated,
    )


async def ground_path(
    path: Path,
    *,
    since: str | None,
    query: str = "",
    notes_file: Path | None = None,
    options: GroundingOptions | None = None,
) -> Grounding | None:
    """:func:`ground` for a directory that may not be in a repository (``None`` then).

    For callers that hold a path, not a :class:`Repo`: e.g. a worker's prompt task
    grounding "the commits made since the task started" (``since`` from
    :func:`start_point` when the task began).
    """
    if not await is_repo(path):
        return None
    repo = await Repo.open(path)
    return await ground(repo, since=since, query=query, notes_file=notes_file, options=options)


async def _count_since(repo: Repo, since: str | None, *, fallback: int) -> int:
    span = f"{since}..HEAD" if since else "HEAD"
    result = await repo.run("rev-list", "--count", span, check=False)
    text = result.stdout.strip()
    return int(text) if result.returncode == 0 and text.isdigit() else fallback


def _read(path: Path | None) -> str | None:
    if path is None or not path.is_file():
        return None
    return path.read_text(encoding="utf-8", errors="replace")


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)
