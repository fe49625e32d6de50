"""The mock engine plays its script: order, matching, edits, errors, exhaustion."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from loops import errors
from loops.engines import base, create_engine
from loops.engines.mock import MockEngine, MockTurn


async def _run(engine: MockEngine, prompt: str, cwd: Path) -> base.TurnResult:
    return await base.run_turn(engine, base.TurnRequest(prompt=prompt, cwd=cwd))


async def test_turns_play_in_order_and_matching_turns_wait_for_their_prompt(tmp_path: Path):
    engine = MockEngine(
        [MockTurn(text="verdict", match="judge"), MockTurn(text="one"), MockTurn(text="two")]
    )
    assert (await _run(engine, "work", tmp_path)).final_text == "one"
    assert (await _run(engine, "please judge", tmp_path)).final_text == "verdict"
    assert (await _run(engine, "work", tmp_path)).final_text == "two"


async def test_edits_write_and_delete_files_inside_cwd_only(tmp_path: Path):
    (tmp_path / "old.txt").write_text("x")
    engine = MockEngine(
        [MockTurn(edits={"src/a.py": "A = 1\n", "old.txt": None, "../escape.txt": "no"})]
    )
    events: list[base.TurnEvent] = []
    await base.run_turn(engine, base.TurnRequest(prompt="p", cwd=tmp_path), on_event=events.append)
    assert (tmp_path / "src/a.py").read_text() == "A = 1\n"
    assert not (tmp_path / "old.txt").exists()
    assert not (tmp_path.parent / "escape.txt").exists()
    outputs = [e.output for e in events if isinstance(e, base.ToolResult)]
    assert any(o.startswith("refused") for o in outputs)


async def test_a_same_size_rewrite_is_seen_by_python_bytecode_caching(tmp_path: Path):
    # Python trusts a module's cached bytecode while the source's whole-second mtime and
    # size are unchanged: two scripted rewrites of equal size within one second made a
    # check run the previous code (examples/converge failed whenever bytecode was written).
    engine = MockEngine(
        [
            MockTurn(edits={"calc.py": "def add(a, b):\n    return a - b\n"}),
            MockTurn(edits={"calc.py": "def add(a, b):\n    return a + b\n"}),
        ]
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    check = [sys.executable, "-c", "import calc; print(calc.add(2, 3))"]
    answers = []
    for _ in range(2):
        await _run(engine, "p", tmp_path)
        ran = subprocess.run(check, cwd=tmp_path, env=env, capture_output=True, text=True)
        answers.append(ran.stdout.strip())
    assert (tmp_path / "__pycache__").is_dir()  # the bytecode was cached, as on any machine
    assert answers == ["-1", "5"]


async def test_scripted_error_is_classified_and_exhaustion_is_a_crash(tmp_path: Path):
    engine = MockEngine([MockTurn(error="rate_limit", retry_after_s=3)])
    result = await _run(engine, "p", tmp_path)
    assert isinstance(result.error, errors.EngineRateLimited)
    assert result.error.retry_after_s == 3
    with pytest.raises(errors.EngineRateLimited):
        result.raise_for_error()
    exhausted = await _run(engine, "p", tmp_path)
    assert isinstance(exhausted.error, errors.EngineCrashed)
    assert "exhausted" in exhausted.error.message


def test_unknown_engine_and_bad_script_are_config_errors(tmp_path: Path):
    with pytest.raises(errors.ConfigError, match="choose one of"):
        create_engine("nope")
    bad = tmp_path / "s.json"
    bad.write_text('{"turns": [{"txt": "typo"}]}')
    with pytest.raises(errors.ConfigError, match="unknown keys"):
        create_engine("mock", script=bad)
