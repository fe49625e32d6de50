"""The exact argv and environment each engine builds for a turn."""

from __future__ import annotations

from pathlib import Path

import pytest

from loops import errors
from loops.engines import base, create_engine
from loops.engines.claude import ClaudeEngine, ClaudeOptions
from loops.engines.codex import CodexEngine, CodexOptions, toml_string
from loops.engines.command import CommandEngine


def _request(**fields: object) -> base.TurnRequest:
    return base.TurnRequest(prompt="do it", cwd=Path("/work/p"), **fields)  # type: ignore[arg-type]


def _after(argv: list[str], flag: str) -> list[str]:
    """The values following ``flag`` up to the next option."""
    start = argv.index(flag) + 1
    values = []
    for item in argv[start:]:
        if item.startswith("-"):
            break
        values.append(item)
    return values


def test_claude_base_argv_is_print_mode_stream_json_with_prompt_on_stdin():
    argv = ClaudeEngine().build_argv(_request())
    assert argv[:5] == ["claude", "-p", "--output-format", "stream-json", "--verbose"]
    assert "do it" not in argv
    assert _after(argv, "--permission-mode") == ["acceptEdits"]


@pytest.mark.parametrize(
    ("permission", "mode", "allowed", "disallowed"),
    [
        (base.Permission.READ_ONLY, "default", None, ["Edit", "Write", "NotebookEdit"]),
        (base.Permission.WORKSPACE_WRITE, "acceptEdits", ["Bash"], None),
        (base.Permission.FULL, "bypassPermissions", None, None),
    ],
)
def test_claude_permission_levels(permission, mode, allowed, disallowed):
    argv = ClaudeEngine().build_argv(_request(permission=permission))
    assert _after(argv, "--permission-mode") == [mode]
    assert (_after(argv, "--allowedTools") if "--allowedTools" in argv else None) == allowed
    got = _after(argv, "--disallowedTools") if "--disallowedTools" in argv else None
    assert got == disallowed


def test_claude_turn_options_map_to_flags():
    argv = ClaudeEngine(ClaudeOptions(executable="/opt/claude")).build_argv(
        _request(
            model="sonnet",
            system="Be brief.",
            max_turns=7,
            tools=("Read", "Bash(pytest:*)"),
            leaf=True,
            resume_session_id="abc",
        )
    )
    assert argv[0] == "/opt/claude"
    assert "--model=sonnet" in argv
    assert "--append-system-prompt=Be brief." in argv
    assert "--max-turns=7" in argv
    assert _after(argv, "--allowedTools") == ["Read", "Bash(pytest:*)"]
    assert _after(argv, "--disallowedTools") == ["Task"]
    assert argv[-1] == "--resume=abc"


def test_claude_bypass_as_root_sets_is_sandbox(monkeypatch):
    engine = ClaudeEngine(ClaudeOptions(env={"PATH": "/bin"}))
    monkeypatch.setattr("os.geteuid", lambda: 0)
    assert engine.build_env(_request(permission=base.Permission.FULL))["IS_SANDBOX"] == "1"
    assert "IS_SANDBOX" not in engine.build_env(_request())
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    assert "IS_SANDBOX" not in engine.build_env(_request(permission=base.Permission.FULL))


def test_claude_env_is_exactly_base_plus_request_env():
    engine = ClaudeEngine(ClaudeOptions(env={"PATH": "/bin", "HOME": "/h"}))
    env = engine.build_env(_request(env={"LOOP_TASK_ID": "t1"}))
    assert env == {"PATH": "/bin", "HOME": "/h", "LOOP_TASK_ID": "t1"}


def test_codex_argv_puts_options_before_resume_and_reads_stdin():
    engine = CodexEngine(CodexOptions(model="gpt-5", config={"model_provider": '"x"'}))
    argv = engine.build_argv(
        _request(system='say "hi"\nthen stop', leaf=True, resume_session_id="t-1")
    )
    assert argv[:4] == ["codex", "exec", "--json", "--skip-git-repo-check"]
    assert _after(argv, "-C") == ["/work/p"]
    assert _after(argv, "--sandbox") == ["workspace-write"]
    assert 'approval_policy="never"' in argv
    assert "--model=gpt-5" in argv
    assert 'developer_instructions="say \\"hi\\"\\nthen stop"' in argv
    assert _after(argv, "--disable") == ["multi_agent"]
    assert 'model_provider="x"' in argv
    assert argv[-3:] == ["resume", "t-1", "-"]
    assert "do it" not in argv


@pytest.mark.parametrize(
    ("permission", "sandbox"),
    [
        (base.Permission.READ_ONLY, "read-only"),
        (base.Permission.WORKSPACE_WRITE, "workspace-write"),
        (base.Permission.FULL, "danger-full-access"),
    ],
)
def test_codex_permission_levels(permission, sandbox):
    argv = CodexEngine().build_argv(_request(permission=permission))
    assert _after(argv, "--sandbox") == [sandbox]
    assert not any(a.startswith("--model") for a in argv) and argv[-1] == "-"


def test_values_that_look_like_options_stay_values():
    argv = ClaudeEngine().build_argv(_request(system="-rf everything", model="--bad"))
    assert "--append-system-prompt=-rf everything" in argv and "--model=--bad" in argv


def test_toml_string_escapes_like_toml_basic_strings():
    assert toml_string('a "b"\n\tc\\') == '"a \\"b\\"\\n\\tc\\\\"'
    assert toml_string("é") == '"\\u00e9"'


def test_command_engine_options():
    assert CommandEngine.from_options(argv=["a", "b c"]).options.argv == ("a", "b c")
    assert CommandEngine.from_options(command="my-agent --flag 'two words'").options.argv == (
        "my-agent",
        "--flag",
        "two words",
    )
    with pytest.raises(errors.ConfigError, match="needs argv"):
        create_engine("command")
    with pytest.raises(errors.ConfigError, match="cannot be parsed"):
        create_engine("command", command="unterminated 'quote")
    with pytest.raises(errors.ConfigError, match="unknown command engine options"):
        create_engine("command", argv=["x"], colour="blue")


def test_unknown_engine_options_are_config_errors():
    with pytest.raises(errors.ConfigError, match="unknown codex engine options"):
        create_engine("codex", sandbox="none")
    with pytest.raises(errors.ConfigError, match="unknown gemini engine options"):
        create_engine("gemini", approval="yolo")
    with pytest.raises(errors.ConfigError, match="unknown engine 'nope'"):
        create_engine("nope")
