"""Graded tasks: load them, create each one's git repository, run its hidden check."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

TASKS_DIR = Path(__file__).resolve().parent / "tasks"
COMMON = "_common"
#: files every task's gates protect (the tests, their selection and their runner)
PROTECTED = ("tests/**", "tests.json", "run_tests.py")
#: wall-clock limit of one hidden check
HIDDEN_TIMEOUT_S = 60.0
GIT_IDENTITY = (
    "-c",
    "user.name=loops-bench",
    "-c",
    "user.email=bench@loops.invalid",
    "-c",
    "commit.gpgsign=false",
)


class TaskError(Exception):
    """A task folder is malformed (the message names the file and the fix)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Task:
    """One graded task.

    Attributes:
        name: the folder name.
        title: one line saying what is wrong.
        prompt: what the working agent is asked.
        persona: the scripted mock agent that plays it offline (see ``personas``).
        min_tests: tests the gate must see passing (``command_succeeds(min_tests=)``).
        root: the task's folder.
    """

    name: str
    title: str
    prompt: str
    persona: str
    min_tests: int
    root: Path

    @property
    def gate_argv(self) -> list[str]:
        """The visible test command, an argv run in the repository."""
        return [sys.executable, "run_tests.py"]

    def files(self) -> dict[str, str]:
        """The repository's initial files: the shared ones, then the task's own."""
        files = _read_tree(TASKS_DIR / COMMON)
        files.update(_read_tree(self.root / "repo"))
        return files

    def overlay(self, kind: str) -> dict[str, str]:
        """The mock agent's edits of one kind (``fix`` or ``wrong``); empty if none."""
        return _read_tree(self.root / "mock" / kind)


def _read_tree(folder: Path) -> dict[str, str]:
    if not folder.is_dir():
        return {}
    return {
        p.relative_to(folder).as_posix(): p.read_text()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def load_task(folder: Path) -> Task:
    """Read ``folder/task.json``.

    Raises:
        TaskError: the file is missing, not JSON, or lacks a field.
    """
    spec_path = folder / "task.json"
    try:
        spec = json.loads(spec_path.read_text())
        return Task(
            name=folder.name,
            title=str(spec["title"]),
            prompt=str(spec["prompt"]),
            persona=str(spec.get("persona", "honest")),
            min_tests=int(spec["min_tests"]),
            root=folder,
        )
    except FileNotFoundError:
        raise TaskError(f"{spec_path} is missing: every task folder needs a task.json") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise TaskError(f"{spec_path}: {exc!r}; needs title, prompt and min_tests") from exc


def load_tasks(names: list[str] | None = None, root: Path = TASKS_DIR) -> list[Task]:
    """The tasks under ``root`` (all, or those named), sorted by name.

    Raises:
        TaskError: a named task does not exist.
    """
    found = {p.name: p for p in root.iterdir() if p.is_dir() and p.name != COMMON}
    wanted = names or sorted(found)
    missing = [n for n in wanted if n not in found]
    if missing:
        raise TaskError(f"unknown task(s) {', '.join(missing)}; known: {', '.join(sorted(found))}")
    return [load_task(found[n]) for n in wanted]


def git(*args: str, cwd: Path) -> str:
    """Run git quietly in ``cwd``; its stdout."""
    result = subprocess.run(
        ["git", *GIT_IDENTITY, *args], cwd=cwd, capture_output=True, text=True, check=True
    )
    return result.stdout


def materialize(task: Task, dest: Path) -> Path:
    """Create the task's repository at ``dest`` with one initial commit; ``dest``."""
    dest.mkdir(parents=True)
    for rel, content in task.files().items():
        path = dest / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    (dest / ".gitignore").write_text("__pycache__/\n.loops/\n")
    git("init", "-q", "-b", "main", cwd=dest)
    git("add", "-A", cwd=dest)
    git("commit", "-q", "-m", f"task: {task.title}", cwd=dest)
    return dest


@dataclasses.dataclass(frozen=True, slots=True)
class HiddenResult:
    """The hidden check's verdict on a final tree."""

    passed: bool
    detail: str


def hidden_check(task: Task, workdir: Path) -> HiddenResult:
    """Run the hidden check on a copy of ``workdir`` (the hidden files never enter it)."""
    with tempfile.TemporaryDirectory(prefix=f"hidden-{task.name}-") as tmp:
        copy = Path(tmp) / "tree"
        shutil.copytree(workdir, copy, ignore=shutil.ignore_patterns(".git", "__pycache__"))
        for rel, content in _read_tree(task.root / "hidden").items():
            (copy / rel).parent.mkdir(parents=True, exist_ok=True)
            (copy / rel).write_text(content)
        env = {**os.environ, "PYTHONPATH": str(copy / "src"), "PYTHONDONTWRITEBYTECODE": "1"}
        try:
            result = subprocess.run(
                [sys.executable, "check.py"],
                cwd=copy,
                env=env,
                capture_output=True,
                text=True,
                timeout=HIDDEN_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            return HiddenResult(False, f"timed out after {HIDDEN_TIMEOUT_S:g}s")
    lines = [ln for ln in (result.stdout + result.stderr).splitlines() if ln.strip()]
    if result.returncode == 0:
        return HiddenResult(True, "hidden check passed")
    return HiddenResult(False, lines[-1][:200] if lines else f"exit {result.returncode}")
