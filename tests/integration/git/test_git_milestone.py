"""Milestone commits in real repositories."""

from __future__ import annotations

from pathlib import Path

import pytest
from git_helpers import git, write

from loops import errors
from loops.git import layout, milestone
from loops.git.milestone import GateVerdict, Milestone
from loops.git.repo import Repo
from loops.usage import Usage


def converged(**overrides: object) -> Milestone:
    values: dict[str, object] = {
        "run_id": "run-42",
        "node_path": "ship/parser",
        "iteration": 3,
        "subject": "feat: parser",
        "summary": "# Parser\nParses headers first; bodies stream.",
        "verdicts": (
            GateVerdict("tests", True, "12 passed, 0 failed", None),
            GateVerdict("review", True, "clear and covered", 0.875),
        ),
        "usage": Usage(
            input_tokens=1200, output_tokens=300, cached_input_tokens=100, cost_usd=0.0123
        ),
    }
    values.update(overrides)
    return Milestone(**values)  # type: ignore[arg-type]


async def test_milestone_commit_has_summary_verdicts_and_trailers(make_repo) -> None:
    root = make_repo(commits=1)
    write(root, "src/parser.py", "def parse(): ...\n")  # the agent's dirty tree
    write(root, "file0.txt", "edited\n")
    repo = await Repo.open(root)

    result = await milestone.commit_milestone(repo, converged(), passed=True)

    assert result is not None and result.created
    assert git(root, "log", "-1", "--format=%s").strip() == "feat: parser"
    body = git(root, "log", "-1", "--format=%B")
    assert "# Parser\nParses headers first; bodies stream." in body  # '#' lines survive
    assert "- tests: met: 12 passed, 0 failed" in body
    assert "- review: met (confidence 0.88): clear and covered" in body
    trailers = git(root, "log", "-1", "--format=%(trailers:only,unfold)").strip().splitlines()
    assert trailers == [
        "Loops-Run-Id: run-42",
        "Loops-Node: ship/parser",
        "Loops-Iteration: 3",
        "Loops-Verdict: tests=met",
        "Loops-Verdict: review=met confidence=0.88",
        "Loops-Input-Tokens: 1200",
        "Loops-Output-Tokens: 300",
        "Loops-Cached-Input-Tokens: 100",
        "Loops-Cost-USD: 0.012300",
    ]
    files = set(git(root, "show", "--name-only", "--format=", "HEAD").split())
    assert files == {"src/parser.py", "file0.txt"}
    assert not await repo.is_dirty()
    parsed = (await repo.log(limit=1))[0]
    assert milestone.milestone_key(parsed) == ("run-42", "ship/parser", 3)
    assert [milestone.parse_verdict_trailer(v) for v in parsed.trailer_values("Loops-Verdict")] == [
        GateVerdict("tests", True, "", None),
        GateVerdict("review", True, "", 0.88),
    ]


async def test_nothing_is_committed_when_the_loop_did_not_pass(make_repo) -> None:
    root = make_repo(commits=1)
    write(root, "half-done.py", "x\n")
    repo = await Repo.open(root)
    before = await repo.head()
    assert await milestone.commit_milestone(repo, converged(), passed=False) is None
    assert await repo.head() == before
    assert "half-done.py" in git(root, "status", "--porcelain")


async def test_works_with_no_prior_commits(make_repo) -> None:
    root = make_repo()
    write(root, "README.md", "hello\n")
    repo = await Repo.open(root)
    result = await milestone.commit_milestone(repo, converged(subject=""), passed=True)
    assert result is not None
    log = await repo.log()
    assert len(log) == 1 and log[0].parents == ()
    assert log[0].subject == "loops: ship/parser converged"
    assert [f.path for f in log[0].files] == ["README.md"]


async def test_an_unchanged_tree_still_records_the_verdicts(make_repo) -> None:
    repo = await Repo.open(make_repo(commits=1))
    result = await milestone.commit_milestone(repo, converged(), passed=True)
    assert result is not None and result.created
    assert (await repo.log(limit=1))[0].files == ()


async def test_a_retried_run_does_not_commit_twice(make_repo) -> None:
    root = make_repo(commits=1)
    repo = await Repo.open(root)
    first = await milestone.commit_milestone(repo, converged(), passed=True)
    write(root, "later.txt", "other work\n")
    git(root, "add", "later.txt")
    git(root, "commit", "--quiet", "-m", "unrelated: Loops-Run-Id: run-42 mention")
    again = await milestone.commit_milestone(repo, converged(), passed=True)
    assert first is not None and again is not None
    assert again.created is False and again.sha == first.sha
    next_iteration = await milestone.commit_milestone(repo, converged(iteration=4), passed=True)
    assert next_iteration is not None and next_iteration.created


async def test_scratch_notes_are_never_committed(make_repo) -> None:
    root = make_repo(commits=1)
    notes = layout.notes_path(root, "run-42")
    write(root, str(notes.relative_to(root)), "tried X, failed\n")
    write(root, "work.py", "y\n")
    repo = await Repo.open(root)
    await milestone.commit_milestone(repo, converged(), passed=True)
    assert git(root, "show", "--name-only", "--format=", "HEAD").split() == ["work.py"]
    assert notes.exists()


async def test_refuses_outside_a_repository(tmp_path: Path) -> None:
    with pytest.raises(errors.NotARepository):
        repo = await Repo.open(tmp_path)
        await milestone.commit_milestone(repo, converged(), passed=True)


async def test_refuses_a_detached_head(make_repo) -> None:
    root = make_repo(commits=2)
    git(root, "checkout", "--quiet", "--detach")
    repo = await Repo.open(root)
    with pytest.raises(errors.RepositoryStateError, match="detached"):
        await milestone.commit_milestone(repo, converged(), passed=True)


async def test_missing_identity_is_named(make_repo, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_repo(commits=1)
    git(root, "config", "--unset", "user.name")
    git(root, "config", "--unset", "user.email")
    monkeypatch.setenv("EMAIL", "")
    for key in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL"):
        monkeypatch.delenv(key, raising=False)
    git(root, "config", "user.useConfigOnly", "true")
    repo = await Repo.open(root)
    with pytest.raises(errors.GitIdentityMissing, match=r"user\.name"):
        await milestone.commit_milestone(repo, converged(), passed=True)
