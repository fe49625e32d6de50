"""``command_succeeds(sandbox="bwrap")``: the check command under a real bubblewrap.

Needs ``bwrap`` (Debian's ``bubblewrap``; ``.ci/run`` installs it): without it these
tests are skipped with the reason, unless ``LOOPS_REQUIRE_BWRAP=1`` (set by CI).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from loops import command_succeeds, errors, gate_job, run
from loops.engines import sandbox as sandbox_mod
from loops.engines.sandbox import Sandbox
from loops.flow import command
from loops.flow.conditions import Condition
from loops.flow.events import MemorySink

if shutil.which("bwrap") is None:
    if os.environ.get("LOOPS_REQUIRE_BWRAP") == "1":
        raise RuntimeError("bwrap is not installed and LOOPS_REQUIRE_BWRAP=1")
    pytest.skip("bwrap is not installed: apt-get install bubblewrap", allow_module_level=True)

PY = sys.executable

#: tries to escape and writes what happened to ``report.json`` in the run directory
PROBE = """
import json, os, pathlib, sys
outside, secret = sys.argv[1], sys.argv[2]
checks = {}
def attempt(name, fn):
    try:
        fn()
        checks[name] = "ok"
    except OSError as exc:
        checks[name] = type(exc).__name__
attempt("write_run_dir", lambda: pathlib.Path("../made.txt").write_text("x"))
attempt("write_outside", lambda: pathlib.Path(outside, "escaped.txt").write_text("x"))
attempt("write_tmp", lambda: pathlib.Path("/tmp/check-private.txt").write_text("x"))
attempt("read_secret", lambda: pathlib.Path(secret).read_text())
checks["env"] = sorted(os.environ)
pathlib.Path("../report.json").write_text(json.dumps(checks))
"""


async def verdict_of(condition: Condition, cwd: Path) -> dict:
    sink = MemorySink()
    await run(gate_job("g", condition), cwd=cwd, sinks=[sink])
    return sink.of_type("verdict")[0].data


def connect(port: int) -> list[str]:
    code = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=5).close()"
    return ["-c", code]


@pytest.fixture
def port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


@pytest.fixture
def outside() -> Iterator[Path]:
    # outside the run directory and not hidden: the read-only root must refuse writes
    folder = Path(tempfile.mkdtemp(prefix="loops-check-", dir="/var/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


async def test_a_check_with_the_network_cut_cannot_reach_the_host(tmp_path: Path, port: int):
    assert (await verdict_of(command_succeeds(PY, connect(port)), tmp_path))["met"]  # reachable
    cut = await verdict_of(command_succeeds(PY, connect(port), sandbox="bwrap"), tmp_path)
    assert not cut["met"]
    assert "ConnectionRefusedError" in cut["reason"] or "OSError" in cut["reason"]
    assert cut["reason"].endswith("(ran under bwrap, network cut off)")
    shared = command_succeeds(PY, connect(port), sandbox="bwrap", network=True)
    assert (await verdict_of(shared, tmp_path))["met"]


async def test_a_check_writes_only_the_run_directory_and_cannot_read_a_planted_secret(
    tmp_path: Path, outside: Path, monkeypatch: pytest.MonkeyPatch
):
    work = tmp_path / "work"
    (work / "sub").mkdir(parents=True)
    secret = tmp_path / "secret.txt"
    secret.write_text("hunter2")
    monkeypatch.setenv("FAULTS_CHECK_SECRET", "do-not-pass")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-not-for-the-check")
    check = command_succeeds(
        PY,
        ["-c", PROBE, str(outside), str(secret)],
        cwd="sub",  # run below the run directory: all of it stays writable
        sandbox="bwrap",
        env={"CHECK_MODE": "ci"},
    )
    assert (await verdict_of(check, work))["met"]
    checks = json.loads((work / "report.json").read_text())
    assert checks["write_run_dir"] == "ok" and (work / "made.txt").exists()
    assert checks["write_outside"] == "OSError"  # EROFS
    assert not (outside / "escaped.txt").exists()
    assert checks["write_tmp"] == "ok"  # a private /tmp ...
    assert not Path("/tmp/check-private.txt").exists()  # ... the host never sees
    assert checks["read_secret"] == "FileNotFoundError"
    assert "CHECK_MODE" in checks["env"] and "PATH" in checks["env"]
    assert "FAULTS_CHECK_SECRET" not in checks["env"]
    assert "ANTHROPIC_API_KEY" not in checks["env"]  # the check needs no model key


async def test_a_program_on_path_runs_and_a_missing_one_is_named(tmp_path: Path):
    assert (await verdict_of(command_succeeds("true", sandbox="bwrap"), tmp_path))["met"]
    missing = await verdict_of(command_succeeds("no-such-program-xyz", sandbox="bwrap"), tmp_path)
    assert not missing["met"]
    assert "'no-such-program-xyz' is not installed or not on PATH" in missing["reason"]


@pytest.fixture
def refusing_bwrap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A ``bwrap`` first on PATH that fails as one without user namespaces does."""
    fake = tmp_path / "fakebin"
    fake.mkdir()
    (fake / "bwrap").write_text(
        "#!/bin/sh\necho 'bwrap: No permissions to creating new namespace' >&2\nexit 1\n"
    )
    (fake / "bwrap").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    sandbox_mod.require_bwrap.cache_clear()
    yield
    sandbox_mod.require_bwrap.cache_clear()


@pytest.mark.usefixtures("refusing_bwrap")
async def test_a_check_sandbox_that_cannot_start_stops_the_run_before_it_runs(tmp_path: Path):
    marker = tmp_path / "ran"
    check = command_succeeds(PY, ["-c", f"open({str(marker)!r}, 'w')"], sandbox="bwrap")
    with pytest.raises(errors.SandboxUnavailable, match="No permissions to creating new"):
        await run(gate_job("g", check), cwd=tmp_path)
    assert not marker.exists()  # never a run without the sandbox
    with pytest.raises(errors.SandboxUnavailable, match="unprivileged user namespaces"):
        await command.run_command([PY, "-c", "pass"], tmp_path, 10, {}, sandbox=Sandbox())
    assert not marker.exists()


async def test_a_relative_script_runs_with_its_interpreter_from_a_hidden_folder(tmp_path: Path):
    # /tmp is hidden inside the sandbox: the script's interpreter lives there, as a
    # virtualenv's python links into an installation under a hidden home
    interp = tmp_path / "tools" / "bin"
    interp.mkdir(parents=True)
    (interp / "python").symlink_to(sys.executable)
    work = tmp_path / "work"
    (work / "bin").mkdir(parents=True)
    (work / "bin" / "check").write_text(f"#!{interp / 'python'}\nprint('checked')\n")
    (work / "bin" / "check").chmod(0o755)
    verdict = await verdict_of(command_succeeds("bin/check", sandbox="bwrap"), work)
    assert verdict["met"], verdict["reason"]
