"""Consolidation: fold history beyond a bound into one record that keeps decisions.

An indefinite process makes more commits than any prompt can hold. :func:`consolidate`
keeps the newest ``keep_recent`` commits out (grounding shows those in full) and folds
every older commit not yet folded into ``.loops/record.md``: for each, its decision
(subject and summary) and its reasons (the gate verdicts of a milestone, or the first
paragraph of an ordinary commit's body). The record stays under ``max_chars`` by
condensing its oldest entries to one line, then dropping the oldest lines, counting
what was dropped. Grounding reads the record (:mod:`loops.git.grounding`).
"""

from __future__ import annotations

import dataclasses
import datetime
import re
from collections.abc import Sequence
from pathlib import Path

from loops import errors
from loops.git import commits, layout, milestone
from loops.git.repo import Repo

#: trailer on the commit that writes the record (such commits are not folded)
TRAILER_THROUGH = "Loops-Record-Through"

_HEADER = re.compile(
    r"<!-- loops-record v1 through=(?P<through>[0-9a-f]*) dropped=(?P<dropped>\d+) -->"
)
_TITLE = "# Record of decisions"
_INTRO = (
    "Decisions folded from older git history by `consolidate`, oldest first; "
    "recent commits are in the log itself."
)


@dataclasses.dataclass(frozen=True, slots=True)
class RecordEntry:
    """One folded commit: what was decided and why.

    Attributes:
        date: the author date, ``YYYY-MM-DD``.
        sha: the short commit id.
        subject: the commit subject.
        decision: the summary (first body paragraph), may be empty.
        reasons: gate verdicts with their reasons, or the commit's stated why.
    """

    date: str
    sha: str
    subject: str
    decision: str = ""
    reasons: tuple[str, ...] = ()

    def full(self) -> str:
        """The entry as a markdown block."""
        lines = [f"### {self.date} · {self.sha} · {self.subject}"]
        if self.decision:
            lines.append(f"Decision: {self.decision}")
        if self.reasons:
            lines.append("Why:")
            lines += [f"- {reason}" for reason in self.reasons]
        return "\n".join(lines)

    def condensed(self) -> str:
        """The entry as one line (decision and reasons shortened)."""
        line = f"- {self.date} · {self.sha} · {self.subject}"
        if self.decision:
            line += f": {_first_sentence(self.decision)}"
        if self.reasons:
            line += f" (why: {'; '.join(_shorten(r, 80) for r in self.reasons)})"
        return line


@dataclasses.dataclass(frozen=True, slots=True)
class Record:
    """The record file's content.

    Attributes:
        through: the newest commit folded so far (full id), or ``""``.
        dropped: how many oldest condensed entries were dropped to stay in bound.
        condensed: one-line entries, oldest first.
        entries: full entries, oldest first (newer than every condensed one).
    """

    through: str = ""
    dropped: int = 0
    condensed: tuple[str, ...] = ()
    entries: tuple[RecordEntry, ...] = ()

    def render(self) -> str:
        """The record as markdown, with a machine-readable header line."""
        parts = [
            _TITLE,
            f"<!-- loops-record v1 through={self.through} dropped={self.dropped} -->",
            _INTRO,
        ]
        if self.dropped:
            parts.append(f"({self.dropped} oldest entries dropped to keep this record bounded.)")
        if self.condensed:
            parts.append("## Earlier (condensed)\n" + "\n".join(self.condensed))
        if self.entries:
            parts.append("## Decisions\n\n" + "\n\n".join(e.full() for e in self.entries))
        return "\n\n".join(parts) + "\n"


@dataclasses.dataclass(frozen=True, slots=True)
class ConsolidationResult:
    """What :func:`consolidate` did.

    Attributes:
        path: the record file.
        folded: how many commits were folded in by this call.
        through: the newest folded commit, or ``""``.
        chars: the record's size.
        commit: the id of the commit that wrote the record, when one was made.
    """

    path: Path
    folded: int
    through: str
    chars: int
    commit: str | None


def _first_sentence(text: str) -> str:
    sentence = re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0]
    return _shorten(sentence, 160)


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def entry_for(commit: commits.Commit) -> RecordEntry:
    """The record entry of one commit: its decision and the reasons given for it."""
    date = datetime.datetime.fromtimestamp(commit.authored_at_s, datetime.UTC).strftime("%Y-%m-%d")
    paragraphs = [p.strip() for p in commit.body.split("\n\n") if p.strip()]
    gates = [p for p in paragraphs if p.startswith(milestone.GATES_HEADING)]
    prose = [p for p in paragraphs if not p.startswith(milestone.GATES_HEADING)]
    decision = " ".join(prose[0].split()) if prose else ""
    if gates:
        reasons = tuple(
            line[2:].strip() for line in gates[0].splitlines()[1:] if line.startswith("- ")
        )
    elif len(prose) > 1:
        reasons = (" ".join(prose[1].split()),)
    else:
        reasons = ()
    return RecordEntry(
        date=date, sha=commit.short_sha, subject=commit.subject, decision=decision, reasons=reasons
    )


