"""PostgreSQL restarted under load: gateways recover, nothing lost, nothing done twice.

The test starts its own throwaway cluster (``initdb`` + ``pg_ctl`` from
/usr/lib/postgresql/*/bin, on a free loopback port, as the ``postgres`` user when run as
root), runs a gateway and workers over it, and restarts the server (``pg_ctl restart
-m fast``: every connection is cut) while tasks flow.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from fleet import Fleet, free_port, wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(240)]

BINS = sorted(glob.glob("/usr/lib/postgresql/*/bin"))


def _as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


class Cluster:
    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="loops-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
        self.run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def run(self, tool: str, *args: str) -> None:
        done = subprocess.run(
            _as_postgres([str(self.bindir / tool), *args]),
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, f"{tool} failed: {done.stderr or done.stdout}"

    def ctl(self, action: str, *extra: str) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self.run("pg_ctl", "-D", str(self.data), "-w", "-o", options,
                 "-l", str(self.root / "server.log"), action, *extra)  # fmt: skip

    def close(self) -> None:
        subprocess.run(
            _as_postgres([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                          "stop"]), capture_output=True, timeout=60, check=False,
        )  # fmt: skip
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    if not BINS or (shutil.which("runuser") is None and os.geteuid() == 0):
        message = "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin"
        if os.environ.get("LOOPS_REQUIRE_POSTGRES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    c = Cluster(Path(BINS[-1]))
    c.ctl("start")
    yield c
    c.close()


def test_a_postgres_restart_under_load_loses_and_duplicates_nothing(
    cluster: Cluster, tmp_path: Path
) -> None:
    import psycopg

    fleet = Fleet(tmp_path)
    fleet.env["QUEUE_DB_URL"] = cluster.url
    try:
        fleet.start_gateway()
        ids = fleet.create_tasks(40)
        for _ in range(3):
            fleet.start_worker()

        def done() -> int:
            with psycopg.connect(cluster.url, connect_timeout=3) as conn:
                row = conn.execute("SELECT count(*) FROM tasks WHERE status = 'done'").fetchone()
            return int(row[0]) if row else 0

        wait_until(lambda: done() >= 8, timeout_s=60)
        cluster.ctl("restart", "-m", "fast")  # every connection of every process is cut
        time.sleep(0.5)
        more = fleet.create_tasks(20)  # the gateway takes new work after the restart
        ids += more
        wait_until(lambda: done() == len(ids), timeout_s=150)
        with psycopg.connect(cluster.url) as conn:
            completed = Counter(
                r[0] for r in conn.execute(
                    "SELECT task_id FROM events WHERE type = 'task.completed'")
            )  # fmt: skip
            attempts = dict(conn.execute("SELECT id, attempts FROM tasks").fetchall())
            leased = Counter(
                r[0] for r in conn.execute("SELECT task_id FROM events WHERE type = 'task.leased'")
            )
        assert sorted(attempts) == sorted(ids), "a task was lost or appeared"
        assert all(completed[i] == 1 for i in ids), {i: completed[i] for i in ids}
        assert all(attempts[i] == leased[i] for i in ids)
        assert fleet.gateway is not None and fleet.gateway.poll() is None, fleet.logs()
    finally:
        fleet.close()
