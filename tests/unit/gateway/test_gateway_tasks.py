"""Task routes through the in-process app: shapes and status codes of DESIGN 3 and 13."""

from __future__ import annotations

import httpx
import pytest

from loops.gateway import routes


async def create(client: httpx.AsyncClient, **body: object) -> dict[str, object]:
    response = await client.post("/tasks", json={"prompt": "fix the tests", **body})
    assert response.status_code == 201, response.text
    data: dict[str, object] = response.json()
    return data


TASK_KEYS = {
    "id", "type", "title", "prompt", "success", "check", "provider", "status", "priority",
    "attempts", "max_attempts", "parent_id", "result", "error", "created_at", "updated_at",
    "cwd", "usage", "model",
}  # fmt: skip


async def test_create_answers_201_with_the_task_object(client: httpx.AsyncClient) -> None:
    task = await create(client, priority=2, check="pytest -q", cwd="/repo", title="t")
    assert set(task) >= TASK_KEYS
    assert task["status"] == "queued"
    assert task["priority"] == 2
    assert task["check"] == "pytest -q"
    assert task["cwd"] == "/repo"
    assert task["usage"] == {
        "input_tokens": 0,
        "output_tokens": 0,
        "cached_input_tokens": 0,
        "cost_usd": None,
    }
    assert str(task["created_at"]).endswith("Z")


async def test_known_idempotency_key_answers_200_with_the_existing_task(
    client: httpx.AsyncClient,
) -> None:
    first = await create(client, idempotency_key="k1")
    again = await client.post("/tasks", json={"prompt": "other", "idempotency_key": "k1"})
    assert again.status_code == 200
    assert again.json()["id"] == first["id"]
    assert again.json()["prompt"] == "fix the tests"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "prompt is required"),
        ({"prompt": "p", "priority": 9}, "priority"),
        ({"prompt": "p", "priority": "urgent"}, "priority"),
        ({"prompt": "p", "colour": "red"}, "colour is not a known field"),
        ({"prompt": "p", "max_attempts": 0}, "max_attempts"),
        ({"prompt": ""}, "prompt"),
    ],
)
async def test_invalid_task_bodies_answer_422_naming_the_field(
    client: httpx.AsyncClient, body: dict[str, object], field: str
) -> None:
    response = await client.post("/tasks", json=body)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_input"
    assert field in error["message"]


async def test_a_blank_prompt_is_refused_by_the_service_with_400(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/tasks", json={"prompt": "   "})
    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": "invalid_input",
        "message": "prompt is required: say what the agent should do (--prompt)",
    }


async def test_a_body_that_is_not_json_answers_422(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/tasks", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert "not valid JSON" in response.json()["error"]["message"]
    bare = await client.post("/tasks", content=b"prompt=x")
    assert bare.status_code == 422
    assert "JSON object" in bare.json()["error"]["message"]


async def test_get_task_has_counts_and_unknown_ids_are_404(client: httpx.AsyncClient) -> None:
    task = await create(client)
    response = await client.get(f"/tasks/{task['id']}")
    assert response.status_code == 200
    detail = response.json()
    assert detail["id"] == task["id"]
    assert (detail["steps_count"], detail["children_count"], detail["artifacts_count"]) == (
        0,
        0,
        0,
    )
    for bad in ("999", "abc", "0", "-1"):
        missing = await client.get(f"/tasks/{bad}")
        assert missing.status_code == 404, bad
        assert missing.json()["error"]["code"] == "not_found"


async def test_list_is_wrapped_newest_first_and_filters_by_status(
    client: httpx.AsyncClient,
) -> None:
    a = await create(client)
    b = await create(client)
    await client.post(f"/tasks/{a['id']}/cancel")
    listed = (await client.get("/tasks")).json()
    assert [t["id"] for t in listed["tasks"]] == [b["id"], a["id"]]
    queued = (await client.get("/tasks", params={"status": "queued"})).json()
    assert [t["id"] for t in queued["tasks"]] == [b["id"]]
    page = (await client.get("/tasks", params={"limit": 1, "before": b["id"]})).json()
    assert [t["id"] for t in page["tasks"]] == [a["id"]]
    bad = await client.get("/tasks", params={"status": "finished"})
    assert bad.status_code == 422
    assert "status" in bad.json()["error"]["message"]
    bad_limit = await client.get("/tasks", params={"limit": 0})
    assert bad_limit.status_code == 422


async def test_children_are_created_listed_and_limited(client: httpx.AsyncClient) -> None:
    parent = await create(client)
    child = await client.post(f"/tasks/{parent['id']}/children", json={"prompt": "part"})
    assert child.status_code == 201
    assert child.json()["parent_id"] == parent["id"]
    listed = (await client.get(f"/tasks/{parent['id']}/children")).json()
    assert [c["id"] for c in listed["children"]] == [child.json()["id"]]
    grandchild = await client.post(
        f"/tasks/{child.json()['id']}/children", json={"prompt": "too deep"}
    )
    assert grandchild.status_code == 409
    assert grandchild.json()["error"]["code"] == "limit_exceeded"
    assert "QUEUE_MAX_CHILD_DEPTH" in grandchild.json()["error"]["message"]
    orphan = await client.post("/tasks/424242/children", json={"prompt": "x"})
    assert orphan.status_code == 404
    assert (await client.get("/tasks/424242/children")).status_code == 404


async def test_cancel_answers_the_task_and_a_finished_task_is_409(
    client: httpx.AsyncClient,
) -> None:
    task = await create(client)
    cancelled = await client.post(f"/tasks/{task['id']}/cancel", json={"reason": "not needed"})
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["error"] == "not needed"
    again = await client.post(f"/tasks/{task['id']}/cancel")
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "invalid_transition"
    assert (await client.post("/tasks/999/cancel")).status_code == 404


def test_every_task_route_has_a_jobs_alias() -> None:
    task_routes = [r for r in routes.ROUTES if r.path.startswith("/tasks")]
    assert task_routes
    for spec in task_routes:
        assert routes.alias_path(spec.path) == "/jobs" + spec.path[len("/tasks") :]
    assert routes.alias_path("/events") is None
    assert routes.alias_path("/tasksx") is None


async def test_every_alias_is_served_like_its_task_route(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    paths = schema["paths"]
    for spec in routes.ROUTES:
        alias = routes.alias_path(spec.path)
        if alias is not None:
            assert spec.method.lower() in paths[alias], alias
    created = await client.post("/jobs", json={"prompt": "via alias"})
    assert created.status_code == 201
    listed = (await client.get("/jobs")).json()
    assert [t["id"] for t in listed["tasks"]] == [created.json()["id"]]
    got = await client.get(f"/jobs/{created.json()['id']}")
    assert got.json()["prompt"] == "via alias"
    assert (await client.get("/jobs/999")).status_code == 404
