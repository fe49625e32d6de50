"""SQLite under hostile conditions: locked by another process, read-only, disk full.

Each fault is real: another process holds ``BEGIN EXCLUSIVE``; the database lives on a
small tmpfs that is remounted read-only or filled to the last byte. The CLI must answer
with one clear line (no traceback) naming the condition, the file must pass
``PRAGMA integrity_check``, and the same command must work once the condition clears.

Mounting needs root (CAP_SYS_ADMIN); elsewhere the read-only and disk-full tests are
skipped with that reason, and the lock test still runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fleet import LOOP

from loops import errors
from loops.services.queue import task_spec
from loops.store.sqlite import SqliteStore

pytestmark = pytest.mark.timeout(60)

HOLD_LOCK = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
conn.execute("INSERT INTO state (task_id, key, value, updated_at) VALUES (0, 'x', '1', 0)")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("ROLLBACK")
"""


def integrity(db: Path) -> str:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


def cli(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QUEUE_", "LOOPS_"))}
    env["QUEUE_DB_PATH"] = str(db)
    return subprocess.run(
        [LOOP, *args], env=env, cwd=db.parent.parent, capture_output=True, text=True, timeout=30
    )


def create(db: Path, prompt: str = "do it") -> subprocess.CompletedProcess[str]:
    return cli(db, "tasks:create", "--prompt", prompt, "--json")


def assert_clear_error(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr + result.stdout
    text = result.stderr.lower()
    assert any(w in text for w in words), result.stderr


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs mounted under ``tmp_path`` (skips where mounting is not allowed)."""
    mount = tmp_path / "fs"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); needs root")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_database_locked_by_another_process_is_a_clear_error_then_recovers(
    tmp_path: Path,
) -> None:
    db = tmp_path / "data" / "queue.sqlite"
    assert create(db).returncode == 0
    store = SqliteStore(db, busy_timeout_ms=300)
    with subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        try:
            assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
            with pytest.raises(errors.StoreLocked, match="another process held the write lock"):
                store.create_task(task_spec({"prompt": "blocked"}), now=_now(), max_attempts=3)
            assert holder.stdin is not None
            holder.stdin.write("\n")
            holder.stdin.flush()
            assert holder.wait(timeout=10) == 0
            task, created = store.create_task(
                task_spec({"prompt": "free"}), now=_now(), max_attempts=3
            )
            assert created and task.prompt == "free"
        finally:
            store.close()
            if holder.poll() is None:
                holder.kill()
    assert integrity(db) == "ok"


def test_a_read_only_database_is_a_clear_error_then_recovers(tmpfs: Path) -> None:
    db = tmpfs / "data" / "queue.sqlite"
    assert create(db, "before").returncode == 0
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    try:
        assert_clear_error(create(db, "while read-only"), "read-only", "readonly")
        reading = cli(db, "tasks:list", "--json")
        assert "Traceback" not in reading.stderr
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(tmpfs)], check=True)
    assert integrity(db) == "ok"
    assert create(db, "after").returncode == 0, "no recovery once writable again"
    listed = json.loads(cli(db, "tasks:list", "--json").stdout)
    prompts = [t["prompt"] for t in listed]
    assert prompts == ["after", "before"]


def test_a_full_disk_is_a_clear_error_then_recovers(tmpfs: Path) -> None:
    db = tmpfs / "data" / "queue.sqlite"
    assert create(db, "before").returncode == 0
    filler = tmpfs / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * 4096)
    finally:
        os.close(fd)
    big = "x" * 100_000  # more than the few bytes left
    assert_clear_error(create(db, big), "full")
    filler.unlink()  # (checking integrity needs a few bytes for the WAL index too)
    assert integrity(db) == "ok"
    done = create(db, big)
    assert done.returncode == 0, done.stderr
    with contextlib.closing(sqlite3.connect(db)) as conn:
        count = conn.execute("SELECT count(*) FROM tasks").fetchone()[0]
    assert count == 2
    assert integrity(db) == "ok"


def _now() -> datetime:
    return datetime.now(UTC)
