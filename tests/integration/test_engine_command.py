"""The command engine and the subprocess machinery under it, with real processes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from loops import errors
from loops.engines import base, create_engine, process
from loops.engines.command import CommandEngine, CommandOptions

PY = sys.executable


def _engine(code: str, **options: object) -> CommandEngine:
    return CommandEngine(CommandOptions(argv=(PY, "-c", code), **options))  # type: ignore[arg-type]


async def _run(engine: CommandEngine, tmp_path: Path, **fields: object):
    events: list[base.TurnEvent] = []
    request = base.TurnRequest(prompt="the prompt", cwd=tmp_path, **fields)  # type: ignore[arg-type]
    result = await base.run_turn(engine, request, on_event=events.append)
    return events, result


async def test_prompt_on_stdin_stdout_is_the_answer(tmp_path: Path):
    engine = _engine("import sys; p = sys.stdin.read(); print('got:', p); print('STEP[a]: DONE')")
    events, result = await _run(engine, tmp_path)
    assert result.ok
    assert result.final_text == "got: the prompt\nSTEP[a]: DONE"
    assert [e.text for e in events if isinstance(e, base.AgentText)] == [
        "got: the prompt\n",
        "STEP[a]: DONE\n",
    ]


async def test_turn_settings_reach_the_command_as_environment(tmp_path: Path):
    code = (
        "import os; print(os.environ['LOOP_SYSTEM_PROMPT'], os.environ['LOOP_MODEL'], "
        "os.environ['LOOP_PERMISSION'], os.environ['LOOP_TASK_ID'], os.getcwd())"
    )
    _, result = await _run(
        _engine(code), tmp_path, system="sys", model="m", env={"LOOP_TASK_ID": "t7"}
    )
    assert result.final_text == f"sys m workspace-write t7 {tmp_path}"


@pytest.mark.parametrize(
    ("code", "error"),
    [
        ("import sys; sys.exit(127)", errors.EngineNotFound),
        ("import sys; sys.exit(126)", errors.EnginePermissionDenied),
        (
            "import sys; sys.stderr.write('HTTP 429 Too Many Requests\\n'); sys.exit(1)",
            errors.EngineRateLimited,
        ),
        (
            "import sys; sys.stderr.write('401 Unauthorized\\n'); sys.exit(2)",
            errors.EngineAuthError,
        ),
        ("import sys; sys.stderr.write('segfault-ish\\n'); sys.exit(3)", errors.EngineCrashed),
    ],
)
async def test_exit_status_and_stderr_are_classified(tmp_path: Path, code, error):
    _, result = await _run(_engine(code), tmp_path)
    assert result.status is base.TurnStatus.ERROR
    assert isinstance(result.error, error), result.error


async def test_crash_message_names_the_code_and_the_last_stderr_line(tmp_path: Path):
    _, result = await _run(
        _engine("import sys; sys.stderr.write('one\\ntwo\\n'); sys.exit(3)"), tmp_path
    )
    assert result.error is not None
    assert "code 3" in result.error.message and "two" in result.error.message
    assert result.exit_code == 3


async def test_missing_executable_and_missing_cwd(tmp_path: Path):
    engine = create_engine("command", argv=["definitely-not-a-real-agent-xyz"])
    _, result = await _run(engine, tmp_path)  # type: ignore[arg-type]
    assert isinstance(result.error, errors.EngineNotFound)
    assert "definitely-not-a-real-agent-xyz" in result.error.message
    with pytest.raises(errors.InputError, match="does not exist"):
        await _run(_engine("print(1)"), tmp_path / "missing")


async def test_timeout_kills_the_command(tmp_path: Path):
    _, result = await _run(_engine("import time; time.sleep(60)"), tmp_path, timeout_s=0.3)
    assert result.status is base.TurnStatus.INTERRUPTED
    assert isinstance(result.error, errors.EngineTimeout)


async def test_answer_keeps_the_end_when_output_is_large(tmp_path: Path):
    code = "for i in range(100000): print(f'line {i}')"
    _, result = await _run(_engine(code, max_output_bytes=1000), tmp_path)
    assert result.ok
    assert result.final_text.endswith("line 99999")
    assert len(result.final_text) <= 1100


# --- process machinery ----------------------------------------------------------------


def _spec(tmp_path: Path, code: str, **fields: object) -> process.ProcessSpec:
    return process.ProcessSpec(argv=(PY, "-c", code), cwd=tmp_path, **fields)  # type: ignore[arg-type]


async def test_large_stdin_to_a_process_that_never_reads_it_does_not_deadlock(tmp_path: Path):
    spec = _spec(tmp_path, "print('ignoring stdin')", stdin=b"x" * (4 * 1024 * 1024), timeout_s=30)
    async with process.AgentProcess(spec) as proc:
        lines = [line async for line in proc.lines()]
        exit = await proc.wait()
    assert lines == ["ignoring stdin"] and exit.returncode == 0 and not exit.timed_out


async def test_over_long_lines_are_cut_and_stderr_is_a_bounded_tail(tmp_path: Path):
    code = (
        "import sys; sys.stdout.write('a' * 5000 + '\\nshort\\n'); "
        "sys.stderr.write('e' * 100000 + 'END')"
    )
    spec = _spec(tmp_path, code, max_line_bytes=1000, stderr_tail_bytes=500)
    async with process.AgentProcess(spec) as proc:
        lines = [line async for line in proc.lines()]
        exit = await proc.wait()
    assert lines == ["a" * 1000, "short"]
    assert exit.truncated_lines == 1
    assert len(exit.stderr_tail) == 500 and exit.stderr_tail.endswith("END")


async def test_a_child_holding_stdout_after_the_leader_exits_does_not_block(tmp_path: Path):
    # The leader prints, starts a background child that inherits stdout, and exits.
    code = (
        "import subprocess, sys; print('hello', flush=True); "
        "subprocess.Popen(['sleep', '60']); sys.exit(0)"
    )
    spec = _spec(tmp_path, code, timeout_s=30, drain_after_exit_s=0.2)
    async with process.AgentProcess(spec) as proc:
        lines = [line async for line in proc.lines()]
        exit = await proc.wait()
    assert lines == ["hello"]
    assert exit.returncode == 0 and not exit.timed_out
