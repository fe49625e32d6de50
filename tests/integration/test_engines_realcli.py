"""The CLI engines (claude, codex, gemini, opencode) against the REAL CLIs and a fake server.

The CLIs are installed from npm at the versions pinned in scripts/install-test-agents
(cached under ~/.cache/loops-test-agents and reused). Each test points a real CLI at a
:class:`~fakes.model_server.FakeModelServer` on 127.0.0.1, so the adapters' argv,
parsing, resume, usage, cost and signal handling are checked against the real
programs. Without npm these tests skip, unless LOOPS_REQUIRE_REALCLI is set (CI).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fakes import agents
from fakes.model_server import Failure, FakeModelServer, Hang, Reply, ToolCall, is_title_request
from loops import errors
from loops.engines import base
from loops.engines.claude import ClaudeEngine, ClaudeOptions
from loops.engines.codex import CodexEngine, CodexOptions
from loops.engines.gemini import GeminiEngine, GeminiOptions
from loops.engines.opencode import OpenCodeEngine, OpenCodeOptions
from loops.usage import Usage

# The first test may install the CLIs (once, ~30 s); each turn has its own timeout_s.
pytestmark = [pytest.mark.realcli, pytest.mark.timeout(600)]

BASH_WRITE = ToolCall("Bash", {"command": "echo hello-from-mock > hello.txt && cat hello.txt"})
SHELL_WRITE = ToolCall("exec_command", {"cmd": "echo hello-from-mock > hello.txt && cat hello.txt"})


@pytest.fixture(scope="session")
def bins() -> dict[str, Path]:
    try:
        return agents.agent_bin_dirs()
    except agents.AgentsUnavailable as exc:
        if os.environ.get("LOOPS_REQUIRE_REALCLI"):
            pytest.fail(f"LOOPS_REQUIRE_REALCLI is set but the agent CLIs are unavailable: {exc}")
        pytest.skip(f"real agent CLIs unavailable ({exc}); set LOOPS_REQUIRE_REALCLI=1 to fail")


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    home, cwd = tmp_path / "home", tmp_path / "proj"
    home.mkdir()
    cwd.mkdir()
    return home, cwd


@pytest.fixture
def server_factory() -> Iterator[type[FakeModelServer]]:
    started: list[FakeModelServer] = []

    class Tracked(FakeModelServer):
        def __enter__(self) -> FakeModelServer:
            started.append(self)
            return super().__enter__()

    yield Tracked
    for server in started:
        server.close()


def claude_engine(
    bins: dict[str, Path], server: FakeModelServer, home: Path, **env: str
) -> ClaudeEngine:
    base_env = agents.claude_env(server.url, home, bins["claude"])
    base_env.pop("CLAUDE_CODE_MAX_RETRIES")  # the tool's default: early stops must do the work
    return ClaudeEngine(ClaudeOptions(env={**base_env, **env}, kill_grace_s=3))


def codex_engine(
    bins: dict[str, Path], server: FakeModelServer, home: Path, *, retries: int = 0
) -> CodexEngine:
    return CodexEngine(
        CodexOptions(
            env=agents.codex_env(home, bins["codex"]),
            model="gpt-5",
            config=agents.codex_config(server.url, retries=retries),
            kill_grace_s=3,
        )
    )


def request(cwd: Path, **fields: object) -> base.TurnRequest:
    fields.setdefault("timeout_s", 60)
    return base.TurnRequest(prompt="Write hello.txt, please.", cwd=cwd, **fields)  # type: ignore[arg-type]


async def run(
    engine: base.Engine, req: base.TurnRequest
) -> tuple[list[base.TurnEvent], base.TurnResult]:
    events: list[base.TurnEvent] = []
    result = await base.run_turn(engine, req, on_event=events.append)
    return events, result


def processes_in(cwd: Path, *, parent: int | None = None) -> list[int]:
    """Pids of live processes whose working directory is ``cwd`` (and parent, if given)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if Path(os.readlink(entry / "cwd")) != cwd.resolve():
                continue
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        state, ppid = fields[0], int(fields[1])
        if state != "Z" and (parent is None or ppid == parent):
            found.append(int(entry.name))
    return found


