"""Grounding text from real history: recency, retrieval, notes, record and the bound."""

from __future__ import annotations

import pytest
from git_helpers import commit, git, write

from loops import errors
from loops.git import consolidate, grounding, layout
from loops.git.grounding import GroundingOptions
from loops.git.repo import Repo


async def test_grounding_shows_the_runs_commits_with_bodies_trailers_files_and_notes(
    make_repo,
) -> None:
    root = make_repo(commits=1)
    commit(root, "before the run", {"pre.txt": "p"})
    repo = await Repo.open(root)
    since = await grounding.start_point(repo)
    commit(
        root,
        "feat: tokenizer\n\nSplit on whitespace first.\n\n"
        "Loops-Run-Id: r7\nLoops-Verdict: tests=met",
        {"src/tok.py": "t", "tests/test_tok.py": "t"},
    )
    commit(root, "fix: tokenizer keeps quotes", {"src/tok.py": "t2"})
    write(root, f"{layout.SCRATCH_DIR}/r7.md", "quotes broke twice; check escapes\n")

    found = await grounding.ground(repo, since=since, run_id="r7")

    text = found.text
    assert [c.subject for c in found.commits] == [
        "fix: tokenizer keeps quotes",
        "feat: tokenizer",
    ]
    assert "before the run" not in text
    assert "commits since this run began (2 of 2, newest first)" in text
    assert text.index("fix: tokenizer keeps quotes") < text.index("feat: tokenizer")
    assert "Split on whitespace first." in text
    assert "  Loops-Verdict: tests=met" in text
    assert "Files: A src/tok.py, A tests/test_tok.py" in text
    assert "Files: M src/tok.py" in text
    assert "scratch notes (.loops/scratch/r7.md)\nquotes broke twice" in text
    assert not found.truncated


async def test_recent_n_is_bounded_and_counts_what_was_left_out(make_repo) -> None:
    root = make_repo()
    repo = await Repo.open(root)
    for i in range(8):
        commit(root, f"step {i}", {f"s{i}.txt": "x"})
    found = await grounding.ground(repo, since=None, options=GroundingOptions(max_commits=3))
    assert [c.subject for c in found.commits] == ["step 7", "step 6", "step 5"]
    assert found.considered == 8 and found.truncated
    assert "(3 of 8, newest first)" in found.text


async def test_retrieve_picks_the_commits_relevant_to_the_prompt(make_repo) -> None:
    root = make_repo()
    repo = await Repo.open(root)
    commit(root, "feat: cache eviction policy", {"src/cache/lru.py": "x"})
    for i in range(10):
        commit(root, f"docs: reword section {i}", {f"docs/page{i}.md": "x"})
    commit(root, "fix: cache keeps stale entries after eviction", {"src/cache/lru.py": "y"})
    commit(root, "style: format", {"src/fmt.py": "x"})
    options = GroundingOptions(retrieve=True, max_commits=2)

    found = await grounding.ground(
        repo,
        since=None,
        query="Why does the LRU cache keep stale entries after evicting?",
        options=options,
    )

    assert [c.subject for c in found.commits] == [
        "fix: cache keeps stale entries after eviction",
        "feat: cache eviction policy",
    ]
    assert "most relevant to this task" in found.text
    recent = await grounding.ground(repo, since=None, options=GroundingOptions(max_commits=2))
    assert [c.subject for c in recent.commits] == [
        "style: format",
        "fix: cache keeps stale entries after eviction",
    ]


async def test_the_size_bound_holds_and_cuts_long_notes_from_the_front(make_repo) -> None:
    root = make_repo()
    repo = await Repo.open(root)
    for i in range(30):
        commit(root, f"change {i}\n\n" + "long body line\n" * 40, {f"f{i}.txt": "x"})
    write(root, f"{layout.SCRATCH_DIR}/r.md", "old note\n" * 500 + "NEWEST NOTE\n")
    options = GroundingOptions(max_chars=4000, max_commits=30)
    found = await grounding.ground(repo, since=None, run_id="r", options=options)
    assert len(found.text) <= 4000
    assert found.truncated
    assert "NEWEST NOTE" in found.text and "earlier notes cut" in found.text
    assert "change 29" in found.text and "change 0\n" not in found.text


async def test_grounding_reads_the_consolidated_record(make_repo) -> None:
    root = make_repo()
    repo = await Repo.open(root)
    for i in range(5):
        commit(root, f"decide {i}\n\nWe chose plan {i} because of reason {i}.", {f"d{i}": "x"})
    result = await consolidate.consolidate(repo, keep_recent=2, max_chars=2000)
    assert result.folded == 3 and result.commit is not None
    text = (root / layout.RECORD_PATH).read_text()
    assert "### " in text and "Decision: We chose plan 0 because of reason 0." in text
    assert git(root, "show", "--name-only", "--format=", "HEAD").split() == [layout.RECORD_PATH]

    found = await grounding.ground(repo, since=await repo.head())
    assert "consolidated record of earlier work" in found.text
    assert "decide 0" in found.text and "We chose plan 2" in found.text

    commit(root, "decide 5", {"d5": "x"})
    commit(root, "decide 6", {"d6": "x"})
    again = await consolidate.consolidate(repo, keep_recent=2, max_chars=2000)
    record = consolidate.parse_record((root / layout.RECORD_PATH).read_text())
    assert again.folded == 2  # decide 3 and 4; the record's own commit is not folded
    assert [e.subject for e in record.entries] == [f"decide {i}" for i in range(5)]


async def test_an_empty_repository_grounds_to_nothing(make_repo) -> None:
    repo = await Repo.open(make_repo())
    found = await grounding.ground(repo, since=None, run_id="r")
    assert found.text == "" and found.commits == ()


def test_options_parse_and_validate() -> None:
    assert GroundingOptions.parse(True) == GroundingOptions()
    assert GroundingOptions.parse(False) is None
    assert GroundingOptions.parse({"retrieve": True}) == GroundingOptions(retrieve=True)
    with pytest.raises(errors.InputError, match="unknown key"):
        GroundingOptions.parse({"retreive": True})
    with pytest.raises(errors.InputError, match="max_chars must be a positive integer"):
        GroundingOptions.parse({"max_chars": 0})
    with pytest.raises(errors.InputError, match="must be True, False or a dict"):
        GroundingOptions.parse("yes")  # type: ignore[arg-type]


async def test_ground_path_for_a_task_directory(make_repo, tmp_path) -> None:
    root = make_repo(commits=1)
    since = await grounding.start_point(await Repo.open(root))
    commit(root, "task work: add retry", {"retry.py": "r"})
    found = await grounding.ground_path(root, since=since, query="retry")
    assert found is not None and [c.subject for c in found.commits] == ["task work: add retry"]
    outside = tmp_path / "plain-dir"
    outside.mkdir()
    assert await grounding.ground_path(outside, since=None) is None
