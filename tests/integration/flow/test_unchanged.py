"""unchanged(globs): protected files compared with the run's start, with and without git."""

from __future__ import annotations

import subprocess
from pathlib import Path

from loops import Outcome, fn_job, loop, predicate, run, unchanged
from loops.flow.events import MemorySink


async def gate_after(cwd: Path, edit, patterns: list[str]) -> dict:
    """Run a one-iteration loop whose body makes ``edit`` and whose gate is unchanged()."""

    def body(ctx):
        edit(cwd)
        return Outcome("pass", "edited")

    sink = MemorySink()
    job = loop(name="l", body=fn_job(body), until=unchanged(*patterns), max=1)
    await run(job, cwd=cwd, sinks=[sink])
    return sink.of_type("verdict")[0].data


def seed(root: Path) -> Path:
    (root / "tests").mkdir()
    (root / "tests" / "test_a.py").write_text("def test_a():\n    assert True\n")
    (root / "src.py").write_text("x = 1\n")
    return root


async def test_without_git_changes_additions_and_deletions_fail(tmp_path: Path):
    seed(tmp_path)
    ok = await gate_after(tmp_path, lambda p: (p / "src.py").write_text("x = 2\n"), ["tests/**"])
    assert ok["met"] and ok["reason"] == "1 protected files unchanged since the run began"
    changed = await gate_after(
        tmp_path,
        lambda p: (p / "tests" / "test_a.py").write_text("def test_a():\n    pass\n"),
        ["tests/**"],
    )
    assert not changed["met"] and changed["reason"].endswith("changed tests/test_a.py")
    added = await gate_after(
        tmp_path, lambda p: (p / "tests" / "test_b.py").write_text(""), ["tests/**"]
    )
    assert not added["met"] and added["reason"].endswith("added tests/test_b.py")
    deleted = await gate_after(
        tmp_path, lambda p: (p / "tests" / "test_b.py").unlink(), ["tests/**"]
    )
    assert not deleted["met"] and deleted["reason"].endswith("deleted tests/test_b.py")


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True)


async def test_in_git_ignored_files_are_not_changes(tmp_path: Path):
    seed(tmp_path)
    (tmp_path / ".gitignore").write_text("__pycache__/\n*.log\n")
    git(tmp_path, "init", "-q")

    def noise(p: Path) -> None:
        (p / "tests" / "__pycache__").mkdir()
        (p / "tests" / "__pycache__" / "test_a.cpython-311.pyc").write_bytes(b"\0")
        (p / "tests" / "run.log").write_text("log")

    ok = await gate_after(tmp_path, noise, ["tests/**"])
    assert ok["met"], ok["reason"]
    untracked = await gate_after(
        tmp_path, lambda p: (p / "tests" / "test_new.py").write_text(""), ["tests"]
    )
    assert not untracked["met"] and "added tests/test_new.py" in untracked["reason"]


async def test_the_baseline_is_taken_when_the_run_starts(tmp_path: Path):
    seed(tmp_path)
    state = {"n": 0}

    def body(ctx):
        state["n"] += 1
        if state["n"] == 1:
            (tmp_path / "tests" / "test_a.py").write_text("# weakened\n")

    sink = MemorySink()
    job = loop(
        name="l",
        body=body,
        until=[predicate(lambda c, _: c.iteration >= 2, name="late"), unchanged("tests/**")],
        max=3,
    )
    result = await run(job, cwd=tmp_path, sinks=[sink])
    assert result.status.value == "fail"  # the edit in turn 1 is never forgiven
    assert "changed tests/test_a.py" in result.reason


async def test_without_a_run_baseline_it_fails_closed(tmp_path: Path):
    from loops.flow.runner import check_condition

    seed(tmp_path)
    verdict = await check_condition(unchanged("tests/**"), cwd=tmp_path)
    assert not verdict.met and "has no baseline" in verdict.reason
