"""``loop gateway`` as a real process on loopback: start, serve, wake, stream, stop."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from loops import config
from loops.services.queue import QueueService, task_spec

LOOP = Path(sys.executable).with_name("loop")
START_TIMEOUT_S = 30.0
TOKEN = "e2e-token"


class Gateway:
    """A running ``loop gateway`` process and its URL."""

    def __init__(self, process: subprocess.Popen[str], url: str, lines: queue.Queue[str]) -> None:
        self.process = process
        self.url = url
        self.lines = lines

    def stop(self) -> tuple[int, str]:
        """SIGTERM, then the exit code and the rest of its output."""
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=30)
        rest: list[str] = []
        while True:
            try:
                line = self.lines.get(timeout=5)
            except queue.Empty:
                break
            if line is None:
                break
            rest.append(line)
        return code, "".join(rest)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("QUEUE_", "LOOPS_"))}
    clean["QUEUE_DB_PATH"] = str(tmp_path / "queue.sqlite")
    clean["QUEUE_SQLITE_SYNC"] = "normal"
    return clean


@pytest.fixture
def start_gateway(env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., Gateway]]:
    started: list[tuple[subprocess.Popen[str], threading.Thread]] = []

    def start(*args: str, extra_env: dict[str, str] | None = None) -> Gateway:
        process = subprocess.Popen(
            [str(LOOP), "gateway", "--port", "0", *args],
            env={**env, **(extra_env or {})},
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        lines: queue.Queue[str | None] = queue.Queue()

        def pump() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                lines.put(line)
            lines.put(None)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        started.append((process, reader))
        first = lines.get(timeout=START_TIMEOUT_S)
        assert first is not None and first.startswith(
            "loop gateway: serving the queue on http://127.0.0.1:"
        ), first
        url = first.split(" on ", 1)[1].split(";", 1)[0].split(" ", 1)[0]
        return Gateway(process, url, lines)  # type: ignore[arg-type]

    yield start
    for process, reader in started:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
        reader.join(timeout=30)
        assert process.stdout is not None
        process.stdout.close()


def run_loop(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LOOP), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )


def check_event_stream_is_live(client: httpx.Client) -> None:
    """The stream sends stored events, then one written while it is open."""
    after = client.get("/events", params={"limit": 1}).json()["events"][-1]["id"]
    seen: list[dict[str, object]] = []
    first = client.post("/tasks", json={"prompt": "before the stream"}).json()
    with client.stream("GET", "/events/stream", params={"after": after}) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if not line.startswith("data: "):
                continue
            seen.append(json.loads(line[len("data: ") :]))
            if len(seen) == 1:
                second = client.post("/tasks", json={"prompt": "during the stream"}).json()
            else:
                break
    assert [(e["type"], e["task_id"]) for e in seen] == [
        ("task.created", first["id"]),
        ("task.created", second["id"]),
    ]


def test_serves_wakes_streams_and_stops_on_sigterm(
    start_gateway: Callable[..., Gateway], env: dict[str, str], tmp_path: Path
) -> None:
    gateway = start_gateway()
    with httpx.Client(base_url=gateway.url, timeout=60) as client, ThreadPoolExecutor(2) as pool:
        assert client.get("/healthz").json() == {"status": "ok", "store": "sqlite"}
        created = client.post("/tasks", json={"prompt": "over http"})
        assert created.status_code == 201
        leased = client.post("/jobs/lease", json={"worker": "w1"}).json()
        assert leased["task"]["id"] == created.json()["id"]

        # an idle worker long-polls; another process writes the same database
        waiting = pool.submit(client.post, "/tasks/lease", json={"worker": "w2", "wait_ms": 50_000})
        settings = config.load_settings(env=env, cwd=tmp_path)
        other = QueueService.open(settings)
        try:
            elsewhere = other.create_task(task_spec({"prompt": "from another process"}))
        finally:
            other.close()
        answer = waiting.result(timeout=60)
        assert answer.status_code == 200
        assert answer.json()["task"]["id"] == elsewhere.task.id

        check_event_stream_is_live(client)

        # a second gateway on the same port is refused with one line
        port = gateway.url.rsplit(":", 1)[1]
        busy = run_loop(env, tmp_path, "gateway", "--port", port)
        assert busy.returncode == 2
        assert busy.stderr.startswith(f"error: cannot listen on 127.0.0.1:{port}: ")
        assert len(busy.stderr.strip().splitlines()) == 1

        # a lease still waiting when SIGTERM comes is answered 204 at once
        drained = client.post("/tasks/lease", json={"worker": "w3", "limit": 100})
        assert len(drained.json()["leases"]) == 2  # the two tasks of the stream check
        pending = pool.submit(client.post, "/tasks/lease", json={"worker": "w3", "wait_ms": 50_000})
        while "loops_lease_waiters 1.0" not in client.get("/metrics").text:
            assert not pending.done(), pending.result()
        code, rest = gateway.stop()
        assert pending.result(timeout=60).status_code == 204
    assert code == 0
    assert "loop gateway: stopped" in rest
    assert "Traceback" not in rest


def test_token_auth_and_refusing_a_public_address_without_one(
    start_gateway: Callable[..., Gateway], env: dict[str, str], tmp_path: Path
) -> None:
    public = run_loop(env, tmp_path, "gateway", "--host", "0.0.0.0", "--port", "0")
    assert public.returncode == 2
    assert public.stderr.strip().splitlines() == [
        "error: refusing to listen on 0.0.0.0 without a token: set QUEUE_API_TOKEN "
        "(clients send it as 'Authorization: Bearer <token>'), or bind 127.0.0.1"
    ]
    gateway = start_gateway(extra_env={"QUEUE_API_TOKEN": TOKEN})
    with httpx.Client(base_url=gateway.url, timeout=60) as client:
        assert client.get("/healthz").status_code == 200
        refused = client.get("/tasks")
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "unauthorized"
        allowed = client.get("/tasks", headers={"Authorization": f"Bearer {TOKEN}"})
        assert allowed.json() == {"tasks": []}
    assert gateway.stop()[0] == 0


def _responsibility_tasks(client: httpx.Client) -> list[dict[str, object]]:
    tasks = client.get("/tasks", params={"limit": 100}).json()["tasks"]
    return [t for t in tasks if t["responsibility"] == "triage"]


def _wait_for(predicate: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_gateway_ticks_by_itself_without_loop_tick(
    start_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    (tmp_path / "loops.toml").write_text(
        '[[responsibilities]]\nname = "triage"\nevery = "1s"\nprompt = "triage the inbox"\n'
    )
    gateway = start_gateway("--tick-interval-ms", "60000")
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        # a new responsibility is due at once: the gateway dispatches it on its own
        _wait_for(lambda: len(_responsibility_tasks(client)) == 1)
        # held back while its task is active; due again (every 1 s) once it is done,
        # long before the 60 s interval: the ticker sleeps until the next due time
        leased = client.post("/tasks/lease", json={"worker": "w", "ttl_ms": 60_000}).json()
        client.post(
            f"/tasks/{leased['task']['id']}/complete",
            json={"lease_token": leased["lease"]["token"], "status": "done"},
        ).raise_for_status()
        _wait_for(lambda: len(_responsibility_tasks(client)) == 2)
        ticks = [e for e in client.get("/events", params={"limit": 1000}).json()["events"]
                 if e["type"] == "tick"]  # fmt: skip
    # only the ticks that did something are recorded
    assert ticks and all(e["data"]["dispatched"] == ["triage"] for e in ticks)
    assert gateway.stop()[0] == 0


def test_gateway_with_tick_interval_zero_leaves_ticking_to_loop_tick(
    start_gateway: Callable[..., Gateway], env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "loops.toml").write_text(
        '[[responsibilities]]\nname = "triage"\nevery = "1s"\nprompt = "triage the inbox"\n'
    )
    gateway = start_gateway("--tick-interval-ms", "0")
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        client.get("/healthz").raise_for_status()
        assert _responsibility_tasks(client) == []
        assert run_loop(env, tmp_path, "tick").returncode == 0
        assert len(_responsibility_tasks(client)) == 1
    assert gateway.stop()[0] == 0
