"""The live UI, headless through Textual's pilot: a run inside it, and a watched run."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

from loops import run
from loops.runs import recorder
from loops.tui import app as tui_app
from loops.tui.app import ConfirmStop, LiveRunApp, WatchApp
from run_helpers import demo_job

FIXED_NOW = dt.datetime(2026, 11, 27, 12, 0, 5, tzinfo=dt.UTC)


def _live(tmp_path: Path, **options) -> LiveRunApp:
    job = demo_job(**options)

    def start(sinks):
        return run(job, cwd=tmp_path, sinks=sinks, run_id="r-ui")

    return LiveRunApp(start=start, run_id="r-ui", title=job.name, shape=job.shape())


async def _until(pilot, predicate, timeout_s: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        assert loop.time() < deadline, "condition not reached in time"
        await pilot.pause(0.05)


def _labels(app) -> dict[str, str]:
    return {path: node.label.plain for path, node in app._tree_nodes.items()}


async def test_the_tree_shows_states_iterations_and_verdicts(tmp_path: Path):
    app = _live(tmp_path)
    async with app.run_test(size=(140, 36)) as pilot:
        await _until(pilot, lambda: app.result is not None)
        await pilot.pause(tui_app.REFRESH_S * 2)
        labels = _labels(app)
        assert labels["ship"].startswith("✔ ship dag")
        assert labels["ship/impl"].startswith("✔ impl loop 2/4  until met")
        assert labels["ship/plan"].startswith("✔ plan fn")
        budget = app.query_one("#budget").render().plain
        assert "240 tokens" in budget and "budget ship/impl" in budget
        assert "240 / 5000" in budget and "$0.0200 / $1.00" in budget
        header = app.query_one("#header").render().plain
        assert "ship" in header and "pass" in header and "iteration 2/4" in header
        await pilot.press("q")
    assert app.return_value is not None and app.return_value.status.value == "pass"


async def test_follow_shows_the_active_nodes_output_and_keys_move_the_selection(tmp_path: Path):
    app = _live(tmp_path)
    async with app.run_test(size=(140, 36)) as pilot:
        await _until(pilot, lambda: app.result is not None)
        await _until(pilot, lambda: app.selected == app.view.active_path)  # follow may hold 1 s
        assert app.follow and app.selected == "ship/impl"
        output = "\n".join(line.text for line in app.query_one("#output").lines)
        assert "until: met" in output
        await pilot.press("k")
        await pilot.pause()
        assert not app.follow and app.selected == "ship/plan"
        await pilot.press("k")
        await pilot.pause()
        assert app.selected == "ship"
        await pilot.press("j", "j", "j")
        await pilot.pause()
        assert app.selected == "ship/impl/agent"
        shown = "\n".join(line.text for line in app.query_one("#output").lines)
        assert "turn 2: editing app.txt" in shown and "→ Write" in shown
        await pilot.press("f")
        assert app.follow
        await pilot.press("q")


async def test_quitting_a_live_run_asks_and_no_keeps_it_running(tmp_path: Path):
    app = _live(tmp_path, delay_s=30)
    async with app.run_test(size=(120, 30)) as pilot:
        await _until(pilot, lambda: app.view.nodes["ship/impl/agent"].state.value == "running")
        await pilot.pause(tui_app.REFRESH_S * 2)
        assert _labels(app)["ship/impl"].startswith("▶ impl loop 1/4")
        await pilot.press("q")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmStop)
        await pilot.press("n")
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmStop) and app.running
        await pilot.press("q")
        await pilot.pause()
        await pilot.press("y")
        await _until(pilot, lambda: not app.running)
    assert app.return_value is None
    assert app.view.status == "error" and app.view.reason == "the run was interrupted"


async def test_the_whole_plan_is_shown_pending_before_it_runs():
    job = demo_job()

    async def never_starts(sinks):
        await asyncio.Event().wait()

    app = LiveRunApp(start=never_starts, run_id="r-p", title=job.name, shape=job.shape())
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause(tui_app.REFRESH_S * 2)
        assert _labels(app) == {
            "ship": "· ship dag",
            "ship/plan": "· plan fn",
            "ship/impl": "· impl loop",
            "ship/impl/agent": "· agent agent",
        }
        app.stop_run()
        await _until(pilot, lambda: not app.running)
    assert app.return_value is None


async def test_watch_draws_a_recorded_run_and_sees_new_events(tmp_path: Path):
    home = tmp_path / "home"
    job = demo_job()
    rec = recorder.open_run("r-w", home=home, title="ship", shape=job.shape())
    await run(job, cwd=tmp_path, sinks=[rec], run_id="r-w")
    app = WatchApp(run_id="r-w", home=home)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause(tui_app.REFRESH_S * 2)
        assert app.view.status == "pass" and app.view.finished
        assert _labels(app)["ship/impl"].startswith("✔ impl loop 2/4")
        await pilot.press("q")


async def test_watch_marks_a_run_dead_when_its_process_is_gone(tmp_path: Path):
    from loops.flow.events import Emitter, EventType
    from loops.runs import process

    home = tmp_path / "home"
    gone = process.ProcessIdentity(pid=2**22 + 12345, host=process.current().host, start_ticks=1)
    rec = recorder.open_run("r-d", home=home, title="ghost", identity=gone)
    Emitter("r-d", [rec]).emit(EventType.RUN_STARTED, "ghost", name="ghost", kind="loop")
    app = WatchApp(run_id="r-d", home=home)
    async with app.run_test(size=(100, 24)) as pilot:
        app.check_alive()
        await pilot.pause(tui_app.REFRESH_S * 2)
        assert app.state_label() == "dead"
        assert "dead" in app.query_one("#header").render().plain
        await pilot.press("q")


async def test_a_flood_of_output_keeps_every_buffer_bounded():
    from loops.flow import runner
    from loops.flow.events import Emitter, EventType
    from loops.flow.outcome import Outcome, OutcomeStatus
    from loops.runs import view as view_mod

    total = 20_000

    async def flood(sinks):
        emitter = Emitter("r-f", sinks)
        emitter.emit(EventType.RUN_STARTED, "flood", name="flood", kind="dag")
        for k in range(total):
            emitter.emit(EventType.AGENT_TEXT, f"flood/n{k % 4}", text=f"line {k}", role="worker")
            if k % 1000 == 0:
                await asyncio.sleep(0)
        emitter.emit(EventType.RUN_FINISHED, "flood", status="pass", reason="ok", usage={})
        return runner.RunResult("r-f", Outcome(OutcomeStatus.PASS, "ok"), "ok", 0.0)

    app = LiveRunApp(start=flood, run_id="r-f", title="flood")
    async with app.run_test(size=(100, 30)) as pilot:
        await _until(pilot, lambda: app.result is not None)
        await pilot.pause(tui_app.REFRESH_S * 2)
        assert app.view.events_seen == total + 2
        assert all(len(n.output) <= view_mod.OUTPUT_LINES_PER_NODE for n in app.view.nodes.values())
        log = app.query_one("#output")
        await _until(pilot, lambda: app.selected == app.view.active_path and len(log.lines) > 0)
        assert len(log.lines) <= view_mod.OUTPUT_LINES_PER_NODE
        assert str(log.lines[-1].text).startswith("line 1999")
        await pilot.press("q")
