"""``loop resume``: a budget-paused run resumed with a new budget, locally and as a task."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from loops.cli.main import cli
from loops.runs import registry

LOOP_FILE = """
from pathlib import Path

from loops import budget, loop, predicate

COUNTS = Path(__file__).parent / "turns.log"


def body(ctx):
    with COUNTS.open("a") as out:
        out.write(f"{ctx.iteration}\\n")
    return True


job = loop(
    name="work",
    body=body,
    until=predicate(lambda ctx, last: ctx.iteration >= 4, name="four turns"),
    max=6,
    budget=budget(iterations=2),
)
"""


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LOOPS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("QUEUE_DB_PATH", str(tmp_path / "queue.sqlite"))
    monkeypatch.delenv("LOOPS_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "work.loop.py").write_text(LOOP_FILE)
    return tmp_path


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def turns(root: Path) -> list[int]:
    return [int(x) for x in (root / "turns.log").read_text().split()]


def test_a_supervised_run_paused_by_its_budget_resumes_with_a_new_budget(env: Path) -> None:
    code, out = invoke("run", "work.loop.py", "--supervise", "--no-tui")
    assert code == 3, out
    assert turns(env) == [1, 2]
    (run,) = registry.list_runs()

    code, out = invoke("resume", run.run_id, "--budget-tokens", "1000", "--no-tui")
    assert code == 0, out
    assert "resumed (attempt 2)" in out
    assert turns(env) == [1, 2, 3, 4]  # iterations 1 and 2 did not run again

    code, out = invoke("resume", run.run_id)
    assert code == 1
    assert "passed; there is nothing to resume" in out


def test_resume_without_a_new_budget_pauses_again(env: Path) -> None:
    invoke("run", "work.loop.py", "--supervise", "--no-tui")
    (run,) = registry.list_runs()
    code, _ = invoke("resume", run.run_id, "--no-tui")
    assert code == 3
    assert turns(env) == [1, 2]


def test_an_unknown_run_is_a_clear_error(env: Path) -> None:
    code, out = invoke("resume", "20260101T000000-abcdef")
    assert code != 0
    assert "no supervised run" in out


def test_a_paused_loop_task_is_blocked_then_resumed_by_requeuing_it(env: Path) -> None:
    code, out = invoke("tasks:create", "--loop-file", "work.loop.py", "--json")
    assert code == 0, out
    code, out = invoke("run-job", "1", "--provider", "mock")
    assert code == 1
    assert "blocked: paused" in out and "loop resume task-1-1" in out
    assert turns(env) == [1, 2]

    code, out = invoke("resume", "task-1-1", "--budget-iterations", "9")
    assert code == 2  # no such option: iterations are not a resume budget
    code, out = invoke("resume", "task-1-1", "--budget-tokens", "1000")
    assert code == 0, out
    assert "Queued task 1 again" in out
    code, out = invoke("resume", "task-1-1")
    assert code == 1 and "task 1 is queued" in out
    code, out = invoke("run-job", "1", "--provider", "mock")
    assert code == 0, out
    assert turns(env) == [1, 2, 3, 4]


def test_loop_file_flag_errors(env: Path) -> None:
    code, out = invoke("tasks:create", "--loop-file", "missing.loop.py")
    assert code != 0 and "no such file" in out
    code, out = invoke("tasks:create", "--loop-file", "work.loop.py", "--prompt", "x")
    assert code != 0 and "not both" in out
    code, out = invoke("tasks:create", "--loop-file", "work.loop.py", "--type", "task")
    assert code != 0 and "--type loop" in out
    (env / "notes.md").write_text("# not a loop file\n")
    code, out = invoke("tasks:create", "--loop-file", "notes.md")
    assert code != 0 and "not a loop file: its name must end in .loop.py" in out
    # a relative path is looked for under --cwd, and the error says where it looked
    (env / "app").mkdir()
    code, out = invoke("tasks:create", "--loop-file", "work.loop.py", "--cwd", str(env / "app"))
    assert code != 0
    assert f"no such file {env / 'app' / 'work.loop.py'}" in out
    assert "a relative path is read under --cwd" in out
    assert invoke("tasks:list")[1] == "No tasks.\n"


def test_a_run_whose_process_is_alive_is_not_resumed(env: Path) -> None:
    from loops.runs import recorder

    live = recorder.open_run("20260101T000000-aaaaaa", home=env / "home", title="live")
    try:
        code, out = invoke("resume", "20260101T000000-aaaaaa")
    finally:
        live.close()
    assert code == 1
    assert "is still running" in out