async def wait_for(predicate: object, timeout_s: float = 30) -> None:
    for _ in range(int(timeout_s / 0.02)):
        if predicate():  # type: ignore[operator]
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached")


# --- claude ---------------------------------------------------------------------------


async def test_claude_success_with_tool_call_usage_and_cost(bins, dirs, server_factory):
    home, cwd = dirs
    usage = {"input_tokens": 1200, "output_tokens": 35, "cache_read_tokens": 4000}
    script = [
        Reply(text="I'll write the file.", tool_calls=[BASH_WRITE], **usage),
        Reply(text="Done: hello.txt written.", **usage),
    ]
    with server_factory(script) as server:
        engine = claude_engine(bins, server, home)
        req = request(cwd, system="SYSTEM-MARKER: be brief.", leaf=True, model="claude-sonnet-4-5")
        events, result = await run(engine, req)
    assert result.ok, result.error
    assert result.final_text == "Done: hello.txt written."
    assert (cwd / "hello.txt").read_text() == "hello-from-mock\n"
    tool = next(e for e in events if isinstance(e, base.ToolUse))
    assert tool.name == "Bash"
    output = next(e for e in events if isinstance(e, base.ToolResult))
    assert output.id == tool.id and "hello-from-mock" in output.output
    assert result.usage.input_tokens == 2 * (1200 + 4000)
    assert result.usage.cached_input_tokens == 8000
    assert result.usage.output_tokens == 70
    assert result.usage.cost_usd is not None and result.usage.cost_usd > 0
    first = server.model_requests()[0].body
    assert "SYSTEM-MARKER" in json.dumps(first["system"])
    tool_names = {t["name"] for t in first["tools"]}
    assert "Bash" in tool_names and "Agent" not in tool_names  # leaf: no sub-agent tool
    assert first["model"] == "claude-sonnet-4-5"


async def test_claude_max_turns(bins, dirs, server_factory):
    home, cwd = dirs
    with server_factory([Reply(text="Running.", tool_calls=[BASH_WRITE])]) as server:
        _, result = await run(claude_engine(bins, server, home), request(cwd, max_turns=1))
    assert isinstance(result.error, errors.EngineMaxTurns)


async def test_claude_401_stops_at_the_first_retry_signal(bins, dirs, server_factory):
    home, cwd = dirs
    # With the tool's default 10 retries this would back off for minutes; the early
    # stop on the first api_retry signal is what makes it an auth error, not a timeout.
    with server_factory([Failure(401, "invalid x-api-key")] * 20) as server:
        _, result = await run(claude_engine(bins, server, home), request(cwd))
    assert isinstance(result.error, errors.EngineAuthError), result.error
    assert len(server.model_requests()) <= 2


async def test_claude_429_carries_retry_after(bins, dirs, server_factory):
    home, cwd = dirs
    with server_factory([Failure(429, "rate limited", retry_after_s=2)] * 20) as server:
        _, result = await run(claude_engine(bins, server, home), request(cwd))
    assert isinstance(result.error, errors.EngineRateLimited), result.error
    assert result.error.retry_after_s == pytest.approx(2.0)


async def test_claude_unreachable_api_is_a_network_error_after_a_few_retry_signals(
    bins, dirs, server_factory
):
    home, cwd = dirs
    with server_factory() as server:
        engine = claude_engine(bins, server, home)
    # The server is closed: with its default 10 retries Claude Code would back off for
    # about three minutes; the engine stops it after network_retries (3) signals.
    _, result = await run(engine, request(cwd))
    assert isinstance(result.error, errors.EngineNetworkError), result.error
    assert "3 connection retries" in result.error.message


async def test_claude_permission_denial_at_read_only(bins, dirs, server_factory):
    home, cwd = dirs
    script = [Reply(text="Writing.", tool_calls=[BASH_WRITE]), Reply(text="I was not allowed.")]
    with server_factory(script) as server:
        req = request(cwd, permission=base.Permission.READ_ONLY)
        _, result = await run(claude_engine(bins, server, home), req)
    assert isinstance(result.error, errors.EnginePermissionDenied), result.error
    assert result.final_text == "I was not allowed."
    assert not (cwd / "hello.txt").exists()


