"""Teams in loop files and real evidence: from_file, skill checks, review_context."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from loops import (
    agent_check,
    errors,
    fn_job,
    gate_job,
    loop,
    predicate,
    review_context,
    run,
    sequence,
)
from loops.engines.mock import MockEngine, MockTurn
from loops.flow import loopfile

HEADER = "from loops import *\n"


def write(folder: Path, body: str, name: str = "team.loop.py") -> Path:
    path = folder / name
    path.write_text(body)
    return path


def test_from_file_resolves_against_the_loop_file(tmp_path: Path):
    (tmp_path / "skills").mkdir()
    (tmp_path / "skills" / "tdd.md").write_text("Red, green, refactor.")
    path = write(
        tmp_path,
        HEADER
        + (
            "tdd = define_skill(name='tdd', instructions=from_file('skills/tdd.md'))\n"
            "eng = define_agent(name='eng', system='Builder.', skills=[tdd],\n"
            "                   requires_skills=['tdd'])\n"
            "job = agent_job('Build.', agent=eng, engine='mock')\n"
        ),
    )
    loaded = loopfile.load(path)
    assert loaded.job.system_prompt() == "Builder.\n\n## Skill: tdd\n\nRed, green, refactor."


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "\nx = from_file('agents/missing.md')\n",
            r"team\.loop\.py:3: from_file: .*agents/missing\.md does not exist",
        ),
        (
            "define_skill(name='tdd', instructions='a')\n"
            "define_skill(name='tdd', instructions='b')\n",
            r"team\.loop\.py:3: a skill named 'tdd' is already defined",
        ),
        (
            "define_agent(name='a')\ndefine_agent(name='a')\njob = fn_job(lambda c: None)\n",
            r"team\.loop\.py:3: an agent named 'a' is already defined",
        ),
        (
            "define_agent(name='a', requires_skills=['contract-first'])\n"
            "job = fn_job(lambda c: None)\n",
            "agent 'a' lists 'contract-first' in requires_skills, but no define_skill",
        ),
    ],
)
def test_validate_time_errors_name_the_file(tmp_path: Path, body: str, message: str):
    with pytest.raises(errors.LoopFileError, match=message):
        loopfile.load(write(tmp_path, HEADER + body))


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True)


async def test_review_context_gathers_diff_ledger_tests_and_files(tmp_path: Path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "app.py").write_text("def add(a, b):\n    return a * b\n")
    (tmp_path / ".gitignore").write_text("*.log\n")
    git(tmp_path, "init", "-q")
    git(tmp_path, "-c", "user.email=t@t", "-c", "user.name=t", "add", "-A")
    git(tmp_path, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "start")
    (tmp_path / "src" / "notes.txt").write_text("untracked before the loop\n")

    def fix(ctx):
        (tmp_path / "src" / "app.py").write_text("def add(a, b):\n    return a + b\n")
        (tmp_path / "src" / "new.py").write_text("X = 1\n")
        (tmp_path / "debug.log").write_text("ignored\n")

    engine = MockEngine(default=MockTurn(text='{"met": true, "confidence": 1, "reason": "fine"}'))
    context = review_context(
        diff=True,
        ledger=True,
        files=["src/*.py"],
        tests=[sys.executable, "-c", "print('3 passed in 0.1s')"],
    )
    judge = agent_check("Is it right?", engine=engine, context=context)
    job = loop(
        name="impl",
        body=fn_job(fix),
        until=predicate(lambda c, _: True, name="tests"),
        review=judge,
        max=2,
    )
    result = await run(job, cwd=tmp_path)
    assert result.status.value == "pass", result.reason
    prompt = engine.requests[0].prompt
    assert "## Diff since impl began" in prompt
    assert "-    return a * b\n+    return a + b" in prompt and "src/new.py" in prompt
    assert "notes.txt" not in prompt.split("## Ledger")[0]  # there before the loop began
    assert "debug.log" not in prompt  # git-ignored
    assert "## Ledger of this run's verdicts\n- impl until (iteration 1): met: tests: " in prompt
    assert "exit 0)\n```\n3 passed in 0.1s\n```" in prompt
    assert "### src/app.py\n```\ndef add(a, b):\n    return a + b\n```" in prompt


async def test_review_context_outside_git_says_the_diff_is_unavailable(tmp_path: Path):
    engine = MockEngine(default=MockTurn(text='{"met": true, "confidence": 1, "reason": "fine"}'))
    judge = agent_check("ok?", engine=engine, context=review_context(diff=True))
    await run(sequence(gate_job("review", judge)), cwd=tmp_path)
    assert (
        "(unavailable: the working directory is not a git work tree)" in engine.requests[0].prompt
    )


def test_bad_review_contexts():
    with pytest.raises(errors.ConstructionError, match="needs some evidence"):
        review_context()
    with pytest.raises(errors.ConstructionError, match="argv list"):
        review_context(tests="pytest -q")
