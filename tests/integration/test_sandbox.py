"""Agent processes under a real bubblewrap sandbox (``AgentProcess`` with a ``Sandbox``).

Needs ``bwrap`` (Debian's ``bubblewrap``; ``.ci/run`` installs it): without it these
tests are skipped with the reason, unless ``LOOPS_REQUIRE_BWRAP=1`` (set by CI).
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path

import pytest

from loops import errors
from loops.engines import sandbox as sandbox_mod
from loops.engines.process import AgentProcess, ProcessSpec
from loops.engines.sandbox import Sandbox

if shutil.which("bwrap") is None:
    if os.environ.get("LOOPS_REQUIRE_BWRAP") == "1":
        raise RuntimeError("bwrap is not installed and LOOPS_REQUIRE_BWRAP=1")
    pytest.skip("bwrap is not installed: apt-get install bubblewrap", allow_module_level=True)

PROBE = """
import json, os, pathlib, socket, sys
checks = {}
def attempt(name, fn):
    try:
        fn()
        checks[name] = "ok"
    except Exception as exc:
        checks[name] = type(exc).__name__
work, outside, secret, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
attempt("write_work", lambda: pathlib.Path(work, "made.txt").write_text("x"))
attempt("write_outside", lambda: pathlib.Path(outside, "escaped.txt").write_text("x"))
attempt("write_tmp", lambda: pathlib.Path("/tmp/private.txt").write_text("x"))
attempt("read_secret", lambda: pathlib.Path(secret).read_text())
attempt("connect", lambda: socket.create_connection(("127.0.0.1", port), timeout=3).close())
checks["env"] = sorted(k for k in os.environ if k.startswith("FAULTS_"))
print(json.dumps(checks))
"""


async def run_probe(tmp_path: Path, box: Sandbox, port: int) -> dict[str, object]:
    import json

    work = tmp_path / "work"
    outside = tmp_path / "outside"
    work.mkdir(exist_ok=True)
    outside.mkdir(exist_ok=True)
    secret = tmp_path / "secret.txt"
    secret.write_text("hunter2")
    env = {**os.environ, "FAULTS_SECRET_TOKEN": "x", "LOOP_TASK_ID": "1"}
    argv = [sys.executable, "-c", PROBE, str(work), str(outside), str(secret), str(port)]
    spec = ProcessSpec(argv=argv, cwd=work, env=env, sandbox=box, timeout_s=60)
    async with AgentProcess(spec) as proc:
        lines = [line async for line in proc.lines()]
        exit = await proc.wait()
    assert exit.returncode == 0, exit.stderr_tail
    return dict(json.loads(lines[-1]))


@pytest.fixture
def listener() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    return sock


async def test_the_agent_writes_only_its_workspace_and_cannot_read_a_planted_secret(
    tmp_path: Path, listener: socket.socket
) -> None:
    with listener:
        checks = await run_probe(tmp_path, Sandbox(), listener.getsockname()[1])
    assert checks["write_work"] == "ok"
    assert (tmp_path / "work" / "made.txt").exists()
    assert checks["write_outside"] in ("OSError", "PermissionError", "FileNotFoundError")
    assert not (tmp_path / "outside" / "escaped.txt").exists()
    assert checks["write_tmp"] == "ok"  # a private /tmp ...
    assert not Path("/tmp/private.txt").exists()  # ... that the host never sees
    assert checks["read_secret"] == "FileNotFoundError"
    assert checks["env"] == []  # the user's other secrets are filtered out
    assert checks["connect"] == "ok"  # the network is shared by default (the model API)


async def test_with_the_network_cut_off_nothing_is_reachable(
    tmp_path: Path, listener: socket.socket
) -> None:
    with listener:
        checks = await run_probe(tmp_path, Sandbox(network=False), listener.getsockname()[1])
    assert checks["connect"] in ("ConnectionRefusedError", "OSError", "TimeoutError")
    assert checks["write_work"] == "ok"


def test_a_sandbox_that_cannot_start_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sandbox_mod.require_bwrap.cache_clear()
    monkeypatch.setattr(sandbox_mod.shutil, "which", lambda name: None)
    try:
        with pytest.raises(errors.SandboxUnavailable, match="apt-get install bubblewrap"):
            Sandbox().wrap(["true"], cwd=tmp_path)
    finally:
        sandbox_mod.require_bwrap.cache_clear()


def test_sandbox_kinds() -> None:
    assert Sandbox.parse(None) is None
    assert Sandbox.parse("none") is None
    assert Sandbox.parse("bwrap", network=False) == Sandbox(network=False)
    with pytest.raises(errors.ConfigError, match="docker is not supported"):
        Sandbox.parse("docker")
