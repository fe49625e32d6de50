"""Review feedback: panels of reviewers, revision requests and kickbacks.

A :func:`review_panel` is a condition whose members are reviewers; when it fails, its
verdict carries a :class:`~loops.flow.outcome.RevisionRequest` with one finding per
failing reviewer, named after that reviewer. In a loop's ``review=`` slot the request
flows into the next iteration as ``ctx.last_review``. A job can also ask a dag to
re-run an earlier node: return :func:`kickback` (or :func:`revision_request`) from
it, or give ``gate_job(..., kickback_to=...)``; the dag routes it when its
``max_kickbacks`` allows.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from loops import errors
from loops.flow.conditions import Condition, as_condition
from loops.flow.context import Context
from loops.flow.outcome import SEVERITIES, Finding, Outcome, OutcomeStatus, RevisionRequest, Verdict


@dataclasses.dataclass(frozen=True, slots=True)
class Reviewer:
    """One member of a panel: a name, the condition it applies, its findings' severity."""

    name: str
    review: Condition
    severity: str = "should-fix"


def _reviewer(item: Condition | Mapping[str, Any], index: int) -> Reviewer:
    if isinstance(item, Condition):
        return Reviewer(item.name, item)
    if not isinstance(item, Mapping):
        raise errors.ConstructionError(
            f"review_panel reviewer {index + 1} must be a condition or "
            f"{{'name': ..., 'review': condition}}, got {item!r}"
        )
    unknown = set(item) - {"name", "review", "severity"}
    if unknown:
        raise errors.ConstructionError(
            f"review_panel reviewer {index + 1}: unknown key {sorted(unknown)[0]!r} "
            "(allowed: name, review, severity)"
        )
    review = as_condition(item.get("review"), slot=f"review_panel reviewer {index + 1} review")
    if review is None:
        raise errors.ConstructionError(f"review_panel reviewer {index + 1} has no 'review'")
    name = item.get("name") or review.name
    severity = item.get("severity", "should-fix")
    if severity not in SEVERITIES:
        raise errors.ConstructionError(
            f"reviewer {name!r}: severity {severity!r} is unknown; "
            f"use one of: {', '.join(SEVERITIES)}"
        )
    return Reviewer(str(name), review, severity)


class ReviewPanel(Condition):
    """Every reviewer is a gate; the panel passes when ``k`` of them (default all) pass.

    All reviewers are asked (concurrently), so a failing panel reports every concern.
    """

    kind: ClassVar[str] = "review_panel"

    def __init__(self, reviewers: Sequence[Reviewer], k: int, name: str | None = None) -> None:
        self.reviewers = list(reviewers)
        self.k = k
        self.name = name or f"review_panel({', '.join(r.name for r in self.reviewers)})"

    def members(self) -> Sequence[Condition]:
        """The reviewers' conditions."""
        return [r.review for r in self.reviewers]

    def fields(self) -> dict[str, Any]:
        """The pass mark and the reviewers."""
        return {
            "pass": self.k,
            "reviewers": [{"name": r.name, "severity": r.severity} for r in self.reviewers],
        }

    async def check(self, ctx: Context, last: Outcome | None) -> Verdict:
        """Ask every reviewer; findings are the failing reviewers' concerns."""
        tasks = [asyncio.ensure_future(r.review(ctx, last)) for r in self.reviewers]
        try:
            raw = await asyncio.gather(*tasks)
        except BaseException:  # a config error or a cancel: stop the other reviewers too
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        verdicts = [
            dataclasses.replace(v, decided_by=r.name)
            for r, v in zip(self.reviewers, raw, strict=True)
        ]
        passed = sum(1 for v in verdicts if v.met)
        failing = [(r, v) for r, v in zip(self.reviewers, verdicts, strict=True) if not v.met]
        met = passed >= self.k
        summary = f"{passed} of {len(verdicts)} reviewers passed (need {self.k})"
        if failing:
            summary += ": " + "; ".join(f"{r.name}: {v.reason}" for r, v in failing)
        revision = None
        if not met:
            findings = tuple(Finding(r.name, v.reason, r.severity) for r, v in failing)
            revision = RevisionRequest(None, findings, f"{len(failing)} reviewers raised concerns")
        confidences = [v.confidence for v in verdicts if v.confidence is not None]
        confidence = min(confidences) if confidences else None
        return Verdict(met, summary, confidence, details=tuple(verdicts), revision=revision)


def review_panel(
    reviewers: Sequence[Condition | Mapping[str, Any]],
    *,
    pass_: int | None = None,
    name: str | None = None,
) -> Condition:
    """A panel of reviewers, each a gate: all must pass, or ``pass_`` of them.

    Args:
        reviewers: conditions, or ``{"name": ..., "review": condition, "severity": ...}``.
        pass_: how many must pass (k-of-n); ``None`` means all.
        name: the name shown in verdicts.

    Raises:
        ConstructionError: no reviewers, duplicate names, ``pass_`` outside 1..n.
    """
    if isinstance(reviewers, Mapping | Condition) or not reviewers:
        raise errors.ConstructionError(
            "review_panel() needs a list of at least one reviewer; an empty panel reviews nothing"
        )
    members = [_reviewer(item, i) for i, item in enumerate(reviewers)]
    names = [m.name for m in members]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise errors.ConstructionError(f"review_panel has two reviewers named {duplicates[0]!r}")
    k = len(members) if pass_ is None else pass_
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(members):
        raise errors.ConstructionError(
            f"review_panel pass_={pass_!r} must be a whole number from 1 to {len(members)}"
        )
    return ReviewPanel(members, k, name)


def _findings(items: Sequence[str | Finding], source: str) -> tuple[Finding, ...]:
    out = []
    for item in items:
        if isinstance(item, Finding):
            out.append(item)
        elif isinstance(item, str) and item.strip():
            out.append(Finding(source, item))
        else:
            raise errors.ConstructionError(f"a finding must be text or a Finding, got {item!r}")
    return tuple(out)


def revision_request(
    target: str | None = None,
    findings: Sequence[str | Finding] = (),
    *,
    reason: str | None = None,
) -> Outcome:
    """An outcome asking for ``target`` (a dag node) to be redone, with the findings why.

    Return it from a job (e.g. an ``fn_job``). In a dag whose ``max_kickbacks`` allows
    it, ``target`` and everything depending on it run again with the findings as their
    ``ctx.last_review``; otherwise the job simply fails with this reason.

    Raises:
        ConstructionError: no findings and no reason.
    """
    items = _findings(findings, "")
    text = reason or "; ".join(f.text for f in items)
    if not text:
        raise errors.ConstructionError("revision_request() needs findings or a reason")
    where = f" of {target}" if target else ""
    return Outcome(
        OutcomeStatus.FAIL,
        f"revision{where} requested: {text}",
        revision=RevisionRequest(target, items or (Finding("", text),), text),
    )


def kickback(to: str, reason: str) -> Outcome:
    """Send the work back to dag node ``to`` with ``reason`` (see :func:`revision_request`)."""
    if not isinstance(to, str) or not to:
        raise errors.ConstructionError(f"kickback() needs the target node's name, got {to!r}")
    return revision_request(to, [reason], reason=reason)
