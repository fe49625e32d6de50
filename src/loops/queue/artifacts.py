"""Artifacts: files a task produced (transcripts, diffs, logs), stored by content hash."""

from __future__ import annotations

import dataclasses
import enum
from datetime import datetime
from typing import Any

from loops.queue.tasks import iso


class ArtifactKind(enum.StrEnum):
    """What an artifact holds; values are the stored and API strings."""

    TRANSCRIPT = "transcript"
    """The agent's full event transcript."""
    FINAL_MESSAGE = "final_message"
    """The agent's final answer."""
    DIFF = "diff"
    """A diff of the changes made."""
    LOG = "log"
    """A log (e.g. a check command's output)."""
    FILE = "file"
    """Any other file."""


@dataclasses.dataclass(frozen=True, slots=True)
class Artifact:
    """One stored artifact.

    Attributes:
        id: increasing integer id.
        task_id: the task that produced it.
        name: a label given by the producer (never used as a path).
        kind: what it holds.
        size: bytes.
        sha256: hex digest of the content; the content's storage key.
        path: where the content lives (under the data dir), chosen by the store.
        created_at: when it was stored.
    """

    id: int
    task_id: int
    name: str
    kind: ArtifactKind
    size: int
    sha256: str
    path: str
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of the REST API."""
        return {
            "id": self.id,
            "task_id": self.task_id,
            "name": self.name,
            "kind": self.kind.value,
            "size": self.size,
            "sha256": self.sha256,
            "path": self.path,
            "created_at": iso(self.created_at),
        }
