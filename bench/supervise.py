"""Supervision speed: `loop list` over 1,000 runs, `loop records` over 100,000 records,
and the live UI under a stream of 1,000 events/s.

Run:  .venv/bin/python bench/supervise.py [--runs 7] [--tui-seconds 10]

* list: a LOOPS_HOME with 1,000 registered runs (700 ended, 200 dead, 100 running in
  this process); `loop list` as a subprocess (the whole command, interpreter start
  included), beside `loop --version` (the CLI's fixed start-up cost) and `list_runs()`
  in-process.
* records: one run with 100,000 semantic records (5 kinds, 50 paths); `loop records`
  as a subprocess with filters, beside `read_records()` in-process.
* tui: the live UI (headless) consuming 1,000 events/s spread over 40 nodes for
  ``--tui-seconds``; reports whether it kept up (events folded == sent, wall time) and
  the process's resident memory after 10 % and at the end of the stream (bounded memory), plus the
  top rate it folds events at with nothing to wait for.

Each figure is the median over ``--runs`` runs, with min-max.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from loops.flow import events as events_mod
from loops.flow.events import Emitter, EventType
from loops.runs import process, recorder, records, registry
from loops.runs.records import RecordFilter, SemanticRecord

LOOP = Path(sys.executable).parent / "loop"


def rss_bytes() -> int:
    """This process's resident memory now (Linux), or 0 where unknown."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


def stats(samples: list[float]) -> str:
    ms = [s * 1000 for s in samples]
    return f"{statistics.median(ms):.1f} ms ({min(ms):.1f}-{max(ms):.1f})"


