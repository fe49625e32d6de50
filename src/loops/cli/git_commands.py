"""``loop worktrees:*``: inspect and clean the worktrees of isolated nodes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import click

from loops.git import worktrees
from loops.git.repo import Repo


async def _prune(cwd: Path, *, dry_run: bool) -> worktrees.PruneReport:
    repo = await Repo.open(cwd)
    return await worktrees.prune(repo, dry_run=dry_run)


@click.command("worktrees:prune")
@click.option(
    "--cwd",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Any directory inside the repository.",
)
@click.option("--dry-run", is_flag=True, help="Show what would be removed; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
def prune_command(cwd: Path, dry_run: bool, as_json: bool) -> None:
    """Remove worktrees and node branches left by crashed runs.

    Runs whose process is still alive on this host are left alone; review and
    conflict branches (loops/review/..., loops/conflict/...) are never touched.
    """
    report = asyncio.run(_prune(cwd, dry_run=dry_run))
    if as_json:
        click.echo(
            json.dumps(
                {
                    "dry_run": dry_run,
                    "worktrees": [str(p) for p in report.worktrees],
                    "branches": list(report.branches),
                    "live_runs": list(report.live_runs),
                }
            )
        )
        return
    verb = "would remove" if dry_run else "removed"
    for path in report.worktrees:
        click.echo(f"{verb} worktree {path}")
    for branch in report.branches:
        click.echo(f"{verb} branch {branch}")
    for run in report.live_runs:
        click.echo(f"kept run {run} (its process is alive)")
    if not (report.worktrees or report.branches):
        click.echo("nothing to prune")


def register(group: click.Group) -> None:
    """Add the worktree commands to the root group."""
    group.add_command(prune_command)
