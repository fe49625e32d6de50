"""``GatewayClient`` against the real gateway served by uvicorn on loopback (SQLite), and
``loop tasks:create --api`` through it."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from click.testing import CliRunner

from loops import config, errors
from loops.cli.main import cli
from loops.client import GatewayClient
from loops.queue.tasks import TaskSpec, TaskStatus
from loops.services.queue import QueueService
from served_gateway import served_in_thread

Serve = Callable[..., AbstractContextManager[tuple[QueueService, str]]]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    """Start a gateway over a fresh SQLite file: ``serve(token=None, **uvicorn_options)``
    is a context manager yielding its service and URL."""
    import contextlib

    from loops.gateway.app import create_app

    services: list[QueueService] = []

    @contextlib.contextmanager
    def start(token: str | None = None, **options: object) -> Iterator[tuple[QueueService, str]]:
        env = {"QUEUE_DB_PATH": str(tmp_path / f"q{len(services)}.sqlite")}
        if token:
            env["QUEUE_API_TOKEN"] = token
        settings = config.load_settings(env=env, cwd=tmp_path)
        service = QueueService.open(settings)
        services.append(service)
        with served_in_thread(create_app(service, settings), **options) as url:
            yield service, url

    yield start
    for service in services:
        service.close()


def test_create_get_and_cancel_a_task_and_a_child(serve: Serve, tmp_path: Path) -> None:
    with serve() as (service, url), GatewayClient(url) as client:
        task = client.create_task({"prompt": "fix it", "type": "fix", "priority": 2})
        assert task == service.get_task(task.id)
        assert (task.type, task.priority, task.status) == ("fix", 2, TaskStatus.QUEUED)
        child = client.create_child(task.id, TaskSpec(prompt="part", cwd=str(tmp_path)))
        assert (child.parent_id, child.depth, child.cwd) == (task.id, 1, str(tmp_path))
        assert client.get_task(str(child.id)) == service.get_task(child.id)
        cancelled = client.cancel_task(task.id, reason="not needed")
        assert cancelled.status is TaskStatus.CANCELLED and cancelled.error == "not needed"
        assert service.get_task(child.id).status is TaskStatus.CANCELLED


def test_an_idempotency_key_answers_the_existing_task(serve: Serve) -> None:
    with serve() as (service, url), GatewayClient(url) as client:
        first, created = client.create({"prompt": "once", "idempotency_key": "k"})
        again, created_again = client.create({"prompt": "once", "idempotency_key": "k"})
        assert (created, created_again) == (True, False)
        assert again.id == first.id and len(service.list_tasks(limit=10)) == 1


def test_errors_are_the_services_own(serve: Serve) -> None:
    with serve() as (_, url), GatewayClient(url) as client:
        with pytest.raises(errors.TaskNotFound, match="no task with id 999"):
            client.get_task(999)
        with pytest.raises(errors.TaskNotFound):
            client.create_child(999, {"prompt": "orphan"})
        with pytest.raises(errors.InputError, match=r"priority.*\(gateway answered 422"):
            client.create_task({"prompt": "p", "priority": 9})
        with pytest.raises(errors.InputError, match="bogus"):
            client.create_task({"prompt": "p", "bogus": 1})
        task = client.create_task({"prompt": "p"})
        client.cancel_task(task.id)
        with pytest.raises(errors.InvalidTransition, match="cancelled"):
            client.cancel_task(task.id)
        with pytest.raises(errors.InputError, match="run_after"):
            client.create_task(TaskSpec(prompt="p", run_after=task.created_at))


def test_a_token_is_sent_and_a_wrong_one_is_a_clear_error(serve: Serve) -> None:
    with serve(token="s3cret") as (_, url):
        with GatewayClient(url, token="s3cret") as client:
            assert client.create_task({"prompt": "p"}).id == 1
        wrong = GatewayClient(url, token="wrong")
        with wrong, pytest.raises(errors.ConfigError) as caught:
            wrong.create_task({"prompt": "p"})
        assert "401" in str(caught.value) and "QUEUE_API_TOKEN" in str(caught.value)
        with GatewayClient(url) as client, pytest.raises(errors.ConfigError, match="401"):
            client.get_task(1)


def test_an_unreachable_gateway_is_gateway_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"  # bound, not listening
    client = GatewayClient(url, timeout_s=5)
    with pytest.raises(errors.GatewayUnavailable, match=f"cannot reach the gateway at {url}"):
        client.create_task({"prompt": "p"})
    with pytest.raises(errors.GatewayUnavailable):
        client.get_task(1)


def test_a_create_after_the_gateway_closed_the_idle_connection_works(serve: Serve) -> None:
    with serve(timeout_keep_alive=1) as (service, url), GatewayClient(url) as client:
        first = client.create_task({"prompt": "before"})
        time.sleep(1.5)  # uvicorn closes the kept connection after 1 s idle
        second = client.create_task({"prompt": "after"})  # no idempotency key
        assert [t.id for t in service.list_tasks(limit=10)] == [second.id, first.id]


def test_one_client_serves_several_threads(serve: Serve) -> None:
    with serve() as (service, url), GatewayClient(url) as client:
        made: list[int] = []

        def produce() -> None:
            for _ in range(10):
                made.append(client.create_task({"prompt": "p"}).id)

        threads = [threading.Thread(target=produce) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert sorted(made) == sorted(t.id for t in service.list_tasks(limit=100))
        assert len(set(made)) == 40


def test_the_cli_creates_through_the_gateway(
    serve: Serve, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("QUEUE_DB_PATH", "QUEUE_DB_URL", "LOOPS_CONFIG", "QUEUE_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    runner = CliRunner()
    with serve(token="tok") as (service, url):
        monkeypatch.setenv("QUEUE_API_TOKEN", "tok")
        created = runner.invoke(cli, ["tasks:create", "--prompt", "p", "--api", url, "--json"])
        assert created.exit_code == 0, created.output
        task = json.loads(created.output)
        assert service.get_task(task["id"]).prompt == "p"
        monkeypatch.setenv("LOOP_API_BASE_URL", url)
        child = runner.invoke(cli, ["tasks:create-child", str(task["id"]), "--prompt", "c",
                                    "--idempotency-key", "c1"])  # fmt: skip
        again = runner.invoke(cli, ["tasks:create-child", str(task["id"]), "--prompt", "c",
                                    "--idempotency-key", "c1"])  # fmt: skip
        assert child.output.startswith("Created task 2 (child of 1)"), child.output
        assert again.output.startswith("Exists (same idempotency key): task 2"), again.output
        monkeypatch.setenv("QUEUE_API_TOKEN", "wrong")
        refused = runner.invoke(cli, ["tasks:create", "--prompt", "p"])
    assert refused.exit_code == 2  # a wrong token is a ConfigError
    lines = refused.output.strip().splitlines()
    assert len(lines) == 1 and "401" in lines[0] and "Traceback" not in refused.output