async def test_claude_resume_continues_the_session_only_in_the_same_cwd(
    bins, dirs, server_factory, tmp_path
):
    home, cwd = dirs
    other = tmp_path / "elsewhere"
    other.mkdir()
    script = [Reply(text="First answer."), Reply(text="Second answer.")]
    with server_factory(script) as server:
        engine = claude_engine(bins, server, home)
        _, first = await run(engine, request(cwd))
        _, moved = await run(engine, request(other, resume_session_id=first.session_id))
        _, second = await run(engine, request(cwd, resume_session_id=first.session_id))
        history = json.dumps(server.model_requests()[-1].body["messages"])
    assert first.ok and second.ok, (first.error, second.error)
    assert isinstance(moved.error, errors.EngineSessionNotFound), moved.error
    assert second.session_id == first.session_id
    assert "First answer." in history
    assert second.final_text == "Second answer."


async def test_claude_killed_mid_turn_is_interrupted(bins, dirs, server_factory):
    home, cwd = dirs
    with server_factory([Hang()]) as server:
        task = asyncio.create_task(run(claude_engine(bins, server, home), request(cwd)))
        await wait_for(lambda: server.model_requests())
        (pid,) = processes_in(cwd, parent=os.getpid())
        os.kill(pid, signal.SIGTERM)
        _, result = await task
    assert result.status is base.TurnStatus.INTERRUPTED
    assert isinstance(result.error, errors.EngineCrashed)


async def test_claude_cancel_mid_turn_kills_the_agent(bins, dirs, server_factory):
    home, cwd = dirs
    with server_factory([Hang()]) as server:
        task = asyncio.create_task(run(claude_engine(bins, server, home), request(cwd)))
        await wait_for(lambda: server.model_requests())
        assert processes_in(cwd)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await wait_for(lambda: not processes_in(cwd), timeout_s=10)


async def test_claude_cancel_also_kills_its_bash_tool_process(bins, dirs, server_factory):
    # Claude Code runs Bash commands in a session of their own, outside its group.
    home, cwd = dirs
    sleeper = ToolCall("Bash", {"command": "sh -c 'echo $$ > sleeper.pid; exec sleep 300'"})
    with server_factory([Reply(tool_calls=[sleeper])], default=Hang()) as server:
        task = asyncio.create_task(run(claude_engine(bins, server, home), request(cwd)))
        pid_file = cwd / "sleeper.pid"
        await wait_for(lambda: pid_file.exists() and pid_file.read_text().strip())
        pid = int(pid_file.read_text())
        assert os.getsid(pid) != os.getsid(processes_in(cwd, parent=os.getpid())[0])
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await wait_for(lambda: not processes_in(cwd), timeout_s=10)
        await wait_for(lambda: not _running(pid), timeout_s=10)


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


# --- codex ----------------------------------------------------------------------------


async def test_codex_success_with_tool_call_usage_and_computed_cost(bins, dirs, server_factory):
    home, cwd = dirs
    usage = {"input_tokens": 5000, "output_tokens": 40, "cache_read_tokens": 3000}
    script = [Reply(tool_calls=[SHELL_WRITE], **usage), Reply(text="Done: hello.txt.", **usage)]
    with server_factory(script) as server:
        engine = codex_engine(bins, server, home)
        req = request(cwd, system="SYSTEM-MARKER: be brief.", leaf=True)
        events, result = await run(engine, req)
    assert result.ok, result.error
    assert result.final_text == "Done: hello.txt."
    assert (cwd / "hello.txt").read_text() == "hello-from-mock\n"
    tool = next(e for e in events if isinstance(e, base.ToolUse))
    assert tool.name == "shell" and "hello-from-mock" in tool.input["command"]
    assert result.usage.input_tokens == 10000 and result.usage.cached_input_tokens == 6000
    assert result.usage.output_tokens == 80
    # gpt-5 list prices: $1.25/M input, $0.125/M cached input, $10/M output.
    assert result.usage.cost_usd == pytest.approx((4000 * 1.25 + 6000 * 0.125 + 800) / 1e6)
    first = server.model_requests()[0].body
    assert "SYSTEM-MARKER" in json.dumps(first["input"])
    assert "multi_agent_v1" not in {t.get("name") for t in first["tools"]}


