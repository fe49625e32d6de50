"""``loop run`` with the new engine flags: --provider openai --base-url, --fallback, --record,
--replay; the `loop` CLI as a subprocess against the fake model server on 127.0.0.1."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fakes.model_server import FakeModelServer, Reply, ToolCall

LOOP = str(Path(sys.executable).parent / "loop")
PYTEST = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
CHECK = f"{sys.executable} -m pytest -q -p no:cacheprovider"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("LOOPS_", "OPENAI_"))}
    return {**base, "QUEUE_DB_PATH": str(tmp_path / "queue.sqlite"), "LOOPS_HOME": str(tmp_path)}


def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LOOP, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )


def make_repo(where: Path) -> Path:
    where.mkdir()
    (where / "calc.py").write_text("def add(a, b):\n    return a - b\n")
    (where / "test_calc.py").write_text(
        "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n"
    )
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", "init", "-q"], cwd=where, check=True)
    subprocess.run([*git, "add", "."], cwd=where, check=True)
    subprocess.run([*git, "commit", "-qm", "start"], cwd=where, check=True)
    return where


FIX_SCRIPT = [
    Reply(tool_calls=[ToolCall("read_file", {"path": "calc.py"})]),
    Reply(tool_calls=[ToolCall("edit_file", {"path": "calc.py", "old": "a - b", "new": "a + b"})]),
    Reply(tool_calls=[ToolCall("run_command", {"argv": PYTEST})]),
    Reply(text="Fixed add(); the tests pass."),
]


@pytest.mark.slow
def test_openai_provider_fixes_a_repo_then_the_recording_replays_offline(
    tmp_path: Path, env: dict[str, str]
) -> None:
    repo = make_repo(tmp_path / "repo")
    pristine = tmp_path / "pristine"
    shutil.copytree(repo, pristine)
    record = tmp_path / "rec"
    with FakeModelServer(FIX_SCRIPT) as server:
        out = run(
            ["run", "Make the tests pass.", "--provider", "openai", "--model", "gpt-4o",
             "--base-url", f"{server.url}/v1", "--check", CHECK, "--record", str(record),
             "--max-iterations", "2", "--no-tui"],
            {**env, "OPENAI_API_KEY": "sk-e2e"}, repo,
        )  # fmt: skip
        requests = server.model_requests()
    assert out.returncode == 0, out.stdout + out.stderr
    assert "done" in out.stdout
    assert len(requests) == 4 and requests[0].headers["Authorization"] == "Bearer sk-e2e"
    assert "a + b" in (repo / "calc.py").read_text()
    assert (record / "turn-0001.jsonl").is_file() and (record / "turn-0001.raw").is_file()

    # Replay the recording on the untouched copy: no model, the same edit, the check passes.
    replay_env = {**env, "QUEUE_DB_PATH": str(tmp_path / "replay.sqlite")}
    out = run(["run", "Make the tests pass.", "--replay", str(record), "--check", CHECK,
               "--max-iterations", "2", "--no-tui"], replay_env, pristine)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "a + b" in (pristine / "calc.py").read_text()


def test_replay_of_another_prompt_stops_with_the_difference(
    tmp_path: Path, env: dict[str, str]
) -> None:
    repo = make_repo(tmp_path / "repo")
    record = tmp_path / "rec"
    with FakeModelServer([Reply(text="Nothing to do.")]) as server:
        out = run(["run", "Say hi.", "--provider", "openai", "--model", "gpt-4o",
                   "--base-url", f"{server.url}/v1", "--record", str(record), "--no-tui"],
                  env, repo)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    replay_env = {**env, "QUEUE_DB_PATH": str(tmp_path / "replay.sqlite")}
    out = run(["run", "Say bye.", "--replay", str(record), "--no-tui"], replay_env, repo)
    assert out.returncode == 1
    assert "replay diverged" in out.stdout + out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.slow
def test_rate_limited_primary_falls_back_and_the_move_is_in_the_events(
    tmp_path: Path, env: dict[str, str]
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    script = tmp_path / "limited.json"
    script.write_text(json.dumps({"turns": [{"error": "rate_limit", "retry_after_s": 60}]}))
    with FakeModelServer([Reply(text="Done by the fallback.")]) as server:
        out = run(
            ["run", "Do the thing.", "--provider", "mock", "--mock-script", str(script),
             "--fallback", "openai", "--base-url", f"{server.url}/v1", "--json"],
            {**env, "OPENAI_MODEL": "gpt-4o"}, work,
        )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    events = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    notice = next(e for e in events if e["type"] == "agent.notice")
    assert notice["code"] == "engine.fallback"
    assert (notice["data"]["from"], notice["data"]["to"]) == ("mock", "openai")
    texts = "".join(e.get("text", "") for e in events if e["type"] == "agent.text")
    assert "Done by the fallback." in texts


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--fallback", "codex,nope"], "unknown engine 'nope'"),
        (["--base-url", "http://127.0.0.1:9/v1"], "--base-url is for the openai engine"),
        (["--provider", "openai", "--base-url", "ftp://x"], "is not an http(s) URL"),
        (["--replay", "/nonexistent-dir"], "is not a directory"),
    ],
)
def test_bad_engine_flags_are_one_line_errors(
    tmp_path: Path, env: dict[str, str], args: list[str], message: str
) -> None:
    out = run(["run", "x", *args], env, tmp_path)
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr


def test_run_job_falls_back_records_and_the_timeline_has_the_move(
    tmp_path: Path, env: dict[str, str]
) -> None:
    from loops import config
    from loops.services.queue import QueueService, task_spec

    service = QueueService.open(config.load_settings(env=env, cwd=tmp_path))
    task = service.create_task(task_spec({"prompt": "hello", "cwd": str(tmp_path)})).task
    limited = tmp_path / "limited.json"
    limited.write_text(json.dumps({"turns": [{"error": "rate_limit"}]}))
    record = tmp_path / "rec"
    with FakeModelServer([Reply(text="Hello from the fallback.")]) as server:
        out = run(
            ["run-job", str(task.id), "--provider", "mock", "--mock-script", str(limited),
             "--fallback", "openai", "--base-url", f"{server.url}/v1", "--record", str(record)],
            {**env, "OPENAI_MODEL": "gpt-4o"}, tmp_path,
        )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert service.get_task(task.id).status.value == "done"
    events = service.list_events(task_id=task.id, limit=500)
    (notice,) = [e.data for e in events if e.type == "agent.notice"]
    assert notice["code"] == "engine.fallback"
    assert (notice["data"]["from"], notice["data"]["to"]) == ("mock", "openai")
    lines = (record / "turn-0001.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["engine"] == "mock+openai"
    assert "Hello from the fallback." in lines[-1]
    service.close()
