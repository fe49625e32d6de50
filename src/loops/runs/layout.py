"""Where a supervised run's files live: ``<home>/runs/<runId>/`` and the file names."""

from __future__ import annotations

import re
from pathlib import Path

from loops import errors

#: the live state, replaced atomically
STATE_FILE = "state.json"
#: the live tree, budgets, last verdict and outcome, replaced atomically
TREE_FILE = "tree.json"
#: what does not change: identity, process, shape
RUN_FILE = "run.json"
#: every raw event, one JSON object per line
EVENTS_FILE = "events.jsonl"
#: the run's durable checkpoint (what ``loop resume`` resumes from)
CHECKPOINT_FILE = "checkpoint.json"
#: answers to the run's human gates (``loop approve``)
APPROVALS_FILE = "approvals.json"
#: the semantic records, one JSON object per line
SEMANTIC_FILE = "semantic.jsonl"

_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def runs_dir(home: Path) -> Path:
    """The registry's folder under the loops home."""
    return home / "runs"


def check_run_id(run_id: str) -> str:
    """``run_id`` when it is safe as a folder name.

    Raises:
        InputError: it is empty, too long, or holds characters other than letters,
            digits, ``.``, ``_`` and ``-`` (so it can never name a path outside the registry).
    """
    if not _RUN_ID.fullmatch(run_id):
        raise errors.InputError(
            f"invalid run id {run_id!r}; a run id has letters, digits, '.', '_' and '-' "
            "(see `loop list`)"
        )
    return run_id
