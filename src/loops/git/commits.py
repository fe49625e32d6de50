"""Commits as values: the parsed form of ``git log`` output, with trailers and files.

Pure code, no I/O: :mod:`loops.git.repo` runs git with :data:`LOG_FORMAT` and hands the
output to :func:`parse_log`.
"""

from __future__ import annotations

import dataclasses

#: record separator before each commit, field separator inside its header
_RS = "\x1e"
_FS = "\x1f"

#: the ``--format`` that :func:`parse_log` reads (used with ``-z --name-status``)
LOG_FORMAT = (
    _RS + _FS.join(["%H", "%P", "%an", "%ae", "%at", "%s", "%b", "%(trailers:only,unfold)"]) + _FS
)


@dataclasses.dataclass(frozen=True, slots=True)
class Trailer:
    """One ``Key: value`` line from a commit message's trailer block."""

    key: str
    value: str


@dataclasses.dataclass(frozen=True, slots=True)
class ChangedFile:
    """One file a commit changed.

    Attributes:
        status: git's one-letter status (``A`` added, ``M`` modified, ``D`` deleted,
            ``R`` renamed, ``C`` copied, ``T`` type changed).
        path: the path after the change.
        old_path: the path before a rename or copy, else ``None``.
    """

    status: str
    path: str
    old_path: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Commit:
    """One commit: its message split into subject, body and trailers, and its files.

    Attributes:
        sha: the full commit id.
        parents: the parents' ids (empty for a root commit, two or more for a merge).
        author_name: the author's name.
        author_email: the author's email.
        authored_at_s: the author time, seconds since the epoch.
        subject: the first line of the message.
        body: the message after the subject, without the trailer block.
        trailers: the trailer block, in order (a key may repeat).
        files: the files changed relative to the first parent (empty for merges).
    """

    sha: str
    parents: tuple[str, ...]
    author_name: str
    author_email: str
    authored_at_s: int
    subject: str
    body: str
    trailers: tuple[Trailer, ...]
    files: tuple[ChangedFile, ...]

    @property
    def short_sha(self) -> str:
        """The first 10 characters of the id."""
        return self.sha[:10]

    def trailer(self, key: str) -> str | None:
        """The last value of trailer ``key`` (case-insensitive), or ``None``."""
        found = [t.value for t in self.trailers if t.key.lower() == key.lower()]
        return found[-1] if found else None

    def trailer_values(self, key: str) -> tuple[str, ...]:
        """Every value of trailer ``key`` (case-insensitive), in order."""
        return tuple(t.value for t in self.trailers if t.key.lower() == key.lower())


def parse_trailers(text: str) -> tuple[Trailer, ...]:
    """Parse the output of ``%(trailers:only,unfold)`` into trailers."""
    trailers: list[Trailer] = []
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip():
            trailers.append(Trailer(key=key.strip(), value=value.strip()))
    return tuple(trailers)


def strip_trailer_block(body: str, trailers: tuple[Trailer, ...]) -> str:
    """The body without its last paragraph when that paragraph is the trailer block."""
    text = body.rstrip()
    if not trailers:
        return text
    head, sep, last = text.rpartition("\n\n")
    paragraph = last if sep else text
    if parse_trailers(paragraph) == trailers:
        return head.rstrip() if sep else ""
    return text


def _parse_files(raw: str) -> tuple[ChangedFile, ...]:
    parts = raw.lstrip("\0\n").split("\0")
    files: list[ChangedFile] = []
    i = 0
    while i < len(parts):
        status = parts[i].strip("\n")
        if not status:
            i += 1
            continue
        letter = status[0]
        if letter in "RC" and i + 2 < len(parts):
            files.append(ChangedFile(status=letter, path=parts[i + 2], old_path=parts[i + 1]))
            i += 3
        elif i + 1 < len(parts):
            files.append(ChangedFile(status=letter, path=parts[i + 1]))
            i += 2
        else:
            break
    return tuple(files)


def _parse_record(record: str) -> Commit:
    # split at most 8 times: the file list after the header may hold any character
    fields = record.split(_FS, 8)
    if len(fields) < 9:
        raise ValueError(f"unexpected git log record: {record[:80]!r}")
    sha, parents, name, email, at, subject, body, trailers_text, rest = fields
    trailers = parse_trailers(trailers_text)
    return Commit(
        sha=sha,
        parents=tuple(parents.split()),
        author_name=name,
        author_email=email,
        authored_at_s=int(at or 0),
        subject=subject,
        body=strip_trailer_block(body, trailers),
        trailers=trailers,
        files=_parse_files(rest),
    )


def parse_log(output: str) -> tuple[Commit, ...]:
    """Parse ``git log -z --name-status --format=LOG_FORMAT`` output, newest first."""
    return tuple(_parse_record(r) for r in output.split(_RS) if r.strip("\0\n"))
