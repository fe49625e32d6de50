"""The gateway's run routes over a real run registry (files written by a real run)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from loops import config, run
from loops.gateway.app import create_app
from loops.runs import recorder
from loops.services.queue import QueueService
from loops.store.memory import MemoryStore
from run_helpers import demo_job


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = config.load_settings(env={"LOOPS_HOME": str(tmp_path / "home")}, cwd=tmp_path)
    store = MemoryStore()
    store.migrate()
    app = create_app(QueueService(store, settings.queue), settings)
    lifespan = app.router.lifespan_context(app)
    await lifespan.__aenter__()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gw"
    ) as http:
        yield http
    await lifespan.__aexit__(None, None, None)


async def test_runs_are_listed_and_read_with_their_tree(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    assert (await client.get("/runs")).json() == {"runs": []}
    job = demo_job()
    home = tmp_path / "home"
    rec = recorder.open_run("r-7", home=home, title=job.name, shape=job.shape(), cwd=tmp_path)
    await run(job, cwd=tmp_path, sinks=[rec], run_id="r-7")

    [listed] = (await client.get("/runs")).json()["runs"]
    assert (listed["run_id"], listed["state"], listed["title"]) == ("r-7", "pass", "ship")
    assert listed["tokens"] == 240

    detail = (await client.get("/runs/r-7")).json()
    assert detail["state"] == "pass" and detail["cwd"] == str(tmp_path)
    paths = [n["path"] for n in detail["nodes"]]
    assert paths[0] == "ship" and len(paths) > 1
    verdicts = [n["verdict"] for n in detail["nodes"] if n["verdict"]]
    assert verdicts and all({"met", "reason", "slot"} <= set(v) for v in verdicts)
    assert detail["last_verdict"]["met"] is True
    assert (await client.get("/runs/r")).json()["run_id"] == "r-7"  # a unique prefix


async def test_an_unknown_run_is_404(client: httpx.AsyncClient) -> None:
    missing = await client.get("/runs/nope")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    bad = await client.get("/runs/not a run!")
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "invalid_input"
