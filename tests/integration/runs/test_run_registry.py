"""The run registry on real files and real processes: recorded runs, dead runs, pruning."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from loops import (
    errors,
    list_runs,
    read_run_status,
    run,
    run_events_path,
    run_semantic_records_path,
)
from loops.runs import files, layout, process, recorder, registry
from loops.runs.records import RecordFilter, parse_kinds
from loops.runs.registry import RunState
from run_helpers import demo_job


async def _recorded(home: Path, cwd: Path, run_id: str = "r-1", **options) -> recorder.RunRecorder:
    job = demo_job(**options)
    rec = recorder.open_run(run_id, home=home, title=job.name, shape=job.shape(), cwd=cwd)
    await run(job, cwd=cwd, sinks=[rec], run_id=run_id)
    return rec


async def test_a_finished_run_is_listed_and_read(tmp_path: Path):
    home = tmp_path / "home"
    await _recorded(home, tmp_path)
    [info] = list_runs(home=home)
    assert (info.run_id, info.state, info.title, info.iteration, info.max_iterations) == (
        "r-1", RunState.PASS, "ship", 2, 4,
    )  # fmt: skip
    status = read_run_status("r-1", home=home)
    assert status.shape is not None and status.shape["name"] == "ship"
    assert status.last_verdict is not None and status.last_verdict["met"] is True
    assert status.last_outcome is not None and status.last_outcome["status"] == "pass"
    assert status.info.tokens == 240 and status.info.cost_usd == pytest.approx(0.02)
    events = [json.loads(x) for x in run_events_path("r-1", home=home).read_text().splitlines()]
    assert events[0]["type"] == "run.started" and events[-1]["type"] == "run.finished"
    semantic = run_semantic_records_path("r-1", home=home).read_text().splitlines()
    kinds = {json.loads(x)["kind"] for x in semantic}
    assert kinds == {"dispatch", "completion"}


async def test_records_are_filtered_through_the_registry(tmp_path: Path):
    home = tmp_path / "home"
    await _recorded(home, tmp_path)
    done = registry.read_records(
        "r-1", RecordFilter(kinds=parse_kinds(["completion"]), path="ship/impl"), home=home
    )
    assert [(r["path"], r["status"]) for r in done] == [
        ("ship/impl/agent", "pass"),
        ("ship/impl/agent", "pass"),
        ("ship/impl", "pass"),
    ]
    assert len(registry.read_records("r-1", RecordFilter(last=1), home=home)) == 1


async def test_unknown_and_ambiguous_ids_are_clear_errors(tmp_path: Path):
    home = tmp_path / "home"
    await _recorded(home, tmp_path, run_id="r-10")
    await _recorded(home, tmp_path, run_id="r-11")
    with pytest.raises(errors.RunNotFound, match="no supervised run 'zzz'"):
        read_run_status("zzz", home=home)
    with pytest.raises(errors.RunNotFound, match="ambiguous"):
        read_run_status("r-1", home=home)
    assert read_run_status("r-11", home=home).info.run_id == "r-11"
    with pytest.raises(errors.InputError, match="invalid run id"):
        run_events_path("../etc", home=home)
    with pytest.raises(errors.InputError, match="already registered"):
        recorder.open_run("r-10", home=home, title="again")


_HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from loops.flow.events import Emitter, EventType
    from loops.runs import recorder
    rec = recorder.open_run(sys.argv[2], home=Path(sys.argv[1]), title="holder")
    Emitter(sys.argv[2], [rec]).emit(EventType.RUN_STARTED, "holder", name="holder")
    print("ready", flush=True)
    time.sleep(60)
    """
)


def test_a_killed_run_is_shown_dead(tmp_path: Path):
    home = tmp_path / "home"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(home), "held"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        assert read_run_status("held", home=home).info.state is RunState.RUNNING
        holder.kill()
        holder.wait(timeout=10)
        [info] = list_runs(home=home)
        assert info.state is RunState.DEAD
        events = list(registry.follow_events("held", home=home, poll_s=0.01))
        assert [e["type"] for e in events] == ["run.started"]
    finally:
        holder.kill()
        holder.wait(timeout=10)
        if holder.stdout is not None:
            holder.stdout.close()


