"""The README's route table lists every route the gateway serves, with what it takes.

The gateway is the source of truth (its routes and OpenAPI document); the table in
README.md's "Routes" section is where users look. A route added without a row, a row
for a route that is gone, or a query parameter or body field left out of its row
fails here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.routing import Mount, Route

from loops import config
from loops.gateway.app import create_app
from loops.services.queue import QueueService

README = Path(__file__).resolve().parents[3] / "README.md"
#: FastAPI's helper page for OAuth2 logins from /docs: no part of the gateway's interface
NOT_OURS = {"/docs/oauth2-redirect"}
#: the README says once that every /tasks... route is also served as /jobs...
ALIASES = "/jobs"
PARAMETER = re.compile(r"\{[^}]+\}|:\w+")


def key(method: str, path: str) -> str:
    """``METHOD /path`` with each path parameter (``{task_id}``, ``:id``) as ``:_``."""
    return method + " " + PARAMETER.sub(":_", path)


def route_rows() -> dict[str, tuple[str, str]]:
    """Each route the table names -> (its route cell, its whole row)."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n### Routes\n", 1)[1].split("\n### ", 1)[0]
    rows: dict[str, tuple[str, str]] = {}
    for line in section.splitlines():
        if line.startswith("| `"):
            cell = line.split(" | ", 1)[0]
            for method, path in re.findall(r"`([A-Z]+) (/[^`?]*)", cell):
                rows[key(method, path)] = (cell, line)
    return rows


@pytest.fixture
def app(tmp_path: Path) -> Iterator[FastAPI]:
    env = {"QUEUE_DB_PATH": str(tmp_path / "q.sqlite")}
    settings = config.load_settings(env=env, cwd=tmp_path)
    service = QueueService.open(settings)
    yield create_app(service, settings)
    service.close()


def served(app: FastAPI) -> set[str]:
    """Every route the app serves (but the /jobs aliases), as :func:`key` names it."""
    found: set[str] = set()
    for route in app.routes:
        if isinstance(route, Mount):
            found.add(key("GET", f"{route.path}/..."))
        elif isinstance(route, Route | APIRoute):
            if route.path in NOT_OURS or route.path.startswith(ALIASES):
                continue
            found.update(key(m, route.path) for m in route.methods or () if m != "HEAD")
    return found


def test_every_route_served_has_a_row_and_every_row_a_route(app: FastAPI) -> None:
    rows = route_rows()
    unlisted, stale = sorted(served(app) - set(rows)), sorted(set(rows) - served(app))
    assert not unlisted, f"served but not in README's route table: {unlisted}"
    assert not stale, f"in README's route table but not served: {stale}"


def test_every_tasks_route_is_also_served_as_jobs(app: FastAPI) -> None:
    """What the table's heading promises, both ways."""
    routes = {(m, r.path) for r in app.routes if isinstance(r, APIRoute) for m in r.methods or ()}
    tasks = {(m, p[len("/tasks") :]) for m, p in routes if p.startswith("/tasks")}
    jobs = {(m, p[len(ALIASES) :]) for m, p in routes if p.startswith(ALIASES)}
    assert tasks and tasks == jobs


def body_fields(spec: dict[str, Any], operation: dict[str, Any]) -> list[str]:
    """The property names of an operation's JSON body (optional bodies included)."""
    content = operation.get("requestBody", {}).get("content", {})
    schema = content.get("application/json", {}).get("schema", {})
    refs = [schema.get("$ref"), *(s.get("$ref") for s in schema.get("anyOf", ()))]
    names: list[str] = []
    for ref in filter(None, refs):
        names += spec["components"]["schemas"][ref.rsplit("/", 1)[-1]].get("properties", {})
    return names


def test_each_row_names_its_query_parameters_and_body_fields(app: FastAPI) -> None:
    spec = app.openapi()
    rows = route_rows()
    missing: list[str] = []
    for path, operations in spec["paths"].items():
        if path.startswith(ALIASES):
            continue
        for method, operation in operations.items():
            name = key(method.upper(), path)
            cell, row = rows[name]
            for param in operation.get("parameters", ()):
                if param["in"] == "query" and f"{param['name']}=" not in cell:
                    missing.append(f"{name}: query {param['name']}=")
            for field in body_fields(spec, operation):
                if not re.search(rf"\b{field}\b", row):
                    missing.append(f"{name}: body field {field}")
    assert not missing, "README's route table leaves out:\n" + "\n".join(missing)
