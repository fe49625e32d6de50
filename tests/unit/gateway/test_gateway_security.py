"""Gateway security: the token on every route, constant-time comparison, CSRF refusals.

The routes are enumerated from the app itself, so a route added later is covered too.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

from loops.gateway import auth, csrf

TOKEN = "s3cret-token-for-tests"


def every_route(client: httpx.AsyncClient) -> list[tuple[str, str]]:
    app = client.app  # type: ignore[attr-defined]
    found = []
    for route in app.routes:
        path = getattr(route, "path", "")
        methods = route.methods if isinstance(route, APIRoute) else {"GET"}
        for method in sorted(methods - {"HEAD", "OPTIONS"}):
            found.append((method, path.replace("{task_id}", "1").replace("{artifact_id}", "1")
                          .replace("{key}", "k")))  # fmt: skip
    return found


async def test_every_route_of_the_app_but_the_open_ones_needs_the_token(
    make_client: Callable[..., Any],
) -> None:
    client: httpx.AsyncClient = await make_client(env={"QUEUE_API_TOKEN": TOKEN})
    routes = every_route(client)
    assert len(routes) > 40  # the /tasks routes, their /jobs aliases, docs and operations
    assert {"/healthz", "/"} == auth.OPEN_PATHS  # widening this is a decision, not a slip
    for method, path in routes:
        response = await client.request(method, path, json={"prompt": "x"})
        if path in auth.OPEN_PATHS or path.startswith(auth.OPEN_PREFIXES):
            continue  # liveness, and the dashboard's data-free page and static files
        assert response.status_code == 401, (method, path, response.status_code)
        assert response.json()["error"]["code"] == "unauthorized"


async def test_the_token_is_compared_in_constant_time(
    make_client: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[bytes, bytes]] = []
    original = hmac.compare_digest

    def recording(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return original(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", recording)
    client: httpx.AsyncClient = await make_client(env={"QUEUE_API_TOKEN": TOKEN})
    assert (await client.get("/tasks", headers={"Authorization": "Bearer nope"})).status_code == 401
    ok = await client.get("/tasks", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200
    expected = f"Bearer {TOKEN}".encode()
    assert calls == [(b"Bearer nope", expected), (expected, expected)]


@pytest.mark.parametrize(
    "content_type",
    ["application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "text/plain"],
)
async def test_a_form_a_browser_could_send_cross_site_is_refused_on_every_state_change(
    client: httpx.AsyncClient, content_type: str
) -> None:
    created = await client.post("/tasks", json={"prompt": "keep me"})
    assert created.status_code == 201
    for method, path in every_route(client):
        if method not in csrf.UNSAFE_METHODS:
            continue
        response = await client.request(
            method, path, content=b"prompt=x", headers={"Content-Type": content_type}
        )
        assert response.status_code == 415, (method, path)
        assert response.json()["error"]["code"] == "unsupported_media_type"
    task = (await client.get("/tasks/1")).json()
    assert task["status"] == "queued"  # the cancel, lease, ... forms changed nothing


async def test_an_artifact_sent_as_curl_sends_it_by_default_is_told_the_type_to_use(
    client: httpx.AsyncClient,
) -> None:
    await client.post("/tasks", json={"prompt": "p"})
    url = "/tasks/1/artifacts?name=out.log&kind=log"
    curl_default = {"Content-Type": "application/x-www-form-urlencoded"}
    form = await client.post(url, content=b"hello", headers=curl_default)
    assert form.status_code == 415
    assert "application/octet-stream" in form.json()["error"]["message"]
    raw = {"Content-Type": "application/octet-stream"}
    assert (await client.post(url, content=b"hello", headers=raw)).status_code == 201


async def test_a_cross_origin_state_change_is_refused_and_a_same_origin_one_accepted(
    client: httpx.AsyncClient,
) -> None:
    evil = await client.post(
        "/tasks", json={"prompt": "x"}, headers={"Origin": "https://evil.example"}
    )
    assert evil.status_code == 403
    assert evil.json()["error"]["code"] == "forbidden_origin"
    null = await client.post("/tick", headers={"Origin": "null"})
    assert null.status_code == 403
    own = await client.post("/tasks", json={"prompt": "x"}, headers={"Origin": "http://gw"})
    assert own.status_code == 201
    plain = await client.post("/tasks", json={"prompt": "y"})  # curl, the worker: no Origin
    assert plain.status_code == 201
    reading = await client.get("/tasks", headers={"Origin": "https://evil.example"})
    assert reading.status_code == 200  # reads change nothing (and CORS hides the answer)


async def test_artifact_uploads_stay_allowed_and_never_use_the_name_as_a_path(
    client: httpx.AsyncClient,
) -> None:
    await client.post("/tasks", json={"prompt": "x"})
    response = await client.post(
        "/tasks/1/artifacts",
        params={"name": "../../../../etc/passwd", "kind": "file"},
        content=b"data",
        headers={"Content-Type": "application/octet-stream"},
    )
    assert response.status_code == 201, response.text
    artifact = response.json()
    assert artifact["name"] == "../../../../etc/passwd"  # a label, nothing more
    assert "passwd" not in str(artifact.get("path", ""))
    content = await client.get(f"/artifacts/{artifact['id']}/content")
    assert content.content == b"data"


@pytest.mark.parametrize(
    ("origin", "host", "same"),
    [
        ("http://127.0.0.1:8080", "127.0.0.1:8080", True),
        ("http://127.0.0.1:8080", "127.0.0.1:9090", False),
        ("http://localhost", "localhost:80", True),
        ("https://gw", "gw", True),
        ("http://gw", "gw:443", False),
        ("null", "gw", False),
        ("file://", "gw", False),
    ],
)
def test_same_origin(origin: str, host: str, same: bool) -> None:
    assert csrf.same_origin(origin, host) is same
