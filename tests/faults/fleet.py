"""A real fleet for fault injection: one ``loop gateway`` process, several ``loop worker``
processes, and the SQLite file they share, read back directly to check the timeline.

The process helpers (``LOOP``, ``free_port``, ``wait_until``) are the e2e suite's.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
from collections import Counter
from pathlib import Path

import httpx

from e2e.test_worker_e2e import LOOP, free_port, wait_until

__all__ = ["Fleet", "Ledger", "free_port", "wait_until"]

#: a quick agent: reads nothing, works a little, answers one line
QUICK_AGENT = "sh -c 'sleep 0.05; echo done'"


class Ledger:
    """What the events table and the tasks table say about every task."""

    def __init__(self, db: Path) -> None:
        with contextlib.closing(sqlite3.connect(db, timeout=30)) as conn:
            self.statuses = dict(conn.execute("SELECT id, status FROM tasks").fetchall())
            self.attempts = dict(conn.execute("SELECT id, attempts FROM tasks").fetchall())
            rows = conn.execute("SELECT task_id, type FROM events WHERE task_id IS NOT NULL")
            self.events: Counter[tuple[int, str]] = Counter(rows.fetchall())
            self.integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]

    def count(self, task_id: int, kind: str) -> int:
        """How many events of ``kind`` the task has."""
        return self.events[(task_id, kind)]


class Fleet:
    """A gateway and workers over one SQLite file under ``root``."""

    def __init__(self, root: Path, *, lease_ttl_ms: int = 1000) -> None:
        self.root = root
        self.db = root / "queue.sqlite"
        self.work = root / "work"
        self.work.mkdir()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("QUEUE_", "LOOPS_"))}
        self.env = {
            **clean,
            "QUEUE_DB_PATH": str(self.db),
            "QUEUE_SQLITE_SYNC": "normal",
            "WORKER_API_BASE_URL": self.url,
            "WORKER_LEASE_TTL_MS": str(lease_ttl_ms),
            "WORKER_POLL_MS": "100",
            "WORKER_SHUTDOWN_GRACE_MS": "300",
        }
        self.gateway: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self.names: list[str] = []
        self.started = 0
        self.created = 0
        self.http = httpx.Client(base_url=self.url, timeout=30)

    def start_gateway(self) -> None:
        """Start (or restart) the gateway on the fleet's port and wait until it answers."""
        with (self.root / "gateway.log").open("ab") as log:
            self.gateway = subprocess.Popen(
                [LOOP, "gateway", "--port", str(self.port)],
                cwd=self.root, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        wait_until(self.healthy, timeout_s=30)

    def healthy(self) -> bool:
        """Whether the gateway answers ``/healthz``."""
        try:
            return self.http.get("/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def start_worker(self, *args: str, agent: str = QUICK_AGENT, concurrency: int = 2) -> int:
        """Start one worker (``args``: more flags); returns its index in :attr:`workers`."""
        argv = [LOOP, "worker", "--provider", "command", "--agent-command", agent,
                "--concurrency", str(concurrency), "--name", f"w{self.started}", *args]  # fmt: skip
        with (self.root / f"worker{self.started}.log").open("wb") as log:
            proc = subprocess.Popen(
                argv, cwd=self.root, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        self.names.append(f"w{self.started}")
        self.started += 1
        self.workers.append(proc)
        return len(self.workers) - 1

    def kill_worker(self, index: int) -> None:
        """kill -9 one worker (its agents, in their own groups, are left to finish)."""
        proc = self.workers[index]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def kill_gateway(self) -> None:
        """kill -9 the gateway."""
        assert self.gateway is not None
        self.gateway.send_signal(signal.SIGKILL)
        self.gateway.wait(timeout=10)

    def create_tasks(self, count: int, *, max_attempts: int = 50) -> list[int]:
        """Create ``count`` tasks through the gateway; returns their ids."""
        ids = []
        for n in range(self.created, self.created + count):
            body = {"prompt": f"task {n}", "provider": "command", "cwd": str(self.work),
                    "max_attempts": max_attempts, "idempotency_key": f"fault-{n}"}  # fmt: skip
            response = self.http.post("/tasks", json=body)
            assert response.status_code in (200, 201), response.text
            ids.append(int(response.json()["id"]))
        self.created += count
        return ids

    def create(self, prompt: str, **fields: object) -> int:
        """Create one task through the gateway; returns its id."""
        body = {"prompt": prompt, "provider": "command", "cwd": str(self.work), **fields}
        response = self.http.post("/tasks", json=body)
        assert response.status_code in (200, 201), response.text
        return int(response.json()["id"])

    def status(self, task_id: int) -> str:
        """A task's status, read from the file."""
        with contextlib.closing(sqlite3.connect(self.db, timeout=30)) as conn:
            row = conn.execute("SELECT status FROM tasks WHERE id = ?", (task_id,)).fetchone()
        return str(row[0])

    def done_count(self) -> int:
        """How many tasks are done (read from the file, not the gateway)."""
        with contextlib.closing(sqlite3.connect(self.db, timeout=30)) as conn:
            return int(conn.execute("SELECT count(*) FROM tasks WHERE status='done'").fetchone()[0])

    def busy_workers(self) -> list[int]:
        """Indexes of live workers that hold a lease right now."""
        with contextlib.closing(sqlite3.connect(self.db, timeout=30)) as conn:
            rows = conn.execute(
                "SELECT DISTINCT lease_owner FROM tasks WHERE status IN ('leased', 'running')"
            ).fetchall()
        owners = {row[0] for row in rows}
        return [
            i
            for i, (proc, name) in enumerate(zip(self.workers, self.names, strict=True))
            if name in owners and proc.poll() is None
        ]

    def replace_worker(self, index: int) -> None:
        """Start a new worker in the place of a dead one."""
        self.start_worker()
        self.workers[index] = self.workers.pop()
        self.names[index] = self.names.pop()

    def logs(self) -> str:
        """Every process's output, for failure messages."""
        return "\n".join(p.read_text(errors="replace")[-4000:] for p in self.root.glob("*.log"))

    def close(self) -> None:
        """Stop every process (SIGKILL: the test is over)."""
        for proc in [*self.workers, *([self.gateway] if self.gateway else [])]:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        self.http.close()
