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


async def test_a_long_stream_of_every_kind_of_event_holds_every_buffer_at_one_size():
    """Buffers reach a ceiling and stay there: a second flood as long as the first
    (every event type the UI draws, over 40 nodes, the user moving the selection)
    leaves every size where the first one left it."""
    from loops.flow import runner
    from loops.flow.events import Emitter, EventType
    from loops.flow.outcome import Outcome, OutcomeStatus
    from loops.runs import view as view_mod

    per_flood = 8_000
    halfway = asyncio.Event()
    go_on = asyncio.Event()

    def flood(emitter: Emitter, start: int) -> None:
        for k in range(start, start + per_flood):
            node = f"big/n{k // 8 % 40}"  # every node sees every kind of event
            agent = f"{node}/agent"
            match k % 8:
                case 0:
                    emitter.emit(EventType.ITERATION_STARTED, node, iteration=k, max=10**6)
                case 1:
                    emitter.emit(EventType.AGENT_STARTED, agent, engine="mock", role="worker")
                case 2:
                    emitter.emit(EventType.AGENT_TOOL_USE, agent, id=str(k), tool="Bash",
                                 input={"command": "x" * 500}, role="worker")  # fmt: skip
                case 3:
                    emitter.emit(EventType.AGENT_TOOL_RESULT, agent, id=str(k), output="y" * 500,
                                 is_error=False, role="worker")  # fmt: skip
                case 4:
                    usage = {"input_tokens": 10, "output_tokens": 5}
                    emitter.emit(EventType.AGENT_FINISHED, agent, status="pass", usage=usage,
                                 role="worker")  # fmt: skip
                case 5:
                    emitter.emit(EventType.VERDICT, node, slot="until", met=False,
                                 reason=f"case {k} " + "r" * 300)  # fmt: skip
                case 6:
                    emitter.emit(EventType.BUDGET, node, spent={"tokens": k},
                                 limits={"tokens": 10**9})  # fmt: skip
                case _:  # 20 lines to the agent and to its loop: both fill up at once
                    text = "\n".join(f"line {k}.{n}" for n in range(20))
                    emitter.emit(EventType.AGENT_TEXT, agent, text=text, role="worker")
                    emitter.emit(EventType.AGENT_TEXT, node, text=text, role="worker")

    async def stream(sinks):
        emitter = Emitter("r-big", sinks)
        emitter.emit(EventType.RUN_STARTED, "big", name="big", kind="dag")
        flood(emitter, 0)
        halfway.set()
        await go_on.wait()
        flood(emitter, per_flood)
        emitter.emit(EventType.RUN_FINISHED, "big", status="pass", reason="ok", usage={})
        return runner.RunResult("r-big", Outcome(OutcomeStatus.PASS, "ok"), "ok", 0.0)

    app = LiveRunApp(start=stream, run_id="r-big", title="big")

    def sizes() -> dict[str, int]:
        log = app.query_one("#output")
        return {
            "nodes": len(app.view.nodes),
            "order": len(app.view.order),
            "budgets": len(app.view.budgets),
            "tree": len(app._tree_nodes),
            "labels": len(app._labels),
            "output": sum(len(n.output) for n in app.view.nodes.values()),
            "log": len(log.lines),
            "log_deferred": len(log._deferred_renders),
        }

    async with app.run_test(size=(120, 30)) as pilot:
        await _until(pilot, halfway.is_set)
        await pilot.pause(tui_app.REFRESH_S * 2)
        await pilot.press("k", "k", "j")  # a manual selection gets the backfill too
        await pilot.pause(tui_app.REFRESH_S * 2)
        first = sizes()
        go_on.set()
        await _until(pilot, lambda: app.result is not None)
        await pilot.press("j", "k")
        await pilot.pause(tui_app.REFRESH_S * 2)
        second = sizes()
        assert app.view.events_seen == 2 * (per_flood + per_flood // 8) + 2  # case 7 sends 2
        for shown in (first, second):  # the output pane: its backfill, then up to its cap
            assert 0 < shown.pop("log") <= view_mod.OUTPUT_LINES_PER_NODE
        assert second == first
        assert first["nodes"] == 81 and first["tree"] == 81  # the root, 40 nodes, 40 agents
        assert first["output"] == 80 * view_mod.OUTPUT_LINES_PER_NODE  # full, and no more
        assert first["budgets"] == 40 and first["log_deferred"] == 0
        await pilot.press("q")
