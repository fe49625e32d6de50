"""An agent for ``test_sandboxed_worker``: tries to escape its sandbox and reports."""

from __future__ import annotations

import os
import pathlib
import sys
from collections.abc import Callable


def attempt(fn: Callable[[], object]) -> str:
    try:
        fn()
    except OSError as exc:
        return type(exc).__name__
    return "ok"


sys.stdin.read()
print("inside:", attempt(lambda: pathlib.Path("inside.txt").write_text("x")))
print("outside:", attempt(lambda: pathlib.Path(sys.argv[1], "escaped.txt").write_text("x")))
print("planted:", attempt(lambda: print(pathlib.Path(sys.argv[2]).read_text())))
print("env:", "FAULTS_WORKER_SECRET" in os.environ)
