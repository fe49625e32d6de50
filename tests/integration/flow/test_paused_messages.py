"""A paused run says ``paused`` once, however deep the pause and whichever edge shows it.

A pause starts at a budget or a human gate and climbs through the loops and dags
around it; each edge (``loop run``, a worker's task) puts the status in front of the
reason once, so no job on the way may put it in its summary.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from loops.cli.main import cli

BUDGETED = """
from loops import agent_job, budget, dag, loop, predicate

tend = loop(
    name="tend",
    body=agent_job(
        "Progress one issue.",
        engine="mock",
        engine_options={
            "default": {"text": "ok", "usage": {"input_tokens": 300, "output_tokens": 100}}
        },
    ),
    until=predicate(lambda ctx, last: False, name="never"),
    max=10,
    budget=budget(tokens=1000),
)

job = dag(name="outer", nodes={"inner": dag(name="inner", nodes={"tend": tend})})
"""

LOOPED = BUDGETED.split("job = dag(")[0] + "job = tend\n"  # the loop alone

GATED = """
from loops import dag, fn_job, human_gate

job = dag(
    name="ship",
    nodes={
        "build": fn_job(lambda ctx: None, name="build"),
        "signoff": {"job": human_gate("signoff", "Ship it?"), "needs": ["build"]},
    },
)
"""

BUDGET_REASON = "budget of outer/inner/tend exhausted: tokens 1200 of 1000"


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LOOPS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("QUEUE_DB_PATH", str(tmp_path / "queue.sqlite"))
    monkeypatch.delenv("LOOPS_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "budgeted.loop.py").write_text(BUDGETED)
    (tmp_path / "gated.loop.py").write_text(GATED)
    (tmp_path / "looped.loop.py").write_text(LOOPED)
    return tmp_path


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def test_loop_run_of_a_budget_paused_dag_says_paused_once(here: Path) -> None:
    code, out = invoke("run", "budgeted.loop.py", "--no-tui")
    assert code == 3
    last = out.splitlines()[-1]
    assert last.startswith(f"paused: {BUDGET_REASON}"), last
    assert last.count("paused") == 1, last


def test_loop_run_json_reason_of_a_paused_dag_holds_no_status(here: Path) -> None:
    code, out = invoke("run", "budgeted.loop.py", "--json")
    assert code == 3
    finished = json.loads(out.splitlines()[-1])
    assert finished["status"] == "paused"
    assert finished["reason"].startswith(BUDGET_REASON), finished


def test_loop_run_of_a_dag_waiting_at_a_human_gate_says_paused_once(here: Path) -> None:
    code, out = invoke("run", "gated.loop.py", "--supervise", "--no-tui")
    assert code == 3
    last = out.splitlines()[-1]
    assert last.startswith("paused: waiting_approval: ship/signoff: Ship it?"), last
    assert last.count("paused") == 1, last


def test_a_budget_paused_loop_task_says_paused_once(here: Path) -> None:
    invoke("tasks:create", "--loop-file", "budgeted.loop.py")
    code, out = invoke("run-job", "1", "--provider", "mock")
    assert code == 1
    assert out.startswith(f"task 1 blocked: paused: {BUDGET_REASON}"), out
    assert out.count("paused") == 1, out
    assert "resume with: loop resume task-1-1 --budget-usd" in out


def test_a_budget_paused_loop_says_paused_once(here: Path) -> None:
    code, out = invoke("run", "looped.loop.py", "--no-tui")
    assert code == 3
    assert out.splitlines()[-1] == "paused: budget of tend exhausted: tokens 1200 of 1000"
    invoke("tasks:create", "--loop-file", "looped.loop.py")
    code, out = invoke("run-job", "1", "--provider", "mock")
    assert out.startswith("task 1 blocked: paused: budget of tend exhausted: tokens 1200 of 1000;")
    assert out.count("paused") == 1, out


def test_a_loop_task_waiting_at_a_human_gate_names_its_status_once(here: Path) -> None:
    invoke("tasks:create", "--loop-file", "gated.loop.py")
    code, out = invoke("run-job", "1", "--provider", "mock")
    assert code == 1
    assert out.startswith("task 1 waiting_approval: ship/signoff: Ship it?"), out
    assert out.count("waiting_approval") == 1, out
    assert "paused" not in out
    assert "answer with: loop approve task-1-1 PATH" in out
