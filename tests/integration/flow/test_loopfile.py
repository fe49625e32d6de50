"""Loop files: import by path, file:line errors, define_job, paths relative to the file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from loops import errors, run
from loops.flow import loopfile


def write(tmp_path: Path, body: str, name: str = "x.loop.py") -> Path:
    path = tmp_path / name
    path.write_text(body)
    return path


HEADER = "from loops import *\n"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("job = loop(\n", r"x\.loop\.py:1: syntax error"),
        (
            "import not_a_module_xyz\n",
            r"x\.loop\.py:1: import failed: No module named 'not_a_module_xyz'",
        ),
        (
            HEADER + "\n\njob = gate_job('g', quorum(1))\n",
            r"x\.loop\.py:4: quorum\(\) needs at least one condition",
        ),
        (
            HEADER + "a = fn_job(lambda c: None)\njob = dag(nodes={'a': {'job': a, 'needs': ['b']},"
            " 'b': {'job': a, 'needs': ['a']}})\n",
            r"x\.loop\.py:3: dag 'dag' has a cycle in its needs",
        ),
        (HEADER + "x = 1\n", "defines no job: assign the root job to a variable named `job`"),
        (HEADER + "job = 3\n", "`job` is a int, not a job"),
        (HEADER + "raise RuntimeError('nope')\n", r"x\.loop\.py:2: RuntimeError: nope"),
        (
            HEADER
            + "define_job(fn_job(lambda c: None, name='a'))\n"
            + "define_job(fn_job(lambda c: None, name='b'))\n",
            r"define_job\(\) was called 2 times \(a, b\)",
        ),
    ],
)
def test_bad_files_name_the_file_and_line(tmp_path: Path, body: str, message: str):
    with pytest.raises(errors.LoopFileError, match=message):
        loopfile.load(write(tmp_path, body))


def test_missing_and_misnamed_files(tmp_path: Path):
    with pytest.raises(errors.LoopFileError, match="no such loop file"):
        loopfile.load(tmp_path / "gone.loop.py")
    with pytest.raises(errors.LoopFileError, match=r"must end in \.loop\.py"):
        loopfile.load(write(tmp_path, "", "plain.py"))


def test_define_job_wins_and_helpers_beside_the_file_import(tmp_path: Path):
    write(
        tmp_path,
        "from loops import fn_job\nSTEP = fn_job(lambda c: None, name='helper-step')\n",
        "helpers.py",
    )
    path = write(
        tmp_path,
        HEADER + "from helpers import STEP\njob = 1\ndefine_job(sequence(STEP, name='root'))\n",
    )
    loaded = loopfile.load(path)
    assert loaded.job.name == "root" and loaded.path == path


async def test_relative_paths_resolve_against_the_file_from_any_directory(
    tmp_path: Path, monkeypatch
):
    folder = tmp_path / "recipes"
    folder.mkdir()
    (folder / "script.json").write_text('{"default": {"text": "scripted answer"}}')
    path = write(
        folder,
        HEADER + "job = agent_job('go', engine='mock', engine_options={'script': 'script.json'})\n",
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    loaded = loopfile.load(os.path.relpath(path, elsewhere))
    result = await run(loaded.job, cwd=elsewhere)
    assert result.status.value == "pass" and result.reason == "scripted answer"
