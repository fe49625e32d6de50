"""Regenerate the TUI screenshots in this folder (headless, mock engine, fixed clock).

    .venv/bin/python docs/screenshots/make.py

Each SVG is Textual's own screenshot export of the live UI at one moment of a run.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import tempfile
from pathlib import Path

from loops import agent_job, budget, dag, fn_job, loop, predicate, run
from loops.engines.mock import MockEngine, MockTurn
from loops.flow.events import Emitter, EventType
from loops.runs import process, recorder
from loops.tui.app import LiveRunApp, WatchApp
from loops.usage import Usage

HERE = Path(__file__).resolve().parent
SIZE = (132, 34)


def _job(hold_s: float):
    turns = [
        MockTurn(
            text="Reading tests/test_calc.py: add() must handle negative numbers.\n"
            "Editing src/calc.py to drop the abs() call.",
            edits={"src/calc.py": "def add(a, b):\n    return abs(a) + b\n"},
            usage=Usage(input_tokens=1800, output_tokens=420, cost_usd=0.021),
        ),
        MockTurn(
            text="The gate still fails: test_add_negative. Looking at the other operand.\n"
            "Fixed: add() returns a + b; running pytest -q",
            edits={"src/calc.py": "def add(a, b):\n    return a + b\n"},
            usage=Usage(input_tokens=2600, output_tokens=510, cost_usd=0.032),
            delay_s=hold_s,
        ),
    ]
    engine = MockEngine(turns, default=MockTurn(text="ok"))

    def tests_pass(ctx, last) -> bool:
        return "a + b" in (Path(ctx.cwd) / "src" / "calc.py").read_text()

    impl = loop(
        name="impl",
        body=agent_job("Make the failing tests in tests/ pass.", engine=engine),
        until=predicate(tests_pass, name="pytest"),
        max=5,
        budget=budget(tokens=20_000, usd=0.25),
    )
    return dag(
        name="calc-fix",
        nodes={
            "plan": fn_job(lambda ctx: True, name="plan"),
            "impl": {"job": impl, "needs": ["plan"]},
            "docs": {"job": fn_job(lambda ctx: True, name="docs"), "needs": ["impl"]},
        },
    )


def _clock_for(app, elapsed_s: float):
    def clock() -> dt.datetime:
        started = app.view.started_ts
        if not started:
            return dt.datetime.now(dt.UTC)
        return dt.datetime.fromisoformat(started.replace("Z", "+00:00")) + dt.timedelta(
            seconds=elapsed_s
        )

    return clock


async def _wait(pilot, predicate) -> None:
    for _ in range(400):
        if predicate():
            return
        await pilot.pause(0.05)
    raise RuntimeError("the run did not reach the moment to capture")


async def live_shots(workdir: Path) -> None:
    (workdir / "src").mkdir()
    (workdir / "src" / "calc.py").write_text("def add(a, b):\n    return 0\n")
    job = _job(hold_s=60)
    app = LiveRunApp(
        start=lambda sinks: run(job, cwd=workdir, sinks=sinks, run_id="20261127T120000-5e1f3a"),
        run_id="20261127T120000-5e1f3a",
        title=job.name,
        shape=job.shape(),
    )
    app._clock = _clock_for(app, 83)  # a stable elapsed time in the picture
    async with app.run_test(size=SIZE) as pilot:
        await _wait(pilot, lambda: app.view.nodes.get("calc-fix/impl", None) is not None
                    and app.view.nodes["calc-fix/impl"].iteration == 2
                    and "calc-fix/impl/agent" in app.view.active_path)  # fmt: skip
        await pilot.pause(0.3)
        (HERE / "live-run.svg").write_text(app.export_screenshot(title="loop run (live)"))
        await pilot.press("q")
        await pilot.pause(0.2)
        (HERE / "quit-asks.svg").write_text(app.export_screenshot(title="q: stop the run?"))
        await pilot.press("y")
        await _wait(pilot, lambda: not app.running)


async def finished_shot(workdir: Path) -> None:
    (workdir / "src").mkdir()
    (workdir / "src" / "calc.py").write_text("def add(a, b):\n    return 0\n")
    job = _job(hold_s=0)
    app = LiveRunApp(
        start=lambda sinks: run(job, cwd=workdir, sinks=sinks, run_id="20261127T120000-5e1f3a"),
        run_id="20261127T120000-5e1f3a",
        title=job.name,
        shape=job.shape(),
    )
    app._clock = _clock_for(app, 0)
    async with app.run_test(size=SIZE) as pilot:
        await _wait(pilot, lambda: app.result is not None)
        await pilot.pause(0.3)
        await pilot.press("j")  # from the loop (where the last verdict landed) to its agent
        await pilot.pause(0.3)
        (HERE / "finished-run.svg").write_text(app.export_screenshot(title="loop run (ended)"))
        await pilot.press("q")


async def dead_watch_shot(home: Path) -> None:
    gone = process.ProcessIdentity(pid=2**22 + 4321, host=process.current().host, start_ticks=1)
    rec = recorder.open_run("20261127T090000-c0ffee", home=home, title="nightly", identity=gone)
    emit = Emitter("20261127T090000-c0ffee", [rec]).emit
    emit(EventType.RUN_STARTED, "nightly", name="nightly", kind="loop", cwd="/srv/app")
    emit(EventType.JOB_STARTED, "nightly", kind="loop", name="nightly")
    emit(EventType.ITERATION_STARTED, "nightly", iteration=3, max=10)
    emit(EventType.JOB_STARTED, "nightly/agent", kind="agent", name="agent")
    emit(EventType.AGENT_STARTED, "nightly/agent", engine="claude", model=None, role="worker")
    emit(EventType.AGENT_TEXT, "nightly/agent", text="Upgrading the lockfile…", role="worker")
    emit(EventType.AGENT_TOOL_USE, "nightly/agent", id="t1", tool="Bash",
         input={"command": "uv lock --upgrade"}, role="worker")  # fmt: skip
    app = WatchApp(run_id="20261127T090000-c0ffee", home=home)
    app._clock = _clock_for(app, 3725)
    async with app.run_test(size=SIZE) as pilot:
        app.check_alive()
        await pilot.pause(0.3)
        (HERE / "watch-dead.svg").write_text(app.export_screenshot(title="loop watch (dead run)"))
        await pilot.press("q")


async def prompt_run_shot(workdir: Path) -> None:
    """`loop run "<prompt>" --check ...` in its live UI, the second iteration under way."""
    import json
    import sys

    from loops import config
    from loops.cli import prompt_run
    from loops.cli.run_display import Display

    (workdir / "check.py").write_text(
        "import pathlib, sys\nsys.exit(0 if pathlib.Path('CHANGELOG.md').exists() else 1)\n"
    )
    usage = {"input_tokens": 2100, "output_tokens": 380, "cost_usd": 0.018}
    turns = [
        {"text": "Reading the git log since v1.4 to collect the user-facing changes.\n"
         "Drafting CHANGELOG.md under docs/ for review.", "usage": usage},
        {"text": "The check wants CHANGELOG.md at the top level: moving it there.",
         "edits": {"CHANGELOG.md": "# 1.5\n"}, "usage": usage, "delay_s": 60},
    ]  # fmt: skip
    (workdir / "script.json").write_text(json.dumps({"turns": turns}))
    settings = config.load_settings(
        env={"QUEUE_DB_PATH": str(workdir / "queue.sqlite"), "WORKER_SHUTDOWN_GRACE_MS": "0"},
        cwd=workdir,
    )
    options = prompt_run.options_from_flags(
        workdir,
        engine=None,
        display=Display.TUI,
        provider="mock",
        mock_script=workdir / "script.json",
        check=f"{Path(sys.executable).name} check.py",
        max_iterations=5,
    )
    run = prompt_run.PromptRun("Write the CHANGELOG entry for 1.5", options, settings)
    app = prompt_run.live_app(run)
    app._clock = _clock_for(app, 47)
    agent = f"task-{run.task.id}/agent"
    try:
        async with app.run_test(size=SIZE) as pilot:
            await _wait(pilot, lambda: app.view.nodes.get(f"task-{run.task.id}") is not None
                        and app.view.nodes[f"task-{run.task.id}"].iteration == 2
                        and app.view.active_path == agent)  # fmt: skip
            await pilot.pause(1.2)  # follow holds a moment before it moves
            (HERE / "prompt-run.svg").write_text(
                app.export_screenshot(title='loop run "<prompt>" (live)')
            )
            app.stop_run()
            await _wait(pilot, lambda: not app.running)
    finally:
        run.close()


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name in ("live", "done", "home", "prompt"):
            (root / name).mkdir()
        await live_shots(root / "live")
        await finished_shot(root / "done")
        await dead_watch_shot(root / "home")
        await prompt_run_shot(root / "prompt")


if __name__ == "__main__":
    asyncio.run(main())
