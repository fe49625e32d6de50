"""command_succeeds runs real processes: exit codes, missing programs, timeouts, min_tests."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from loops import command_succeeds, gate_job, run
from loops.flow.events import MemorySink

PY = sys.executable


async def verdict_of(condition, cwd: Path) -> dict:
    sink = MemorySink()
    await run(gate_job("g", condition), cwd=cwd, sinks=[sink])
    return sink.of_type("verdict")[0].data


async def test_exit_codes_decide_and_the_reason_quotes_the_output(tmp_path: Path):
    ok = await verdict_of(command_succeeds(PY, ["-c", "print('fine')"]), tmp_path)
    assert (
        ok["met"] and ok["reason"] == f"`{Path(PY).name} -c 'print('\"'\"'fine'\"'\"')'` exited 0"
    )
    bad = await verdict_of(
        command_succeeds(PY, ["-c", "import sys; print('E broken'); sys.exit(3)"]), tmp_path
    )
    assert not bad["met"] and bad["reason"].endswith("exited 3: E broken")


async def test_commands_run_in_the_run_directory_or_below_it(tmp_path: Path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "marker").write_text("x")
    check = "import os, sys; sys.exit(0 if os.path.exists('marker') else 1)"
    assert not (await verdict_of(command_succeeds(PY, ["-c", check]), tmp_path))["met"]
    assert (await verdict_of(command_succeeds(PY, ["-c", check], cwd="sub"), tmp_path))["met"]


async def test_a_missing_program_is_not_met_with_a_clear_reason(tmp_path: Path):
    verdict = await verdict_of(command_succeeds("no-such-program-xyz"), tmp_path)
    assert not verdict["met"]
    assert "'no-such-program-xyz' is not installed or not on PATH" in verdict["reason"]


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in status  # a zombie is dead, only not yet reaped


async def test_a_timeout_kills_the_process_group(tmp_path: Path):
    pid_file = tmp_path / "grandchild.pid"
    child = (
        "import subprocess, sys, time\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(p.pid))\n"
        "time.sleep(60)\n"
    )
    started = time.monotonic()
    verdict = await verdict_of(command_succeeds(PY, ["-c", child], timeout_s=5), tmp_path)
    assert not verdict["met"] and "timed out after 5s and was killed" in verdict["reason"]
    assert time.monotonic() - started < 30
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild)


def _project(tmp_path: Path, tests: str) -> Path:
    (tmp_path / "test_x.py").write_text(tests)
    return tmp_path


PYTEST = [PY, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
FAST = {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}


async def test_min_tests_refuses_a_run_of_zero_tests(tmp_path: Path):
    project = _project(tmp_path, "def helper():\n    pass\n")
    # pytest exits 5 when no tests ran; `|| true`-style wrappers make it 0: emulate one
    wrapper = ["-c", "import subprocess, sys; subprocess.run(sys.argv[1:]); sys.exit(0)", *PYTEST]
    verdict = await verdict_of(command_succeeds(PY, wrapper, min_tests=1, env=FAST), project)
    assert not verdict["met"]
    assert "only 0 tests passed (pytest; min_tests=1)" in verdict["reason"]


async def test_min_tests_counts_passed_tests(tmp_path: Path):
    project = _project(tmp_path, "def test_a():\n    pass\n\ndef test_b():\n    pass\n")
    verdict = await verdict_of(
        command_succeeds(PYTEST[0], PYTEST[1:], min_tests=2, env=FAST), project
    )
    assert verdict["met"] and "(2 tests passed)" in verdict["reason"]
    verdict = await verdict_of(
        command_succeeds(PYTEST[0], PYTEST[1:], min_tests=3, env=FAST), project
    )
    assert not verdict["met"]


async def test_min_tests_says_when_the_count_cannot_be_read(tmp_path: Path):
    verdict = await verdict_of(
        command_succeeds(PY, ["-c", "print('all good')"], min_tests=1), tmp_path
    )
    assert not verdict["met"]
    assert "has no test summary to count" in verdict["reason"]