def test_a_reused_pid_does_not_keep_a_dead_run_alive(tmp_path: Path):
    me = process.current()
    if me.start_ticks is None:
        pytest.skip("this system does not expose process start times (/proc)")
    home = tmp_path / "home"
    imposter = process.ProcessIdentity(me.pid, me.host, me.start_ticks - 1)
    recorder.open_run("old", home=home, title="old", identity=imposter)
    recorder.open_run("mine", home=home, title="mine", identity=me)
    states = {r.run_id: r.state for r in list_runs(home=home)}
    assert states == {"old": RunState.DEAD, "mine": RunState.RUNNING}


def test_a_run_on_another_host_is_taken_at_its_word(tmp_path: Path):
    home = tmp_path / "home"
    recorder.open_run(
        "far", home=home, title="far", identity=process.ProcessIdentity(1, "elsewhere", None)
    )
    assert read_run_status("far", home=home).info.state is RunState.RUNNING


async def test_prune_deletes_old_ended_runs_only(tmp_path: Path):
    home = tmp_path / "home"
    await _recorded(home, tmp_path, run_id="ended")
    recorder.open_run("live", home=home, title="live")
    later = time.time() + 3600
    assert registry.prune_runs(7200, home=home, now=later) == []
    assert registry.prune_runs(1800, home=home, now=later) == ["ended"]
    assert [r.run_id for r in list_runs(home=home)] == ["live"]


def test_reader_never_sees_half_a_line(tmp_path: Path):
    path = tmp_path / "events.jsonl"
    appender = files.LineAppender(path)
    reader = files.LineReader(path)
    appender.append('{"a": 1}\n')
    with path.open("ab") as raw:  # a writer caught mid-line
        raw.write(b'{"b": ')
    assert reader.read_lines() == ['{"a": 1}']
    assert reader.read_lines() == []
    with path.open("ab") as raw:
        raw.write(b"2}\n")
    assert reader.read_lines() == ['{"b": 2}']
    appender.close()


def test_state_file_is_replaced_whole(tmp_path: Path):
    target = tmp_path / "state.json"
    files.write_json_atomic(target, {"n": 1})
    files.write_json_atomic(target, {"n": 2})
    assert json.loads(target.read_text()) == {"n": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_listing_an_empty_home_is_empty(tmp_path: Path):
    assert list_runs(home=tmp_path / "nothing") == []
    assert registry.prune_runs(1, home=tmp_path / "nothing") == []
    assert layout.runs_dir(tmp_path).name == "runs"
    assert os.path.isdir(tmp_path)


async def test_a_failing_review_is_recorded_as_surfacing_and_revisions(tmp_path: Path):
    from loops import fn_job, loop, predicate

    home = tmp_path / "home"
    job = loop(
        name="feature",
        body=fn_job(lambda ctx: True, name="work"),
        until=predicate(lambda ctx, last: True, name="tests"),
        review=predicate(lambda ctx, last: ctx.iteration >= 2, name="reviewer"),
        max=3,
    )
    rec = recorder.open_run("rv", home=home, title=job.name, shape=job.shape())
    result = await run(job, cwd=tmp_path, sinks=[rec], run_id="rv")
    assert result.status.value == "pass"
    found = registry.read_records(
        "rv", RecordFilter(kinds=parse_kinds(["surfacing", "revision"])), home=home
    )
    assert [r["kind"] for r in found] == ["surfacing", "revision-emitted", "revision-routed"]
    assert all(r["path"] == "feature" for r in found)
    assert found[2]["accepted"] is True and found[2]["target"] == "feature/work"


async def test_a_registry_that_vanishes_mid_run_does_not_fail_the_run(tmp_path: Path):
    import shutil

    from loops import fn_job, loop, predicate

    home = tmp_path / "home"

    def remove_registry(ctx):
        shutil.rmtree(home)

    job = loop(
        name="l",
        body=fn_job(remove_registry, name="work"),
        until=predicate(lambda ctx, last: True, name="done"),
        max=2,
    )
    rec = recorder.open_run("gone", home=home, title="l")
    result = await run(job, cwd=tmp_path, sinks=[rec], run_id="gone")
    assert result.status.value == "pass"
    assert not home.exists()


async def test_follow_from_now_skips_what_was_written_before(tmp_path: Path):
    home = tmp_path / "home"
    await _recorded(home, tmp_path, run_id="done")
    assert list(registry.follow_events("done", home=home, from_start=False)) == []
    replay = list(registry.follow_events("done", home=home))
    assert replay[0]["type"] == "run.started" and replay[-1]["type"] == "run.finished"
