"""Answers to the human gates of a task's run: their shape and where they are kept."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from loops.queue.tasks import iso

#: the state key of a task's answers, ``{gate path: answer}`` (read by the run's gates)
APPROVALS_KEY = "run.approvals"


@dataclasses.dataclass(frozen=True, slots=True)
class Answer:
    """Someone's answer to the human gate at ``path``.

    Attributes:
        path: the gate's path in the run (``ship/approve``).
        approved: approved (``True``) or rejected.
        by: who answered.
        reason: why, if given.
    """

    path: str
    approved: bool
    by: str
    reason: str | None = None

    def record(self, *, at: datetime) -> dict[str, Any]:
        """The answer as the run's gates read it: ``{"approved", "by", "reason", "at"}``."""
        return {"approved": self.approved, "by": self.by, "reason": self.reason, "at": iso(at)}


#: the run event a human gate emits when it asks (``loops.flow.events``)
REQUESTED_EVENT = "approval.requested"


@dataclasses.dataclass(frozen=True, slots=True)
class Gate:
    """A human gate a task's run asked, and its answer if it has one.

    Attributes:
        path: the gate's path in the run.
        question: what it asks.
        answer: the recorded answer (``{"approved", "by", "reason", "at"}``), or ``None``.
    """

    path: str
    question: str
    answer: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """``{"path", "question", "answer"}`` as the REST API answers."""
        return {"path": self.path, "question": self.question, "answer": self.answer}


def gates(events: list[tuple[str, dict[str, Any]]], answers: Any) -> list[Gate]:
    """The gates a run asked (from its ``(type, data)`` events, first ask first), each
    with its answer from ``answers`` (the task's ``run.approvals`` state)."""
    known = answers if isinstance(answers, dict) else {}
    found: dict[str, Gate] = {}
    for kind, data in events:
        path = data.get("path")
        if kind != REQUESTED_EVENT or not isinstance(path, str) or path in found:
            continue
        answer = known.get(path)
        found[path] = Gate(
            path=path,
            question=str(data.get("question") or ""),
            answer=answer if isinstance(answer, dict) else None,
        )
    return list(found.values())
