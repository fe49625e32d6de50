"""A run's sandbox floor under a real bubblewrap: what a loop file's jobs cannot undo.

``loops.run(..., sandbox_floor=...)`` is what a ``loop worker --sandbox bwrap`` gives
every run it starts: agents that ask for no sandbox get the floor's, command gates
and a judge's test evidence the floor's check sandbox (network cut), and a job asking
for less (``network=True``, an extra writable path) is held to the floor.

Needs ``bwrap``: skipped without it unless ``LOOPS_REQUIRE_BWRAP=1`` (set by CI).
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from fakes.model_server import FakeModelServer, Reply, ToolCall
from loops import agent_job, command_succeeds, gate_job, loop, review_context, run
from loops.engines import base
from loops.engines.openai import OpenAIEngine, OpenAIOptions
from loops.engines.sandbox import Sandbox
from loops.flow import budget
from loops.flow.confinement import SandboxFloor
from loops.flow.context import Context, RunState
from loops.flow.events import Emitter, MemorySink

if shutil.which("bwrap") is None:
    if os.environ.get("LOOPS_REQUIRE_BWRAP") == "1":
        raise RuntimeError("bwrap is not installed and LOOPS_REQUIRE_BWRAP=1")
    pytest.skip("bwrap is not installed: apt-get install bubblewrap", allow_module_level=True)

PY = sys.executable
#: an agent that tries to escape and prints what happened (visible inside the sandbox)
PROBE = Path(__file__).parents[1] / "faults" / "sandbox_probe.py"
#: a worker's floor: agents sandboxed with the network shared, checks with it cut
FLOOR = SandboxFloor.of(Sandbox(), check_network=False)


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
    folder = Path(tempfile.mkdtemp(prefix="loops-floor-", dir="/var/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


async def test_a_gate_that_asks_for_no_sandbox_gets_the_floors(tmp_path: Path, port: int):
    gate = gate_job("g", command_succeeds(PY, connect(port)))
    free = MemorySink()
    await run(gate, cwd=tmp_path, sinks=[free])
    assert free.of_type("verdict")[0].data["met"]  # no floor: the host is reachable
    floored = MemorySink()
    result = await run(gate, cwd=tmp_path, sinks=[floored], sandbox_floor=FLOOR)
    (verdict,) = floored.of_type("verdict")
    assert not verdict.data["met"] and result.exit_code == 1
    assert verdict.data["reason"].endswith("(ran under bwrap, network cut off)")
    assert floored.of_type("sandbox.floor") == []  # nothing asked, nothing overridden


async def test_a_loop_file_asking_for_the_network_is_held_to_the_floor(tmp_path: Path, port: int):
    asks = command_succeeds(PY, connect(port), sandbox="bwrap", network=True)
    allowed = MemorySink()
    await run(gate_job("g", asks), cwd=tmp_path, sinks=[allowed])
    assert allowed.of_type("verdict")[0].data["met"]  # what it asks, without a floor
    job = loop(name="l", body=agent_job("work", engine="mock"), until=asks, max=2)
    sink = MemorySink()
    await run(job, cwd=tmp_path, sinks=[sink], sandbox_floor=FLOOR)
    verdicts = [e.data for e in sink.of_type("verdict") if e.data["slot"] == "until"]
    assert len(verdicts) == 2 and not any(v["met"] for v in verdicts)
    assert verdicts[0]["reason"].endswith(
        "(ran under bwrap, network cut off; the worker's sandbox floor overrode: "
        "network shared (the floor cuts it off))"
    )
    (override,) = sink.of_type("sandbox.floor")  # said once, not every iteration
    assert override.data["overridden"] == ["network shared (the floor cuts it off)"]
    assert override.data["subject"].startswith("command_succeeds(")


async def test_an_agent_of_a_floored_run_cannot_escape_even_when_it_asks(
    tmp_path: Path, outside: Path
):
    secret = tmp_path / "secret.txt"
    secret.write_text("hunter2-planted")
    work = tmp_path / "work"
    work.mkdir()
    command = f"{PY} {PROBE} {outside} {secret}"
    options = {"command": command}
    plain = agent_job("probe", name="plain", engine="command", engine_options=options)
    # asks to write outside its workspace: the floor has no such writable path
    asking = agent_job(
        "probe",
        name="asking",
        engine="command",
        engine_options=options,
        sandbox=Sandbox(writable=(outside,)),
    )
    for job in (plain, asking):
        sink = MemorySink()
        result = await run(job, cwd=work, sinks=[sink], sandbox_floor=FLOOR)
        assert result.exit_code == 0, result.reason
        text = " ".join(e.data["text"] for e in sink.of_type("agent.text"))
        assert "inside: ok" in text
        assert "outside: OSError" in text  # EROFS
        assert "planted: FileNotFoundError" in text and "hunter2" not in text
    assert not (outside / "escaped.txt").exists()
    (override,) = sink.of_type("sandbox.floor")
    assert override.path == "asking" and override.data["overridden"] == [f"writable {outside}"]
    # without the floor the same agent writes where it asked
    await run(asking, cwd=work)
    assert (outside / "escaped.txt").exists()


async def test_a_judges_test_evidence_runs_under_the_floor(tmp_path: Path, port: int):
    evidence = review_context(tests=[PY, *connect(port)])
    state = RunState(run_id="r", cwd=tmp_path, events=Emitter("r", []))
    ctx = Context(state, ("judge",), budget.Ledger(clock=state.clock))
    assert "(exit 0)" in await evidence.gather(ctx)
    state.sandbox_floor = FLOOR
    cut = await evidence.gather(ctx)
    assert "(exit 1)" in cut and "ConnectionRefusedError" in cut


async def test_the_openai_engines_commands_run_under_the_turns_sandbox(
    tmp_path: Path, outside: Path
):
    """The built-in agent runs its ``run_command`` tool in-process: the turn's sandbox
    (a floored run's) must reach those commands too, not only an agent's process."""
    escape = [PY, "-c", f"open({str(outside / 'escaped.txt')!r}, 'w').write('x')"]
    script = [Reply(tool_calls=[ToolCall("run_command", {"argv": escape})]), Reply(text="ok")]
    with FakeModelServer(script) as server:
        eng = OpenAIEngine(
            OpenAIOptions(base_url=f"{server.url}/v1", model="gpt-4o", api_key="sk-test")
        )
        sink = MemorySink()
        job = agent_job("escape", engine=eng)
        result = await run(job, cwd=tmp_path, sinks=[sink], sandbox_floor=FLOOR)
        (tool,) = [m for m in server.model_requests()[-1].body["messages"] if m["role"] == "tool"]
    assert result.exit_code == 0, result.reason
    assert "Read-only file system" in tool["content"] and "exit code 1" in tool["content"]
    assert not (outside / "escaped.txt").exists()
    request = base.TurnRequest(prompt="escape", cwd=tmp_path, timeout_s=30)
    with FakeModelServer(script) as server:  # without a sandbox the command escapes
        eng = OpenAIEngine(
            OpenAIOptions(base_url=f"{server.url}/v1", model="gpt-4o", api_key="sk-test")
        )
        assert (await base.run_turn(eng, request, on_event=lambda e: None)).ok
    assert (outside / "escaped.txt").exists()
