"""The create lane: the ordinary ``POST /tasks`` served without FastAPI, answering exactly
what the FastAPI route answers for the same body (which still serves everything else)."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from loops import config, errors
from loops.gateway import lane
from loops.gateway.app import create_app
from loops.services.queue import QueueService
from loops.store.memory import MemoryStore

JSON = {"content-type": "application/json"}
#: FastAPI reads this type as JSON too; the lane leaves it to the route
ROUTE_ONLY = {"content-type": "application/merge-patch+json"}
#: what differs between two creates of the same body
VARYING = ("id", "created_at", "updated_at", "run_after")


@pytest.fixture
def lane_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The fields of each create the lane served (the route's are not recorded)."""
    calls: list[dict[str, Any]] = []
    create = lane.create

    async def recorded(gw: Any, scope: Any, fields: dict[str, Any], *args: Any) -> None:
        calls.append(fields)
        await create(gw, scope, fields, *args)

    monkeypatch.setattr(lane, "create", recorded)
    return calls


def comparable(response: httpx.Response) -> tuple[int, Any]:
    body = response.json()
    if response.status_code < 300:
        body = {k: v for k, v in body.items() if k not in VARYING}
    return response.status_code, body


# -- what the lane takes ----------------------------------------------------------------


def test_the_lane_takes_a_json_object_the_model_accepts() -> None:
    headers = [(b"content-type", b"application/json")]
    body = b'{"prompt": "p", "type": "build", "priority": null, "max_attempts": 2}'
    assert lane.accepted_body(headers, body) == {"prompt": "p", "type": "build", "max_attempts": 2}
    for content_type in (b"application/json; charset=utf-8", b"Application/JSON "):
        assert lane.accepted_body([(b"content-type", content_type)], body) is not None
    # a repeated name: the last value, as Python's json module (the route's) reads it
    repeated = b'{"prompt": "first", "prompt": "last"}'
    assert lane.accepted_body(headers, repeated) == {"prompt": "last"}


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        (None, b'{"prompt": "p"}'),  # FastAPI reads no JSON without the type
        (b"application/vnd.loops+json", b'{"prompt": "p"}'),
        (b"application/octet-stream", b'{"prompt": "p"}'),
        (b"application/json", b""),
        (b"application/json", b"{not json"),
        (b"application/json", b'["prompt"]'),
        (b"application/json", b'{"prompt": "p", "priority": NaN}'),
        (b"application/json", b'{"prompt": "p", "max_attempts": 100000000000000000000000}'),
        (b"application/json", '{"prompt": "p"}'.encode("utf-16")),
        (b"application/json", b'\xef\xbb\xbf{"prompt": "p"}'),  # a BOM
        (b"application/json", b'{"prompt": "\\ud800"}'),  # a lone surrogate
        (b"application/json", b'{"prompt": ""}'),
        (b"application/json", b'{"prompt": "p", "colour": "red"}'),
        (b"application/json", b'{"prompt": "p", "priority": 9}'),
    ],
)
def test_the_lane_leaves_any_other_body_to_the_route(
    content_type: bytes | None, body: bytes
) -> None:
    headers = [] if content_type is None else [(b"content-type", content_type)]
    assert lane.accepted_body(headers, body) is None


# -- served by the lane, answered as by the route ---------------------------------------


async def test_an_ordinary_create_is_served_by_the_lane(
    client: httpx.AsyncClient, lane_calls: list[dict[str, Any]]
) -> None:
    by_lane = await client.post("/tasks", json={"prompt": "p", "priority": 2})
    by_route = await client.post("/tasks", json={"prompt": "p", "priority": 2}, headers=ROUTE_ONLY)
    assert lane_calls == [{"prompt": "p", "priority": 2}]
    assert by_lane.status_code == by_route.status_code == 201
    assert by_lane.headers["content-type"] == by_route.headers["content-type"]
    assert comparable(by_lane) == comparable(by_route)
    assert by_route.json()["id"] == by_lane.json()["id"] + 1
    alias = await client.post("/jobs", json={"prompt": "via alias"})
    assert alias.status_code == 201
    assert len(lane_calls) == 2


async def test_a_known_idempotency_key_answers_200_with_the_existing_task_by_the_lane(
    client: httpx.AsyncClient, lane_calls: list[dict[str, Any]]
) -> None:
    first = await client.post("/tasks", json={"prompt": "first", "idempotency_key": "k"})
    again = await client.post("/tasks", json={"prompt": "second", "idempotency_key": "k"})
    by_route = await client.post(
        "/tasks", json={"prompt": "third", "idempotency_key": "k"}, headers=ROUTE_ONLY
    )
    assert len(lane_calls) == 2
    assert (first.status_code, again.status_code, by_route.status_code) == (201, 200, 200)
    assert again.json() == first.json() == by_route.json()
    assert again.json()["prompt"] == "first"


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({}, 422, "prompt is required"),
        ({"prompt": "p", "priority": "urgent"}, 422, "priority: Input should be a valid integer"),
        ({"prompt": "p", "colour": "red"}, 422, "colour is not a known field"),
        ({"prompt": "   "}, 400, "prompt is required: say what the agent should do (--prompt)"),
        ({"prompt": "p", "check": "x" * 10_001}, 413, "check is 10001 characters"),
        ({"prompt": "p", "max_iterations": 2**63}, 400, "max_iterations must be at most"),
    ],
)
async def test_bad_bodies_get_the_routes_error_answers(
    client: httpx.AsyncClient, body: dict[str, Any], status: int, message: str
) -> None:
    sent = await client.post("/tasks", json=body)
    by_route = await client.post("/tasks", json=body, headers=ROUTE_ONLY)
    assert sent.status_code == status
    assert sent.json() == by_route.json()
    assert set(sent.json()) == {"error"}
    assert set(sent.json()["error"]) == {"code", "message"}
    assert message in sent.json()["error"]["message"]


