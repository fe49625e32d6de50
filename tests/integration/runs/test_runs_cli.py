"""The registry's commands through click's runner: output, filters and clear errors."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from loops import run
from loops.cli.main import cli
from loops.runs import recorder
from run_helpers import demo_job


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty LOOPS_HOME for the command under test."""
    folder = tmp_path / "home"
    monkeypatch.setenv("LOOPS_HOME", str(folder))
    monkeypatch.chdir(tmp_path)
    return folder


async def _record(home: Path, cwd: Path, run_id: str) -> None:
    job = demo_job()
    rec = recorder.open_run(run_id, home=home, title=job.name, shape=job.shape(), cwd=cwd)
    await run(job, cwd=cwd, sinks=[rec], run_id=run_id)


def _invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


async def test_list_and_status_show_a_finished_run(home: Path, tmp_path: Path):
    await _record(home, tmp_path, "20261127T100000-aaaaaa")
    listed = _invoke("list")
    assert listed.output.splitlines()[0].split() == ["RUN", "ID", "STATE", "ITER", "AGE", "TITLE"]
    assert listed.output.splitlines()[1].split()[:3] == ["20261127T100000-aaaaaa", "pass", "2/4"]
    assert _invoke("ls").output == listed.output
    status = _invoke("status", "20261127T100000")  # a unique prefix is enough
    assert "run 20261127T100000-aaaaaa: pass  ship" in status.output
    assert "verdict   ship/impl until: met" in status.output
    assert "usage     240 tokens, $0.0200" in status.output
    assert "budget    ship/impl: tokens 240/5000, usd 0.02/1" in status.output
    assert "loop impl  max=4" in status.output
    body = json.loads(_invoke("status", "20261127T100000-aaaaaa", "--json").output)
    assert body["state"] == "pass" and body["last_outcome"]["status"] == "pass"


async def test_records_filters_by_kind_path_since_and_last(home: Path, tmp_path: Path):
    await _record(home, tmp_path, "r1")
    every = [json.loads(x) for x in _invoke("records", "r1", "--json").output.splitlines()]
    assert {r["kind"] for r in every} == {"dispatch", "completion"}
    dispatches = _invoke("records", "r1", "--kind", "dispatch", "--path", "ship/impl", "--json")
    assert [json.loads(x)["path"] for x in dispatches.output.splitlines()] == [
        "ship/impl",
        "ship/impl/agent",
        "ship/impl/agent",
    ]
    last = _invoke("records", "r1", "--last", "2")
    assert len(last.output.splitlines()) == 2 and "completion       ship  pass" in last.output
    later = _invoke("records", "r1", "--since", "2999-01-01")
    assert later.output == "No matching records.\n"
    since = every[3]["ts"]
    from_then = _invoke("records", "r1", "--since", since, "--json").output.splitlines()
    assert len(from_then) == len([r for r in every if r["ts"] >= since])
    assert _invoke("records", "r1", "--kind", "revision", "--json").output == ""


def test_unknown_ids_and_bad_input_are_one_line_errors(home: Path):
    runner = CliRunner()
    for args in (["status", "nope"], ["tail", "nope"], ["records", "nope"], ["watch", "nope"]):
        done = runner.invoke(cli, args)
        assert done.exit_code == 1
        assert done.output.strip().splitlines() == [
            f"error: no supervised run 'nope' in {home / 'runs'}; see `loop list` "
            "(runs are registered by `loop run --supervise`)"
        ]
    bad = runner.invoke(cli, ["runs:prune", "--older-than", "soon"])
    assert bad.exit_code == 1 and bad.output.startswith("error: --older-than: invalid duration")
    kind = runner.invoke(cli, ["records", "x", "--kind", "nope"])
    assert kind.exit_code == 1 and "unknown record kind 'nope'" in kind.output
    assert runner.invoke(cli, ["list"]).output.startswith("No supervised runs")


async def test_prune_removes_ended_runs(home: Path, tmp_path: Path):
    await _record(home, tmp_path, "old")
    assert json.loads(_invoke("runs:prune", "--older-than", "1d", "--json").output) == {
        "removed": []
    }
    folder = home / "runs" / "old"
    for path in [folder, *folder.iterdir()]:
        os.utime(path, (time.time() - 7200, time.time() - 7200))
    assert _invoke("runs:prune", "--older-than", "1h").output == "removed 1 run\n"
    assert not folder.exists()


async def test_tail_prints_readable_lines_of_an_ended_run(home: Path, tmp_path: Path):
    await _record(home, tmp_path, "r1")
    out = _invoke("tail", "r1").output.splitlines()
    assert out[0].endswith("ship  run started: ship in " + str(tmp_path))
    assert out[-1].endswith("run finished: pass: 2 nodes: 2 passed [240 tok, $0.0200]")
    # with --new nothing is left to show of an ended run: it says how it ended, not that
    # its process died
    assert _invoke("tail", "r1", "--new").output == "run r1 already ended: pass\n"


async def test_status_without_a_run_id_is_the_queue_summary(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("QUEUE_DB_PATH", str(tmp_path / "queue.sqlite"))
    await _record(home, tmp_path, "r1")
    queue = json.loads(_invoke("status", "--json").output)
    assert set(queue) >= {"counts", "leases", "responsibilities_due", "recent_failures"}
    run_status = json.loads(_invoke("status", "r1", "--json").output)
    assert run_status["run_id"] == "r1" and run_status["state"] == "pass"


def test_textual_is_imported_only_when_a_ui_is_drawn():
    import subprocess
    import sys

    probe = (
        "import sys, loops, loops.cli.main, loops.cli.runs_commands, loops.runs.registry; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'rich')))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_loop_list_loads_neither_the_queue_nor_the_loop_library(home: Path):
    """`loop list` shares its module with `status`, whose queue side is loaded on use."""
    import subprocess
    import sys

    heavy = ("asyncio", "loops.cli.queue_commands", "loops.services.queue", "loops.flow.jobs")
    code = (
        "import sys\n"
        "from loops.cli.main import main\n"
        "try:\n    main(['list'])\nexcept SystemExit:\n    pass\n"
        f"print(','.join(m for m in {heavy!r} if m in sys.modules), file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert "No supervised runs" in done.stdout
    assert done.stderr.strip() == ""
    status = _invoke("status", "--help")  # the queue's options are still there
    assert "--db PATH" in status.output and "RUN_ID" in status.output
