"""Webhook notifications against a real HTTP receiver on loopback."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from loops import config, errors, notifications
from loops.gateway.app import create_app
from loops.gateway.notifier import Notifier
from loops.notifications import NotifyTarget
from loops.services.queue import QueueService, task_spec

SECRET = "s3cret"


class Receiver:
    """A loopback HTTP server answering from a script of statuses (then 200)."""

    def __init__(
        self, statuses: list[int] | None = None, gate: threading.Event | None = None
    ) -> None:
        self.statuses = list(statuses or [])
        self.gate = gate
        self.arrived = 0
        self.received: list[tuple[dict[str, str], bytes, int]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.arrived += 1
                if receiver.gate is not None:
                    receiver.gate.wait(timeout=30)
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                receiver.received.append((dict(self.headers), body, status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[QueueService]:
    settings = config.load_settings(
        env={"QUEUE_DB_PATH": str(tmp_path / "q.sqlite"), "QUEUE_SQLITE_SYNC": "normal"},
        cwd=tmp_path,
    )
    svc = QueueService.open(settings)
    yield svc
    svc.close()


def finish(service: QueueService, status: str, **fields: Any) -> int:
    task = service.create_task(task_spec({"prompt": f"a task to end {status}"})).task
    leased = service.lease_task(task.id, worker="w1", ttl_ms=60_000)
    service.complete(task.id, lease_token=leased.lease.token, status=status, **fields)
    return task.id


async def wait_for(predicate: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_signed_notifications_only_for_the_kinds_asked(
    service: QueueService, receiver: Receiver
) -> None:
    target = NotifyTarget(receiver.url, frozenset({"task.failed", "run.paused"}), SECRET)
    notifier = Notifier(service, [target], poll_interval_s=0.02)
    await notifier.start()
    try:
        finish(service, "done")  # not asked for
        failed = finish(service, "failed", error="gate not met")
        service.append_event("run.finished", task_id=failed, data={"status": "paused"})
        service.append_event("run.finished", task_id=failed, data={"status": "pass"})
        await wait_for(lambda: len(receiver.received) >= 2)
        await asyncio.sleep(0.2)  # nothing else comes
    finally:
        await notifier.stop()
    # each notification is delivered on its own, so they may arrive in any order
    by_kind = {h["X-Loops-Event"]: (h, body) for h, body, _ in receiver.received}
    assert sorted(by_kind) == ["run.paused", "task.failed"] and len(receiver.received) == 2
    headers, body = by_kind["task.failed"]
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert headers["X-Loops-Signature"] == expected
    assert headers["Content-Type"] == "application/json"
    sent = json.loads(body)
    assert sent["kind"] == "task.failed"
    assert sent["task"]["id"] == failed and sent["task"]["error"] == "gate not met"
    assert sent["event"]["type"] == "task.failed"
    assert headers["X-Loops-Delivery"] == str(sent["event"]["id"])


async def test_retries_with_backoff_then_delivers(service: QueueService) -> None:
    flaky = Receiver(statuses=[503, 500])
    delays: list[float] = []

    async def sleep(seconds: float) -> None:
        if seconds != 0.02:
            delays.append(seconds)
        await asyncio.sleep(0.001)

    notifier = Notifier(
        service, [NotifyTarget(flaky.url, frozenset({"task.blocked"}))],
        poll_interval_s=0.02, backoff_s=0.5, sleep=sleep,
    )  # fmt: skip
    await notifier.start()
    try:
        finish(service, "blocked", error="needs a human")
        await wait_for(lambda: notifier.delivered == 1)
    finally:
        await notifier.stop()
        flaky.close()
    assert [status for _, _, status in flaky.received] == [503, 500, 200]
    assert delays == [0.5, 1.0]
    deliveries = {h["X-Loops-Delivery"] for h, _, _ in flaky.received}
    assert len(deliveries) == 1  # the same delivery id on every retry
    assert "X-Loops-Signature" not in flaky.received[0][0]


async def test_a_failing_receiver_is_logged_as_an_event(service: QueueService) -> None:
    broken = Receiver(statuses=[500] * 10)
    notifier = Notifier(
        service, [NotifyTarget(broken.url, frozenset({"task.failed"}))],
        poll_interval_s=0.02, max_attempts=3, backoff_s=0.01,
    )  # fmt: skip
    await notifier.start()
    try:
        task_id = finish(service, "failed", error="boom")
        await wait_for(lambda: notifier.failed == 1)
    finally:
        await notifier.stop()
        broken.close()
    assert len(broken.received) == 3
    logged = [e for e in service.list_events(task_id=task_id) if e.type == "notify.failed"]
    assert len(logged) == 1
    assert logged[0].data == {
        "url": broken.url, "kind": "task.failed", "event_id": logged[0].data["event_id"],
        "attempts": 3, "error": "HTTP 500",
    }  # fmt: skip


async def test_unreachable_receiver_gives_up_after_a_client_error(
    service: QueueService, receiver: Receiver
) -> None:
    receiver.statuses = [404]
    notifier = Notifier(
        service, [NotifyTarget(receiver.url, frozenset({"task.failed"}))], poll_interval_s=0.02
    )
    await notifier.start()
    try:
        finish(service, "failed", error="x")
        await wait_for(lambda: notifier.failed == 1)
    finally:
        await notifier.stop()
    assert len(receiver.received) == 1  # a 404 is not retried


async def test_a_slow_receiver_never_blocks_the_gateway(
    service: QueueService, tmp_path: Path
) -> None:
    gate = threading.Event()  # the receiver answers nothing until the gate opens
    slow = Receiver(gate=gate)
    settings = config.load_settings(env={}, cwd=tmp_path)
    settings = dataclasses.replace(
        settings, notify=(NotifyTarget(slow.url, frozenset(notifications.NOTIFY_KINDS)),)
    )
    app = create_app(service, settings)
    assert isinstance(app.state.notifier, Notifier)
    lifespan = app.router.lifespan_context(app)
    await lifespan.__aenter__()
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")
    try:
        app.state.notifier.poll_interval_s = 0.02
        for _ in range(3):
            task = (await client.post("/tasks", json={"prompt": "p"})).json()
            lease = (await client.post(f"/tasks/{task['id']}/lease", json={"worker": "w"})).json()
            done = await client.post(
                f"/tasks/{task['id']}/complete",
                json={"lease_token": lease["lease"]["token"], "status": "done"},
            )
            assert done.status_code == 200
        # every completion was answered while the receiver held its requests
        await wait_for(lambda: slow.arrived == 3)
        assert slow.received == []
        gate.set()
        await wait_for(lambda: len(slow.received) == 3)
    finally:
        await client.aclose()
        gate.set()
        await lifespan.__aexit__(None, None, None)
        slow.close()


def test_config_reads_notify_tables(tmp_path: Path) -> None:
    (tmp_path / "loops.toml").write_text(
        '[[notify]]\nurl = "http://127.0.0.1:9/hook"\nevents = ["task.done"]\n'
        'secret_env = "HOOK_SECRET"\n\n[[notify]]\nurl = "https://example.org/x"\n'
    )
    settings = config.load_settings(env={"HOOK_SECRET": "k"}, cwd=tmp_path)
    first, second = settings.notify
    assert (first.url, first.kinds, first.secret) == (
        "http://127.0.0.1:9/hook", frozenset({"task.done"}), "k",
    )  # fmt: skip
    assert second.kinds == frozenset(notifications.NOTIFY_KINDS) and second.secret is None


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[[notify]]\nurl = "ftp://x"\n', "needs url"),
        ('[[notify]]\nurl = "http://x"\nevents = ["task.exploded"]\n', "unknown event"),
        ('[[notify]]\nurl = "http://x"\nsecret_env = 3\n', "must name an environment variable"),
        ('[[notify]]\nurl = "http://x"\nhmac = "k"\n', "unknown key"),
        ('notify = "http://x"\n', "[[notify]] tables"),
    ],
)
def test_config_refuses_bad_notify_tables(tmp_path: Path, toml: str, message: str) -> None:
    (tmp_path / "loops.toml").write_text(toml)
    with pytest.raises(errors.ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        config.load_settings(env={}, cwd=tmp_path)


def test_an_unset_secret_env_loads_and_the_notifier_refuses_it(
    tmp_path: Path, service: QueueService
) -> None:
    (tmp_path / "loops.toml").write_text('[[notify]]\nurl = "http://x"\nsecret_env = "NOPE"\n')
    settings = config.load_settings(env={}, cwd=tmp_path)  # no command fails for it
    (target,) = settings.notify
    assert (target.secret, target.unset_secret_env) == (None, "NOPE")
    with pytest.raises(errors.ConfigError, match="secret_env names NOPE, which is not set"):
        create_app(service, settings)
