"""A sandboxed worker imports loop files only from its trusted folders (``--loop-dir``).

A loop file is Python the worker runs unconfined, so on a worker with ``--sandbox`` it
must come from where no sandboxed agent can write: a ``type=loop`` or ``loop-node``
task whose file lies elsewhere (its own cwd, typically) is blocked before anything of
it runs, and so is any task whose cwd overlaps a trusted folder. The mock engine runs
the agents in process, so none of this needs bubblewrap.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from loops.engines.sandbox import Sandbox
from loops.flow import durable
from loops.flow.context import GraphPosition
from loops.worker.options import WorkerOptions
from loops.worker.runner import TaskRun

#: writes a marker when imported: a refused file must not even be imported
LOOP_FILE = """
from pathlib import Path
Path(__file__).with_suffix(".imported").write_text("x")
from loops import agent_job
job = agent_job("tend the garden")
"""


@pytest.fixture
def trusted(tmp_path: Path) -> Path:
    folder = tmp_path / "trusted"
    folder.mkdir()
    return folder


@pytest.fixture
def work(tmp_path: Path) -> Path:
    folder = tmp_path / "work"
    folder.mkdir()
    return folder


def sandboxed(options: WorkerOptions, *loop_dirs: Path) -> WorkerOptions:
    return dataclasses.replace(options, sandbox=Sandbox(), loop_dirs=loop_dirs)


async def test_a_loop_file_an_agent_could_rewrite_is_refused(
    work: Path, trusted: Path, client, options, make_task, service
) -> None:
    (work / "tend.loop.py").write_text(LOOP_FILE)
    task = make_task(type="loop", prompt="tend.loop.py", cwd=str(work))
    for opts in (sandboxed(options), sandboxed(options, trusted)):
        report = await TaskRun(task, client=client, options=opts).run()
        assert report.status == "blocked"
        assert f"loop file {work / 'tend.loop.py'} is not in a trusted loop folder" in (
            report.error or ""
        )
        assert "--loop-dir" in (report.error or "")
    assert not (work / "tend.loop.imported").exists()
    types = [e.type for e in service.list_events(task_id=task.id, limit=1000)]
    assert "agent.started" not in types
    # the same task on a worker without a sandbox runs it, as before
    report = await TaskRun(task, client=client, options=options).run()
    assert report.status == "done", report.error


async def test_a_loop_file_in_a_trusted_folder_runs(
    work: Path, trusted: Path, client, options, make_task
) -> None:
    (trusted / "tend.loop.py").write_text(LOOP_FILE)
    task = make_task(type="loop", prompt=str(trusted / "tend.loop.py"), cwd=str(work))
    report = await TaskRun(task, client=client, options=sandboxed(options, trusted)).run()
    assert report.status == "done", report.error


async def test_a_node_task_naming_an_untrusted_loop_file_is_refused(
    work: Path, trusted: Path, client, options, make_task
) -> None:
    (work / "ship.loop.py").write_text(LOOP_FILE)
    order = durable.NodeOrder(
        run_id="r",
        path=("agent",),
        trail=(),
        iteration=0,
        attempt=1,
        upstream={},
        last=None,
        review=None,
        graph=GraphPosition(dag="ship", node="agent"),
    )
    prompt = order.to_json(str(work / "ship.loop.py"))
    task = make_task(type="loop-node", prompt=prompt, cwd=str(work))
    report = await TaskRun(task, client=client, options=sandboxed(options, trusted)).run()
    assert report.status == "blocked"
    assert "is not in a trusted loop folder" in (report.error or "")
    assert not (work / "ship.loop.imported").exists()


@pytest.mark.parametrize("where", ["inside", "above"])
async def test_a_task_whose_cwd_overlaps_a_trusted_folder_is_refused(
    where: str, trusted: Path, client, options, make_task, service
) -> None:
    cwd = trusted / "sub" if where == "inside" else trusted.parent
    cwd.mkdir(exist_ok=True)
    task = make_task(cwd=str(cwd))  # a plain prompt task: its agent could write there
    report = await TaskRun(task, client=client, options=sandboxed(options, trusted)).run()
    assert report.status == "blocked"
    assert f"overlaps the trusted loop folder {trusted}" in (report.error or "")
    types = [e.type for e in service.list_events(task_id=task.id, limit=1000)]
    assert "agent.started" not in types
