"""Supervision from another process: a supervised run read live by list, status and tail."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

LOOP = Path(sys.executable).parent / "loop"

LOOP_FILE = textwrap.dedent(
    """
    import asyncio
    from pathlib import Path
    from loops import agent_job, budget, dag, fn_job, loop, predicate
    from loops.engines.mock import MockEngine, MockTurn

    engine = MockEngine([
        MockTurn(text="first try", edits={"app.txt": "no"}),
        MockTurn(text="second try", edits={"app.txt": "done"}),
    ])

    async def wait_for_go(ctx):  # the test says when the run may go on
        while not (Path(ctx.cwd) / "go").exists():
            await asyncio.sleep(0.02)
        return True

    def tests_pass(ctx, last):
        return (Path(ctx.cwd) / "app.txt").read_text() == "done"

    job = dag(name="ship", nodes={
        "plan": fn_job(wait_for_go, name="plan"),
        "impl": {"job": loop(name="impl", body=agent_job("fix it", engine=engine),
                             until=predicate(tests_pass), max=3, budget=budget(tokens=9000)),
                 "needs": ["plan"]},
    })
    """
)


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "LOOPS_HOME": str(home)}


def _loop(home: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LOOP), *args], env=_env(home), capture_output=True, text=True, timeout=timeout
    )


def _project(tmp_path: Path) -> Path:
    (tmp_path / "ship.loop.py").write_text(LOOP_FILE)
    return tmp_path / "ship.loop.py"


def _wait_for_run(home: Path, timeout_s: float = 60) -> dict:
    """The first registered run once its plan node waits for the test's go."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        runs = json.loads(_loop(home, "list", "--json").stdout)
        if runs and json.loads(_loop(home, "status", runs[0]["run_id"], "--json").stdout)["events"]:
            return runs[0]
        time.sleep(0.05)
    raise AssertionError("the supervised run never showed up in `loop list`")


def test_a_live_run_is_read_from_another_process_and_after_it_ends(tmp_path: Path):
    home = tmp_path / "home"
    loop_file = _project(tmp_path)
    runner = subprocess.Popen(
        [str(LOOP), "run", str(loop_file), "--supervise", "--cwd", str(tmp_path)],
        env=_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        live = _wait_for_run(home)
        run_id = live["run_id"]
        assert live["state"] == "running" and live["title"] == "ship"
        status = json.loads(_loop(home, "status", run_id, "--json").stdout)
        assert status["state"] == "running" and status["shape"]["kind"] == "dag"
        listed = _loop(home, "ls").stdout
        assert run_id in listed and "running" in listed
        (tmp_path / "go").write_text("")
        tail = _loop(home, "tail", run_id, "--json")  # follows until the run ends
        assert tail.returncode == 0, tail.stderr
        types = [json.loads(line)["type"] for line in tail.stdout.splitlines()]
        assert types[0] == "run.started" and types[-1] == "run.finished"
        out, err = runner.communicate(timeout=30)
    finally:
        runner.kill()
        runner.wait()
    assert runner.returncode == 0, err
    assert "run finished: pass" in out  # stdout was not a terminal: plain log lines
    assert f"supervised run {run_id}" in err

    status = _loop(home, "status", run_id)
    assert status.returncode == 0
    assert f"run {run_id}: pass" in status.stdout and "until: met" in status.stdout
    assert "dag ship" in status.stdout  # the shape
    done = _loop(home, "records", run_id, "--kind", "completion", "--path", "ship/impl", "--json")
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["path"] for r in rows] == ["ship/impl/agent", "ship/impl/agent", "ship/impl"]
    last = _loop(home, "records", run_id, "--last", "1")
    assert last.stdout.count("\n") == 1 and "completion" in last.stdout
    assert _loop(home, "list").stdout.split("\n")[1].split()[1] == "pass"


def test_a_killed_run_is_dead_and_tail_ends(tmp_path: Path):
    home = tmp_path / "home"
    loop_file = _project(tmp_path)
    runner = subprocess.Popen(
        [str(LOOP), "run", str(loop_file), "--supervise", "--no-tui", "--cwd", str(tmp_path)],
        env=_env(home),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        run_id = _wait_for_run(home)["run_id"]
    finally:
        runner.kill()
        runner.wait()
    assert json.loads(_loop(home, "list", "--json").stdout)[0]["state"] == "dead"
    tail = _loop(home, "tail", run_id)
    assert tail.returncode == 0 and "is dead" in tail.stdout
    status = _loop(home, "status", run_id)
    assert "dead" in status.stdout and "process is gone" in status.stdout
    pruned = _loop(home, "runs:prune", "--older-than", "1s")
    assert pruned.returncode == 0


def test_a_prompt_run_on_the_queue_is_registered_with_supervise(tmp_path: Path):
    home = tmp_path / "home"
    (tmp_path / "script.json").write_text(
        json.dumps({"turns": [{"text": "done", "edits": {"value.txt": "1"}}]})
    )
    check = f"{sys.executable} -c \"import pathlib,sys; sys.exit(not pathlib.Path('value.txt').exists())\""  # noqa: E501
    env = {**_env(home), "QUEUE_DB_PATH": str(tmp_path / "queue.sqlite")}
    done = subprocess.run(
        [str(LOOP), "run", "create value.txt", "--check", check, "--provider", "mock",
         "--mock-script", str(tmp_path / "script.json"), "--supervise"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    [listed] = json.loads(_loop(home, "list", "--json").stdout)
    assert listed["run_id"].startswith("task-") and listed["state"] == "pass"
    assert listed["title"] == "create value.txt"
    records = _loop(home, "records", listed["run_id"], "--kind", "completion", "--json")
    assert json.loads(records.stdout.splitlines()[-1])["status"] == "pass"
