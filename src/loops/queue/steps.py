"""STEP markers: checkpoints an agent prints, parsed into task steps.

A marker is one line (or the end of one)::

    STEP[fetch_emails]: DONE idempotency=inbox-sync-2026-02-27 note=Fetched 12 emails

The name is any text without ``]``; the status is ``DONE`` or ``FAILED`` (any case);
``idempotency=KEY`` is optional and defaults to the name; ``note=`` runs to the end of
the line. Anything else is not a marker and is ignored, never an error.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from datetime import datetime
from typing import Any

from loops.queue.tasks import iso

#: longest accepted name, key and note (longer markers are ignored or truncated)
MAX_NAME_CHARS = 200
MAX_KEY_CHARS = 200
MAX_NOTE_CHARS = 2000

_MARKER = re.compile(
    r"STEP\[(?P<name>[^\]\r\n]+)\]:[ \t]*(?P<status>DONE|FAILED)\b"
    r"(?:[ \t]+idempotency=(?P<key>[^\s]+))?"
    r"(?:[ \t]+note=(?P<note>[^\r\n]*))?"
    r"[ \t]*\r?$",
    re.IGNORECASE | re.MULTILINE,
)


class StepStatus(enum.StrEnum):
    """Outcome of a step; values are the stored and API strings."""

    DONE = "DONE"
    """The step finished; a retry must not redo it."""
    FAILED = "FAILED"
    """The step failed; a retry may try it again."""


@dataclasses.dataclass(frozen=True, slots=True)
class StepMarker:
    """One parsed STEP marker."""

    name: str
    status: StepStatus
    idempotency_key: str
    note: str


@dataclasses.dataclass(frozen=True, slots=True)
class Step:
    """One recorded step of a task (unique per task and idempotency key)."""

    task_id: int
    name: str
    status: StepStatus
    idempotency_key: str
    note: str
    created_at: datetime
    updated_at: datetime

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of the REST API (DESIGN section 13)."""
        return {
            "task_id": self.task_id,
            "name": self.name,
            "status": self.status.value,
            "idempotency_key": self.idempotency_key,
            "note": self.note,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
        }


def parse_markers(text: str) -> list[StepMarker]:
    """Every well-formed STEP marker in ``text``, in order; later ones win per key.

    Args:
        text: agent output, any size, any line endings.

    Returns:
        The markers, one per idempotency key (the last one for a repeated key), in
        order of their last occurrence. Malformed markers are skipped.
    """
    found: dict[str, StepMarker] = {}
    for match in _MARKER.finditer(text):
        name = match["name"].strip()
        if not name or len(name) > MAX_NAME_CHARS:
            continue
        key = match["key"] or name
        if len(key) > MAX_KEY_CHARS:
            continue
        note = (match["note"] or "").strip()[:MAX_NOTE_CHARS]
        found.pop(key, None)
        found[key] = StepMarker(
            name=name, status=StepStatus(match["status"].upper()), idempotency_key=key, note=note
        )
    return list(found.values())
