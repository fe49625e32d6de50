"""``loop run "<prompt>"``: the simplest converge loop, recorded in the local task store.

``loop run X`` dispatches here when X is not a loop file. Until the prompt run lands
(it records a task in the local store and runs it in-process), a prompt is refused
with a one-line error that says no such loop file exists.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from loops import errors


@dataclasses.dataclass(frozen=True, slots=True)
class PromptRunOptions:
    """What ``loop run`` passes to a prompt run.

    Attributes:
        cwd: the working directory.
        engine: the engine name from ``--engine``, if given.
        json_output: print NDJSON events.
        tui: draw the live TUI (``--no-tui`` turns it off).
    """

    cwd: Path
    engine: str | None = None
    json_output: bool = False
    tui: bool = False


def run_prompt(prompt: str, options: PromptRunOptions) -> int:
    """Run ``prompt`` as a converge loop and return the process exit code.

    Raises:
        LoopFileError: prompt runs are not available yet; ``prompt`` names no loop file.
    """
    raise errors.LoopFileError(
        f"no such loop file: {prompt!r} (loop run takes a FILE ending in .loop.py)"
    )
