"""Errors, auth, body limits, and the routes around tasks (events, artifacts, state...)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from loops import errors
from loops.gateway import auth
from loops.gateway.errors import describe_validation
from loops.services.queue import QueueService

TOKEN = "s3cret-token"


# -- errors ---------------------------------------------------------------------------


async def test_unknown_routes_and_methods_answer_json_errors(client: httpx.AsyncClient) -> None:
    missing = await client.get("/nowhere")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    assert "/nowhere" in missing.json()["error"]["message"]
    wrong = await client.delete("/tasks")
    assert wrong.status_code == 405
    assert wrong.json()["error"]["code"] == "method_not_allowed"


async def test_unexpected_failures_are_500_without_traceback(
    client: httpx.AsyncClient,
    service: QueueService,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def explode(**_: object) -> None:
        raise RuntimeError("kaboom in the store layer")

    monkeypatch.setattr(service, "list_tasks", explode)
    with caplog.at_level(logging.ERROR, logger="loops.gateway"):
        response = await client.get("/tasks")
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    assert "Traceback" not in response.text
    assert "kaboom" not in response.text
    assert any("GET /tasks" in r.getMessage() for r in caplog.records)


async def test_store_failures_are_503_with_a_clear_message(
    client: httpx.AsyncClient, service: QueueService, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unavailable(**_: object) -> None:
        raise errors.StoreUnavailable("cannot open /data/queue.sqlite: disk I/O error")

    monkeypatch.setattr(service, "list_events", unavailable)
    response = await client.get("/healthz")
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "store_unavailable"
    assert error["message"].startswith("the queue's database is unavailable: cannot open")


def test_validation_messages_name_the_field() -> None:
    message = describe_validation(
        [
            {"loc": ("body", "priority"), "type": "less_than_equal", "msg": "Input should be <= 5"},
            {"loc": ("body", "worker"), "type": "missing", "msg": "Field required"},
            {"loc": ("query", "limit"), "type": "greater_than_equal", "msg": "Input >= 1"},
        ]
    )
    assert message == "priority: Input should be <= 5; worker is required; query.limit: Input >= 1"


# -- body limit -----------------------------------------------------------------------


@pytest.fixture
async def small(make_client: Callable[..., Any]) -> httpx.AsyncClient:
    client: httpx.AsyncClient = await make_client(env={"QUEUE_MAX_BODY_BYTES": "200"})
    return client


async def test_a_declared_oversized_body_is_413(small: httpx.AsyncClient) -> None:
    response = await small.post("/tasks", json={"prompt": "x" * 500})
    assert response.status_code == 413
    error = response.json()["error"]
    assert error["code"] == "payload_too_large"
    assert "200 bytes" in error["message"]
    fits = await small.post("/tasks", json={"prompt": "x" * 50})
    assert fits.status_code == 201


async def test_a_chunked_oversized_body_is_413(small: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"prompt": "'
        for _ in range(10):
            yield b"x" * 50
        yield b'"}'

    response = await small.post(
        "/tasks", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"

    async def small_chunks() -> AsyncIterator[bytes]:
        yield b'{"prompt": '
        yield b'"fits"}'

    fits = await small.post(
        "/tasks", content=small_chunks(), headers={"content-type": "application/json"}
    )
    assert fits.status_code == 201
    assert fits.json()["prompt"] == "fits"


async def test_a_long_field_is_413_from_the_service(client: httpx.AsyncClient) -> None:
    response = await client.post("/tasks", json={"prompt": "p", "check": "x" * 20_000})
    assert response.status_code == 413
    assert "check" in response.json()["error"]["message"]


# -- auth -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.5", False),
        ("gateway.example", False),
    ],
)
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert auth.is_loopback(host) is loopback


def test_non_loopback_binding_needs_a_token() -> None:
    auth.check_binding("127.0.0.1", None)
    auth.check_binding("0.0.0.0", TOKEN)
    with pytest.raises(errors.ConfigError, match="QUEUE_API_TOKEN"):
        auth.check_binding("0.0.0.0", None)
    with pytest.raises(errors.ConfigError, match="QUEUE_API_TOKEN"):
        auth.check_binding("10.0.0.1", "")


async def test_with_a_token_every_route_but_healthz_needs_it(
    make_client: Callable[..., Any],
) -> None:
    client: httpx.AsyncClient = await make_client(env={"QUEUE_API_TOKEN": TOKEN})
    assert (await client.get("/healthz")).status_code == 200
    for method, path in (
        ("GET", "/tasks"),
        ("POST", "/tasks"),
        ("GET", "/jobs"),
        ("POST", "/tasks/lease"),
        ("GET", "/events"),
        ("GET", "/metrics"),
        ("GET", "/openapi.json"),
        ("GET", "/docs"),
        ("GET", "/nowhere"),
    ):
        response = await client.request(method, path, json={"prompt": "x"})
        assert response.status_code == 401, path
        assert response.json()["error"]["code"] == "unauthorized"
        assert response.headers["www-authenticate"] == "Bearer"
    wrong = await client.get("/tasks", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert "invalid token" in wrong.json()["error"]["message"]
    basic = await client.get("/tasks", headers={"Authorization": f"Basic {TOKEN}"})
    assert basic.status_code == 401
    right = await client.get("/tasks", headers={"Authorization": f"Bearer {TOKEN}"})
    assert right.status_code == 200
    assert right.json() == {"tasks": []}


# -- events, artifacts, state, steps --------------------------------------------------


async def test_events_page_with_after(client: httpx.AsyncClient) -> None:
    for prompt in ("a", "b", "c"):
        await client.post("/tasks", json={"prompt": prompt})
    latest = (await client.get("/events", params={"limit": 2})).json()["events"]
    assert [e["id"] for e in latest] == [2, 3]
    assert set(latest[0]) == {"id", "ts", "type", "task_id", "data"}
    page = (await client.get("/events", params={"after": 1, "limit": 1})).json()["events"]
    assert [e["id"] for e in page] == [2]
    of_task = (await client.get("/tasks/3/events")).json()["events"]
    assert [e["task_id"] for e in of_task] == [3]
    assert (await client.get("/events", params={"task_id": 99})).status_code == 404
    assert (await client.get("/events", params={"after": "x"})).status_code == 422


async def test_workers_append_events_record_steps_and_keep_state(
    client: httpx.AsyncClient,
) -> None:
    task = (await client.post("/jobs", json={"prompt": "p"})).json()
    base = f"/tasks/{task['id']}"
    appended = await client.post(
        f"{base}/events",
        json={"events": [{"type": "agent.text", "data": {"text": "hi"}}, {"type": "agent.done"}]},
    )
    assert appended.status_code == 201
    assert appended.json() == {"appended": 2}
    types = [e["type"] for e in (await client.get(f"{base}/events")).json()["events"]]
    assert types[-2:] == ["agent.text", "agent.done"]
    steps = await client.post(f"{base}/steps", json={"output": "STEP[build]: DONE note=ok"})
    assert [s["name"] for s in steps.json()["steps"]] == ["build"]
    assert (await client.get(f"{base}/state/session")).json() == {"key": "session", "value": None}
    put = await client.put(f"{base}/state/session", json={"value": {"id": "s-1", "iteration": 2}})
    assert put.status_code == 200
    got = await client.get(f"{base}/state/session")
    assert got.json() == {"key": "session", "value": {"id": "s-1", "iteration": 2}}
    assert (await client.get("/tasks/99/state/session")).status_code == 404
    assert (await client.post("/tasks/99/events", json={"events": []})).status_code == 404
    assert (await client.post("/tasks/99/steps", json={"output": ""})).status_code == 404


async def test_artifacts_upload_list_and_content(client: httpx.AsyncClient) -> None:
    task = (await client.post("/tasks", json={"prompt": "p"})).json()
    diff = b"--- a/x\n+++ b/x\n@@ -1 +1 @@\n-old\n+new\n"
    stored = await client.post(
        f"/tasks/{task['id']}/artifacts", params={"name": "changes", "kind": "diff"}, content=diff
    )
    assert stored.status_code == 201
    artifact = stored.json()
    assert (artifact["task_id"], artifact["kind"], artifact["size"]) == (
        task["id"],
        "diff",
        len(diff),
    )
    listed = (await client.get("/artifacts", params={"task_id": task["id"]})).json()
    assert [a["id"] for a in listed["artifacts"]] == [artifact["id"]]
    assert (await client.get("/artifacts")).json()["artifacts"][0]["name"] == "changes"
    assert (await client.get(f"/artifacts/{artifact['id']}")).json() == artifact
    content = await client.get(f"/artifacts/{artifact['id']}/content")
    assert content.status_code == 200
    assert content.content == diff
    assert content.headers["content-type"].startswith("text/x-diff")
    assert content.headers["etag"] == f'"{artifact["sha256"]}"'
    assert (await client.get("/artifacts/999/content")).status_code == 404
    assert (await client.get("/artifacts/nope/content")).status_code == 404
    assert (await client.get("/artifacts", params={"task_id": 999})).status_code == 404
    bad_kind = await client.post(
        f"/tasks/{task['id']}/artifacts", params={"name": "x", "kind": "photo"}, content=b"x"
    )
    assert bad_kind.status_code == 422


# -- the rest -------------------------------------------------------------------------


async def test_tick_responsibilities_status_and_health(client: httpx.AsyncClient) -> None:
    tick = await client.post("/tick")
    assert tick.status_code == 200
    assert tick.json() == {"reclaimed": 0, "dispatched": []}
    assert (await client.get("/responsibilities")).json() == {"responsibilities": []}
    status = (await client.get("/status")).json()
    assert set(status) == {"counts", "leases", "responsibilities_due", "recent_failures"}
    assert (await client.get("/healthz")).json() == {"status": "ok", "store": "memory"}


async def test_tick_reclaims_expired_leases(client: httpx.AsyncClient, clock: Any) -> None:
    await client.post("/tasks", json={"prompt": "p"})
    await client.post("/tasks/lease", json={"worker": "w", "ttl_ms": 100})
    clock.advance(1000)
    assert (await client.post("/tick")).json()["reclaimed"] == 1


async def test_docs_openapi_and_root(client: httpx.AsyncClient) -> None:
    root = await client.get("/", follow_redirects=False)
    assert root.status_code == 200
    assert root.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in root.headers["content-security-policy"]
    assert "swagger" in (await client.get("/docs")).text.lower()
    spec = (await client.get("/openapi.json")).json()
    lease = spec["paths"]["/tasks/lease"]["post"]
    assert {"200", "204", "409", "422"} <= set(lease["responses"])
    assert "LeaseRequest" in spec["components"]["schemas"]
    assert "ErrorOut" in spec["components"]["schemas"]
    task_schema = spec["components"]["schemas"]["TaskOut"]
    assert {"id", "status", "lease_owner", "usage"} <= set(task_schema["properties"])


BIG = 10**30


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("GET", f"/tasks/{BIG}", None, 404),
        ("GET", f"/tasks/{2**63}", None, 404),
        ("GET", "/tasks/\uff11\uff12", None, 404),  # fullwidth digits are not an id
        ("GET", "/tasks/²", None, 404),
        ("GET", f"/artifacts/{BIG}/content", None, 404),
        ("GET", f"/events?task_id={BIG}", None, 404),
        ("GET", f"/events?after={BIG}", None, 422),
        ("GET", f"/tasks?before={BIG}", None, 422),
        ("POST", "/tasks", {"prompt": "p", "max_attempts": BIG}, 400),
        ("POST", "/tasks", {"prompt": "p", "max_iterations": 2**63}, 400),
        ("POST", f"/tasks/{BIG}/complete", {"lease_token": "t", "status": "done"}, 404),
    ],
)
async def test_out_of_range_numbers_are_clear_errors_not_500(
    client: httpx.AsyncClient, method: str, path: str, body: object, status: int
) -> None:
    response = await client.request(method, path, json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] in ("not_found", "invalid_input")


async def test_huge_usage_and_stream_positions_are_refused(client: httpx.AsyncClient) -> None:
    await client.post("/tasks", json={"prompt": "p"})
    token = (await client.post("/tasks/lease", json={"worker": "w"})).json()["lease"]["token"]
    usage = await client.post(
        "/tasks/1/complete",
        json={"lease_token": token, "status": "done", "usage": {"input_tokens": BIG}},
    )
    assert usage.status_code == 400
    assert "usage.input_tokens must be at most" in usage.json()["error"]["message"]
    stream = await client.get("/events/stream", headers={"Last-Event-ID": str(BIG)})
    assert stream.status_code == 400
    assert "Last-Event-ID must be an event id" in stream.json()["error"]["message"]