async def test_codex_read_only_sandbox_blocks_writes(bins, dirs, server_factory):
    home, cwd = dirs
    script = [Reply(tool_calls=[SHELL_WRITE]), Reply(text="Could not write.")]
    with server_factory(script) as server:
        req = request(cwd, permission=base.Permission.READ_ONLY)
        _, result = await run(codex_engine(bins, server, home), req)
        tool_output = json.dumps(server.model_requests()[-1].body["input"][-1])
    assert result.ok, result.error
    assert not (cwd / "hello.txt").exists()
    assert "Read-only file system" in tool_output


async def test_codex_max_turns_enforced(bins, dirs, server_factory):
    home, cwd = dirs
    with server_factory([Reply(tool_calls=[SHELL_WRITE])] * 5) as server:
        _, result = await run(codex_engine(bins, server, home), request(cwd, max_turns=1))
    assert isinstance(result.error, errors.EngineMaxTurns), result.error


async def test_codex_401_is_an_auth_error(bins, dirs, server_factory):
    home, cwd = dirs
    with server_factory([Failure(401, "Incorrect API key provided")] * 20) as server:
        _, result = await run(codex_engine(bins, server, home, retries=3), request(cwd))
    assert isinstance(result.error, errors.EngineAuthError), result.error


async def test_codex_429_is_rate_limited(bins, dirs, server_factory):
    home, cwd = dirs
    with server_factory([Failure(429, "Rate limit reached")] * 20) as server:
        _, result = await run(codex_engine(bins, server, home), request(cwd))
    assert isinstance(result.error, errors.EngineRateLimited), result.error


async def test_codex_unreachable_api_is_a_network_error_not_a_hang(bins, dirs, server_factory):
    home, cwd = dirs
    with server_factory() as server:
        engine = codex_engine(bins, server, home)
    # The server is closed now: codex would wait for the network forever.
    _, result = await run(engine, request(cwd))
    assert isinstance(result.error, errors.EngineNetworkError), result.error


async def test_codex_resume_reports_only_the_new_turns_usage(bins, dirs, server_factory):
    home, cwd = dirs
    script = [Reply(text="First.", input_tokens=5000), Reply(text="Second.", input_tokens=7000)]
    with server_factory(script) as server:
        _, first = await run(codex_engine(bins, server, home), request(cwd))
        # A fresh engine (as after a worker restart) finds the baseline in the rollout.
        fresh = codex_engine(bins, server, home)
        _, second = await run(fresh, request(cwd, resume_session_id=first.session_id))
        history = json.dumps(server.model_requests()[-1].body["input"])
    assert first.ok and second.ok, (first.error, second.error)
    assert second.session_id == first.session_id
    assert "First." in history
    assert first.usage.input_tokens == 5000
    assert second.usage.input_tokens == 7000
    assert second.session_usage == Usage(input_tokens=12000, output_tokens=70)


async def test_codex_cancel_mid_turn_kills_the_agent(bins, dirs, server_factory):
    home, cwd = dirs
    with server_factory([Hang()]) as server:
        task = asyncio.create_task(run(codex_engine(bins, server, home), request(cwd)))
        await wait_for(lambda: server.model_requests())
        assert processes_in(cwd)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await wait_for(lambda: not processes_in(cwd), timeout_s=10)


# --- gemini ---------------------------------------------------------------------------

GEMINI_SHELL = ToolCall(
    "run_shell_command",
    {"command": "echo hello-from-mock > hello.txt && cat hello.txt", "description": "Write"},
)


