"""Without psycopg installed, QUEUE_DB_URL fails with the command that fixes it."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import sys
sys.modules["psycopg"] = None  # as if the postgres extra were not installed
sys.modules["psycopg_pool"] = None
from loops import config, errors
from loops.store import open_store
settings = config.load_settings(env={"QUEUE_DB_URL": "postgresql://u@127.0.0.1:1/db"})
try:
    open_store(settings)
except errors.ConfigError as exc:
    print(exc.message)
"""


def test_a_missing_driver_names_the_extra_to_install() -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert "QUEUE_DB_URL selects PostgreSQL" in out
    assert "pip install '.[postgres]'" in out
