"""Where loops keeps its files and branches in a repository.

Inside the working tree (``.loops/``): the consolidated record, committed like any file,
and per-run scratch notes, which loops never commits. Inside the shared git directory
(``<common-dir>/loops/``): the worktrees of isolated nodes and the landing lock, out of
every working tree so ``git status`` never sees them.
"""

from __future__ import annotations

import re
from pathlib import Path

#: the folder loops owns inside a working tree
LOOPS_DIR = ".loops"
#: the consolidated record, relative to the working tree's top
RECORD_PATH = f"{LOOPS_DIR}/record.md"
#: the folder of per-run scratch notes, relative to the working tree's top
SCRATCH_DIR = f"{LOOPS_DIR}/scratch"

#: branch namespace of a running isolated node (deleted after landing or failure)
NODE_BRANCH_PREFIX = "loops/node"
#: branch namespace of work left for review by ``land="branch"`` (never pruned)
REVIEW_BRANCH_PREFIX = "loops/review"
#: branch namespace of passing work that conflicted on landing (never pruned)
CONFLICT_BRANCH_PREFIX = "loops/conflict"

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def slug(text: str) -> str:
    """``text`` made safe as one path or ref component (``ship/parse it`` -> ``ship-parse-it``)."""
    cleaned = _UNSAFE.sub("-", text).strip("-.")
    cleaned = re.sub(r"\.{2,}", ".", cleaned)
    if cleaned.endswith(".lock"):
        cleaned = cleaned[: -len(".lock")] + "-lock"
    return cleaned or "node"


def notes_path(root: Path, run_id: str) -> Path:
    """The scratch notes file of run ``run_id`` in the working tree ``root``."""
    return root / SCRATCH_DIR / f"{slug(run_id)}.md"


def record_path(root: Path) -> Path:
    """The consolidated record file in the working tree ``root``."""
    return root / RECORD_PATH


def loops_git_dir(common_dir: Path) -> Path:
    """The folder loops owns inside a repository's shared git directory."""
    return common_dir / "loops"


def worktrees_dir(common_dir: Path) -> Path:
    """Where the worktrees of isolated nodes are created, one folder per run."""
    return loops_git_dir(common_dir) / "worktrees"


def node_branch(run_id: str, node_path: str) -> str:
    """The temporary branch of an isolated node."""
    return f"{NODE_BRANCH_PREFIX}/{slug(run_id)}/{slug(node_path)}"


def review_branch(run_id: str, node_path: str) -> str:
    """The branch a passing node's work is left on with ``land="branch"``."""
    return f"{REVIEW_BRANCH_PREFIX}/{slug(run_id)}/{slug(node_path)}"


def conflict_branch(run_id: str, node_path: str) -> str:
    """The branch a passing node's work is kept on when landing it conflicted."""
    return f"{CONFLICT_BRANCH_PREFIX}/{slug(run_id)}/{slug(node_path)}"


#: the line added to ``info/exclude`` so agents' own ``git add -A`` skips scratch notes
SCRATCH_EXCLUDE_LINE = f"/{SCRATCH_DIR}/"


def ignore_scratch(common_dir: Path) -> bool:
    """Add the scratch folder to the repository's local ``info/exclude`` (once).

    The exclude file is per clone and never committed, so the user's ``.gitignore`` is
    left alone. Returns whether the line was added.
    """
    exclude = common_dir / "info" / "exclude"
    try:
        text = exclude.read_text(encoding="utf-8") if exclude.is_file() else ""
    except OSError:
        return False
    if SCRATCH_EXCLUDE_LINE in text.splitlines():
        return False
    exclude.parent.mkdir(parents=True, exist_ok=True)
    prefix = "" if not text or text.endswith("\n") else "\n"
    with exclude.open("a", encoding="utf-8") as out:
        out.write(
            f"{prefix}# loops: per-run scratch notes, never committed\n{SCRATCH_EXCLUDE_LINE}\n"
        )
    return True