def timed(fn: Callable[[], object], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def cpu_timed(fn: Callable[[], object], runs: int) -> tuple[list[float], list[float]]:
    """Wall and CPU (user + system of the child processes) seconds per call.

    On a loaded machine the wall time waits for a core; the CPU time is what the
    command itself costs.
    """
    wall, cpu = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        fn()
        wall.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return wall, cpu


def both(fn: Callable[[], object], runs: int) -> str:
    wall, cpu = cpu_timed(fn, runs)
    return f"wall {stats(wall)}, cpu {stats(cpu)}"


#: where the "compiled" CLI runs keep their bytecode (set by main)
PYCACHE: dict[str, str] = {}


def cli(home: Path, *args: str, compiled: bool = False) -> Callable[[], object]:
    """The command as a subprocess. Without ``compiled`` it runs as this environment
    does (``PYTHONDONTWRITEBYTECODE=1`` and no ``.pyc`` in the venv: every start compiles
    each module it imports); with it, from a warm bytecode cache, as an installed tool
    (pip writes ``.pyc`` at install) starts."""
    env = {**os.environ, "LOOPS_HOME": str(home)}
    if compiled:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = PYCACHE["dir"]

    def call() -> object:
        return subprocess.run([str(LOOP), *args], env=env, check=True, stdout=subprocess.DEVNULL)

    if compiled:
        call()  # fill the cache
    return call


def populate_runs(home: Path, count: int = 1000) -> None:
    me = process.current()
    gone = process.ProcessIdentity(pid=2**22 + 999, host=me.host, start_ticks=1)
    for n in range(count):
        run_id = f"20261127T{n // 3600 % 24:02d}{n // 60 % 60:02d}{n % 60:02d}-{n:06x}"
        identity = me if n % 10 == 0 else (gone if n % 10 in (1, 2) else me)
        rec = recorder.open_run(run_id, home=home, title=f"job-{n}", identity=identity)
        emit = Emitter(run_id, [rec]).emit
        emit(EventType.RUN_STARTED, "job", name=f"job-{n}", kind="loop")
        emit(EventType.JOB_STARTED, "job", kind="loop", name="job")
        emit(EventType.ITERATION_STARTED, "job", iteration=1 + n % 5, max=8)
        if n % 10 >= 3:
            status = "pass" if n % 2 else "fail"
            emit(EventType.JOB_FINISHED, "job", kind="loop", name="job", status=status,
                 summary="done", usage={})  # fmt: skip
            emit(EventType.RUN_FINISHED, "job", status=status, reason="done", usage={})
        rec.write_state()


def populate_records(home: Path, count: int = 100_000) -> str:
    run_id = "big"
    rec = recorder.open_run(run_id, home=home, title="big")
    rec.close()
    kinds = list(records.RecordKind)
    start = dt.datetime(2026, 11, 27, tzinfo=dt.UTC)
    with (home / "runs" / run_id / "semantic.jsonl").open("w") as out:
        for n in range(count):
            path = f"ship/node{n % 50}" + ("/agent" if n % 3 else "")
            ts = events_mod.format_ts(start + dt.timedelta(milliseconds=10 * n))
            data = {"status": "pass", "summary": f"record {n} " + "x" * 80, "severity": "block"}
            out.write(records.record_line(SemanticRecord(kinds[n % 5], ts, run_id, path, data)))
    return run_id


def bench_list(home: Path, runs: int) -> None:
    populate_runs(home)
    found = registry.list_runs(home=home)
    by_state: dict[str, int] = {}
    for info in found:
        by_state[info.state.value] = by_state.get(info.state.value, 0) + 1
    print(f"## list: {len(found)} runs {dict(sorted(by_state.items()))}")
    for compiled in (False, True):
        how = "bytecode cached" if compiled else "no bytecode (compiles on start)"
        print(f"### {how}")
        version = cli(home, "--version", compiled=compiled)
        print(f"loop --version (CLI start-up)   {both(version, runs)}")
        print(f"loop list                       {both(cli(home, 'list', compiled=compiled), runs)}")
        listed = cli(home, "list", "--json", compiled=compiled)
        print(f"loop list --json                {both(listed, runs)}")
    in_process = timed(lambda: registry.list_runs(home=home), runs)
    print(f"list_runs() in-process          {stats(in_process)}")


def bench_records(home: Path, runs: int) -> None:
    run_id = populate_records(home)
    print("## records: 100,000 records")
    cases = [
        ("--json (all)", ["--json"]),
        ("--kind surfacing --json", ["--kind", "surfacing", "--json"]),
        ("--path ship/node7 --json", ["--path", "ship/node7", "--json"]),
        (
            "--kind revision --path ship/node8 --last 20",
            ["--kind", "revision", "--path", "ship/node8", "--last", "20"],
        ),
        ("--since <last 10%> --json", ["--since", "2026-11-27T00:15:00Z", "--json"]),
    ]
    for compiled in (False, True):
        print(f"### {'bytecode cached' if compiled else 'no bytecode (compiles on start)'}")
        version = cli(home, "--version", compiled=compiled)
        print(f"loop --version (CLI start-up)   {both(version, runs)}")
        for name, args in cases:
            command = cli(home, "records", run_id, *args, compiled=compiled)
            print(f"loop records {name:<45} {both(command, runs)}")
    selection = RecordFilter(kinds=records.parse_kinds(["surfacing"]))
    in_process = timed(lambda: registry.read_records(run_id, selection, home=home), runs)
    print(f"read_records(--kind surfacing) in-process {stats(in_process)}")


async def bench_tui(seconds: float) -> None:
    from loops.flow import runner
    from loops.tui.app import LiveRunApp
    from loops.usage import Usage

    rate, batch = 1000, 50
    total = int(rate * seconds)
    heap: dict[str, int] = {}

    async def stream(sinks: list[events_mod.EventSink]) -> runner.RunResult:
        emitter = Emitter("bench", sinks)
        emitter.emit(EventType.RUN_STARTED, "flood", name="flood", kind="dag")
        begin = time.perf_counter()
        for n in range(0, total, batch):
            for k in range(n, n + batch):
                path = f"flood/node{k % 40}/agent"
                if k % 10 == 0:
                    command = {"command": f"pytest -k case{k}"}
                    emitter.emit(EventType.AGENT_TOOL_USE, path, id=str(k), tool="Bash",
                                 input=command, role="worker")  # fmt: skip
                else:
                    emitter.emit(EventType.AGENT_TEXT, path, text=f"line {k} " + "y" * 120,
                                 role="worker")  # fmt: skip
            if n in (total // 10, total // 2):
                heap["10%" if n == total // 10 else "50%"] = rss_bytes()
            due = begin + (n + batch) / rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
        heap["end"] = rss_bytes()
        from loops.flow.outcome import Outcome, OutcomeStatus

        emitter.emit(EventType.RUN_FINISHED, "flood", status="pass", reason="ok", usage={})
        return runner.RunResult("bench", Outcome(OutcomeStatus.PASS, "ok", usage=Usage()), "ok",
                                time.perf_counter() - begin)  # fmt: skip

    app = LiveRunApp(start=stream, run_id="bench", title="flood", exit_on_finish=True)
    started = time.perf_counter()
    async with app.run_test(size=(140, 40)) as pilot:
        while app.result is None:
            await pilot.pause(0.2)
    wall = time.perf_counter() - started
    folded = app.view.events_seen
    print(f"## tui: {total:,} events at {rate}/s over 40 nodes")
    print(f"events folded {folded:,} of {total + 2:,}; stream took {app.result.duration_s:.2f} s "
          f"(target {seconds:.2f} s), app wall {wall:.2f} s")  # fmt: skip
    mb = {k: f"{v / 1e6:.1f} MB" for k, v in heap.items()}
    print(f"process RSS after 10%: {mb['10%']}, after 50%: {mb['50%']}, at the end: {mb['end']}")
    from loops.runs.view import RunView

    flat = RunView()
    sample = [{"type": "agent.text", "ts": "t", "run_id": "r", "path": f"a/n{k % 40}",
               "text": "y" * 120} for k in range(100_000)]  # fmt: skip
    begin = time.perf_counter()
    for body in sample:
        flat.apply(body)
    rate_per_s = 100_000 / (time.perf_counter() - begin)
    print(f"fold rate with nothing to wait for: {rate_per_s:,.0f} events/s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--tui-seconds", type=float, default=10.0)
    parser.add_argument("--only", choices=["list", "records", "tui"], default=None)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        PYCACHE["dir"] = str(Path(tmp) / "pycache")
        if options.only in (None, "list"):
            bench_list(Path(tmp) / "list-home", options.runs)
        if options.only in (None, "records"):
            bench_records(Path(tmp) / "records-home", options.runs)
    if options.only in (None, "tui"):
        asyncio.run(bench_tui(options.tui_seconds))


if __name__ == "__main__":
    main()
