"""``isolated(job)``: run a job in its own git worktree; its work lands only when it passes.

The mechanics (branches, worktrees, in-memory merges, the landing lock, prune) are in
:mod:`loops.git.worktrees`; this module maps them onto jobs and outcomes. A passing
job's work lands on the parent branch as one merge commit (``land="merge"``) or is
left on ``loops/review/<run>/<node>`` with a summary commit (``land="branch"``); a
conflict turns the pass into a ``fail`` naming the files; the worktree is always
removed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from loops import errors
from loops.flow.context import Context
from loops.flow.jobs import Child, Job, as_job, execute
from loops.flow.outcome import Outcome, OutcomeStatus
from loops.git import worktrees
from loops.git.repo import Repo
from loops.git.worktrees import LAND_MODES, LandMode, NodeWorktree


def check_land(land: object, *, where: str) -> LandMode:
    """``land`` as a :data:`LandMode`.

    Raises:
        ConstructionError: anything but ``"merge"`` or ``"branch"``.
    """
    if land not in LAND_MODES:
        raise errors.ConstructionError(f"{where}: land={land!r} must be 'merge' or 'branch'")
    return land


class Isolated(Job):
    """A job run in its own worktree (see the module docstring); build with :func:`isolated`."""

    kind: ClassVar[str] = "isolated"
    wraps_job: ClassVar[bool] = True

    def __init__(self, job: Job, *, land: LandMode) -> None:
        self.job = job
        self.name = job.name
        self.land = land

    def fields(self) -> dict[str, Any]:
        """How passing work comes back."""
        return {"land": self.land}

    def children(self) -> Sequence[Child]:
        """The isolated job."""
        return (Child(self.job.name, self.job, {"role": "isolated"}),)

    def shape(self) -> dict[str, Any]:
        """The isolated job's own shape, marked ``isolate: true`` with its ``land`` mode.

        Isolation is where a job runs, not another level of the tree: ``describe``
        shows the node as the loop, agent or dag it is.
        """
        return {**self.job.shape(), "isolate": True, "land": self.land}

    async def run(self, ctx: Context) -> Outcome:
        """Create the worktree, run the job there, land on pass, remove the worktree."""
        if ctx.run.checkpoints is not None:
            # a new worktree starts from the parent's commit: work an earlier attempt
            # did in its own worktree is gone, so that work runs again
            await ctx.run.checkpoints.forget([ctx.key])
        repo = await Repo.open(ctx.cwd)
        within = ctx.cwd.resolve().relative_to(repo.root)

        async def work(node: NodeWorktree) -> Outcome:
            return await execute(self.job, ctx.evolve(workdir=node.path / within))

        result = await worktrees.run_isolated(
            worktrees.Worktrees(repo, run_id=ctx.run_id),
            node_path=ctx.path_text,
            work=work,
            passed=lambda outcome: outcome.ok,
            land=self.land,
            summary=lambda outcome: outcome.summary,
        )
        outcome = result.value
        if result.conflict is not None:
            data = {
                **outcome.data,
                "conflict_files": list(result.conflict.files),
            }
            return Outcome(OutcomeStatus.FAIL, result.conflict.message, data, outcome.usage)
        landing = result.landing
        if landing is None:
            return outcome
        data = {**outcome.data, "landing": _landing_dict(landing)}
        if landing.mode == "branch":
            data["branches"] = [landing.branch]
            note = f"left for review on branch {landing.branch}"
        elif landing.changed:
            note = f"landed on {landing.branch} as {landing.commit[:10] if landing.commit else ''}"
        else:
            note = "no changes to land"
        return Outcome(outcome.status, f"{outcome.summary} ({note})", data, outcome.usage)


def _landing_dict(landing: worktrees.Landing) -> dict[str, Any]:
    return {"mode": landing.mode, "commit": landing.commit, "branch": landing.branch}


def isolated(job: Job | Any, *, land: LandMode = "merge") -> Job:
    """Run ``job`` in its own git worktree and branch, from the parent's current commit.

    Args:
        job: the job (a function is wrapped with ``fn_job``).
        land: ``"merge"`` (default): a passing job's work lands on the parent branch as
            one merge commit; ``"branch"``: it is left on ``loops/review/<run>/<node>``
            with a summary commit and nothing is merged.

    Raises:
        ConstructionError: a bad job or ``land``.
    """
    mode = check_land(land, where="isolated()")
    inner = as_job(job, slot="isolated() job")
    if isinstance(inner, Isolated):
        return Isolated(inner.job, land=mode)
    return Isolated(inner, land=mode)
