"""Two gateways and three workers over one PostgreSQL database, one gateway killed -9
under load: every task is done, and completed exactly once.

Everything runs as real processes (``loop db:migrate``, ``loop gateway``, ``loop worker``
with a fake agent CLI); the test creates tasks over HTTP through both gateways.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from fakes.db_proxy import Proxy
from loops.queue.tasks import TaskSpec, TaskStatus, utc_now
from loops.store.postgres import PostgresStore

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

LOOP = str(Path(sys.executable).parent / "loop")
FAKE_AGENT = str(Path(__file__).parents[1] / "fakes" / "mode_agent.py")
TASKS = 36


def wait_until(predicate: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what}: not reached within {timeout_s} s")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Fleet:
    def __init__(self, tmp_path: Path, db_url: str) -> None:
        self.root = tmp_path
        self.agents = tmp_path / "agents"
        self.agents.mkdir()
        self.work = tmp_path / "work"
        self.work.mkdir()
        self.env = {
            **os.environ,
            "QUEUE_DB_URL": db_url,
            "WORKER_LEASE_TTL_MS": "1500",
            "WORKER_POLL_MS": "200",
            "WORKER_SHUTDOWN_GRACE_MS": "300",
            "FAKE_AGENT_DIR": str(self.agents),
        }
        self.env.pop("LOOPS_CONFIG", None)
        self.procs: list[subprocess.Popen[bytes]] = []

    def run(self, name: str, *argv: str, **env: str) -> subprocess.Popen[bytes]:
        with (self.root / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(
                [LOOP, *argv], cwd=self.root, env={**self.env, **env}, stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.procs.append(proc)
        return proc

    def gateway(self, name: str, port: int) -> subprocess.Popen[bytes]:
        proc = self.run(name, "gateway", "--port", str(port))
        url = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            assert proc.poll() is None, self.logs()
            try:
                return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(healthy, 30, f"gateway {name} healthy")
        return proc

    def worker(self, name: str, gateway_port: int) -> subprocess.Popen[bytes]:
        return self.run(
            name, "worker", "--provider", "command", "--name", name,
            "--agent-command", f"{sys.executable} {FAKE_AGENT}",
            WORKER_API_BASE_URL=f"http://127.0.0.1:{gateway_port}",
        )  # fmt: skip

    def logs(self) -> str:
        return "\n".join(f"== {p.name}\n{p.read_text()[-3000:]}" for p in self.root.glob("*.log"))

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture
def fleet(tmp_path: Path, pg_url: str, pg_schema: str) -> Iterator[Fleet]:
    separator = "&" if "?" in pg_url else "?"
    f = Fleet(tmp_path, f"{pg_url}{separator}options=-csearch_path%3D{pg_schema}")
    yield f
    f.close()


def test_two_gateways_three_workers_and_a_gateway_killed(
    fleet: Fleet, pg_url: str, pg_schema: str
) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:  # QUEUE_DB_URL's search path
        conn.execute(f"CREATE SCHEMA {pg_schema}")
    migrations = [fleet.run(f"migrate{i}", "db:migrate") for i in range(2)]  # two hosts
    assert [m.wait(timeout=60) for m in migrations] == [0, 0], fleet.logs()
    store = PostgresStore(pg_url, schema=pg_schema)
    try:
        assert store.pending_migrations() == []
        port_a, port_b = free_port(), free_port()
        gateway_a = fleet.gateway("gateway-a", port_a)
        fleet.gateway("gateway-b", port_b)
        for name, port in (("w1", port_a), ("w2", port_b), ("w3", port_a)):
            fleet.worker(name, port)
        created: list[int] = []

        def create(port: int, n: int) -> None:
            for i in range(n):
                response = httpx.post(
                    f"http://127.0.0.1:{port}/tasks",
                    json={"prompt": f"task {len(created)} MODE=quick", "provider": "command",
                          "cwd": str(fleet.work)},
                    timeout=10,
                )  # fmt: skip
                assert response.status_code == 201, response.text
                created.append(response.json()["id"])
                del i

        create(port_a, TASKS // 3)
        create(port_b, TASKS // 3)

        def done_count() -> int:
            return sum(t.status is TaskStatus.DONE for t in store.list_tasks(limit=1000))

        wait_until(lambda: done_count() >= 3, 60, "first tasks done")

        def held_through_a() -> bool:
            return any(
                t.lease_owner in ("w1", "w3") and t.status.is_held
                for t in store.list_tasks(limit=1000)
            )

        wait_until(held_through_a, 30, "a task leased through gateway A")
        gateway_a.send_signal(signal.SIGKILL)  # under load: tasks leased through it run on
        gateway_a.wait()
        create(port_b, TASKS // 6)  # gateway B keeps serving while A is gone
        time.sleep(2.0)  # long enough for leases taken through A to lapse
        fleet.gateway("gateway-a2", port_a)  # A comes back on the same address
        create(port_a, TASKS - len(created))

        wait_until(lambda: done_count() == TASKS, 120, f"all {TASKS} tasks done\n{fleet.logs()}")
        tasks = store.list_tasks(limit=1000)
        assert sorted(t.id for t in tasks) == sorted(created)
        assert {t.status for t in tasks} == {TaskStatus.DONE}
        completed = Counter(
            e.task_id for e in store.list_events(limit=100_000) if e.type == "task.completed"
        )
        assert completed == Counter(dict.fromkeys(created, 1)), "a task completed twice"
        owners = {e.data.get("worker") for e in store.list_events(limit=100_000)
                  if e.type == "task.leased"}  # fmt: skip
        assert {"w1", "w2", "w3"} <= owners, owners
        assert fleet.procs[0].returncode == 0  # the first db:migrate
    finally:
        store.close()


def test_a_gateway_answers_503_while_its_database_is_away_and_recovers(
    fleet: Fleet, pg_url: str, pg_schema: str
) -> None:
    store = PostgresStore(pg_url, schema=pg_schema)
    store.migrate()
    task_id = store.create_task(TaskSpec(prompt="survives"), now=utc_now(), max_attempts=3)[0].id
    store.close()
    parts = conninfo_to_dict(pg_url)
    proxy = Proxy((str(parts.get("host") or "127.0.0.1"), int(parts.get("port") or 5432))).up()
    try:
        user, dbname = parts.get("user") or "postgres", parts.get("dbname") or "postgres"
        via_proxy = (f"postgresql://{user}@127.0.0.1:{proxy.port}/{dbname}"
                     f"?options=-csearch_path%3D{pg_schema}")  # fmt: skip
        port = free_port()
        fleet.env["QUEUE_DB_URL"] = via_proxy
        fleet.gateway("gateway", port)
        url = f"http://127.0.0.1:{port}/tasks/{task_id}"
        assert httpx.get(url, timeout=10).json()["prompt"] == "survives"

        proxy.down()
        response = httpx.get(url, timeout=30)
        assert response.status_code == 503, response.text
        error = response.json()["error"]
        assert error["code"] == "store_unavailable"
        assert f"127.0.0.1:{proxy.port}" in error["message"]

        proxy.up()

        def answers() -> bool:
            return httpx.get(url, timeout=30).status_code == 200

        wait_until(answers, 60, "the gateway recovered")
        created = httpx.post(f"http://127.0.0.1:{port}/tasks", json={"prompt": "after"},
                             timeout=10)  # fmt: skip
        assert created.status_code == 201, created.text
    finally:
        proxy.down()
