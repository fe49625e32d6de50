"""The dashboard's routes through the in-process app: page, static files, re-queue,
workers, task filters; and what the packaged page may load."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import httpx

from loops.gateway.routes import dashboard

TOKEN = "t0ken"


async def make_failed(client: httpx.AsyncClient, worker: str = "w1") -> dict[str, Any]:
    task = (await client.post("/tasks", json={"prompt": "p", "max_attempts": 1})).json()
    lease = (await client.post(f"/tasks/{task['id']}/lease", json={"worker": worker})).json()
    done = await client.post(
        f"/tasks/{task['id']}/complete",
        json={"lease_token": lease["lease"]["token"], "status": "failed", "error": "boom"},
    )
    body: dict[str, Any] = done.json()
    return body


async def test_the_page_and_its_files_are_served(client: httpx.AsyncClient) -> None:
    page = await client.get("/")
    assert page.status_code == 200
    assert 'src="/ui/js/app.js"' in page.text
    script = await client.get("/ui/js/app.js")
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]
    assert (await client.get("/ui/app.css")).status_code == 200
    assert (await client.get("/ui/js/nothing.js")).status_code == 404


def test_the_page_loads_nothing_from_elsewhere_and_never_parses_data_as_html() -> None:
    root = dashboard.static_dir()
    files = [p for p in root.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"index.html", "app.css", "app.js", "api.js", "dom.js"}
    for path in files:
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"https?://", text), f"{path.name} refers to another host"
        if path.suffix == ".js":
            for banned in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write"):
                assert banned not in text, f"{path.name} uses {banned}"
            assert not re.search(r"\beval\(|new Function\(", text), path.name
            assert "localStorage" not in text, f"{path.name}: the token stays in sessionStorage"


async def test_with_a_token_only_the_page_and_its_files_are_open(
    make_client: Callable[..., Any],
) -> None:
    client: httpx.AsyncClient = await make_client(env={"QUEUE_API_TOKEN": TOKEN})
    assert (await client.get("/")).status_code == 200
    assert (await client.get("/ui/js/api.js")).status_code == 200
    for path in ("/workers", "/runs", "/status", "/events/stream", "/uix", "/ui"):
        assert (await client.get(path)).status_code == 401, path
    assert (await client.post("/tasks/1/requeue")).status_code == 401


async def test_requeue_a_failed_task(client: httpx.AsyncClient) -> None:
    failed = await make_failed(client)
    assert (failed["status"], failed["attempts"]) == ("failed", 1)
    response = await client.post(f"/tasks/{failed['id']}/requeue", json={"reason": "retry it"})
    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["attempts"], body["error"]) == ("queued", 0, None)
    again = await client.post(f"/jobs/{failed['id']}/requeue")
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "invalid_transition"
    assert "only failed or blocked" in again.json()["error"]["message"]
    assert (await client.post("/tasks/999/requeue")).status_code == 404
    events = (await client.get(f"/tasks/{failed['id']}/events")).json()["events"]
    assert events[-1]["type"] == "task.requeued"
    assert events[-1]["data"]["reason"] == "retry it"


async def test_requeue_wakes_a_waiting_worker(client: httpx.AsyncClient) -> None:
    failed = await make_failed(client)
    await client.post(f"/tasks/{failed['id']}/requeue")
    leased = await client.post("/tasks/lease", json={"worker": "w2", "wait_ms": 0})
    assert leased.status_code == 200
    assert leased.json()["task"]["id"] == failed["id"]


async def test_workers_show_who_holds_leases_since_when(
    client: httpx.AsyncClient, clock: Any
) -> None:
    ids = [(await client.post("/tasks", json={"prompt": f"p{n}"})).json()["id"] for n in range(3)]
    first = (await client.post(f"/tasks/{ids[0]}/lease", json={"worker": "alpha"})).json()
    clock.advance(5_000)
    await client.post(f"/tasks/{ids[1]}/lease", json={"worker": "beta"})
    clock.advance(5_000)
    await client.post(f"/tasks/{ids[2]}/lease", json={"worker": "alpha"})
    clock.advance(1_000)
    beat = await client.post(
        f"/tasks/{ids[0]}/heartbeat", json={"lease_token": first["lease"]["token"]}
    )
    assert beat.status_code == 200
    workers = (await client.get("/workers")).json()["workers"]
    assert [w["name"] for w in workers] == ["alpha", "beta"]
    alpha = workers[0]
    assert [lease["task_id"] for lease in alpha["leases"]] == [ids[0], ids[2]]
    assert alpha["leases"][0]["since"] == "2026-11-27T12:00:00.000Z"
    assert alpha["leases"][0]["last_heartbeat"] == "2026-11-27T12:00:11.000Z"
    assert alpha["leases"][1]["since"] == "2026-11-27T12:00:10.000Z"
    assert alpha["last_heartbeat"] == "2026-11-27T12:00:11.000Z"
    assert (await client.get("/workers")).json()["workers"][1]["leases"][0]["status"] == "leased"


async def test_no_workers_when_nothing_is_leased(client: httpx.AsyncClient) -> None:
    assert (await client.get("/workers")).json() == {"workers": []}


async def test_tasks_filter_by_type_and_status_and_page_by_id(client: httpx.AsyncClient) -> None:
    for n in range(5):
        await client.post("/tasks", json={"prompt": f"p{n}", "type": "build" if n % 2 else "fix"})
    builds = (await client.get("/tasks", params={"type": "build"})).json()["tasks"]
    assert [t["prompt"] for t in builds] == ["p3", "p1"]
    page = (await client.get("/tasks", params={"type": "fix", "limit": 2})).json()["tasks"]
    assert [t["prompt"] for t in page] == ["p4", "p2"]
    rest = (
        await client.get("/tasks", params={"type": "fix", "limit": 2, "before": page[-1]["id"]})
    ).json()["tasks"]
    assert [t["prompt"] for t in rest] == ["p0"]
    none = (await client.get("/tasks", params={"type": "fix", "status": "done"})).json()
    assert none == {"tasks": []}
    assert (await client.get("/tasks", params={"type": ""})).status_code == 422
