"""Worktree isolation in real repositories: parallel writers, conflicts, prune."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from git_helpers import commit, git, write

from loops import errors
from loops.git import layout, worktrees
from loops.git.repo import Repo
from loops.git.worktrees import NodeWorktree, Worktrees


def branches(root: Path) -> set[str]:
    return set(git(root, "for-each-ref", "--format=%(refname:short)", "refs/heads/").split())


def registered_worktrees(root: Path) -> list[str]:
    out = git(root, "worktree", "list", "--porcelain")
    return [line.split(" ", 1)[1] for line in out.splitlines() if line.startswith("worktree ")]


async def test_four_isolated_parallel_writers_all_land(make_repo) -> None:
    root = make_repo(commits=1)
    repo = await Repo.open(root)
    wts = Worktrees(repo, run_id="run-1")
    started = asyncio.Event()
    inside: list[int] = []

    async def writer(node: NodeWorktree, n: int) -> bool:
        inside.append(n)
        if len(inside) == 4:
            started.set()
        await asyncio.wait_for(started.wait(), 10)  # all four worktrees exist at once
        assert (node.path / "file0.txt").read_text() == "content 0\n"
        write(node.path, f"src/writer{n}.py", f"n = {n}\n")
        return True

    results = await asyncio.gather(
        *(
            worktrees.run_isolated(
                wts,
                node_path=f"ship/writer{n}",
                work=lambda node, n=n: writer(node, n),
                passed=bool,
                summary=lambda _, n=n: f"writer {n} done",
            )
            for n in range(4)
        )
    )
    wts.close()

    assert all(r.passed and r.landing and r.landing.changed for r in results)
    for n in range(4):
        assert (root / f"src/writer{n}.py").read_text() == f"n = {n}\n"
    landed = git(root, "log", "--first-parent", "--format=%s%x09%P", "main").splitlines()
    merges = [line for line in landed if line.startswith("loops: land ship/writer")]
    assert len(merges) == 4 and all(len(m.split("\t")[1].split()) == 2 for m in merges)
    assert git(root, "status", "--porcelain") == ""
    assert registered_worktrees(root) == [str(root.resolve())]
    assert branches(root) == {"main"}
    assert not wts.run_dir.exists()


async def test_a_conflicting_pair_one_lands_one_fails_with_files_named(make_repo) -> None:
    root = make_repo(commits=1)
    commit(root, "shared config", {"config.toml": "level = 1\n", "other.txt": "o\n"})
    repo = await Repo.open(root)
    wts = Worktrees(repo, run_id="run-2")
    first_landed = asyncio.Event()

    async def edit(node: NodeWorktree, value: int) -> int:
        write(node.path, "config.toml", f"level = {value}\n")
        write(node.path, f"own{value}.txt", "mine\n")
        return value

    a = await wts.create("a")
    b = await wts.create("b")
    watcher = await wts.create("bystander")
    write(watcher.path, "bystander.txt", "untouched work in progress\n")
    await edit(a, 2)
    await edit(b, 3)
    landing = await wts.land(a)
    first_landed.set()
    main_after_a = git(root, "rev-parse", "main").strip()
    with pytest.raises(errors.MergeConflict) as info:
        await wts.land(b)

    conflict = info.value
    assert conflict.files == ("config.toml",)
    assert "config.toml" in str(conflict) and "loops/conflict/run-2/b" in str(conflict)
    assert landing.commit == main_after_a
    assert git(root, "rev-parse", "main").strip() == main_after_a  # parent untouched
    assert (root / "config.toml").read_text() == "level = 2\n"
    assert not (root / "own3.txt").exists()
    assert git(root, "status", "--porcelain") == ""
    assert not (root / ".git" / "MERGE_HEAD").exists()
    assert (watcher.path / "bystander.txt").read_text() == "untouched work in progress\n"
    assert git(watcher.path, "status", "--porcelain") == "?? bystander.txt\n"
    kept = git(root, "show", "loops/conflict/run-2/b:config.toml")
    assert kept == "level = 3\n"  # the passing work is not lost
    for node in (a, b, watcher):
        await wts.remove(node)
    assert registered_worktrees(root) == [str(root.resolve())]
    assert branches(root) == {"main", "loops/conflict/run-2/b"}
    assert not wts.run_dir.exists()  # the last remove closed the run folder


async def test_run_isolated_reports_a_conflict_as_a_result(make_repo) -> None:
    root = make_repo(commits=1)
    repo = await Repo.open(root)
    wts = Worktrees(repo, run_id="run-3")
    gate = asyncio.Event()

    async def work(node: NodeWorktree, text: str, first: bool) -> str:
        write(node.path, "file0.txt", text)
        if not first:
            await gate.wait()  # land after the first one
        return text

    async def first() -> worktrees.IsolatedResult[str]:
        try:
            return await worktrees.run_isolated(
                wts, node_path="x", work=lambda n: work(n, "x\n", True), passed=bool
            )
        finally:
            gate.set()

    one, two = await asyncio.gather(
        first(),
        worktrees.run_isolated(
            wts, node_path="y", work=lambda n: work(n, "y\n", False), passed=bool
        ),
    )
    assert one.landing is not None and one.conflict is None
    assert two.landing is None and two.conflict is not None
    assert two.conflict.files == ("file0.txt",)
    assert (root / "file0.txt").read_text() == "x\n"
    assert registered_worktrees(root) == [str(root.resolve())]


async def test_failing_node_lands_nothing_and_is_removed(make_repo) -> None:
    root = make_repo(commits=1)
    repo = await Repo.open(root)
    before = await repo.head()
    wts = Worktrees(repo, run_id="run-4")

    async def work(node: NodeWorktree) -> bool:
        write(node.path, "broken.py", "oops\n")
        return False

    result = await worktrees.run_isolated(wts, node_path="n", work=work, passed=bool)
    assert not result.passed and result.landing is None
    assert await repo.head() == before
    assert not (root / "broken.py").exists()
    assert registered_worktrees(root) == [str(root.resolve())]
    assert branches(root) == {"main"}


async def test_land_branch_leaves_work_for_review_and_merges_nothing(make_repo) -> None:
    root = make_repo(commits=1)
    repo = await Repo.open(root)
    before = await repo.head()
    wts = Worktrees(repo, run_id="run-5")

    async def work(node: NodeWorktree) -> bool:
        write(node.path, "feature.py", "f = 1\n")
        return True

    result = await worktrees.run_isolated(
        wts,
        node_path="ship/feature",
        work=work,
        passed=bool,
        land="branch",
        summary=lambda _: "Adds the feature; tests pass.",
        trailers=lambda _: [("Loops-Verdict", "tests=met")],
    )
    assert result.landing is not None
    assert result.landing.branch == "loops/review/run-5/ship-feature"
    assert await repo.head() == before
    assert not (root / "feature.py").exists()
    tip = git(root, "log", "-1", "--format=%s%n%b", result.landing.branch)
    assert tip.startswith("loops: ship/feature ready for review (run run-5)")
    assert "Adds the feature; tests pass." in tip and "Loops-Verdict: tests=met" in tip
    assert git(root, "show", f"{result.landing.branch}:feature.py") == "f = 1\n"
    assert branches(root) == {"main", "loops/review/run-5/ship-feature"}


async def test_a_node_that_changed_nothing_lands_nothing(make_repo) -> None:
    root = make_repo(commits=1)
    repo = await Repo.open(root)
    before = await repo.head()

    async def work(node: NodeWorktree) -> bool:
        return True

    result = await worktrees.run_isolated(
        Worktrees(repo, run_id="run-6"), node_path="noop", work=work, passed=bool
    )
    assert result.landing is not None and not result.landing.changed
    assert await repo.head() == before


async def test_a_node_starts_from_the_parents_current_commit(make_repo) -> None:
    root = make_repo(commits=1)
    repo = await Repo.open(root)
    wts = Worktrees(repo, run_id="run-7")
    first = await wts.create("first")
    write(first.path, "step1.txt", "1\n")
    await wts.land(first)
    await wts.remove(first)
    second = await wts.create("second")
    assert (second.path / "step1.txt").read_text() == "1\n"
    assert second.base == git(root, "rev-parse", "main").strip()
    await wts.remove(second)


async def test_isolation_needs_a_commit_and_a_branch(make_repo) -> None:
    empty = await Repo.open(make_repo())
    with pytest.raises(errors.RepositoryStateError, match="no commit yet"):
        await Worktrees(empty, run_id="r").create("n")
    root = make_repo(commits=1)
    git(root, "checkout", "--quiet", "--detach")
    with pytest.raises(errors.RepositoryStateError, match="detached"):
        await Worktrees(await Repo.open(root), run_id="r").create("n")


async def test_landing_refuses_to_overwrite_uncommitted_parent_changes(make_repo) -> None:
    root = make_repo(commits=1)
    repo = await Repo.open(root)
    wts = Worktrees(repo, run_id="run-8")
    node = await wts.create("n")
    write(node.path, "file0.txt", "from node\n")
    write(root, "file0.txt", "human edit in progress\n")
    before = await repo.head()
    with pytest.raises(errors.RepositoryStateError, match="uncommitted changes"):
        await wts.land(node)
    assert git(root, "rev-parse", "main").strip() == before
    assert (root / "file0.txt").read_text() == "human edit in progress\n"
    await wts.remove(node)


async def test_unknown_land_mode_is_an_input_error(make_repo) -> None:
    repo = await Repo.open(make_repo(commits=1))
    with pytest.raises(errors.InputError, match="land= must be 'merge' or 'branch'"):
        await worktrees.run_isolated(
            Worktrees(repo, run_id="r"), node_path="n", work=lambda n: _true(), passed=bool,
            land="squash",  # type: ignore[arg-type]
        )  # fmt: skip


async def _true() -> bool:
    return True


CRASHING_RUN = """
import asyncio, os, sys
from loops.git.repo import Repo
from loops.git.worktrees import Worktrees

