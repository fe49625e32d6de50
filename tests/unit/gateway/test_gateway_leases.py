"""Leases, heartbeats and completions over HTTP, single and batched (DESIGN 13)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from loops.services.queue import QueueService


async def create(client: httpx.AsyncClient, **body: object) -> dict[str, Any]:
    response = await client.post("/tasks", json={"prompt": "work", **body})
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


async def lease(client: httpx.AsyncClient, **body: object) -> httpx.Response:
    return await client.post("/tasks/lease", json={"worker": "w1", **body})


async def test_lease_answers_task_and_lease(client: httpx.AsyncClient) -> None:
    task = await create(client)
    response = await lease(client, ttl_ms=5000)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"task", "lease"}
    assert body["task"]["id"] == task["id"]
    assert body["task"]["status"] == "leased"
    assert body["task"]["attempts"] == 1
    assert body["lease"]["owner"] == "w1"
    assert body["lease"]["token"]
    assert body["lease"]["expires_at"].endswith("Z")
    assert "lease_token" not in body["task"]


async def test_nothing_ready_answers_204(client: httpx.AsyncClient) -> None:
    assert (await lease(client)).status_code == 204
    assert (await lease(client, wait_ms=20)).status_code == 204
    assert (await lease(client, limit=5, wait_ms=1)).status_code == 204


async def test_batch_lease_answers_leases_most_urgent_first(client: httpx.AsyncClient) -> None:
    low = await create(client, priority=5)
    urgent = await create(client, priority=1)
    normal = await create(client)
    response = await lease(client, limit=10)
    assert response.status_code == 200
    leases = response.json()["leases"]
    assert [item["task"]["id"] for item in leases] == [urgent["id"], normal["id"], low["id"]]
    assert len({item["lease"]["token"] for item in leases}) == 3


async def test_lease_by_types(client: httpx.AsyncClient) -> None:
    await create(client, type="review")
    wanted = await create(client, type="maintenance")
    response = await lease(client, types=["maintenance"])
    assert response.json()["task"]["id"] == wanted["id"]
    assert (await lease(client, types=["maintenance"])).status_code == 204


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"worker": None}, "worker"),
        ({"ttl_ms": 50}, "ttl_ms"),
        ({"wait_ms": 600_000}, "wait_ms"),
        ({"limit": 0}, "limit"),
        ({"types": "review"}, "types"),
        ({"wrokers": 2}, "wrokers is not a known field"),
    ],
)
async def test_bad_lease_requests_answer_422(
    client: httpx.AsyncClient, body: dict[str, object], field: str
) -> None:
    response = await client.post("/tasks/lease", json={"worker": "w1", **body})
    assert response.status_code == 422
    assert field in response.json()["error"]["message"]
    missing = await client.post("/tasks/lease", json={})
    assert missing.json()["error"]["message"] == "worker is required"


async def test_lease_a_given_task(client: httpx.AsyncClient) -> None:
    task = await create(client)
    response = await client.post(f"/tasks/{task['id']}/lease", json={"worker": "w2"})
    assert response.status_code == 200
    assert response.json()["task"]["lease_owner"] == "w2"
    again = await client.post(f"/tasks/{task['id']}/lease", json={"worker": "w3"})
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "invalid_transition"
    missing = await client.post("/tasks/999/lease", json={"worker": "w3"})
    assert missing.status_code == 404


async def test_heartbeat_starts_and_extends(client: httpx.AsyncClient, clock: Any) -> None:
    await create(client)
    leased = (await lease(client, ttl_ms=1000)).json()
    task_id, token = leased["task"]["id"], leased["lease"]["token"]
    clock.advance(500)
    response = await client.post(
        f"/tasks/{task_id}/heartbeat",
        json={"lease_token": token, "ttl_ms": 1000, "status": "running"},
    )
    assert response.status_code == 200
    beat = response.json()
    assert set(beat) == {"task", "lease", "cancel_requested"}
    assert beat["cancel_requested"] is False
    assert beat["task"]["status"] == "running"
    assert beat["lease"]["expires_at"] > leased["lease"]["expires_at"]
    bad_status = await client.post(
        f"/tasks/{task_id}/heartbeat", json={"lease_token": token, "status": "done"}
    )
    assert bad_status.status_code == 422


async def test_stale_token_is_409_lease_conflict_and_changes_nothing(
    client: httpx.AsyncClient, clock: Any
) -> None:
    task = await create(client)
    old = (await lease(client, ttl_ms=100)).json()["lease"]["token"]
    clock.advance(200)  # the lease lapses; another worker takes the task
    new = (await client.post("/tasks/lease", json={"worker": "w2"})).json()
    assert new["task"]["attempts"] == 2
    before_task = (await client.get(f"/tasks/{task['id']}")).json()
    before_events = (await client.get("/events", params={"limit": 1000})).json()["events"]
    for path, body in (
        ("complete", {"lease_token": old, "status": "done", "result": "stolen"}),
        ("heartbeat", {"lease_token": old}),
        ("complete", {"lease_token": "never-valid", "status": "failed"}),
    ):
        response = await client.post(f"/tasks/{task['id']}/{path}", json=body)
        assert response.status_code == 409, path
        assert response.json()["error"]["code"] == "lease_conflict"
    assert (await client.get(f"/tasks/{task['id']}")).json() == before_task
    after_events = (await client.get("/events", params={"limit": 1000})).json()["events"]
    assert after_events == before_events
    done = await client.post(
        f"/tasks/{task['id']}/complete",
        json={"lease_token": new["lease"]["token"], "status": "done", "result": "ok"},
    )
    assert done.status_code == 200
    assert done.json()["status"] == "done"


async def test_cancelled_task_heartbeat_200_cancel_requested_complete_409(
    client: httpx.AsyncClient,
) -> None:
    task = await create(client)
    token = (await lease(client)).json()["lease"]["token"]
    assert (await client.post(f"/tasks/{task['id']}/cancel")).status_code == 200
    beat = await client.post(f"/tasks/{task['id']}/heartbeat", json={"lease_token": token})
    assert beat.status_code == 200
    assert beat.json()["cancel_requested"] is True
    assert beat.json()["task"]["status"] == "cancelled"
    done = await client.post(
        f"/tasks/{task['id']}/complete", json={"lease_token": token, "status": "done"}
    )
    assert done.status_code == 409
    assert done.json()["error"]["code"] == "lease_conflict"
    assert (await client.get(f"/tasks/{task['id']}")).json()["status"] == "cancelled"


async def test_complete_records_steps_usage_and_result(client: httpx.AsyncClient) -> None:
    task = await create(client)
    token = (await lease(client)).json()["lease"]["token"]
    output = "working\nSTEP[fetch]: DONE idempotency=f-1 note=12 mails\nSTEP[reply]: FAILED\n"
    response = await client.post(
        f"/tasks/{task['id']}/complete",
        json={
            "lease_token": token,
            "status": "done",
            "result": "all green",
            "output": output,
            "usage": {"input_tokens": 10, "output_tokens": 5, "cost_usd": 0.25},
        },
    )
    assert response.status_code == 200
    done = response.json()
    assert (done["status"], done["result"]) == ("done", "all green")
    assert done["usage"]["input_tokens"] == 10
    assert done["usage"]["cost_usd"] == 0.25
    steps = (await client.get(f"/tasks/{task['id']}/steps")).json()["steps"]
    assert [(s["name"], s["status"], s["idempotency_key"]) for s in steps] == [
        ("fetch", "DONE", "f-1"),
        ("reply", "FAILED", "reply"),
    ]
    assert steps[0]["note"] == "12 mails"
    assert set(steps[0]) >= {"name", "status", "idempotency_key", "note", "created_at"}


async def test_complete_retry_requeues_and_bad_status_is_422(client: httpx.AsyncClient) -> None:
    task = await create(client)
    token = (await lease(client)).json()["lease"]["token"]
    bad = await client.post(
        f"/tasks/{task['id']}/complete", json={"lease_token": token, "status": "finished"}
    )
    assert bad.status_code == 422
    assert "status" in bad.json()["error"]["message"]
    retry = await client.post(
        f"/tasks/{task['id']}/complete",
        json={"lease_token": token, "status": "retry", "error": "flaky network"},
    )
    assert retry.status_code == 200
    assert retry.json()["status"] == "queued"
    assert retry.json()["error"] == "flaky network"
    negative = await client.post(
        f"/tasks/{task['id']}/complete",
        json={"lease_token": token, "status": "done", "usage": {"input_tokens": -1}},
    )
    assert negative.status_code == 422


async def test_batch_complete_answers_item_by_item(client: httpx.AsyncClient) -> None:
    for _ in range(3):
        await create(client)
    leases = (await lease(client, limit=3)).json()["leases"]
    (a, b, c) = [(item["task"]["id"], item["lease"]["token"]) for item in leases]
    response = await client.post(
        "/tasks/complete",
        json={
            "completions": [
                {"id": a[0], "lease_token": a[1], "status": "done", "result": "ok"},
                {"id": b[0], "lease_token": "stale", "status": "done"},
                {"id": 999, "lease_token": "x", "status": "done"},
                {"id": c[0], "lease_token": c[1], "status": "failed", "error": "broken"},
            ]
        },
    )
    assert response.status_code == 200
    results = response.json()["results"]
    assert [(r["id"], r["ok"]) for r in results] == [
        (a[0], True),
        (b[0], False),
        (999, False),
        (c[0], True),
    ]
    assert results[0]["task"]["status"] == "done"
    assert results[1]["error"]["code"] == "lease_conflict"
    assert results[2]["error"]["code"] == "not_found"
    assert results[3]["task"]["status"] == "failed"
    assert (await client.get(f"/tasks/{b[0]}")).json()["status"] == "leased"
    alias = await client.post(
        "/jobs/complete",
        json={"completions": [{"id": b[0], "lease_token": b[1], "status": "done"}]},
    )
    assert alias.json()["results"][0]["ok"] is True


async def test_batch_complete_validates_items(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/tasks/complete", json={"completions": [{"id": 1, "status": "done"}]}
    )
    assert response.status_code == 422
    assert "completions.0.lease_token is required" in response.json()["error"]["message"]
    empty = await client.post("/tasks/complete", json={"completions": []})
    assert empty.json() == {"results": []}


async def test_lease_metrics_count_leases(client: httpx.AsyncClient, service: QueueService) -> None:
    await create(client)
    await lease(client)
    text = (await client.get("/metrics")).text
    assert "loops_leases_granted_total 1.0" in text
    assert 'loops_tasks{status="leased"} 1.0' in text
    assert "loops_active_leases 1.0" in text
    assert "loops_lease_latency_seconds_count 1.0" in text
    assert 'loops_http_requests_total{code="201",method="POST",route="/tasks"} 1.0' in text
    assert 'loops_http_requests_total{code="200",method="POST",route="/tasks/lease"} 1.0' in text
    events = len(service.list_events(limit=1000))
    assert f"loops_events_written_total {float(events)}" in text


async def test_release_gives_the_lease_back_without_an_attempt(
    client: httpx.AsyncClient,
) -> None:
    task = await create(client)
    token = (await lease(client)).json()["lease"]["token"]
    released = await client.post(
        f"/tasks/{task['id']}/release", json={"lease_token": token, "reason": "SIGTERM"}
    )
    assert released.status_code == 200
    assert (released.json()["status"], released.json()["attempts"]) == ("queued", 0)
    again = await client.post(f"/jobs/{task['id']}/release", json={"lease_token": token})
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "lease_conflict"
    relet = (await lease(client)).json()
    assert relet["task"]["id"] == task["id"]
    assert relet["task"]["attempts"] == 1
    missing = await client.post("/tasks/999/release", json={"lease_token": "x"})
    assert missing.status_code == 404


async def test_batch_complete_can_lease_the_next_batch_in_the_same_call(
    client: httpx.AsyncClient,
) -> None:
    for _ in range(5):
        await create(client)
    first = (await lease(client, limit=2)).json()["leases"]
    response = await client.post(
        "/tasks/complete",
        json={
            "completions": [
                {"id": item["task"]["id"], "lease_token": item["lease"]["token"], "status": "done"}
                for item in first
            ]
            + [{"id": first[0]["task"]["id"], "lease_token": "stale", "status": "done"}],
            "lease": {"worker": "w1", "limit": 2},
        },
    )
    assert response.status_code == 200
    body = response.json()
    assert [r["ok"] for r in body["results"]] == [True, True, False]
    assert [item["task"]["id"] for item in body["leases"]] == [3, 4]
    assert all(item["task"]["status"] == "leased" for item in body["leases"])
    last = await client.post(
        "/jobs/complete", json={"completions": [], "lease": {"worker": "w1", "limit": 10}}
    )
    assert [item["task"]["id"] for item in last.json()["leases"]] == [5]
    none_left = await client.post(
        "/tasks/complete", json={"completions": [], "lease": {"worker": "w1"}}
    )
    assert none_left.json() == {"results": [], "leases": []}
    bad = await client.post("/tasks/complete", json={"completions": [], "lease": {"limit": 2}})
    assert bad.status_code == 422
    assert "lease.worker is required" in bad.json()["error"]["message"]


async def test_waiting_children_wakes_on_a_named_child_that_finished_meanwhile(
    client: httpx.AsyncClient,
) -> None:
    parent = await create(client)
    turn = (await lease(client)).json()
    kids = []
    for _ in range(2):
        made = await client.post(f"/tasks/{parent['id']}/children", json={"prompt": "kid"})
        kids.append(made.json())
    kid = (await client.post(f"/tasks/{kids[0]['id']}/lease", json={"worker": "w2"})).json()
    done = {"lease_token": kid["lease"]["token"], "status": "done"}
    assert (await client.post(f"/tasks/{kids[0]['id']}/complete", json=done)).status_code == 200
    bad = {"lease_token": turn["lease"]["token"], "status": "waiting_children"}
    refused = await client.post(f"/tasks/{parent['id']}/complete", json={**bad, "waiting_on": [0]})
    assert refused.status_code == 400
    assert "waiting_on must list the ids of the task's children" in refused.text
    # the turn saw kids[0] active; it finished since: the parent is queued at once
    body = {**bad, "waiting_on": [k["id"] for k in kids]}
    answer = await client.post(f"/tasks/{parent['id']}/complete", json=body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "queued" and answer.json()["wake_each"] is True
    # batched, a turn that names only the child still active waits for it
    again = (await client.post(f"/tasks/{parent['id']}/lease", json={"worker": "w1"})).json()
    item = {
        "id": parent["id"],
        "lease_token": again["lease"]["token"],
        "status": "waiting_children",
        "waiting_on": [kids[1]["id"]],
    }
    batch = await client.post("/tasks/complete", json={"completions": [item]})
    assert batch.json()["results"][0]["task"]["status"] == "waiting_children"


LEAN_KEYS = {
    "id", "type", "title", "prompt", "success", "check", "provider", "model", "cwd",
    "max_iterations", "min_tests", "priority", "attempts", "max_attempts", "parent_id",
    "depth", "created_at", "token", "expires_at",
}  # fmt: skip


async def test_lean_lease_answers_one_flat_object_per_task_whatever_the_limit(
    client: httpx.AsyncClient,
) -> None:
    task = await create(client, type="review", title="t", check="pytest", max_iterations=3)
    response = await lease(client, form="lean")
    assert response.status_code == 200
    (item,) = response.json()["leases"]
    assert set(item) == LEAN_KEYS
    assert item["id"] == task["id"] and item["prompt"] == "work"
    assert (item["type"], item["title"], item["check"]) == ("review", "t", "pytest")
    assert item["max_iterations"] == 3 and item["attempts"] == 1
    assert item["token"] and item["expires_at"].endswith("Z")
    full = (await client.get(f"/tasks/{task['id']}")).json()
    assert full["status"] == "leased" and full["lease_owner"] == "w1"
    assert full["lease_expires_at"] == item["expires_at"]
    assert (await lease(client, form="lean", limit=5)).status_code == 204
    assert (await lease(client, form="thin")).status_code == 422


async def test_lean_batch_complete_answers_ids_and_ok_and_lean_leases(
    client: httpx.AsyncClient,
) -> None:
    for _ in range(4):
        await create(client)
    first = (await lease(client, limit=2, form="lean")).json()["leases"]
    completions = [
        {"id": item["id"], "lease_token": item["token"], "status": "done"} for item in first
    ]
    stale = {"id": first[0]["id"], "lease_token": "stale", "status": "done"}
    response = await client.post(
        "/tasks/complete",
        json={"completions": [*completions, stale], "lease": {"worker": "w1", "limit": 5},
              "form": "lean"},
    )  # fmt: skip
    assert response.status_code == 200
    body = response.json()
    assert body["results"][:2] == [{"id": first[0]["id"], "ok": True},
                                   {"id": first[1]["id"], "ok": True}]  # fmt: skip
    assert body["results"][2]["ok"] is False
    assert body["results"][2]["error"]["code"] == "lease_conflict"
    assert [item["id"] for item in body["leases"]] == [3, 4]
    assert all(set(item) == LEAN_KEYS for item in body["leases"])
    for task_id in (1, 2):
        assert (await client.get(f"/tasks/{task_id}")).json()["status"] == "done"
    plain = await client.post(
        "/tasks/complete",
        json={"completions": [{"id": 3, "lease_token": body["leases"][0]["token"],
                               "status": "done"}], "form": "lean"},
    )  # fmt: skip
    assert plain.json() == {"results": [{"id": 3, "ok": True}]}


async def test_the_spec_describes_the_lean_forms(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    schemas = spec["components"]["schemas"]
    assert set(schemas["LeanLeaseOut"]["required"]) == LEAN_KEYS
    answers = spec["paths"]["/tasks/lease"]["post"]["responses"]["200"]["content"]
    refs = {s["$ref"] for s in answers["application/json"]["schema"]["anyOf"]}
    assert "#/components/schemas/LeanLeaseBatchOut" in refs
    assert schemas["LeaseRequest"]["properties"]["form"]["enum"] == ["full", "lean"]
    assert schemas["CompleteBatchRequest"]["properties"]["form"]["enum"] == ["full", "lean"]
