"""``loop run "<prompt>"`` and ``loop run-job``: tasks in the local store, run in-process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from loops import config
from loops.queue.tasks import TaskStatus
from loops.services.queue import QueueService, task_spec

LOOP = str(Path(sys.executable).parent / "loop")
CHECK_PY = "import pathlib, sys\nsys.exit(0 if pathlib.Path('value.txt').exists() else 1)\n"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k != "LOOPS_CONFIG"}
    return {**base, "QUEUE_DB_PATH": str(tmp_path / "queue.sqlite")}


def service_of(env: dict[str, str], tmp_path: Path) -> QueueService:
    return QueueService.open(config.load_settings(env=env, cwd=tmp_path))


def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LOOP, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )


def script(tmp_path: Path, turns: list[dict[str, object]]) -> str:
    path = tmp_path / "script.json"
    path.write_text(json.dumps({"turns": turns}))
    return str(path)


def test_prompt_run_converges_and_is_recorded(tmp_path: Path, env: dict[str, str]) -> None:
    (tmp_path / "check.py").write_text(CHECK_PY)
    mock = script(tmp_path, [{"text": "not yet"}, {"text": "fixed", "edits": {"value.txt": "1"}}])
    out = run(
        ["run", "create value.txt", "--check", f"{sys.executable} check.py",
         "--provider", "mock", "--mock-script", mock, "--max-iterations", "3"],
        env, tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "until met at iteration 2" in out.stdout
    service = service_of(env, tmp_path)
    (task,) = service.list_tasks()
    assert task.status is TaskStatus.DONE
    assert task.check == f"{sys.executable} check.py" and task.provider == "mock"
    assert "until met at iteration 2" in (task.result or "")
    service.close()


def test_prompt_run_out_of_iterations_exits_1_with_the_reason(
    tmp_path: Path, env: dict[str, str]
) -> None:
    (tmp_path / "check.py").write_text(CHECK_PY)
    mock = script(tmp_path, [{"text": "no"}, {"text": "still no"}])
    out = run(
        ["run", "create value.txt", "--check", f"{sys.executable} check.py",
         "--provider", "mock", "--mock-script", mock, "--max-iterations", "2", "--json"],
        env, tmp_path,
    )  # fmt: skip
    assert out.returncode == 1, out.stderr
    last = json.loads(out.stdout.strip().splitlines()[-1])
    assert last["type"] == "run.finished" and last["status"] == "fail"
    service = service_of(env, tmp_path)
    (task,) = service.list_tasks()
    assert task.status is TaskStatus.FAILED
    assert "max 2 iterations reached" in (task.error or "")
    service.close()


def test_bad_usage_exits_2(tmp_path: Path, env: dict[str, str]) -> None:
    out = run(["run", "do it", "--mock-script", "x.json", "--provider", "claude"], env, tmp_path)
    assert out.returncode == 2
    assert "--mock-script needs --provider mock" in out.stderr


def test_run_job_runs_one_queued_task_and_streams_its_logs(
    tmp_path: Path, env: dict[str, str]
) -> None:
    service = service_of(env, tmp_path)
    task = service.create_task(task_spec({"prompt": "hello", "cwd": str(tmp_path)})).task
    mock = script(tmp_path, [{"text": "hello there\nSTEP[greet]: DONE note=greeted"}])
    out = run(
        ["run-job", str(task.id), "--provider", "mock", "--mock-script", mock,
         "--stream-job-logs"],
        env, tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert f"[task {task.id}] worker│ hello there" in out.stderr
    assert f"task {task.id} done" in out.stdout
    assert service.get_task(task.id).status is TaskStatus.DONE
    assert [s.name for s in service.list_steps(task.id)] == ["greet"]
    missing = run(["run-job", "999", "--provider", "mock"], env, tmp_path)
    assert missing.returncode == 1 and "no task with id 999" in missing.stderr
    service.close()


def _converging(tmp_path: Path) -> list[str]:
    (tmp_path / "check.py").write_text(CHECK_PY)
    mock = script(
        tmp_path, [{"text": "not yet"}, {"text": "wrote it", "edits": {"value.txt": "1"}}]
    )
    return ["run", "create value.txt", "--check", f"{sys.executable} check.py",
            "--provider", "mock", "--mock-script", mock, "--max-iterations", "3"]  # fmt: skip


def test_a_prompt_run_whose_stdout_is_not_a_terminal_prints_plain_lines(
    tmp_path: Path, env: dict[str, str]
) -> None:
    out = run(_converging(tmp_path), env, tmp_path)  # stdout is a pipe
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "task 1: create value.txt"
    assert any(" task-1  iteration 2/3" in line for line in lines), out.stdout
    assert lines[-1].startswith("task 1 done: until met at iteration 2")
    assert "\x1b" not in out.stdout and "\x1b" not in out.stderr  # no terminal drawing


def test_a_prompt_run_on_a_terminal_draws_the_live_ui_and_q_leaves_it(
    tmp_path: Path, env: dict[str, str]
) -> None:
    import fcntl
    import pty
    import select
    import struct
    import termios
    import time

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
    proc = subprocess.Popen(
        [LOOP, *_converging(tmp_path)], stdin=slave, stdout=slave, stderr=slave,
        env={**env, "TERM": "xterm-256color"}, cwd=tmp_path, start_new_session=True,
    )  # fmt: skip
    os.close(slave)
    seen, quit_sent = b"", False
    deadline = time.monotonic() + 60
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if select.select([master], [], [], 0.1)[0]:
                seen += os.read(master, 1 << 16)
            if not quit_sent and b"press q to leave" in seen:  # the UI's note: the run ended
                os.write(master, b"q")
                quit_sent = True
        while select.select([master], [], [], 0.1)[0]:
            chunk = os.read(master, 1 << 16)
            if not chunk:
                break
            seen += chunk
    except OSError:  # the terminal closed with the process
        pass
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    assert proc.wait(timeout=10) == 0, seen[-2000:]
    assert b"\x1b[?1049h" in seen  # the UI took the screen
    assert b"until met" in seen and b"create value.txt" in seen
    assert b"task 1 done: until met at iteration 2" in seen  # printed once the UI closed
