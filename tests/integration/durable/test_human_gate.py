"""human_gate(): the run pauses durably until `loop approve` answers; timeouts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from loops import dag, errors, human_gate, run
from loops.cli.main import cli
from loops.flow.approval import FileApprovals, make_answer
from loops.flow.checkpoint import MemoryCheckpointer
from loops.flow.events import MemorySink
from loops.runs import registry

LOOP_FILE = """
from pathlib import Path

from loops import dag, fn_job, human_gate

LOG = Path(__file__).parent / "ran.log"


def step(name):
    def fn(ctx):
        with LOG.open("a") as out:
            out.write(name + "\\n")
    return fn_job(fn, name=name)


job = dag(
    name="ship",
    nodes={
        "build": step("build"),
        "signoff": {"job": human_gate("signoff", "Ship it?"), "needs": ["build"]},
        "deploy": {"job": step("deploy"), "needs": ["signoff"]},
    },
)
"""


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LOOPS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("QUEUE_DB_PATH", str(tmp_path / "queue.sqlite"))
    monkeypatch.delenv("LOOPS_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ship.loop.py").write_text(LOOP_FILE)
    return tmp_path


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def ran(root: Path) -> list[str]:
    return (root / "ran.log").read_text().split()


def test_a_local_run_waits_for_approval_then_resumes(env: Path) -> None:
    code, out = invoke("run", "ship.loop.py", "--supervise", "--no-tui")
    assert code == 3, out
    assert "waiting for approval: Ship it?" in out
    assert ran(env) == ["build"]
    (info,) = registry.list_runs()

    code, out = invoke("approve", info.run_id, "ship/nope")
    assert code == 1 and "no human gate waiting at 'ship/nope'" in out
    code, out = invoke("approve", info.run_id, "ship/signoff", "--by", "alice", "--reason", "ok")
    assert code == 0, out
    code, out = invoke("resume", info.run_id, "--no-tui")
    assert code == 0, out
    assert "approved by alice: ok" in out
    assert ran(env) == ["build", "deploy"]  # build was not run again
    events = registry.run_events_path(info.run_id).read_text().splitlines()
    answered = [json.loads(e) for e in events if '"approval.answered"' in e]
    assert answered[0]["by"] == "alice" and answered[0]["approved"] is True
    status = registry.read_run_status(info.run_id)
    assert status.info.state.value == "pass"
    states = {n["path"]: n["state"] for n in status.nodes}
    assert states["ship/build"] == "pass"  # restored from the first attempt


def test_a_rejection_fails_the_run_with_the_reason(env: Path) -> None:
    invoke("run", "ship.loop.py", "--supervise", "--no-tui")
    (info,) = registry.list_runs()
    invoke(
        "approve", info.run_id, "ship/signoff", "--reject", "--reason", "not today", "--by", "bob"
    )
    code, out = invoke("resume", info.run_id, "--no-tui")
    assert code == 1
    assert "rejected by bob: not today" in out
    assert ran(env) == ["build"]


def test_a_loop_task_waits_for_approval_and_approval_queues_it(env: Path) -> None:
    invoke("tasks:create", "--loop-file", "ship.loop.py")
    code, out = invoke("run-job", "1", "--provider", "mock")
    assert code == 1
    assert "task 1 waiting_approval: ship/signoff: Ship it?" in out
    assert "loop approve task-1-1" in out
    code, out = invoke("tasks:list", "--status", "waiting_approval", "--json")
    assert [t["id"] for t in json.loads(out)] == [1]
    code, out = invoke("status", "--json")
    assert json.loads(out)["counts"]["waiting_approval"] == 1
    code, out = invoke("approve", "task-1-1", "ship/nope", "--by", "carol")
    assert code == 1 and "no human gate at 'ship/nope'; gates asked: ship/signoff" in out
    code, out = invoke("approve", "task-1-1", "ship/signoff", "--by", "carol")
    assert code == 0, out
    assert "task 1 is queued" in out
    code, out = invoke("tasks:get", "1", "--json")
    assert json.loads(out)["status"] == "queued"
    code, out = invoke("events:tail", "--task-id", "1", "--json")
    answered = [e for e in json.loads(out) if e["type"] == "task.approval_answered"]
    assert answered[0]["data"]["by"] == "carol" and answered[0]["data"]["approved"] is True
    code, out = invoke("run-job", "1", "--provider", "mock")
    assert code == 0, out
    assert ran(env) == ["build", "deploy"]


def test_a_rejected_loop_task_fails_with_the_reason(env: Path) -> None:
    invoke("tasks:create", "--loop-file", "ship.loop.py")
    invoke("run-job", "1", "--provider", "mock")
    code, out = invoke(
        "approve", "task-1-1", "ship/signoff", "--reject", "--reason", "not today", "--by", "bob"
    )
    assert code == 0 and "Rejected ship/signoff" in out
    code, out = invoke("run-job", "1", "--provider", "mock")
    assert code == 1
    code, out = invoke("tasks:get", "1", "--json")
    task = json.loads(out)
    assert task["status"] == "failed" and "rejected by bob: not today" in task["error"]
    assert ran(env) == ["build"]
    code, out = invoke("approve", "task-1-1", "ship/signoff", "--by", "bob")
    assert code == 1 and "task 1 is failed" in out


async def test_a_timeout_passes_or_fails_as_configured(tmp_path: Path) -> None:
    approvals = FileApprovals(tmp_path / "a.json")
    for on_timeout, status in (("pass", "pass"), ("fail", "fail")):
        job = dag(
            name="d",
            nodes={"g": human_gate("g", "ok?", timeout=0.05, on_timeout=on_timeout, poll_s=0.01)},
        )
        result = await run(
            job, cwd=tmp_path, checkpointer=MemoryCheckpointer(), approvals=approvals
        )
        assert result.status.value == status
        assert "no answer within" in result.outcome.summary or status == "pass"


async def test_a_waiting_gate_picks_up_an_answer_given_while_it_waits(tmp_path: Path) -> None:
    approvals = FileApprovals(tmp_path / "a.json")
    sink = MemorySink()

    async def later(seconds: float) -> None:
        approvals.record("g", make_answer(approved=True, by="dana", reason=None))

    job = human_gate("g", "ok?", timeout=60, poll_s=1)
    result = await run(job, cwd=tmp_path, approvals=approvals, sleep=later, sinks=[sink])
    assert result.status.value == "pass"
    assert result.outcome.data["approval"]["by"] == "dana"
    assert [e.type.value for e in sink.of_type("approval.requested")] == ["approval.requested"]


async def test_a_gate_outside_a_durable_run_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(errors.ConfigError, match="needs a durable run"):
        await run(human_gate("g", "ok?"), cwd=tmp_path)


def test_construction_errors() -> None:
    with pytest.raises(errors.ConstructionError, match="needs a question"):
        human_gate("g", " ")
    with pytest.raises(errors.ConstructionError, match="timeout"):
        human_gate("g", "q", timeout=0)
    with pytest.raises(errors.ConstructionError, match="on_timeout"):
        human_gate("g", "q", on_timeout="maybe")  # type: ignore[arg-type]
