"""The gateway's heavy imports stay out of ``import loops`` and the CLI's start-up."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("fastapi", "starlette", "uvicorn", "prometheus_client", "pydantic")


def test_cli_start_up_does_not_import_the_web_stack() -> None:
    code = (
        "import sys, loops, loops.cli.main\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert loaded.stdout.strip() == ""
