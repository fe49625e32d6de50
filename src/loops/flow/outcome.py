"""What a job reports (:class:`Outcome`) and what a condition decides (:class:`Verdict`)."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from typing import Any

from loops import errors
from loops.usage import Usage


class OutcomeStatus(enum.StrEnum):
    """How a job ended."""

    PASS = "pass"
    """The job did what it was for (a loop's gate was met, every required node passed)."""
    FAIL = "fail"
    """The job ran and did not succeed (gate never met, ``max`` reached, stop condition)."""
    PAUSED = "paused"
    """The job stopped early to be resumed, e.g. a budget was exhausted."""
    ERROR = "error"
    """The job could not run properly: an exception, an engine failure."""
    SKIPPED = "skipped"
    """The job did not run: an unmet ``when``/``start``, or a failed required dependency."""


def status_of(value: OutcomeStatus | str) -> OutcomeStatus:
    """Parse a status given as an enum member or its string value.

    Raises:
        ConstructionError: the string is not a status; the message lists the valid ones.
    """
    if isinstance(value, OutcomeStatus):
        return value
    try:
        return OutcomeStatus(value)
    except ValueError:
        valid = ", ".join(s.value for s in OutcomeStatus)
        raise errors.ConstructionError(
            f"unknown outcome status {value!r}; use one of: {valid}"
        ) from None


#: finding severities, most serious first
SEVERITIES = ("block", "should-fix", "nit")


@dataclasses.dataclass(frozen=True, slots=True)
class Finding:
    """One concern raised by a reviewer or a gate.

    Attributes:
        source: who raised it (a reviewer's or condition's name).
        text: what is wrong and what to do.
        severity: ``block``, ``should-fix`` (default) or ``nit``.
    """

    source: str
    text: str
    severity: str = "should-fix"

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise errors.ConstructionError(
                f"severity {self.severity!r} is unknown; use one of: {', '.join(SEVERITIES)}"
            )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form used in events."""
        return {"source": self.source, "text": self.text, "severity": self.severity}


@dataclasses.dataclass(frozen=True, slots=True)
class RevisionRequest:
    """A request that some earlier work be done again, with the findings why.

    Attributes:
        target: the dag node to re-run (with its dependents), or ``None`` for "the
            enclosing loop's next turn".
        findings: what has to change, one finding per concern.
        reason: a one-line summary.
    """

    target: str | None = None
    findings: tuple[Finding, ...] = ()
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The JSON form used in events."""
        return {
            "target": self.target,
            "findings": [f.to_dict() for f in self.findings],
            "reason": self.reason,
        }


@dataclasses.dataclass(frozen=True, slots=True, init=False)
class Outcome:
    """The result of running a job.

    Args:
        status: the status, as an :class:`OutcomeStatus` or its string value.
        summary: one human line saying what happened and why.
        data: job-specific results (an agent's final text, a dag's node outcomes).
        usage: tokens and money spent by this job and everything it ran.
        revision: a request that earlier work be redone, if any.
    """

    status: OutcomeStatus
    summary: str
    data: Mapping[str, Any]
    usage: Usage
    revision: RevisionRequest | None

    def __init__(
        self,
        status: OutcomeStatus | str,
        summary: str = "",
        data: Mapping[str, Any] | None = None,
        usage: Usage | None = None,
        revision: RevisionRequest | None = None,
    ) -> None:
        object.__setattr__(self, "status", status_of(status))
        object.__setattr__(self, "summary", summary)
        object.__setattr__(self, "data", dict(data or {}))
        object.__setattr__(self, "usage", usage or Usage())
        object.__setattr__(self, "revision", revision)

    @property
    def ok(self) -> bool:
        """True when the status is ``pass``."""
        return self.status is OutcomeStatus.PASS

    def with_usage(self, usage: Usage) -> Outcome:
        """A copy with ``usage`` in place of this outcome's usage."""
        return Outcome(self.status, self.summary, self.data, usage, self.revision)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form used in events (``data`` is left out: it may not be JSON)."""
        body: dict[str, Any] = {
            "status": self.status.value,
            "summary": self.summary,
            "usage": self.usage.to_dict(),
        }
        if self.revision is not None:
            body["revision"] = self.revision.to_dict()
        return body


@dataclasses.dataclass(frozen=True, slots=True)
class Verdict:
    """What a condition decided, who decided it and why.

    Attributes:
        met: whether the condition holds.
        reason: why, in one line a human can act on.
        confidence: 0..1 where the decider gives one (judges), else ``None``.
        decided_by: the deciding condition's name, e.g. ``command_succeeds(pytest -q)``.
        kind: the deciding condition's kind, e.g. ``command_succeeds``, ``agent_check``.
        dimensions: a judge's score per dimension.
        details: the member verdicts of a combined condition (``all_of``, ``quorum``).
        usage: tokens and money the decision cost (a judge's turn).
        evidence: what the decision saw, bounded (e.g. the tail of a test run's output).
        revision: the revision a failing review asks for (a review panel's findings).
    """

    met: bool
    reason: str
    confidence: float | None = None
    decided_by: str = ""
    kind: str = ""
    dimensions: Mapping[str, float] = dataclasses.field(default_factory=dict)
    details: tuple[Verdict, ...] = ()
    usage: Usage = dataclasses.field(default_factory=Usage)
    evidence: str = ""
    revision: RevisionRequest | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form used in events; member verdicts nest under ``details``."""
        body: dict[str, Any] = {
            "met": self.met,
            "reason": self.reason,
            "confidence": self.confidence,
            "decided_by": self.decided_by,
            "kind": self.kind,
        }
        if self.dimensions:
            body["dimensions"] = dict(self.dimensions)
        if self.details:
            body["details"] = [d.to_dict() for d in self.details]
        if self.revision is not None:
            body["revision"] = self.revision.to_dict()
        return body

    def explain(self) -> str:
        """``decided_by: reason``; a combination's reason alone (it names its members)."""
        if self.kind in ("all_of", "any_of") or not self.decided_by:
            return self.reason
        return f"{self.decided_by}: {self.reason}"

    def total_usage(self) -> Usage:
        """This verdict's usage plus its members', recursively."""
        total = self.usage
        for detail in self.details:
            total = total + detail.total_usage()
        return total
