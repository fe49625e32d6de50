"""Git as memory and worktree isolation through the library: loops, dags, agent jobs."""

from __future__ import annotations

from pathlib import Path

import pytest
from git_helpers import commit, git, write

import loops
from loops import errors
from loops.engines.mock import MockEngine, MockTurn
from loops.flow.context import Context
from loops.flow.outcome import Outcome
from loops.git import layout


def file_exists(rel: str) -> loops.Condition:
    return loops.predicate(lambda ctx, last: (ctx.cwd / rel).exists(), name=f"exists({rel})")


def subjects(root: Path, ref: str = "main") -> list[str]:
    return git(root, "log", "--format=%s", ref).splitlines()


async def test_loop_converges_with_one_milestone_and_later_turns_are_grounded(make_repo) -> None:
    root = make_repo(commits=1)
    commit(root, "old: before the run", {"old.txt": "old\n"})
    engine = MockEngine(
        [
            MockTurn(text="wrote the parser", edits={"src/parser.py": "def parse(): ...\n"}),
            MockTurn(text="added the marker", edits={"done.txt": "yes\n"}),
            MockTurn(text="reviewed", match="Review the parser"),
        ]
    )
    build = loops.loop(
        name="build",
        body=loops.agent_job("Write the parser.", ground=True, commit={"subject": "feat: parser"}),
        until=loops.command_succeeds("test", ["-f", "done.txt"]),
        max=3,
    )
    review = loops.agent_job("Review the parser.", name="review", ground=True)
    notes = layout.notes_path(root, "run-g1")
    write(root, str(notes.relative_to(root)), "tried a regex first; too slow\n")

    result = await loops.run(
        loops.sequence(build, review), cwd=root, engine=engine, run_id="run-g1"
    )

    assert result.status.value == "pass", result.reason
    assert subjects(root) == ["feat: parser", "old: before the run", "commit 0"]
    trailers = git(root, "log", "-1", "--format=%(trailers:only,unfold)").splitlines()
    assert "Loops-Run-Id: run-g1" in trailers
    assert "Loops-Node: sequence/build" in trailers
    assert "Loops-Iteration: 2" in trailers
    assert "Loops-Verdict: command_succeeds(test -f done.txt)=met" in trailers
    assert any(t.startswith("Loops-Output-Tokens: ") for t in trailers)
    body = git(root, "log", "-1", "--format=%b")
    assert "- command_succeeds(test -f done.txt): met" in body and "added the marker" in body
    assert sorted(git(root, "show", "--name-only", "--format=", "HEAD").split()) == [
        "done.txt",
        "src/parser.py",
    ]
    first_prompt, second_prompt, review_prompt = (r.prompt for r in engine.requests)
    assert "first turn of the run" not in first_prompt  # the notes are already there
    assert "tried a regex first; too slow" in first_prompt
    assert "old: before the run" not in review_prompt  # only commits since the run began
    assert "feat: parser" in review_prompt
    assert "Loops-Verdict: command_succeeds(test -f done.txt)=met" in review_prompt
    assert "A src/parser.py" in review_prompt and "A done.txt" in review_prompt
    assert str(notes) in review_prompt
    # the notes stay out of an agent's own `git add -A` too, via the local exclude file
    assert "/.loops/scratch/" in (root / ".git" / "info" / "exclude").read_text().splitlines()
    assert git(root, "status", "--porcelain") == ""
    assert "feat: parser" not in second_prompt  # nothing committed before convergence


async def test_a_loop_that_does_not_pass_commits_nothing(make_repo) -> None:
    root = make_repo(commits=1)
    before = git(root, "rev-parse", "HEAD")
    engine = MockEngine(default=MockTurn(text="tried", edits={"attempt.txt": "x\n"}))
    job = loops.loop(
        name="never",
        body=loops.agent_job("Try.", commit=True),
        until=file_exists("never.txt"),
        max=2,
    )
    result = await loops.run(job, cwd=root, engine=engine)
    assert result.status.value == "fail"
    assert git(root, "rev-parse", "HEAD") == before
    assert (root / "attempt.txt").exists()  # the work stays, uncommitted


async def test_commit_outside_a_repository_fails_the_loop_clearly(tmp_path: Path) -> None:
    engine = MockEngine(default=MockTurn(text="ok"))
    job = loops.loop(name="l", body=loops.agent_job("Go.", commit=True), until=lambda c, last: True)
    result = await loops.run(job, cwd=tmp_path, engine=engine)
    assert result.status.value == "error"
    assert "not inside a git working tree" in result.reason


def writer(n: int) -> loops.Job:
    return loops.agent_job(f"Writer {n}: write your module.", name=f"w{n}")


async def test_dag_with_worktree_isolation_lands_four_parallel_writers(make_repo) -> None:
    root = make_repo(commits=1)
    engine = MockEngine(
        [
            MockTurn(text=f"module {n}", edits={f"src/m{n}.py": f"N = {n}\n"}, match=f"Writer {n}:")
            for n in range(4)
        ],
        default=MockTurn(text="all four modules present"),
    )
    check = loops.agent_job("Check: list the modules.", name="check")
    job = loops.dag(
        name="ship",
        isolation="worktree",
        nodes={
            **{f"w{n}": writer(n) for n in range(4)},
            "check": {"job": check, "needs": [f"w{n}" for n in range(4)], "isolate": False},
        },
    )
    result = await loops.run(job, cwd=root, engine=engine, run_id="run-d1")
    assert result.status.value == "pass", result.reason
    for n in range(4):
        assert (root / f"src/m{n}.py").read_text() == f"N = {n}\n"
    landings = [s for s in subjects(root) if s.startswith("loops: land ship/w")]
    assert len(landings) == 4
    assert engine.requests[-1].cwd == root.resolve()  # the check ran in the parent tree
    assert {r.cwd for r in engine.requests[:4]}.isdisjoint({root.resolve()})
    assert git(root, "worktree", "list").count("\n") == 1
    assert git(root, "branch", "--list", "loops/*") == ""
    assert not (root / ".git" / "loops" / "worktrees" / "run-d1").exists()