async def main():
    wts = Worktrees(await Repo.open(sys.argv[1]), run_id="crashed-run")
    node = await wts.create("ship/writer")
    open(os.path.join(node.path, "half.txt"), "w").write("half")
    print(node.path, flush=True)
    os._exit(137)  # dies without cleaning up, like kill -9

asyncio.run(main())
"""


async def test_leftovers_of_a_crashed_run_are_pruned(make_repo) -> None:
    root = make_repo(commits=1)
    done = subprocess.run(
        [sys.executable, "-c", CRASHING_RUN, str(root)], capture_output=True, text=True
    )
    assert done.returncode == 137, done.stderr
    leftover = Path(done.stdout.strip())
    assert leftover.is_dir()
    assert "loops/node/crashed-run/ship-writer" in branches(root)
    repo = await Repo.open(root)
    live = Worktrees(repo, run_id="live-run")
    live_node = await live.create("busy")  # this process is alive: must survive the prune
    write(root, "unrelated.txt", "u\n")
    git(root, "branch", "loops/review/old/x")

    dry = await worktrees.prune(repo, dry_run=True)
    assert dry.worktrees == (leftover,) and leftover.is_dir()

    report = await worktrees.prune(repo)
    assert report.worktrees == (leftover,)
    assert report.branches == ("loops/node/crashed-run/ship-writer",)
    assert report.live_runs == ("live-run",)
    assert not leftover.exists()
    assert registered_worktrees(root) == [str(root.resolve()), str(live_node.path)]
    assert branches(root) == {"main", "loops/node/live-run/busy", "loops/review/old/x"}
    assert (root / "unrelated.txt").exists()
    await live.remove(live_node)
    live.close()


async def test_prune_treats_a_dead_pid_as_crashed(make_repo) -> None:
    root = make_repo(commits=1)
    repo = await Repo.open(root)
    wts = Worktrees(repo, run_id="r9")
    node = await wts.create("n")
    owner = json.loads((wts.run_dir / "owner.json").read_text())
    assert owner["pid"] == os.getpid()
    report = await worktrees.prune(repo, alive=lambda pid: False)
    assert report.live_runs == ("r9",)  # our own pid is never treated as dead
    owner["pid"] = os.getpid() + 1_000_000
    (wts.run_dir / "owner.json").write_text(json.dumps(owner))
    report = await worktrees.prune(repo, alive=lambda pid: False)
    assert report.worktrees == (node.path,) and report.branches == (node.branch,)


def test_prune_cli(make_repo) -> None:
    from click.testing import CliRunner

    from loops.cli.main import cli

    root = make_repo(commits=1)
    git(root, "branch", f"{layout.NODE_BRANCH_PREFIX}/gone-run/n")
    runner = CliRunner()
    result = runner.invoke(cli, ["worktrees:prune", "--cwd", str(root), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["branches"] == ["loops/node/gone-run/n"]
    result = runner.invoke(cli, ["worktrees:prune", "--cwd", str(root)])
    assert result.output.strip() == "nothing to prune"
    outside = root.parent / "not-a-repo"
    outside.mkdir()
    result = runner.invoke(cli, ["worktrees:prune", "--cwd", str(outside)])
    assert result.exit_code == 1
    assert "not inside a git working tree" in result.output
    assert "Traceback" not in result.output


async def test_a_run_folder_without_owner_is_kept_while_young(make_repo) -> None:
    root = make_repo(commits=1)
    repo = await Repo.open(root)
    young = layout.worktrees_dir(repo.common_dir) / "being-created"
    young.mkdir(parents=True)
    created = young.stat().st_mtime
    report = await worktrees.prune(repo, now_s=lambda: created + 5)
    assert report.live_runs == ("being-created",) and young.exists()
    report = await worktrees.prune(repo, now_s=lambda: created + 3600)
    assert report.live_runs == () and not young.exists()
