"""Git as memory inside a run: grounded prompts, milestone commits, consolidation.

The glue between the loop library and :mod:`loops.git`:

- ``agent_job(ground=...)``: :func:`grounded_prompt` appends the commits made since
  the run began (or the relevant ones, with ``retrieve``), this run's scratch notes
  and the consolidated record to the prompt, and tells the agent where its notes go.
- ``agent_job(commit=...)``: when the enclosing loop converges,
  :func:`commit_on_convergence` writes one milestone commit with the gate verdicts;
  outside any loop the job's own pass is its convergence.
- :func:`consolidate_job`: folds history beyond a bound into ``.loops/record.md``.

The commit a run began at is recorded per repository in the run's memo
(:func:`mark_start`, called by the runner), so "since the run began" holds for every
node, isolated or not (worktrees share the repository).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from loops.flow.context import Context, RunState
from loops.flow.outcome import Outcome, OutcomeStatus, Verdict
from loops.git import consolidate, grounding, layout, milestone
from loops.git.repo import Repo, is_repo
from loops.usage import Usage

#: the run memo key under which the start commit of each repository is kept
_START_KEY = object()

#: the heading of the grounding section in a prompt
GROUNDING_HEADING = "# Memory: what this run already did (from git)"


def _starts(state: RunState) -> dict[Path, str | None]:
    starts: dict[Path, str | None] = state.memo.setdefault(id(_START_KEY), {})
    return starts


def uses_memory(job: Any) -> bool:
    """Whether a job tree grounds prompts (so the run must note where it began)."""
    stack = [job]
    while stack:
        current = stack.pop()
        if getattr(current, "ground", None) is not None:
            return True
        stack.extend(child.job for child in current.children())
    return False


async def mark_start(state: RunState) -> None:
    """Note the commit the run begins at in its working directory's repository."""
    if not await is_repo(state.cwd):
        return
    repo = await Repo.open(state.cwd)
    _starts(state).setdefault(repo.common_dir, await repo.head())


async def run_start(ctx: Context, repo: Repo) -> str | None:
    """The commit the run began at in ``repo`` (noted now if the run did not yet)."""
    starts = _starts(ctx.run)
    if repo.common_dir not in starts:
        starts[repo.common_dir] = await repo.head()
    return starts[repo.common_dir]


async def notes_file(ctx: Context) -> Path:
    """This run's scratch notes file, in the run's (not a worktree's) repository.

    The scratch folder is added to the repository's local ``info/exclude``, so an
    agent's own ``git add -A`` does not commit the notes either.
    """
    root = ctx.run.cwd
    if await is_repo(root):
        repo = await Repo.open(root)
        layout.ignore_scratch(repo.common_dir)
        root = repo.root
    return layout.notes_path(root, ctx.run_id)


async def grounded_prompt(ctx: Context, options: grounding.GroundingOptions, prompt: str) -> str:
    """``prompt`` followed by the run's memory (see the module docstring).

    Raises:
        NotARepository: the job's working directory is not in a git repository.
    """
    repo = await Repo.open(ctx.cwd)
    notes = await notes_file(ctx)
    found = await grounding.ground(
        repo,
        since=await run_start(ctx, repo),
        query=prompt,
        notes_file=notes,
        options=options,
    )
    lines = [
        GROUNDING_HEADING,
        f"Write what you try and learn to your scratch notes file {notes} "
        "(kept across turns, never committed).",
    ]
    if found.text:
        lines.append(found.text)
    else:
        lines.append("No commits, notes or record yet: this is the first turn of the run.")
    return f"{prompt}\n\n" + "\n\n".join(lines)


def commit_specs(job: Any) -> Iterator[tuple[Any, milestone.CommitSpec]]:
    """The jobs in a loop body that asked for a milestone, not looking into inner loops."""
    stack = [job]
    while stack:
        current = stack.pop()
        spec = getattr(current, "commit", None)
        if isinstance(spec, milestone.CommitSpec):
            yield current, spec
        if current.kind != "loop":
            stack.extend(child.job for child in current.children())


def _leaves(verdict: Verdict) -> Iterator[Verdict]:
    if verdict.details:
        for detail in verdict.details:
            yield from _leaves(detail)
    else:
        yield verdict


def gate_verdicts(*verdicts: Verdict | None) -> tuple[milestone.GateVerdict, ...]:
    """Every deciding condition behind ``verdicts``, as milestone verdicts."""
    out: list[milestone.GateVerdict] = []
    for verdict in verdicts:
        if verdict is None:
            continue
        for leaf in _leaves(verdict):
            name = leaf.decided_by or leaf.kind or "gate"
            out.append(milestone.GateVerdict(name, leaf.met, leaf.reason, leaf.confidence))
    return tuple(out)


async def commit_on_convergence(
    ctx: Context,
    body: Any,
    *,
    summary: str,
    verdicts: tuple[milestone.GateVerdict, ...],
    usage: Usage,
) -> milestone.MilestoneResult | None:
    """Write the milestone a converged loop's body asked for (no-op when none did).

    Args:
        ctx: the loop's context at the converging iteration.
        body: the loop's body job (searched for ``commit=`` specs).
        summary: what the body reported.
        verdicts: the gate (and review) verdicts that let it converge.
        usage: what the loop spent.
    """
    specs = [spec for _, spec in commit_specs(body)]
    if not specs:
        return None
    subject = next((s.subject for s in specs if s.subject), None)
    return await _commit(ctx, subject, summary, verdicts, usage, iteration=ctx.iteration)


async def _commit(
    ctx: Context,
    subject: str | None,
    summary: str,
    verdicts: tuple[milestone.GateVerdict, ...],
    usage: Usage,
    *,
    iteration: int,
) -> milestone.MilestoneResult | None:
    repo = await Repo.open(ctx.cwd)
    record = milestone.Milestone(
        run_id=ctx.run_id,
        node_path=ctx.path_text,
        iteration=max(iteration, 1),
        subject=subject or milestone.default_subject(ctx.path_text),
        summary=summary,
        verdicts=verdicts,
        usage=usage,
    )
    return await milestone.commit_milestone(repo, record, passed=True)


async def commit_single(
    ctx: Context, spec: milestone.CommitSpec, outcome: Outcome
) -> milestone.MilestoneResult | None:
    """The milestone of an ``agent_job(commit=...)`` run outside any loop, when it passed."""
    if not outcome.ok:
        return None
    return await _commit(ctx, spec.subject, outcome.summary, (), outcome.usage, iteration=1)


async def run_consolidation(
    ctx: Context, *, keep_recent: int, max_chars: int, commit: bool
) -> Outcome:
    """Fold old history into the record (the body of :func:`consolidate_job`)."""
    repo = await Repo.open(ctx.cwd)
    result = await consolidate.consolidate(
        repo, keep_recent=keep_recent, max_chars=max_chars, commit=commit
    )
    data = {
        "folded": result.folded,
        "through": result.through,
        "record": str(result.path),
        "chars": result.chars,
        "commit": result.commit,
    }
    if not result.folded:
        return Outcome(OutcomeStatus.PASS, "nothing to consolidate: history within bound", data)
    where = f", committed {result.commit[:10]}" if result.commit else ""
    return Outcome(
        OutcomeStatus.PASS,
        f"folded {result.folded} commits into {layout.RECORD_PATH} ({result.chars} chars{where})",
        data,
    )