async def test_a_conflicting_pair_in_a_dag_fails_one_node_naming_the_file(make_repo) -> None:
    root = make_repo(commits=1)

    async def slow_b(ctx: Context) -> Outcome:
        write(ctx.cwd, "file0.txt", "from b\n")
        return Outcome("pass", "b wrote")

    async def fast_a(ctx: Context) -> Outcome:
        write(ctx.cwd, "file0.txt", "from a\n")
        return Outcome("pass", "a wrote")

    job = loops.dag(
        name="pair",
        nodes={
            "a": {"job": loops.fn_job(fast_a, name="a"), "isolate": True},
            "b": {"job": loops.fn_job(slow_b, name="b"), "isolate": True, "needs": []},
        },
    )
    result = await loops.run(job, cwd=root)
    assert result.status.value == "fail"
    assert "conflicts with main in file0.txt" in result.reason
    assert (root / "file0.txt").read_text() in {"from a\n", "from b\n"}
    assert git(root, "status", "--porcelain") == ""
    kept = git(root, "branch", "--list", "loops/conflict/*").split()
    assert len(kept) == 1


async def test_land_branch_lists_review_branches_and_merges_nothing(make_repo) -> None:
    root = make_repo(commits=1)
    before = git(root, "rev-parse", "HEAD")
    job = loops.dag(
        name="ship",
        isolation="worktree",
        land="branch",
        nodes={
            "docs": loops.fn_job(
                lambda ctx: write(ctx.cwd, "docs.md", "d\n") and None, name="docs"
            ),
            "code": loops.fn_job(
                lambda ctx: write(ctx.cwd, "code.py", "c\n") and None, name="code"
            ),
        },
    )
    result = await loops.run(job, cwd=root, run_id="run-b1")
    assert result.status.value == "pass", result.reason
    assert sorted(result.outcome.data["branches"]) == [
        "loops/review/run-b1/ship-code",
        "loops/review/run-b1/ship-docs",
    ]
    assert git(root, "rev-parse", "HEAD") == before
    assert git(root, "show", "loops/review/run-b1/ship-docs:docs.md") == "d\n"


async def test_isolated_job_that_fails_lands_nothing(make_repo) -> None:
    root = make_repo(commits=1)
    before = git(root, "rev-parse", "HEAD")

    def broken(ctx: Context) -> bool:
        write(ctx.cwd, "half.py", "x\n")
        return False

    result = await loops.run(loops.isolated(loops.fn_job(broken, name="broken")), cwd=root)
    assert result.status.value == "fail"
    assert git(root, "rev-parse", "HEAD") == before
    assert not (root / "half.py").exists()


async def test_consolidate_job_folds_old_history_and_grounding_reads_it(make_repo) -> None:
    root = make_repo()
    for i in range(6):
        commit(root, f"decision {i}: use approach {i}\n\nBecause reason {i}.", {f"d{i}.txt": "x"})
    engine = MockEngine(default=MockTurn(text="ok"))
    job = loops.sequence(
        loops.consolidate_job(keep_recent=2),
        loops.agent_job("Continue the work.", ground=True),
    )
    result = await loops.run(job, cwd=root, engine=engine)
    assert result.status.value == "pass", result.reason
    record = (root / layout.RECORD_PATH).read_text()
    assert "decision 0: use approach 0" in record and "Because reason 0." in record
    assert "decision 5" not in record
    assert subjects(root)[0].startswith("loops: consolidate 4 commits")
    assert "decision 3: use approach 3" in engine.requests[0].prompt


def test_bad_memory_arguments_are_construction_errors() -> None:
    with pytest.raises(errors.ConstructionError, match="ground= has unknown key"):
        loops.agent_job("x", ground={"retreive": True})
    with pytest.raises(errors.ConstructionError, match="commit= must be True"):
        loops.agent_job("x", commit=3)  # type: ignore[arg-type]
    with pytest.raises(errors.ConstructionError, match="land='squash'"):
        loops.dag(nodes={"a": lambda ctx: None}, isolation="worktree", land="squash")  # type: ignore[arg-type]
    with pytest.raises(errors.ConstructionError, match="isolation='docker'"):
        loops.dag(nodes={"a": lambda ctx: None}, isolation="docker")  # type: ignore[arg-type]


def test_describe_shows_isolated_nodes_as_what_they_are() -> None:
    inner = loops.loop(
        name="build", body=loops.agent_job("x", ground=True), until=lambda c, last: True
    )
    shape = loops.dag(
        name="ship",
        isolation="worktree",
        land="branch",
        nodes={"build": inner, "t": lambda c: None},
    ).shape()
    build, other = shape["children"]
    assert (build["kind"], build["isolate"], build["land"]) == ("loop", True, "branch")
    assert build["children"][0]["ground"] == {"retrieve": False, "max_chars": 12000}
    assert other["kind"] == "fn" and other["isolate"] is True