def gemini_engine(bins: dict[str, Path], server: FakeModelServer, home: Path) -> GeminiEngine:
    env = agents.gemini_env(server.url, home, bins["gemini"])
    return GeminiEngine(GeminiOptions(env=env, model="gemini-2.5-flash", kill_grace_s=3))


async def test_gemini_success_with_tool_call_usage_and_computed_cost(bins, dirs, server_factory):
    home, cwd = dirs
    usage = {"input_tokens": 3000, "output_tokens": 30, "cache_read_tokens": 1000}
    script = [
        Reply(text="I'll write the file.", tool_calls=[GEMINI_SHELL], **usage),
        Reply(text="Done: hello.txt written.", **usage),
    ]
    with server_factory(script) as server:
        engine = gemini_engine(bins, server, home)
        events, result = await run(engine, request(cwd, system="SYSTEM-MARKER: be brief."))
        first = json.dumps(server.model_requests()[0].body)
    assert result.ok, result.error
    assert result.final_text == "Done: hello.txt written."
    assert (cwd / "hello.txt").read_text() == "hello-from-mock\n"
    tool = next(e for e in events if isinstance(e, base.ToolUse))
    assert tool.name == "run_shell_command"
    assert (result.usage.input_tokens, result.usage.cached_input_tokens) == (6000, 2000)
    assert result.usage.cost_usd == pytest.approx((4000 * 0.30 + 2000 * 0.03 + 60 * 2.5) / 1e6)
    assert "SYSTEM-MARKER" in first
    assert result.session_id


async def test_gemini_read_only_does_not_offer_the_shell(bins, dirs, server_factory):
    home, cwd = dirs
    script = [Reply(tool_calls=[GEMINI_SHELL]), Reply(text="I could not run it.")]
    with server_factory(script) as server:
        req = request(cwd, permission=base.Permission.READ_ONLY)
        events, result = await run(gemini_engine(bins, server, home), req)
        offered = json.dumps(server.model_requests()[0].body.get("tools", []))
    assert result.ok, result.error
    assert not (cwd / "hello.txt").exists()
    assert "run_shell_command" not in offered
    assert [e.is_error for e in events if isinstance(e, base.ToolResult)] == [True]


async def test_gemini_max_turns_enforced(bins, dirs, server_factory):
    home, cwd = dirs
    with server_factory([Reply(text="Running.", tool_calls=[GEMINI_SHELL])] * 5) as server:
        _, result = await run(gemini_engine(bins, server, home), request(cwd, max_turns=1))
    assert isinstance(result.error, errors.EngineMaxTurns), result.error


async def test_gemini_429_stops_at_the_first_stderr_retry_signal(bins, dirs, server_factory):
    home, cwd = dirs
    with server_factory([Failure(429, "Resource has been exhausted")] * 50) as server:
        _, result = await run(gemini_engine(bins, server, home), request(cwd))
    assert isinstance(result.error, errors.EngineRateLimited), result.error
    assert len(server.model_requests()) <= 3


async def test_gemini_resume_continues_the_session_in_the_same_cwd(bins, dirs, server_factory):
    home, cwd = dirs
    script = [Reply(text="First answer."), Reply(text="Second answer.")]
    with server_factory(script) as server:
        engine = gemini_engine(bins, server, home)
        _, first = await run(engine, request(cwd))
        _, second = await run(engine, request(cwd, resume_session_id=first.session_id))
        history = json.dumps(server.model_requests()[-1].body["contents"])
    assert first.ok and second.ok, (first.error, second.error)
    assert second.session_id == first.session_id
    assert "First answer." in history and second.final_text == "Second answer."


async def test_gemini_cancel_mid_turn_kills_the_agent_and_its_relaunched_child(
    bins, dirs, server_factory
):
    home, cwd = dirs
    with server_factory([Hang()]) as server:
        task = asyncio.create_task(run(gemini_engine(bins, server, home), request(cwd)))
        await wait_for(lambda: server.model_requests())
        assert processes_in(cwd)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await wait_for(lambda: not processes_in(cwd), timeout_s=10)


# --- opencode -------------------------------------------------------------------------

