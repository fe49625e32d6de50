"""``loop worker --sandbox bwrap``: the agent of a real task cannot write outside its
workspace, cannot read a secret planted beside it, and does not see the worker's other
environment variables; the task's check command cannot reach the network unless
``--check-network shared``."""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import sqlite3
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fleet import LOOP, Fleet, wait_until

if shutil.which("bwrap") is None:
    if os.environ.get("LOOPS_REQUIRE_BWRAP") == "1":
        raise RuntimeError("bwrap is not installed and LOOPS_REQUIRE_BWRAP=1")
    pytest.skip("bwrap is not installed: apt-get install bubblewrap", allow_module_level=True)

pytestmark = pytest.mark.timeout(90)

#: the probe agent lives in the repository (an agent's own installation stays visible;
#: /tmp, where the test's files are, is private inside the sandbox)
AGENT = Path(__file__).with_name("sandbox_probe.py")


def test_a_sandboxed_worker_confines_its_agent(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    outside = Path("/nonexistent")
    try:
        # outside the workspace and not hidden: the read-only root must refuse the write
        outside = Path(tempfile.mkdtemp(prefix="loops-sandbox-", dir="/var/tmp"))
        secret = tmp_path / "secret.txt"
        secret.write_text("hunter2-planted")
        fleet.env["FAULTS_WORKER_SECRET"] = "do-not-pass"
        fleet.start_gateway()
        command = f"{sys.executable} {AGENT} {outside} {secret}"
        fleet.start_worker("--sandbox", "bwrap", agent=command, concurrency=1)
        task = fleet.create("probe the sandbox")
        wait_until(lambda: fleet.status(task) in ("done", "failed", "blocked"), timeout_s=60)
        assert fleet.status(task) == "done", fleet.logs()
        with sqlite3.connect(fleet.db) as conn:
            texts = " ".join(r[0] for r in conn.execute(
                "SELECT data FROM events WHERE task_id = ? AND type = 'agent.text'", (task,)
            ))  # fmt: skip
        assert "inside: ok" in texts
        assert "outside: OSError" in texts  # EROFS
        assert "planted: FileNotFoundError" in texts and "hunter2-planted" not in texts
        assert "env: False" in texts
        assert (fleet.work / "inside.txt").exists()
        assert not (outside / "escaped.txt").exists()
    finally:
        fleet.close()
        shutil.rmtree(outside, ignore_errors=True)


def test_an_unknown_sandbox_is_refused_before_the_worker_starts(tmp_path: Path) -> None:
    import subprocess

    done = subprocess.run(
        [LOOP, "worker", "--sandbox", "docker"], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2
    assert "docker" in done.stderr and "Traceback" not in done.stderr


def test_loop_run_with_a_sandbox_confines_the_agent(tmp_path: Path) -> None:
    import subprocess

    work = tmp_path / "work"
    work.mkdir()
    outside = Path(tempfile.mkdtemp(prefix="loops-sandbox-", dir="/var/tmp"))
    secret = tmp_path / "secret.txt"
    secret.write_text("hunter2-planted")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QUEUE_", "LOOPS_"))}
    env |= {"QUEUE_DB_PATH": str(tmp_path / "q.sqlite"), "LOOPS_HOME": str(tmp_path / "home")}
    try:
        done = subprocess.run(
            [LOOP, "run", "probe", "--provider", "command", "--sandbox", "bwrap", "--no-tui",
             "--agent-command", f"{sys.executable} {AGENT} {outside} {secret}"],
            cwd=work, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        shutil.rmtree(outside, ignore_errors=True)
    assert done.returncode == 0, done.stderr + done.stdout
    assert "outside: OSError" in done.stdout
    assert "planted: FileNotFoundError" in done.stdout
    assert "hunter2" not in done.stdout
    assert (work / "inside.txt").exists()


def _connect_check(port: int) -> str:
    """A task's check command that passes only when it reaches ``port`` on the host."""
    code = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=5).close()"
    return shlex.join([sys.executable, "-c", code])


@pytest.fixture
def host_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


def test_a_sandboxed_workers_check_cannot_reach_the_network(tmp_path: Path, host_port: int):
    fleet = Fleet(tmp_path)
    try:
        fleet.start_gateway()
        fleet.start_worker("--sandbox", "bwrap", concurrency=1)
        task = fleet.create("try the network", check=_connect_check(host_port), max_iterations=1)
        wait_until(lambda: fleet.status(task) in ("done", "failed", "blocked"), timeout_s=60)
        with sqlite3.connect(fleet.db) as conn:
            (error,) = conn.execute("SELECT error FROM tasks WHERE id = ?", (task,)).fetchone()
        assert fleet.status(task) == "failed", fleet.logs()
        assert "ConnectionRefusedError" in error, error
        assert "(ran under bwrap, network cut off)" in error
    finally:
        fleet.close()


def test_loop_run_check_network_shared_lets_the_check_reach_the_host(
    tmp_path: Path, host_port: int
) -> None:
    import subprocess

    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QUEUE_", "LOOPS_"))}
    env |= {"QUEUE_DB_PATH": str(tmp_path / "q.sqlite"), "LOOPS_HOME": str(tmp_path / "home")}
    argv = [LOOP, "run", "reach the host", "--provider", "command", "--no-tui",
            "--agent-command", "cat", "--sandbox", "bwrap",
            "--check", _connect_check(host_port), "--max-iterations", "1"]  # fmt: skip
    cut = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=60)
    assert cut.returncode == 1, cut.stderr + cut.stdout
    assert "network cut off" in cut.stdout
    assert "(it runs sandboxed, without network access)" in cut.stdout  # the agent was told
    shared = subprocess.run(
        [*argv, "--check-network", "shared"],
        cwd=work, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert shared.returncode == 0, shared.stderr + shared.stdout
    assert "without network access" not in shared.stdout


def _events(fleet: Fleet, task: int, kind: str) -> list[str]:
    """The ``data`` of the task's events of type ``kind`` (JSON text), oldest first."""
    with sqlite3.connect(fleet.db) as conn:
        rows = conn.execute(
            "SELECT data FROM events WHERE task_id = ? AND type = ? ORDER BY id", (task, kind)
        )
        return [row[0] for row in rows]


#: a loop file: one agent turn (the worker's probe agent) gated on reaching the host;
#: ``ASKS`` is what its gate asks for beyond a plain command
PROBE_LOOP = """
import sys
from loops import agent_job, command_succeeds, loop

code = "import socket; socket.create_connection(('127.0.0.1', {port}), timeout=5).close()"
job = loop(
    name="probe",
    body=agent_job("probe the sandbox"),
    until=command_succeeds(sys.executable, ["-c", code]{asks}),
    max=1,
)
"""


def test_a_loop_task_on_a_sandboxed_worker_runs_its_agent_and_gate_confined(
    tmp_path: Path, host_port: int
) -> None:
    fleet = Fleet(tmp_path)
    outside = Path("/nonexistent")
    try:
        outside = Path(tempfile.mkdtemp(prefix="loops-sandbox-", dir="/var/tmp"))
        secret = tmp_path / "secret.txt"
        secret.write_text("hunter2-planted")
        trusted = tmp_path / "loops"  # where the worker's loop files live, outside any cwd
        trusted.mkdir()
        plain = PROBE_LOOP.format(port=host_port, asks="")
        (trusted / "plain.loop.py").write_text(plain)
        # the loop file asks for the network its worker's operator cut: held to the floor
        asks = PROBE_LOOP.format(port=host_port, asks=', sandbox="bwrap", network=True')
        (trusted / "asks.loop.py").write_text(asks)
        fleet.start_gateway()
        command = f"{sys.executable} {AGENT} {outside} {secret}"
        sandbox = ("--sandbox", "bwrap", "--loop-dir", str(trusted))
        fleet.start_worker(*sandbox, agent=command, concurrency=1)
        tasks = [
            fleet.create(str(trusted / f"{n}.loop.py"), type="loop") for n in ("plain", "asks")
        ]
        for task in tasks:
            wait_until(lambda t=task: fleet.status(t) in ("done", "failed", "blocked"), 60)
            assert fleet.status(task) == "failed", fleet.logs()  # its gate cannot pass
            texts = " ".join(_events(fleet, task, "agent.text"))
            assert "inside: ok" in texts
            assert "outside: OSError" in texts  # EROFS
            assert "planted: FileNotFoundError" in texts and "hunter2-planted" not in texts
            assert "env: False" in texts
            with sqlite3.connect(fleet.db) as conn:
                (error,) = conn.execute("SELECT error FROM tasks WHERE id = ?", (task,)).fetchone()
            assert "ConnectionRefusedError" in error and "network cut off" in error, error
        assert not (outside / "escaped.txt").exists()
        assert _events(fleet, tasks[0], "sandbox.floor") == []
        (override,) = _events(fleet, tasks[1], "sandbox.floor")
        assert "network shared (the floor cuts it off)" in override
        assert "the worker's sandbox floor overrode: network shared" in error
        assert "asked for a weaker sandbox than the run's floor" in fleet.logs()  # logged
    finally:
        fleet.close()
        shutil.rmtree(outside, ignore_errors=True)


#: a loop file whose durable dag's one node (a child ``loop-node`` task) is the probe
NODE_LOOP = """
import sys
from loops import agent_job, command_succeeds, dag, loop

code = "import socket; socket.create_connection(('127.0.0.1', {port}), timeout=5).close()"
gate = command_succeeds(sys.executable, ["-c", code], sandbox="bwrap", network=True)
job = dag(
    name="ship",
    nodes={{"probe": loop(name="probe", body=agent_job("probe"), until=gate, max=1)}},
    durable=True,
)
"""


def test_a_dag_node_task_on_a_sandboxed_worker_is_confined_too(
    tmp_path: Path, host_port: int
) -> None:
    fleet = Fleet(tmp_path)
    outside = Path("/nonexistent")
    try:
        outside = Path(tempfile.mkdtemp(prefix="loops-sandbox-", dir="/var/tmp"))
        secret = tmp_path / "secret.txt"
        secret.write_text("hunter2-planted")
        trusted = tmp_path / "loops"
        trusted.mkdir()
        (trusted / "ship.loop.py").write_text(NODE_LOOP.format(port=host_port))
        fleet.start_gateway()
        command = f"{sys.executable} {AGENT} {outside} {secret}"
        sandbox = ("--sandbox", "bwrap", "--loop-dir", str(trusted))
        fleet.start_worker(*sandbox, agent=command, concurrency=1)
        parent = fleet.create(str(trusted / "ship.loop.py"), type="loop")
        wait_until(lambda: fleet.status(parent) in ("done", "failed", "blocked"), timeout_s=60)
        with sqlite3.connect(fleet.db) as conn:
            (child,) = [row[0] for row in conn.execute(
                "SELECT id FROM tasks WHERE parent_id = ? AND type = 'loop-node'", (parent,)
            )]  # fmt: skip
        assert fleet.status(parent) == "failed", fleet.logs()  # its node's gate failed
        texts = " ".join(_events(fleet, child, "agent.text"))
        assert "outside: OSError" in texts
        assert "planted: FileNotFoundError" in texts and "hunter2-planted" not in texts
        verdicts = " ".join(_events(fleet, child, "verdict"))
        assert "ConnectionRefusedError" in verdicts and "network cut off" in verdicts
        assert len(_events(fleet, child, "sandbox.floor")) == 1
        assert not (outside / "escaped.txt").exists()
    finally:
        fleet.close()
        shutil.rmtree(outside, ignore_errors=True)
