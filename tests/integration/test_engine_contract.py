"""Engine contract suite: recorded real streams replayed by fake agent executables.

Covers ``claude``, ``codex``, ``gemini`` and ``opencode``.

The fixtures in tests/fixtures/engines were recorded from the pinned CLIs against the
fake model server (tests/fixtures/engines/record.py). Each test installs
tests/fakes/fake_agent.py under the tool's name on a private PATH, lets it replay a
fixture (possibly damaged: cut short, with garbage or huge lines), and checks the
engine's events and classified result. Real subprocesses, no network.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from loops import errors
from loops.engines import base, create_engine
from loops.engines.claude import ClaudeEngine, ClaudeOptions
from loops.engines.codex import CodexEngine, CodexOptions
from loops.engines.gemini import GeminiEngine, GeminiOptions
from loops.engines.opencode import OpenCodeEngine, OpenCodeOptions

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "engines"
MANIFEST: dict[str, dict[str, Any]] = json.loads((FIXTURES / "manifest.json").read_text())
FAKE_AGENT = Path(__file__).resolve().parents[1] / "fakes" / "fake_agent.py"
TOOLS = ["claude", "codex", "gemini", "opencode"]
PACKAGES = {
    "claude": "@anthropic-ai/claude-code",
    "codex": "@openai/codex",
    "gemini": "@google/gemini-cli",
    "opencode": "opencode-ai",
}
#: a line that yields the first engine event, per tool
FIRST_EVENT_MARKERS = {
    "claude": '"assistant"',
    "codex": '"item.started"',
    "gemini": '"role":"assistant"',
    "opencode": '"type":"text"',
}


class Harness:
    """Runs one engine against the fake executable replaying a chosen fixture."""

    def __init__(self, tool: str, tmp_path: Path) -> None:
        self.tool = tool
        self.tmp_path = tmp_path
        self.bin_dir = tmp_path / "bin"
        self.bin_dir.mkdir(exist_ok=True)
        script = self.bin_dir / tool
        script.write_text(f"#!{sys.executable}\n" + FAKE_AGENT.read_text())
        script.chmod(0o755)
        self.home = tmp_path / "home"
        self.home.mkdir(exist_ok=True)
        self.cwd = tmp_path / "proj"
        self.cwd.mkdir(exist_ok=True)
        self.log = tmp_path / "agent-log.json"

    def env(self, scenario: str | None, **overrides: str) -> dict[str, str]:
        env = {
            "PATH": f"{self.bin_dir}{os.pathsep}{os.environ['PATH']}",
            "HOME": str(self.home),
            "FAKE_AGENT_LOG": str(self.log),
        }
        if scenario is not None:
            meta = MANIFEST[f"{self.tool}/{scenario}"]
            env["FAKE_AGENT_FIXTURE"] = str(FIXTURES / self.tool / f"{scenario}.jsonl")
            env["FAKE_AGENT_EXIT"] = str(meta["exit"] if meta["exit"] is not None else 0)
            env["FAKE_AGENT_STDERR"] = meta["stderr"]
            env["FAKE_AGENT_HANG"] = "1" if meta["hang"] else "0"
        env.update(overrides)
        return env

    def fixture_copy(self, scenario: str, edit: Any) -> str:
        """Write an edited copy of a fixture; ``edit`` maps the list of lines."""
        lines = (FIXTURES / self.tool / f"{scenario}.jsonl").read_text().splitlines()
        path = self.tmp_path / f"{scenario}-edited.jsonl"
        path.write_text("\n".join(edit(lines)) + "\n")
        return str(path)

    def engine(self, env: dict[str, str], **options: Any) -> base.Engine:
        options.setdefault("kill_grace_s", 2)
        if self.tool == "claude":
            return ClaudeEngine(ClaudeOptions(env=env, **options))
        if self.tool == "gemini":
            return GeminiEngine(GeminiOptions(env=env, **options))
        if self.tool == "opencode":
            return OpenCodeEngine(OpenCodeOptions(env=env, **options))
        return CodexEngine(CodexOptions(env=env, model="gpt-5", **options))

    def request(self, **fields: Any) -> base.TurnRequest:
        fields.setdefault("timeout_s", 30)
        return base.TurnRequest(prompt="Run the command, please.", cwd=self.cwd, **fields)

    async def run(
        self, scenario: str | None, *, request: dict[str, Any] | None = None, **env: str
    ) -> tuple[list[base.TurnEvent], base.TurnResult]:
        engine = self.engine(self.env(scenario, **env))
        events: list[base.TurnEvent] = []
        result = await base.run_turn(
            engine, self.request(**(request or {})), on_event=events.append
        )
        return events, result

    def logged(self) -> dict[str, Any]:
        record: dict[str, Any] = json.loads(self.log.read_text())
        return record


@pytest.fixture(params=TOOLS)
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Harness:
    return Harness(request.param, tmp_path)


@pytest.fixture
def claude(tmp_path: Path) -> Harness:
    return Harness("claude", tmp_path)


@pytest.fixture
def codex(tmp_path: Path) -> Harness:
    return Harness("codex", tmp_path)


@pytest.fixture
def gemini(tmp_path: Path) -> Harness:
    return Harness("gemini", tmp_path)


@pytest.fixture
def opencode(tmp_path: Path) -> Harness:
    return Harness("opencode", tmp_path)


@pytest.fixture(params=["claude", "codex"])
def retrying(request: pytest.FixtureRequest, tmp_path: Path) -> Harness:
    """The tools whose fixtures show their own retry signals on stdout."""
    return Harness(request.param, tmp_path)


# --- success --------------------------------------------------------------------------


async def test_success_with_tool_call_streams_events_and_ends_ok(harness: Harness):
    events, result = await harness.run("success_tool")
    assert result.ok, result.error
    assert result.final_text == "Done. The command printed hello-from-mock."
    assert result.session_id
    uses = [e for e in events if isinstance(e, base.ToolUse)]
    outputs = [e for e in events if isinstance(e, base.ToolResult)]
    assert len(uses) == 1 and "hello-from-mock" in json.dumps(uses[0].input)
    assert outputs[0].id == uses[0].id and "hello-from-mock" in outputs[0].output
    assert not outputs[0].is_error
    assert any(isinstance(e, base.UsageReport) for e in events)
    assert events[-1] is result


async def test_claude_usage_counts_cache_in_input_and_takes_reported_cost(claude: Harness):
    _, result = await claude.run("success_tool")
    # modelUsage: 2400 fresh + 8000 cache reads + 600 cache writes, 70 out, $0.0215.
    assert result.usage.input_tokens == 11000
    assert result.usage.cached_input_tokens == 8000
    assert result.usage.output_tokens == 70
    assert result.usage.cost_usd == pytest.approx(0.0215)
    assert result.cost_source == "reported"
    assert result.num_turns == 2


async def test_codex_usage_is_priced_from_the_table(codex: Harness):
    _, result = await codex.run("success_tool")
    assert (result.usage.input_tokens, result.usage.cached_input_tokens) == (10000, 6000)
    assert result.usage.output_tokens == 80
    # gpt-5 list prices: $1.25/M input, $0.125/M cached input, $10/M output.
    expected = (4000 * 1.25 + 6000 * 0.125 + 80 * 10) / 1e6
    assert result.usage.cost_usd == pytest.approx(expected)
    assert result.cost_source is not None
    assert result.cost_source.startswith("computed: genai-prices ")
    assert result.session_usage == result.usage.__class__(10000, 80, 6000)


async def test_gemini_usage_counts_thinking_as_output_and_is_priced(gemini: Harness):
    _, result = await gemini.run("success_tool", request={"model": "gemini-2.5-flash"})
    # Two requests of 3000 prompt tokens (1000 cached) and 30 out, no thinking.
    assert (result.usage.input_tokens, result.usage.cached_input_tokens) == (6000, 2000)
    assert result.usage.output_tokens == 60
    # gemini-2.5-flash list prices: $0.30/M input, $0.03/M cached input, $2.50/M output.
    expected = (4000 * 0.30 + 2000 * 0.03 + 60 * 2.50) / 1e6
    assert result.usage.cost_usd == pytest.approx(expected)
    assert result.cost_source is not None and result.cost_source.startswith("computed: ")


async def test_opencode_usage_and_cost_are_summed_over_steps(opencode: Harness):
    _, result = await opencode.run("success_tool")
    # Two steps of 2000 uncached + 1000 cache reads in, 30 out, $0.00675 each.
    assert (result.usage.input_tokens, result.usage.cached_input_tokens) == (6000, 2000)
    assert result.usage.output_tokens == 60
    assert result.usage.cost_usd == pytest.approx(0.0135)
    assert result.cost_source == "reported"
    assert result.num_turns == 2


async def test_prompt_goes_to_stdin_not_argv(harness: Harness):
    await harness.run("success_tool", request={"system": "Be brief.", "model": "m-1"})
    logged = harness.logged()
    if harness.tool in ("claude", "codex"):
        assert logged["stdin"] == "Run the command, please."
    else:  # no system-prompt flag: it goes in front of the prompt
        assert logged["stdin"].startswith("<system>\nBe brief.\n</system>")
        assert logged["stdin"].endswith("\n\nRun the command, please.")
    assert "Run the command, please." not in logged["argv"]
    assert "--model=m-1" in logged["argv"]
    assert Path(logged["cwd"]) == harness.cwd


# --- classified failures --------------------------------------------------------------


async def test_auth_failure_is_classified(harness: Harness):
    _, result = await harness.run("auth_401")
    assert result.status is base.TurnStatus.ERROR
    assert isinstance(result.error, errors.EngineAuthError)
    assert "401" in result.error.message


async def test_claude_not_logged_in_is_an_auth_error(claude: Harness):
    _, result = await claude.run("not_logged_in")
    assert isinstance(result.error, errors.EngineAuthError)
    assert "/login" in result.error.message


async def test_gemini_without_credentials_is_an_auth_error(gemini: Harness):
    _, result = await gemini.run("no_auth")
    assert isinstance(result.error, errors.EngineAuthError)
    assert "GEMINI_API_KEY" in result.error.message
    assert result.exit_code == 41


async def test_rate_limit_is_classified_with_retry_after(harness: Harness):
    # gemini's fixture hangs in the CLI's own back-off: only the stderr retry signal
    # (not the 30 s timeout) can make this a rate limit.
    _, result = await harness.run("rate_429")
    assert isinstance(result.error, errors.EngineRateLimited), result.error
    if harness.tool == "claude":
        assert result.error.retry_after_s == pytest.approx(2.0)
    if harness.tool == "opencode":
        assert result.error.retry_after_s == pytest.approx(1.0)


async def test_rate_limit_signal_stops_the_agent_without_waiting_for_its_retries(
    retrying: Harness,
):
    harness = retrying

    # Cut the stream right after the first retry signal and hang: only an early stop
    # (not the 30 s timeout) yields a rate-limit error.
    def first_signal(lines: list[str]) -> list[str]:
        keep = [line for line in lines if '"api_retry"' in line or "Reconnecting" in line]
        head = [line for line in lines if '"init"' in line or "thread.started" in line]
        return head + (keep[:1] or [_codex_reconnect("exceeded retry limit, last status: 429")])

    fixture = harness.fixture_copy("rate_429", first_signal)
    _, result = await harness.run(None, FAKE_AGENT_FIXTURE=fixture, FAKE_AGENT_HANG="1")
    assert isinstance(result.error, errors.EngineRateLimited)


async def test_gemini_network_failure_is_detected_from_stderr_retry_signals(gemini: Harness):
    fixture = gemini.fixture_copy("rate_429", lambda lines: lines)
    attempts = "".join(
        f"Attempt {n} failed. Retrying with backoff... TypeError: fetch failed\n" for n in (1, 2, 3)
    )
    _, result = await gemini.run(
        None, FAKE_AGENT_FIXTURE=fixture, FAKE_AGENT_HANG="1", FAKE_AGENT_STDERR=attempts
    )
    assert isinstance(result.error, errors.EngineNetworkError), result.error
    assert "3 attempts" in result.error.message


async def test_network_failure_is_detected_from_retry_signals_not_timeout(retrying: Harness):
    harness = retrying

    def signals_then_hang(lines: list[str]) -> list[str]:
        return [line for line in lines if '"result"' not in line and "<synthetic>" not in line]

    fixture = harness.fixture_copy("network", signals_then_hang)
    _, result = await harness.run(None, FAKE_AGENT_FIXTURE=fixture, FAKE_AGENT_HANG="1")
    assert isinstance(result.error, errors.EngineNetworkError), result.error
    assert "reach" in result.error.message


async def test_claude_permission_denials_fail_the_turn_but_keep_its_answer(claude: Harness):
    _, result = await claude.run("permission_denied")
    assert isinstance(result.error, errors.EnginePermissionDenied)
    assert "Bash" in result.error.message
    assert result.final_text == "I could not write the file."
    assert result.usage.output_tokens > 0


async def test_claude_max_turns(claude: Harness):
    _, result = await claude.run("max_turns")
    assert isinstance(result.error, errors.EngineMaxTurns)
    assert result.usage.cost_usd and result.usage.cost_usd > 0


async def test_gemini_max_turns_is_enforced_by_stopping_at_the_nth_tool_call(gemini: Harness):
    events, result = await gemini.run("success_tool", request={"max_turns": 1}, FAKE_AGENT_HANG="1")
    assert isinstance(result.error, errors.EngineMaxTurns), result.error
    assert [e.name for e in events if isinstance(e, base.ToolUse)] == ["run_shell_command"]


async def test_gemini_turn_limit_from_its_own_settings_is_classified(gemini: Harness):
    _, result = await gemini.run("max_turns")
    assert isinstance(result.error, errors.EngineMaxTurns), result.error
    assert result.exit_code == 53


async def test_opencode_max_turns_is_enforced_by_stopping_after_the_nth_tool_step(
    opencode: Harness,
):
    _, result = await opencode.run("success_tool", request={"max_turns": 1}, FAKE_AGENT_HANG="1")
    assert isinstance(result.error, errors.EngineMaxTurns), result.error
    assert result.usage.output_tokens == 30


async def test_opencode_rejected_tool_call_is_a_permission_denial(opencode: Harness):
    events, result = await opencode.run("permission_rejected")
    assert isinstance(result.error, errors.EnginePermissionDenied), result.error
    assert "bash" in result.error.message
    assert result.final_text == "I'll run a command."
    assert [e.is_error for e in events if isinstance(e, base.ToolResult)] == [True]


@pytest.mark.parametrize("permission", list(base.Permission))
async def test_opencode_permissions_go_to_its_config_merged_with_the_callers(
    opencode: Harness, permission: base.Permission
):
    inherited = {"provider": {"x": {"name": "x"}}, "permission": {"webfetch": "deny"}}
    await opencode.run(
        "success_tool",
        request={"permission": permission, "leaf": True},
        OPENCODE_CONFIG_CONTENT=json.dumps(inherited),
    )
    logged = opencode.logged()
    config = json.loads(logged["env"]["OPENCODE_CONFIG_CONTENT"])
    assert config["provider"] == inherited["provider"]
    expected = {
        base.Permission.READ_ONLY: ("deny", "deny", "deny"),
        base.Permission.WORKSPACE_WRITE: ("allow", "allow", "deny"),
        base.Permission.FULL: ("allow", "allow", "allow"),
    }[permission]
    rules = config["permission"]
    assert (rules["edit"], rules["bash"], rules["external_directory"]) == expected
    assert rules["task"] == "deny"  # leaf: no sub-agents
    assert config["autoupdate"] is False
    assert ("--auto" in logged["argv"]) is (permission is base.Permission.FULL)


@pytest.mark.parametrize(
    ("permission", "mode"),
    [("read-only", "plan"), ("workspace-write", "auto_edit"), ("full", "yolo")],
)
async def test_gemini_permission_levels_map_to_approval_modes(
    gemini: Harness, permission: str, mode: str
):
    await gemini.run("success_tool", request={"permission": base.Permission(permission)})
    argv = gemini.logged()["argv"]
    assert f"--approval-mode={mode}" in argv
    assert ("run_shell_command" in argv) is (permission == "workspace-write")
    assert argv[-1] == "--prompt="


async def test_codex_max_turns_is_enforced_by_stopping_at_the_nth_tool_call(codex: Harness):
    events, result = await codex.run("success_tool", request={"max_turns": 1}, FAKE_AGENT_HANG="1")
    assert isinstance(result.error, errors.EngineMaxTurns)
    assert [e.name for e in events if isinstance(e, base.ToolUse)] == ["shell"]


async def test_unknown_resume_session_is_its_own_error(harness: Harness):
    _, result = await harness.run("resume_unknown", request={"resume_session_id": "gone"})
    assert isinstance(result.error, errors.EngineSessionNotFound)
    assert harness.tool in result.error.message


# --- damaged streams ------------------------------------------------------------------


@pytest.mark.parametrize("exit_code", ["0", "1"])
async def test_stream_cut_mid_turn_is_a_crash_whatever_the_exit_code(
    harness: Harness, exit_code: str
):
    fixture = harness.fixture_copy("success_tool", lambda lines: lines[:3])
    _, result = await harness.run(
        None, FAKE_AGENT_FIXTURE=fixture, FAKE_AGENT_EXIT=exit_code, FAKE_AGENT_STDERR="boom\n"
    )
    assert result.status is base.TurnStatus.ERROR
    assert isinstance(result.error, errors.EngineCrashed)
    assert f"code {exit_code}" in result.error.message and "boom" in result.error.message


async def test_malformed_lines_are_skipped(harness: Harness):
    junk = ["not json", "{broken", "[1, 2]", "", '"a string"', "\x00\x01", "{}", '{"type": 7}']

    def interleave(lines: list[str]) -> list[str]:
        out: list[str] = []
        for number, line in enumerate(lines):
            out += [junk[number % len(junk)], line]
        return out

    fixture = harness.fixture_copy("success_tool", interleave)
    _, result = await harness.run(None, FAKE_AGENT_FIXTURE=fixture)
    assert result.ok, result.error
    assert result.final_text == "Done. The command printed hello-from-mock."


async def test_huge_output_is_bounded_and_does_not_break_parsing(harness: Harness):
    huge_text = json.dumps({"type": "noise", "blob": "x" * (12 * 1024 * 1024)})
    many = [json.dumps({"type": "noise", "n": n}) for n in range(20000)]

    def inflate(lines: list[str]) -> list[str]:
        return [lines[0], huge_text, *many, *lines[1:]]

    fixture = harness.fixture_copy("success_tool", inflate)
    _, result = await harness.run(None, FAKE_AGENT_FIXTURE=fixture)
    assert result.ok, result.error
    assert result.final_text == "Done. The command printed hello-from-mock."


# --- process control ------------------------------------------------------------------


async def test_binary_not_found_names_the_install_command(harness: Harness):
    (harness.bin_dir / harness.tool).unlink()
    env = harness.env("success_tool", PATH=str(harness.bin_dir))
    result = await base.run_turn(harness.engine(env), harness.request())
    assert isinstance(result.error, errors.EngineNotFound)
    assert f"npm install -g {PACKAGES[harness.tool]}" in result.error.message


async def test_wall_clock_timeout_kills_and_classifies(harness: Harness):
    fixture = harness.fixture_copy("success_tool", lambda lines: lines[:1])
    _, result = await harness.run(
        None, request={"timeout_s": 0.5}, FAKE_AGENT_FIXTURE=fixture, FAKE_AGENT_HANG="1"
    )
    assert result.status is base.TurnStatus.INTERRUPTED
    assert isinstance(result.error, errors.EngineTimeout)


async def test_external_kill_is_an_interruption(harness: Harness):
    fixture = harness.fixture_copy("success_tool", _until_first_event(harness.tool))
    engine = harness.engine(harness.env(None, FAKE_AGENT_FIXTURE=fixture, FAKE_AGENT_HANG="1"))
    stream = engine.run_turn(harness.request())
    first = await anext(stream)
    assert not isinstance(first, base.TurnResult)
    os.kill(harness.logged()["pid"], signal.SIGTERM)
    result = [e async for e in stream][-1]
    assert isinstance(result, base.TurnResult)
    assert result.status is base.TurnStatus.INTERRUPTED
    assert "SIGTERM" in result.error.message  # type: ignore[union-attr]


async def _first_event(stream: AsyncIterator[base.TurnEvent]) -> base.TurnEvent:
    return await anext(stream)


@pytest.mark.parametrize("child", ["1", "session"])
async def test_closing_the_stream_kills_the_agent_and_its_tool_processes(
    harness: Harness, child: str
):
    # "session": a tool process in a session of its own, as Claude Code's Bash tool.
    fixture = harness.fixture_copy("success_tool", _until_first_event(harness.tool))
    env = harness.env(None, FAKE_AGENT_FIXTURE=fixture, FAKE_AGENT_HANG="1", FAKE_AGENT_CHILD=child)
    stream = harness.engine(env).run_turn(harness.request())
    await _first_event(stream)
    logged = harness.logged()
    assert _alive(logged["pid"]) and _alive(logged["child_pid"])
    await stream.aclose()  # type: ignore[attr-defined]
    assert not _alive(logged["pid"])
    assert await _gone(logged["child_pid"])


async def test_cancelling_the_task_kills_even_an_agent_that_ignores_sigterm(harness: Harness):
    fixture = harness.fixture_copy("success_tool", lambda lines: lines[:1])
    env = harness.env(
        None, FAKE_AGENT_FIXTURE=fixture, FAKE_AGENT_HANG="1", FAKE_AGENT_IGNORE_TERM="1"
    )
    engine = harness.engine(env, kill_grace_s=0.3)
    started = asyncio.Event()

    def seen(event: base.TurnEvent) -> None:
        started.set()

    task = asyncio.create_task(base.run_turn(engine, harness.request(), on_event=seen))
    while not harness.log.exists():
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)
    pid = harness.logged()["pid"]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await _gone(pid)


def _until_first_event(tool: str) -> Any:
    """An edit keeping the fixture's lines up to the first that yields an engine event."""

    def cut(lines: list[str]) -> list[str]:
        for number, line in enumerate(lines):
            if FIRST_EVENT_MARKERS[tool] in line:
                return lines[: number + 1]
        raise AssertionError("fixture has no event line")

    return cut


async def _gone(pid: int) -> bool:
    """Whether ``pid`` dies soon: a killed orphan is torn down asynchronously."""
    for _ in range(200):
        if not _alive(pid):
            return True
        await asyncio.sleep(0.01)
    return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) counts as dead.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def _codex_reconnect(reason: str) -> str:
    return json.dumps({"type": "error", "message": f"Reconnecting... 1/5 ({reason})"})


# --- registry -------------------------------------------------------------------------


def test_registry_builds_each_engine_from_plain_options(tmp_path: Path):
    for name in ("claude", "codex", "gemini", "opencode", "mock"):
        assert isinstance(create_engine(name), base.Engine)
    assert isinstance(create_engine("claude", executable="claude"), ClaudeEngine)
    assert isinstance(create_engine("codex", model="gpt-5", config={"a": "1"}), CodexEngine)
    command = create_engine("command", argv=["cat"])
    assert command.name == "command"
    with pytest.raises(errors.ConfigError, match="unknown claude engine options"):
        create_engine("claude", bogus=1)
