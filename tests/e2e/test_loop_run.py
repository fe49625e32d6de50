"""`loop run` as a real process: runs a loop file from any directory, NDJSON out, exit codes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
LOOP = Path(sys.executable).parent / "loop"


def test_run_from_another_directory_with_json(tmp_path: Path):
    project = tmp_path / "calc"
    shutil.copytree(EXAMPLES / "converge" / "project", project)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = subprocess.run(
        [
            str(LOOP),
            "run",
            str(EXAMPLES / "converge" / "fix.loop.py"),
            "--cwd",
            str(project),
            "--json",
        ],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert lines[0]["type"] == "run.started" and lines[0]["cwd"] == str(project)
    assert lines[-1]["type"] == "run.finished" and lines[-1]["status"] == "pass"
    assert len({line["run_id"] for line in lines}) == 1


def test_paused_run_exits_3_and_import_stays_light(tmp_path: Path):
    done = subprocess.run(
        [str(LOOP), "run", str(EXAMPLES / "budget.loop.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 3
    assert done.stdout.splitlines()[-1] == "paused: budget of tend exhausted: tokens 1200 of 1000"
    heavy = "('fastapi', 'uvicorn', 'httpx')"
    probe = f"import sys, loops; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
