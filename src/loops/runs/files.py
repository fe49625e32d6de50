"""File primitives of the run registry: whole-file replace and whole-line append.

Writers and readers share a directory and no lock. Two rules keep every reader
consistent:

- a JSON document (``state.json``, ``run.json``) is written to a temporary file in the
  same directory and renamed over the old one, so a reader sees the old or the new
  document, never a mix;
- a JSONL stream is appended one complete line per ``write`` on a descriptor opened
  with ``O_APPEND``, and readers consume only newline-terminated lines (see
  :class:`LineReader`), so a line still being written is never seen half.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from loops import errors


def write_json_atomic(path: Path, document: Any) -> None:
    """Replace ``path`` with ``document`` as JSON, atomically.

    Raises:
        StoreError: the directory cannot be written.
    """
    data = json.dumps(document, ensure_ascii=False, separators=(",", ":"), default=str)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise errors.StoreError(f"cannot write {path}: {exc.strerror or exc}") from exc


def read_json(path: str | os.PathLike[str]) -> Any:
    """The JSON document at ``path``, or ``None`` when it is missing or unreadable.

    A plain ``open`` rather than ``Path.read_bytes``: ``loop list`` reads one small
    file per registered run, and pathlib's per-call overhead is most of that cost.
    """
    try:
        with open(path, "rb") as stream:
            return json.loads(stream.read())
    except (OSError, ValueError):
        return None


class LineAppender:
    """Appends whole lines to one file, each with a single ``write`` (``O_APPEND``).

    Args:
        path: the file, created when missing.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._fd: int | None = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            raise errors.StoreError(f"cannot open {path}: {exc.strerror or exc}") from exc

    def append(self, line: str) -> None:
        """Append ``line`` (which ends with a newline) in one write."""
        if self._fd is None:
            return
        data = line.encode("utf-8")
        written = os.write(self._fd, data)
        while written < len(data):  # a short write (full disk, signal): finish the line
            written += os.write(self._fd, data[written:])

    def close(self) -> None:
        """Close the file; later appends are ignored."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class LineReader:
    """Reads complete lines from a growing file, from where it left off.

    A trailing line without its newline is held back until the writer finishes it.

    Args:
        path: the file (it may not exist yet).
        offset: the byte offset to start at.
    """

    def __init__(self, path: Path, offset: int = 0) -> None:
        self.path = path
        self.offset = offset

    def read_lines(self) -> list[str]:
        """The complete lines appended since the last call (decoded, without newlines)."""
        try:
            with self.path.open("rb") as handle:
                handle.seek(self.offset)
                chunk = handle.read()
        except FileNotFoundError:
            return []
        end = chunk.rfind(b"\n")
        if end < 0:
            return []
        self.offset += end + 1
        return chunk[:end].decode("utf-8", errors="replace").split("\n")


def read_complete_lines(path: Path) -> list[str]:
    """Every complete line of ``path`` (none when it is missing)."""
    return LineReader(path).read_lines()