def parse_record(text: str) -> Record:
    """Read a record file written by :meth:`Record.render`.

    Raises:
        InputError: the file has no loops-record header (it is not ours to rewrite).
    """
    match = _HEADER.search(text)
    if match is None:
        raise errors.InputError(
            "the record file has no `<!-- loops-record v1 ... -->` header; "
            "move it aside or pass another record path"
        )
    condensed: list[str] = []
    entries: list[RecordEntry] = []
    section = ""
    for block in re.split(r"\n(?=## |### )", text):
        if block.startswith("## "):
            section = block.splitlines()[0]
            if section.startswith("## Earlier"):
                condensed += [ln for ln in block.splitlines()[1:] if ln.startswith("- ")]
        elif block.startswith("### ") and section.startswith("## Decisions"):
            entries.append(_parse_entry(block))
    return Record(
        through=match["through"],
        dropped=int(match["dropped"]),
        condensed=tuple(condensed),
        entries=tuple(entries),
    )


def _parse_entry(block: str) -> RecordEntry:
    lines = block.strip().splitlines()
    date, sha, subject = ([*lines[0][4:].split(" · ", 2), "", ""])[:3]
    decision = ""
    reasons: list[str] = []
    for line in lines[1:]:
        if line.startswith("Decision: "):
            decision = line[len("Decision: ") :]
        elif line.startswith("- "):
            reasons.append(line[2:])
    return RecordEntry(
        date=date, sha=sha, subject=subject, decision=decision, reasons=tuple(reasons)
    )


def fold(record: Record, new: Sequence[RecordEntry], *, through: str, max_chars: int) -> Record:
    """Add ``new`` (oldest first) to ``record`` and bring it under ``max_chars``.

    Oldest full entries are condensed to one line first; then the oldest condensed
    lines are dropped, and counted.
    """
    entries = [*record.entries, *new]
    condensed = list(record.condensed)
    dropped = record.dropped
    current = Record(through, dropped, tuple(condensed), tuple(entries))
    while len(current.render()) > max_chars and (entries or condensed):
        if entries and (len(entries) > 1 or not condensed):
            condensed.append(entries.pop(0).condensed())
        else:
            condensed.pop(0)
            dropped += 1
        current = Record(through, dropped, tuple(condensed), tuple(entries))
    return current


async def consolidate(
    repo: Repo,
    *,
    keep_recent: int = 20,
    max_chars: int = 8_000,
    record_file: Path | None = None,
    commit: bool = True,
) -> ConsolidationResult:
    """Fold the commits older than the newest ``keep_recent`` into the record file.

    Args:
        repo: the working tree.
        keep_recent: how many of the newest (first-parent) commits stay unfolded.
        max_chars: the bound on the record file.
        record_file: the record; ``.loops/record.md`` in the working tree by default.
        commit: commit the record file (alone) when it changed.

    Returns:
        What was folded, and the commit made, if any.

    Raises:
        InputError: a bad bound, or a record file that is not a loops record.
        RepositoryStateError: ``commit`` is set and the repository cannot take a commit.
    """
    if keep_recent < 0 or max_chars < 400:
        raise errors.InputError("consolidate needs keep_recent >= 0 and max_chars >= 400")
    path = record_file or layout.record_path(repo.root)
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    record = parse_record(text) if text.strip() else Record()
    history = await repo.log(record.through or None, first_parent=True)
    older = [c for c in history[keep_recent:] if c.trailer(TRAILER_THROUGH) is None]
    if not older:
        return ConsolidationResult(path, 0, record.through, len(text), None)
    through = history[keep_recent].sha
    updated = fold(
        record, [entry_for(c) for c in reversed(older)], through=through, max_chars=max_chars
    )
    rendered = updated.render()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(rendered, encoding="utf-8")
    made = await _commit_record(repo, path, through, len(older)) if commit else None
    return ConsolidationResult(path, len(older), through, len(rendered), made)


async def _commit_record(repo: Repo, path: Path, through: str, folded: int) -> str | None:
    await repo.require_branch(operation="commit the consolidated record")
    await repo.run("add", "--force", "--", str(path))  # even if .loops/ is gitignored
    message = (
        f"loops: consolidate {folded} commits into {path.name}\n\n{TRAILER_THROUGH}: {through}\n"
    )
    # commit only the record, whatever else is staged
    await repo.run(
        "commit", "--cleanup=whitespace", "--file=-", "--only", "--", str(path), stdin=message
    )
    return await repo.head()
