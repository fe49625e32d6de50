"""Milestone commits: one structured commit when a loop converges.

The message welds the reasoning to the diff: a subject, the summary, each gate's
verdict and reason, and machine-readable trailers (run id, node path, iteration,
verdicts, tokens, cost). A retried run finds its own milestone by those trailers and
does not commit twice. Nothing is committed when the loop did not pass.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from loops import errors
from loops.git import commits, layout
from loops.git.repo import Repo
from loops.usage import Usage

TRAILER_RUN = "Loops-Run-Id"
TRAILER_NODE = "Loops-Node"
TRAILER_ITERATION = "Loops-Iteration"
TRAILER_VERDICT = "Loops-Verdict"
TRAILER_INPUT_TOKENS = "Loops-Input-Tokens"
TRAILER_OUTPUT_TOKENS = "Loops-Output-Tokens"
TRAILER_CACHED_TOKENS = "Loops-Cached-Input-Tokens"
TRAILER_COST = "Loops-Cost-USD"

#: the heading of the body paragraph that lists the gate verdicts
GATES_HEADING = "Gates:"


@dataclasses.dataclass(frozen=True, slots=True)
class GateVerdict:
    """One gate's verdict, as recorded in a milestone.

    Attributes:
        gate: the gate's name (e.g. ``tests`` or ``review``).
        met: whether the gate held.
        reason: why, in the gate's words.
        confidence: the gate's confidence in 0..1, when it has one.
    """

    gate: str
    met: bool
    reason: str = ""
    confidence: float | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Milestone:
    """What a milestone commit records.

    Attributes:
        run_id: the run that converged.
        node_path: the node's path in the loop tree (e.g. ``ship/parser``).
        iteration: the iteration that converged (1-based).
        subject: the commit's subject line.
        summary: the body's first part: what was done and why.
        verdicts: every gate's verdict on the converging iteration.
        usage: tokens and cost spent by the node.
    """

    run_id: str
    node_path: str
    iteration: int
    subject: str
    summary: str = ""
    verdicts: tuple[GateVerdict, ...] = ()
    usage: Usage = dataclasses.field(default_factory=Usage)


@dataclasses.dataclass(frozen=True, slots=True)
class MilestoneResult:
    """The milestone commit made, or found already made by an earlier attempt.

    Attributes:
        sha: the commit's id.
        created: ``False`` when a commit with the same run, node and iteration existed.
        message: the commit message.
    """

    sha: str
    created: bool
    message: str


@dataclasses.dataclass(frozen=True, slots=True)
class CommitSpec:
    """The ``commit=`` argument of a job, parsed: ``True`` or ``{"subject": ...}``."""

    subject: str | None = None

    @classmethod
    def parse(cls, value: bool | str | Mapping[str, Any] | CommitSpec | None) -> CommitSpec | None:
        """Read ``commit=``: ``True``, a subject string, ``{"subject": ...}`` or off.

        Raises:
            InputError: anything else, or an unknown key.
        """
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        if isinstance(value, CommitSpec):
            return value
        if isinstance(value, str):
            return cls(subject=_one_line(value) or None)
        if isinstance(value, Mapping):
            unknown = sorted(set(value) - {"subject"})
            if unknown:
                raise errors.InputError(
                    f"commit= has unknown key(s) {', '.join(unknown)}; allowed: subject"
                )
            subject = value.get("subject")
            if subject is not None and not isinstance(subject, str):
                raise errors.InputError("commit= subject must be a string")
            return cls(subject=_one_line(subject or "") or None)
        raise errors.InputError(
            f"commit= must be True, False or a dict like {{'subject': 'feat: x'}}, not {value!r}"
        )


def default_subject(node_path: str) -> str:
    """The subject used when ``commit=True`` gives none."""
    return f"loops: {node_path} converged"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def verdict_trailer(verdict: GateVerdict) -> str:
    """The trailer value for one verdict: ``<gate>=met|unmet[ confidence=0.92]``."""
    value = f"{_one_line(verdict.gate)}={'met' if verdict.met else 'unmet'}"
    if verdict.confidence is not None:
        value += f" confidence={verdict.confidence:.2f}"
    return value


def parse_verdict_trailer(value: str) -> GateVerdict:
    """Read back a ``Loops-Verdict`` trailer (the reason lives in the body)."""
    head, _, conf = value.partition(" confidence=")
    gate, _, met = head.rpartition("=")
    confidence = float(conf) if conf else None
    return GateVerdict(gate=gate, met=met == "met", confidence=confidence)


def trailers(milestone: Milestone) -> list[tuple[str, str]]:
    """The machine-readable trailers of ``milestone``, in order."""
    out = [
        (TRAILER_RUN, _one_line(milestone.run_id)),
        (TRAILER_NODE, _one_line(milestone.node_path)),
        (TRAILER_ITERATION, str(milestone.iteration)),
    ]
    out += [(TRAILER_VERDICT, verdict_trailer(v)) for v in milestone.verdicts]
    usage = milestone.usage
    out += [
        (TRAILER_INPUT_TOKENS, str(usage.input_tokens)),
        (TRAILER_OUTPUT_TOKENS, str(usage.output_tokens)),
        (TRAILER_CACHED_TOKENS, str(usage.cached_input_tokens)),
    ]
    if usage.cost_usd is not None:
        out.append((TRAILER_COST, f"{usage.cost_usd:.6f}"))
    return out


def format_message(milestone: Milestone) -> str:
    """The full commit message: subject, summary, gate verdicts, trailer block."""
    subject = _one_line(milestone.subject) or default_subject(milestone.node_path)
    paragraphs = [subject]
    if milestone.summary.strip():
        paragraphs.append(milestone.summary.strip())
    if milestone.verdicts:
        lines = [GATES_HEADING]
        for v in milestone.verdicts:
            conf = f" (confidence {v.confidence:.2f})" if v.confidence is not None else ""
            reason = f": {_one_line(v.reason)}" if v.reason.strip() else ""
            lines.append(f"- {_one_line(v.gate)}: {'met' if v.met else 'not met'}{conf}{reason}")
        paragraphs.append("\n".join(lines))
    paragraphs.append("\n".join(f"{k}: {v}" for k, v in trailers(milestone)))
    return "\n\n".join(paragraphs) + "\n"


def milestone_key(commit: commits.Commit) -> tuple[str, str, int] | None:
    """``(run id, node path, iteration)`` of a milestone commit, ``None`` for others."""
    run = commit.trailer(TRAILER_RUN)
    node = commit.trailer(TRAILER_NODE)
    iteration = commit.trailer(TRAILER_ITERATION)
    if run is None or node is None or iteration is None or not iteration.isdigit():
        return None
    return run, node, int(iteration)


async def find_milestone(
    repo: Repo, *, run_id: str, node_path: str, iteration: int
) -> commits.Commit | None:
    """The milestone already committed for this run, node and iteration, if any."""
    if await repo.head() is None:
        return None
    wanted = (_one_line(run_id), _one_line(node_path), iteration)
    for commit in await repo.log(grep=f"{TRAILER_RUN}: {wanted[0]}"):
        if milestone_key(commit) == wanted:
            return commit
    return None


async def commit_milestone(
    repo: Repo,
    milestone: Milestone,
    *,
    passed: bool,
    exclude: Sequence[str] = (),
) -> MilestoneResult | None:
    """Commit the working tree as the milestone of a converged loop.

    Stages every change (untracked files included, scratch notes excluded) and commits
    it with :func:`format_message`, even when nothing changed: the verdicts are worth
    keeping. Works on a branch with no commits yet.

    Args:
        repo: the working tree the loop worked in.
        milestone: what to record.
        passed: whether the loop converged; nothing is committed when ``False``.
        exclude: pathspecs never staged, besides the scratch notes (which are kept out
            by the repository's local ``info/exclude``, see
            :func:`loops.git.layout.ignore_scratch`).

    Returns:
        The commit made or found, or ``None`` when the loop did not pass.

    Raises:
        RepositoryStateError: mid-rebase/merge or on a detached HEAD.
        GitIdentityMissing: git has no user name/email to commit with.
    """
    if not passed:
        return None
    await repo.require_branch(operation="commit a milestone")
    existing = await find_milestone(
        repo, run_id=milestone.run_id, node_path=milestone.node_path, iteration=milestone.iteration
    )
    message = format_message(milestone)
    if existing is not None:
        return MilestoneResult(sha=existing.sha, created=False, message=message)
    layout.ignore_scratch(repo.common_dir)
    await repo.run("add", "--all", "--", ".", *(f":(exclude){p}" for p in exclude))
    # whitespace cleanup only: the default would drop summary lines starting with '#'
    await repo.run("commit", "--allow-empty", "--cleanup=whitespace", "--file=-", stdin=message)
    made = await repo.run("rev-parse", "HEAD")
    return MilestoneResult(sha=made.stdout.strip(), created=True, message=message)