OPENCODE_BASH = ToolCall(
    "bash", {"command": "echo hello-from-mock > hello.txt && cat hello.txt", "description": "Write"}
)


def opencode_server(factory: type[FakeModelServer], script: list[Any]) -> FakeModelServer:
    return factory(script, aside=is_title_request)


def opencode_engine(bins: dict[str, Path], server: FakeModelServer, home: Path) -> OpenCodeEngine:
    return OpenCodeEngine(
        OpenCodeOptions(
            env=agents.opencode_env(home, bins["opencode"]),
            model="fake/mock",
            config=agents.opencode_config(server.url),
            kill_grace_s=3,
        )
    )


async def test_opencode_success_with_tool_call_usage_and_reported_cost(bins, dirs, server_factory):
    home, cwd = dirs
    usage = {"input_tokens": 3000, "output_tokens": 30, "cache_read_tokens": 1000}
    script = [
        Reply(text="I'll write the file.", tool_calls=[OPENCODE_BASH], **usage),
        Reply(text="Done: hello.txt written.", **usage),
    ]
    with opencode_server(server_factory, script) as server:
        req = request(cwd, system="SYSTEM-MARKER: be brief.")
        events, result = await run(opencode_engine(bins, server, home), req)
        bodies = json.dumps([r.body for r in server.model_requests()])
    assert result.ok, result.error
    assert result.final_text == "Done: hello.txt written."
    assert (cwd / "hello.txt").read_text() == "hello-from-mock\n"
    assert next(e for e in events if isinstance(e, base.ToolUse)).name == "bash"
    assert (result.usage.input_tokens, result.usage.output_tokens) == (6000, 60)
    # $3/M input, $0.30/M cache reads, $15/M output, as configured for fake/mock.
    assert result.usage.cost_usd == pytest.approx(2 * (2000 * 3 + 1000 * 0.3 + 30 * 15) / 1e6)
    assert result.cost_source == "reported"
    assert "SYSTEM-MARKER" in bodies


async def test_opencode_read_only_denies_bash(bins, dirs, server_factory):
    home, cwd = dirs
    script = [Reply(tool_calls=[OPENCODE_BASH]), Reply(text="I could not run it.")]
    with opencode_server(server_factory, script) as server:
        req = request(cwd, permission=base.Permission.READ_ONLY)
        _, result = await run(opencode_engine(bins, server, home), req)
        offered = json.dumps(server.model_requests()[-1].body.get("tools", []))
    assert not (cwd / "hello.txt").exists()
    assert '"bash"' not in offered
    assert result.status is not base.TurnStatus.INTERRUPTED


async def test_opencode_resume_continues_the_session(bins, dirs, server_factory):
    home, cwd = dirs
    script = [Reply(text="First answer."), Reply(text="Second answer.")]
    with opencode_server(server_factory, script) as server:
        engine = opencode_engine(bins, server, home)
        _, first = await run(engine, request(cwd))
        _, second = await run(engine, request(cwd, resume_session_id=first.session_id))
        history = json.dumps(server.model_requests()[-1].body["messages"])
    assert first.ok and second.ok, (first.error, second.error)
    assert second.session_id == first.session_id
    assert "First answer." in history and second.final_text == "Second answer."


async def test_opencode_max_turns_enforced(bins, dirs, server_factory):
    home, cwd = dirs
    with opencode_server(server_factory, [Reply(tool_calls=[OPENCODE_BASH])] * 5) as server:
        _, result = await run(opencode_engine(bins, server, home), request(cwd, max_turns=1))
    assert isinstance(result.error, errors.EngineMaxTurns), result.error


async def test_opencode_cancel_mid_turn_kills_the_agent(bins, dirs, server_factory):
    home, cwd = dirs
    with opencode_server(server_factory, [Hang()]) as server:
        task = asyncio.create_task(run(opencode_engine(bins, server, home), request(cwd)))
        await wait_for(lambda: [r for r in server.model_requests() if not is_title_request(r)])
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await wait_for(lambda: not processes_in(cwd), timeout_s=10)
