"""Answering a task's human gates through the gateway (the dashboard's Approve /
Reject): the waiting status, the list filter, the answer and who gave it, CSRF."""

from __future__ import annotations

from typing import Any

import httpx


async def make_waiting(client: httpx.AsyncClient) -> dict[str, Any]:
    """A loop task whose run asked gate ``ship/signoff`` and paused waiting for it."""
    task = (await client.post("/tasks", json={"prompt": "ship.loop.py", "type": "loop"})).json()
    lease = (await client.post(f"/tasks/{task['id']}/lease", json={"worker": "w1"})).json()
    token = lease["lease"]["token"]
    asked = {"type": "approval.requested", "data": {"path": "ship/signoff", "question": "Ship?"}}
    added = await client.post(f"/tasks/{task['id']}/events", json={"events": [asked]})
    assert added.status_code == 201, added.text
    done = await client.post(
        f"/tasks/{task['id']}/complete",
        json={"lease_token": token, "status": "waiting_approval", "error": "waiting_approval"},
    )
    body: dict[str, Any] = done.json()
    assert body["status"] == "waiting_approval", body
    return body


async def test_a_waiting_task_is_listed_counted_and_measured(client: httpx.AsyncClient) -> None:
    waiting = await make_waiting(client)
    await client.post("/tasks", json={"prompt": "other"})
    listed = (await client.get("/tasks", params={"status": "waiting_approval"})).json()
    assert [t["id"] for t in listed["tasks"]] == [waiting["id"]]
    assert (await client.get("/status")).json()["counts"]["waiting_approval"] == 1
    metrics = (await client.get("/metrics")).text
    assert 'loops_tasks{status="waiting_approval"} 1.0' in metrics
    gates = (await client.get(f"/tasks/{waiting['id']}/approvals")).json()["gates"]
    assert gates == [{"path": "ship/signoff", "question": "Ship?", "answer": None}]


async def test_approve_queues_the_task_and_records_who(client: httpx.AsyncClient) -> None:
    waiting = await make_waiting(client)
    url = f"/tasks/{waiting['id']}/approvals"
    answer = {"path": "ship/signoff", "approved": True, "by": "ann", "reason": "lgtm"}
    response = await client.post(url, json=answer)
    assert response.status_code == 200, response.text
    assert (response.json()["status"], response.json()["attempts"]) == ("queued", 0)
    (gate,) = (await client.get(url)).json()["gates"]
    assert {k: gate["answer"][k] for k in ("approved", "by", "reason")} == {
        "approved": True,
        "by": "ann",
        "reason": "lgtm",
    }
    events = (await client.get(f"/tasks/{waiting['id']}/events")).json()["events"]
    assert events[-1]["type"] == "task.approval_answered"
    assert events[-1]["data"]["by"] == "ann"
    leased = await client.post("/tasks/lease", json={"worker": "w2", "wait_ms": 0})
    assert leased.json()["task"]["id"] == waiting["id"]


async def test_reject_without_a_name_records_the_client(client: httpx.AsyncClient) -> None:
    waiting = await make_waiting(client)
    url = f"/jobs/{waiting['id']}/approvals"
    response = await client.post(
        url, json={"path": "ship/signoff", "approved": False, "reason": "not today"}
    )
    assert response.status_code == 200
    (gate,) = (await client.get(url)).json()["gates"]
    assert gate["answer"]["approved"] is False and gate["answer"]["reason"] == "not today"
    assert gate["answer"]["by"].startswith("gateway client ")


async def test_bad_answers_are_refused(client: httpx.AsyncClient) -> None:
    waiting = await make_waiting(client)
    url = f"/tasks/{waiting['id']}/approvals"
    wrong = await client.post(url, json={"path": "ship/nope", "approved": True})
    assert wrong.status_code == 400
    assert "gates asked: ship/signoff" in wrong.json()["error"]["message"]
    assert (await client.post(url, json={"approved": True})).status_code == 422
    assert (
        await client.post("/tasks/999/approvals", json={"path": "a", "approved": True})
    ).status_code == 404
    await client.post(f"/tasks/{waiting['id']}/cancel", json={"reason": "no"})
    finished = await client.post(url, json={"path": "ship/signoff", "approved": True})
    assert finished.status_code == 409
    assert finished.json()["error"]["code"] == "invalid_transition"


async def test_a_cross_site_answer_is_refused(client: httpx.AsyncClient) -> None:
    waiting = await make_waiting(client)
    url = f"/tasks/{waiting['id']}/approvals"
    body = '{"path": "ship/signoff", "approved": true}'
    form = await client.post(url, content=body, headers={"Content-Type": "text/plain"})
    assert form.status_code == 415
    foreign = await client.post(
        url,
        content=body,
        headers={"Content-Type": "application/json", "Origin": "http://evil.example"},
    )
    assert foreign.status_code == 403
    same = await client.post(
        url, content=body, headers={"Content-Type": "application/json", "Origin": "http://gw"}
    )
    assert same.status_code == 200
    assert (await client.get(f"/tasks/{waiting['id']}")).json()["status"] == "queued"
