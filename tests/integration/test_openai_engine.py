"""The ``openai`` engine against the scripted fake model server's chat-completions route.

Every test runs the real engine (httpx, real tool execution in a temp directory,
real subprocesses for commands) against :class:`~fakes.model_server.FakeModelServer`
on 127.0.0.1, streamed and not.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fakes.model_server import Failure, FakeModelServer, Hang, Reply, ToolCall
from loops import errors
from loops.engines import base, create_engine
from loops.engines.openai import OpenAIEngine, OpenAIOptions
from loops.engines.workspace_tools import ToolLimits, Workspace


def engine(server: FakeModelServer, **options: Any) -> OpenAIEngine:
    options.setdefault("model", "gpt-4o")
    options.setdefault("api_key", "sk-test")
    return OpenAIEngine(OpenAIOptions(base_url=f"{server.url}/v1", **options))


async def run(
    eng: base.Engine, cwd: Path, **fields: Any
) -> tuple[list[base.TurnEvent], base.TurnResult]:
    fields.setdefault("timeout_s", 30)
    events: list[base.TurnEvent] = []
    request = base.TurnRequest(prompt=fields.pop("prompt", "Do the task."), cwd=cwd, **fields)
    result = await base.run_turn(eng, request, on_event=events.append)
    return events, result


def tool_messages(server: FakeModelServer, index: int = -1) -> list[dict[str, Any]]:
    messages = server.model_requests()[index].body["messages"]
    return [m for m in messages if m["role"] == "tool"]


@pytest.fixture(params=[True, False], ids=["streamed", "whole"])
def streamed(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


async def test_tool_loop_writes_runs_and_answers(tmp_path: Path, streamed: bool):
    script = [
        Reply(
            text="Writing the file.",
            tool_calls=[ToolCall("write_file", {"path": "out/hello.txt", "content": "hi\n"})],
            input_tokens=1000,
            cache_read_tokens=400,
            output_tokens=20,
        ),
        Reply(
            tool_calls=[ToolCall("run_command", {"argv": ["cat", "out/hello.txt"]})],
            input_tokens=1100,
            output_tokens=10,
        ),
        Reply(text="Done: the file says hi.", input_tokens=1200, output_tokens=5),
    ]
    with FakeModelServer(script) as server:
        events, result = await run(engine(server, stream=streamed), tmp_path, system="EXTRA-RULE")
    assert result.ok, result.error
    assert result.final_text == "Done: the file says hi."
    assert (tmp_path / "out" / "hello.txt").read_text() == "hi\n"
    uses = [e for e in events if isinstance(e, base.ToolUse)]
    outputs = [e for e in events if isinstance(e, base.ToolResult)]
    assert [u.name for u in uses] == ["write_file", "run_command"]
    assert outputs[1].output.startswith("exit code 0") and "hi" in outputs[1].output
    assert [o.id for o in outputs] == [u.id for u in uses]
    texts = "".join(e.text for e in events if isinstance(e, base.AgentText))
    assert "Writing the file." in texts and "Done: the file says hi." in texts
    assert result.usage.input_tokens == 3300 and result.usage.cached_input_tokens == 400
    assert result.usage.output_tokens == 35
    # gpt-4o list prices: $2.50/M input, $1.25/M cached input, $10/M output.
    assert result.usage.cost_usd == pytest.approx((2900 * 2.5 + 400 * 1.25 + 35 * 10) / 1e6)
    assert result.cost_source is not None and result.cost_source.startswith("computed: ")
    assert result.num_turns == 3
    first = server.model_requests()[0]
    assert first.headers["Authorization"] == "Bearer sk-test"
    assert first.body["model"] == "gpt-4o"
    assert bool(first.body.get("stream")) is streamed
    assert "EXTRA-RULE" in first.body["messages"][0]["content"]
    offered = {t["function"]["name"] for t in first.body["tools"]}
    assert offered == {"read_file", "write_file", "edit_file", "list_dir", "search", "run_command"}
    # The tool results went back to the model with their call ids.
    last = server.model_requests()[-1].body["messages"]
    assert last[-1]["role"] == "tool" and "hi" in last[-1]["content"]


async def test_streamed_text_arrives_in_pieces(tmp_path: Path):
    with FakeModelServer([Reply(text="abcdefgh")]) as server:
        events, result = await run(engine(server), tmp_path)
    pieces = [e.text for e in events if isinstance(e, base.AgentText)]
    assert pieces == ["abcd", "efgh"] and result.final_text == "abcdefgh"


async def test_malformed_tool_calls_get_error_results_and_the_loop_goes_on(
    tmp_path: Path, streamed: bool
):
    script = [
        Reply(
            tool_calls=[
                ToolCall("write_file", raw_arguments='{"path": "a.txt", "content": '),
                ToolCall("delete_everything", {"path": "."}),
                ToolCall("read_file", raw_arguments='["a.txt"]'),
            ]
        ),
        Reply(text="Recovered."),
    ]
    with FakeModelServer(script) as server:
        events, result = await run(engine(server, stream=streamed), tmp_path)
        results = tool_messages(server)
    assert result.ok, result.error
    assert result.final_text == "Recovered."
    assert [e.is_error for e in events if isinstance(e, base.ToolResult)] == [True, True, True]
    assert "not valid JSON" in results[0]["content"]
    assert "unknown tool 'delete_everything'" in results[1]["content"]
    assert "JSON object" in results[2]["content"]
    assert not (tmp_path / "a.txt").exists()


async def test_paths_outside_the_cwd_are_refused_symlinks_included(tmp_path: Path):
    cwd = tmp_path / "proj"
    cwd.mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET")
    (cwd / "link").symlink_to(secret)
    (cwd / "dirlink").symlink_to(tmp_path)
    calls = [
        ToolCall("read_file", {"path": "../secret.txt"}),
        ToolCall("read_file", {"path": str(secret)}),
        ToolCall("read_file", {"path": "link"}),
        ToolCall("write_file", {"path": "dirlink/evil.txt", "content": "x"}),
        ToolCall("list_dir", {"path": ".."}),
        ToolCall("search", {"pattern": "TOP", "path": "dirlink"}),
    ]
    with FakeModelServer([Reply(tool_calls=calls), Reply(text="ok")]) as server:
        _, result = await run(engine(server), cwd)
        results = tool_messages(server)
    assert result.ok
    assert len(results) == 6
    for message in results:
        assert "outside the working directory" in message["content"]
        assert "TOP-SECRET" not in message["content"]
    assert not (tmp_path / "evil.txt").exists()


async def test_edit_search_list_and_read_inside_the_cwd(tmp_path: Path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "mod.py").write_text("def f():\n    return 1\n")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "config").write_text("return 1")
    calls = [
        ToolCall("edit_file", {"path": "pkg/mod.py", "old": "return 1", "new": "return 2"}),
        ToolCall("search", {"pattern": r"return \d", "glob": "*.py"}),
        ToolCall("list_dir", {"recursive": True}),
        ToolCall("read_file", {"path": "pkg/mod.py", "offset": 2}),
        ToolCall("edit_file", {"path": "pkg/mod.py", "old": "absent", "new": "x"}),
    ]
    with FakeModelServer([Reply(tool_calls=calls), Reply(text="ok")]) as server:
        _, result = await run(engine(server), tmp_path)
        edit, search, listing, read, missing = (m["content"] for m in tool_messages(server))
    assert result.ok
    assert (tmp_path / "pkg" / "mod.py").read_text() == "def f():\n    return 2\n"
    assert "replaced 1" in edit
    assert search == "pkg/mod.py:2:     return 2"
    assert listing.splitlines() == ["pkg/", "pkg/mod.py"]  # .git is never listed
    assert read == "     2\t    return 2"
    assert missing.startswith("error: old text not found")


async def test_an_edit_is_seen_by_python_even_within_the_second_of_its_bytecode(
    tmp_path: Path,
):
    """Python trusts a cached .pyc whose source has the same size and mtime second.

    A one-character fix written in the same second as the test run that compiled the
    module (seen in CI) left the model's next run importing the old code. Writing a
    ``.py`` file drops its cached bytecode; the mtime is put back here to make the
    same second certain.
    """
    (tmp_path / "calc.py").write_text("def add(a, b):\n    return a - b\n")
    tools = Workspace(tmp_path, env={"PATH": os.environ["PATH"]})
    offered = ("run_command", "edit_file", "write_file")
    show = {"argv": [sys.executable, "-c", "import calc; print(calc.add(2, 3))"]}
    before = await tools.call("run_command", show, offered)  # compiles into __pycache__
    assert "-1" in before.output and list((tmp_path / "__pycache__").glob("calc.*.pyc"))
    stamp = (tmp_path / "calc.py").stat()
    edit = {"path": "calc.py", "old": "a - b", "new": "a + b"}
    assert not (await tools.call("edit_file", edit, offered)).is_error
    os.utime(tmp_path / "calc.py", ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    after = await tools.call("run_command", show, offered)
    assert after.output.startswith("exit code 0") and "\n5" in after.output, after.output
    # write_file likewise (same size, same second again)
    await tools.call("run_command", show, offered)
    stamp = (tmp_path / "calc.py").stat()
    whole = {"path": "calc.py", "content": "def add(a, b):\n    return a * b\n"}
    assert not (await tools.call("write_file", whole, offered)).is_error
    os.utime(tmp_path / "calc.py", ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    assert "\n6" in (await tools.call("run_command", show, offered)).output


async def test_commands_are_argv_only_bounded_and_time_limited(tmp_path: Path):
    limits = ToolLimits(max_output_bytes=2000)
    calls = [
        ToolCall("run_command", {"argv": "echo hi; touch pwned"}),
        ToolCall("run_command", {"argv": ["sh", "-c", "echo $0", "$(touch pwned)"]}),
        ToolCall("run_command", {"argv": [sys.executable, "-c", "print('x' * 100000)"]}),
        ToolCall("run_command", {"argv": ["sleep", "30"], "timeout_s": 0.5}),
        ToolCall("run_command", {"argv": ["no-such-program-xyz"]}),
    ]
    with FakeModelServer([Reply(tool_calls=calls), Reply(text="ok")]) as server:
        _, result = await run(engine(server, tool_limits=limits), tmp_path)
        text, quoted, big, slow, missing = (m["content"] for m in tool_messages(server))
    assert result.ok
    assert "argv must be a non-empty list" in text
    assert not (tmp_path / "pwned").exists()  # "$(touch pwned)" was an argument, not code
    assert "$(touch pwned)" in quoted
    assert len(big) < 2200 and "cut" in big
    assert "killed after 0.5s (timeout)" in slow
    assert "command not found" in missing


async def test_read_only_offers_only_reading_tools(tmp_path: Path):
    call = ToolCall("write_file", {"path": "x.txt", "content": "x"})
    with FakeModelServer([Reply(tool_calls=[call]), Reply(text="could not")]) as server:
        _, result = await run(engine(server), tmp_path, permission=base.Permission.READ_ONLY)
        offered = {t["function"]["name"] for t in server.model_requests()[0].body["tools"]}
        (denied,) = tool_messages(server)
    assert result.ok
    assert offered == {"read_file", "list_dir", "search"}
    assert "unknown tool 'write_file'" in denied["content"]
    assert not (tmp_path / "x.txt").exists()


async def test_max_turns_stops_a_model_that_keeps_calling_tools(tmp_path: Path):
    loop_call = Reply(tool_calls=[ToolCall("list_dir", {})], output_tokens=7)
    with FakeModelServer([loop_call] * 10) as server:
        _, result = await run(engine(server), tmp_path, max_turns=2)
    assert isinstance(result.error, errors.EngineMaxTurns), result.error
    assert len(server.model_requests()) == 2
    assert result.usage.output_tokens == 14


@pytest.mark.parametrize(
    ("failure", "error_class"),
    [
        (Failure(401, "Incorrect API key provided"), errors.EngineAuthError),
        (Failure(403, "forbidden"), errors.EngineAuthError),
        (Failure(429, "Rate limit reached", retry_after_s=3), errors.EngineRateLimited),
        (Failure(500, "internal"), errors.EngineApiError),
        (Failure(404, "model 'nope' not found"), errors.EngineApiError),
    ],
)
async def test_http_failures_are_classified(
    tmp_path: Path, streamed: bool, failure: Failure, error_class: type[errors.EngineError]
):
    with FakeModelServer([failure]) as server:
        _, result = await run(engine(server, stream=streamed), tmp_path)
    assert type(result.error) is error_class
    assert failure.message in result.error.message
    assert f"HTTP {failure.status}" in result.error.message
    if isinstance(result.error, errors.EngineRateLimited):
        assert result.error.retry_after_s == pytest.approx(3.0)


async def test_connection_refused_is_a_network_error(tmp_path: Path):
    with FakeModelServer() as server:
        eng = engine(server)
    _, result = await run(eng, tmp_path)
    assert isinstance(result.error, errors.EngineNetworkError), result.error
    assert "cannot connect" in result.error.message


async def test_wall_clock_limit_interrupts_a_hanging_server(tmp_path: Path):
    with FakeModelServer([Hang()]) as server:
        _, result = await run(engine(server), tmp_path, timeout_s=0.5)
    assert result.status is base.TurnStatus.INTERRUPTED
    assert isinstance(result.error, errors.EngineTimeout)


async def test_resume_continues_the_conversation(tmp_path: Path):
    script = [Reply(text="First answer."), Reply(text="Second answer.")]
    with FakeModelServer(script) as server:
        eng = engine(server, session_dir=tmp_path / "sessions")
        _, first = await run(eng, tmp_path, prompt="one")
        # A fresh engine finds the session in session_dir.
        fresh = engine(server, session_dir=tmp_path / "sessions")
        _, second = await run(fresh, tmp_path, prompt="two", resume_session_id=first.session_id)
        history = server.model_requests()[-1].body["messages"]
        _, gone = await run(fresh, tmp_path, resume_session_id="openai-unknown")
    assert second.ok and second.session_id == first.session_id
    assert [m["content"] for m in history if m["role"] != "system"] == [
        "one",
        "First answer.",
        "two",
    ]
    assert isinstance(gone.error, errors.EngineSessionNotFound)


async def test_closing_the_stream_kills_a_running_command(tmp_path: Path):
    call = ToolCall("run_command", {"argv": ["sh", "-c", "echo $$ > pid; exec sleep 300"]})
    with FakeModelServer([Reply(tool_calls=[call])]) as server:
        stream = engine(server).run_turn(base.TurnRequest(prompt="x", cwd=tmp_path))
        first = await anext(stream)
        assert isinstance(first, base.UsageReport)
        for _ in range(500):
            if (tmp_path / "pid").exists() and (tmp_path / "pid").read_text().strip():
                break
            await asyncio.sleep(0.01)
        pid = int((tmp_path / "pid").read_text())
        await stream.aclose()  # type: ignore[attr-defined]
    for _ in range(300):
        if not _alive(pid):
            break
        await asyncio.sleep(0.01)
    assert not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


async def test_key_base_url_and_model_come_from_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    with FakeModelServer([Reply(text="ok")]) as server:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-from-settings")
        monkeypatch.setenv("OPENAI_BASE_URL", f"{server.url}/v1")
        monkeypatch.setenv("OPENAI_MODEL", "qwen2.5-coder")
        monkeypatch.setenv("LOOPS_CONFIG", "")
        monkeypatch.chdir(tmp_path)
        eng = create_engine("openai")
        _, result = await run(eng, tmp_path)
        request = server.model_requests()[0]
    assert result.ok, result.error
    assert request.headers["Authorization"] == "Bearer sk-from-settings"
    assert request.body["model"] == "qwen2.5-coder"
    assert result.usage.cost_usd is None and result.cost_source is None  # unknown price
    # The key never reaches the commands the agent runs.
    assert "sk-from-settings" not in json.dumps(eng._command_env(base.TurnRequest("x")))


async def test_no_model_is_a_clear_error(tmp_path: Path):
    with FakeModelServer() as server:
        _, result = await run(engine(server, model=None), tmp_path)
    assert isinstance(result.error, errors.EngineApiError)
    assert "--model" in result.error.message


async def test_completes_a_real_coding_task_in_a_git_repo(tmp_path: Path):
    """A small real task: fix a bug, run the tests itself, then a real check passes."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "calc.py").write_text("def add(a, b):\n    return a - b\n")
    (repo / "test_calc.py").write_text(
        "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n"
    )
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run([*git, "add", "."], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "start"], cwd=repo, check=True)
    pytest_argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    script = [
        Reply(tool_calls=[ToolCall("run_command", {"argv": pytest_argv})]),
        Reply(tool_calls=[ToolCall("read_file", {"path": "calc.py"})]),
        Reply(
            text="The sign is wrong.",
            tool_calls=[ToolCall("edit_file", {"path": "calc.py", "old": "a - b", "new": "a + b"})],
        ),
        Reply(tool_calls=[ToolCall("run_command", {"argv": pytest_argv})]),
        Reply(text="Fixed add(); the test passes."),
    ]
    with FakeModelServer(script) as server:
        _, result = await run(engine(server), repo, prompt="Make the tests pass.", timeout_s=120)
        outputs = [m["content"] for m in tool_messages(server)]
    assert result.ok, result.error
    assert outputs[0].startswith("exit code 1") and "assert -1 == 5" in outputs[0]
    assert outputs[3].startswith("exit code 0") and "1 passed" in outputs[3]
    check = subprocess.run(pytest_argv, cwd=repo, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout
    diff = subprocess.run(["git", "diff", "--stat"], cwd=repo, capture_output=True, text=True)
    assert "calc.py" in diff.stdout
    assert os.environ.get("OPENAI_API_KEY") != "sk-test"  # nothing leaked into our env