async def test_a_body_in_several_chunks_is_read_whole(client: httpx.AsyncClient) -> None:
    app = client.app  # type: ignore[attr-defined]
    chunks = [b'{"prompt": ', b'"in two"}']
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if chunks:
            chunk = chunks.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}
        await asyncio.sleep(10)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "method": "POST", "path": "/tasks", "raw_path": b"/tasks",
        "root_path": "", "query_string": b"", "http_version": "1.1", "scheme": "http",
        "headers": [(b"host", b"gw"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1), "server": ("gw", 80),
        "asgi": {"version": "3.0"},
    }  # fmt: skip
    await app(scope, receive, send)
    assert sent[0]["status"] == 201
    assert json.loads(sent[1]["body"])["prompt"] == "in two"


async def test_store_failures_in_the_lane_are_503_and_logged(
    client: httpx.AsyncClient,
    service: QueueService,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def unavailable(spec: Any) -> None:
        raise errors.StoreUnavailable("cannot reach the database: connection refused")

    monkeypatch.setattr(service, "create_task", unavailable)
    with caplog.at_level(logging.ERROR, logger="loops.gateway"):
        response = await client.post("/tasks", json={"prompt": "p"})
    assert response.status_code == 503
    assert response.json()["error"] == {
        "code": "store_unavailable",
        "message": "the queue's database is unavailable: cannot reach the database: "
        "connection refused",
    }
    assert any("POST /tasks failed" in r.getMessage() for r in caplog.records)


async def test_unexpected_failures_in_the_lane_are_500_without_traceback(
    client: httpx.AsyncClient,
    service: QueueService,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def explode(spec: Any) -> None:
        raise RuntimeError("kaboom in the store layer")

    monkeypatch.setattr(service, "create_task", explode)
    with caplog.at_level(logging.ERROR, logger="loops.gateway"):
        response = await client.post("/tasks", json={"prompt": "p"})
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    assert "kaboom" not in response.text
    assert any("POST /tasks" in r.getMessage() and r.exc_info for r in caplog.records)


async def test_lane_answers_are_counted_by_route_and_code(
    client: httpx.AsyncClient, lane_calls: list[dict[str, Any]]
) -> None:
    await client.post("/tasks", json={"prompt": "p"})
    await client.post("/jobs", json={"prompt": "p"})
    await client.post("/tasks", json={"prompt": "p", "colour": "red"})
    text = (await client.get("/metrics")).text
    assert len(lane_calls) == 2
    for route, code in (("/tasks", 201), ("/jobs", 201), ("/tasks", 422)):
        line = f'loops_http_requests_total{{code="{code}",method="POST",route="{route}"}} 1.0'
        assert line in text
    assert 'loops_http_request_duration_seconds_count{method="POST",route="/tasks"} 2.0' in text


async def test_with_a_token_the_lane_is_behind_it(make_client: Any) -> None:
    client = await make_client(env={"QUEUE_API_TOKEN": "s3cret"})
    refused = await client.post("/tasks", json={"prompt": "p"})
    assert refused.status_code == 401
    allowed = await client.post(
        "/tasks", json={"prompt": "p"}, headers={"Authorization": "Bearer s3cret"}
    )
    assert allowed.status_code == 201


# -- the same answer for any body -------------------------------------------------------

_FIELDS = ("prompt", "type", "title", "priority", "success", "check", "provider", "model",
           "cwd", "max_iterations", "min_tests", "max_attempts", "colour")  # fmt: skip
_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-3, max_value=7),
    st.sampled_from([2**31, 2**63 - 1, 2**63, 2**64]),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.text(max_size=6),
    st.sampled_from(["", "   ", "3", " 4 ", "x" * 101, "x" * 501]),
    st.lists(st.integers(), max_size=2),
)


@pytest.fixture(scope="module")
def served() -> Iterator[TestClient]:
    """A gateway over a memory store, shared by the examples of a property."""
    store = MemoryStore()
    store.migrate()
    settings_ = config.load_settings(env={})
    app = create_app(QueueService(store, settings_.queue, rng=random.Random(1)), settings_)
    with TestClient(app) as client:
        yield client


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.dictionaries(st.sampled_from(_FIELDS), _VALUES, max_size=5),
    with_prompt=st.booleans(),
)
def test_any_body_gets_the_same_answer_by_the_lane_as_by_the_route(
    served: TestClient, body: dict[str, Any], with_prompt: bool
) -> None:
    if with_prompt:  # else most bodies would only be refused for the missing prompt
        body = {"prompt": "p", **body}
    content = json.dumps(body).encode()
    by_lane = served.post("/tasks", content=content, headers=JSON)
    by_route = served.post("/tasks", content=content, headers=ROUTE_ONLY)
    assert comparable(by_lane) == comparable(by_route)
