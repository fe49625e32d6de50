"""Which loop files a sandboxed worker imports: only those its agents cannot rewrite.

A loop file is Python the worker imports and runs in its own process, unconfined: its
top level, ``fn_job`` bodies and custom conditions are not agents. The sandbox floor
confines what a loop file starts (:mod:`loops.flow.confinement`), so the file itself
must not come from where a sandboxed agent can write: an agent that rewrote it (in
its task's cwd, or through a task it created with the queue token) would run its own
code in the worker on the next import (a resumed run, a durable dag's node task).

So a worker with a sandbox runs a ``type=loop`` or ``loop-node`` task only when the
loop file lies under one of its trusted loop folders (``loop worker --loop-dir``), and
refuses any task whose cwd overlaps one of them: a sandboxed agent writes only its
task's cwd (and a private ``/tmp``), so none can reach a trusted folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from loops import errors


def check_cwd(cwd: Path, loop_dirs: Sequence[Path]) -> None:
    """Refuse a task whose agents could write into a trusted loop folder.

    Raises:
        ConfigError: ``cwd`` is inside one of ``loop_dirs`` or contains one.
    """
    work = cwd.resolve()
    for folder in loop_dirs:
        trusted = folder.resolve()
        if work.is_relative_to(trusted) or trusted.is_relative_to(work):
            raise errors.ConfigError(
                f"the task's cwd {work} overlaps the trusted loop folder {trusted} "
                "(--loop-dir): its sandboxed agents could rewrite the loop files this worker "
                "imports unconfined; give the task a cwd outside every --loop-dir"
            )


def check_loop_file(path: Path, loop_dirs: Sequence[Path]) -> None:
    """Refuse a loop file outside every trusted loop folder.

    Raises:
        ConfigError: ``path`` lies under none of ``loop_dirs``.
    """
    file = path.resolve()
    if any(file.is_relative_to(folder.resolve()) for folder in loop_dirs):
        return
    where = ", ".join(str(f) for f in loop_dirs) or "none given"
    raise errors.ConfigError(
        f"loop file {file} is not in a trusted loop folder ({where}): a worker with "
        "--sandbox imports loop files unconfined, so it runs only those under --loop-dir, "
        "a folder no task's cwd overlaps; move the file there or start the worker with "
        "--loop-dir FOLDER"
    )
