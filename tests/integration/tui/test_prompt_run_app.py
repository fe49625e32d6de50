"""`loop run "<prompt>"` in the live UI, headless through Textual's pilot.

The prompt run is built as the CLI builds it (a task in a real SQLite store, leased and
run in this process on the mock engine) and drawn by the same app as a loop file.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from loops import config
from loops.cli import prompt_run
from loops.cli.run_display import Display
from loops.queue.tasks import TaskStatus
from loops.tui import app as tui_app
from loops.tui.app import ConfirmStop

CHECK_PY = "import pathlib, sys\nsys.exit(0 if pathlib.Path('value.txt').exists() else 1)\n"


def _prompt_run(tmp_path: Path, turns: list[dict[str, object]], **env: str) -> prompt_run.PromptRun:
    (tmp_path / "check.py").write_text(CHECK_PY)
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"turns": turns}))
    settings = config.load_settings(
        env={"QUEUE_DB_PATH": str(tmp_path / "queue.sqlite"), **env}, cwd=tmp_path
    )
    options = prompt_run.options_from_flags(
        tmp_path,
        engine=None,
        display=Display.TUI,
        provider="mock",
        mock_script=script,
        check=f"{sys.executable} check.py",
        max_iterations=3,
    )
    return prompt_run.PromptRun("create value.txt", options, settings)


async def _until(pilot, predicate, timeout_s: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        assert loop.time() < deadline, "condition not reached in time"
        await pilot.pause(0.05)


def _labels(app) -> dict[str, str]:
    return {path: node.label.plain for path, node in app._tree_nodes.items()}


async def test_a_prompt_run_draws_its_converge_loop_verdicts_usage_and_output(tmp_path: Path):
    turns = [{"text": "not yet"}, {"text": "wrote value.txt", "edits": {"value.txt": "1"}}]
    run = _prompt_run(tmp_path, turns)
    app = prompt_run.live_app(run)
    try:
        async with app.run_test(size=(140, 36)) as pilot:
            await _until(pilot, lambda: app.result is not None)
            await pilot.pause(tui_app.REFRESH_S * 2)
            loop_path = f"task-{run.task.id}"
            labels = _labels(app)
            assert labels[loop_path].startswith(f"✔ {loop_path} loop 2/3  until met")
            assert labels[f"{loop_path}/agent"].startswith("✔ agent agent")
            header = app.query_one("#header").render().plain
            assert "create value.txt" in header and f"task-{run.task.id}-1" in header
            assert "pass" in header and "iteration 2/3" in header and "elapsed" in header
            budget = app.query_one("#budget").render().plain
            assert "tokens" in budget and "$" in budget
            await pilot.press("j")  # from the loop to its agent, whose output is drawn
            await pilot.pause()
            assert app.selected == f"{loop_path}/agent" and not app.follow
            shown = "\n".join(line.text for line in app.query_one("#output").lines)
            assert "wrote value.txt" in shown and "worker turn on mock" in shown
            await pilot.press("q")  # the run ended: no question
        outcome = app.return_value
        assert outcome is not None and outcome.exit_code == 0
        assert outcome.task.status is TaskStatus.DONE
    finally:
        run.close()


async def test_quitting_a_prompt_run_asks_and_stopping_releases_it_uncharged(tmp_path: Path):
    run = _prompt_run(tmp_path, [{"text": "thinking", "delay_s": 60}], WORKER_SHUTDOWN_GRACE_MS="0")
    app = prompt_run.live_app(run)
    try:
        async with app.run_test(size=(120, 30)) as pilot:
            agent = f"task-{run.task.id}/agent"
            await _until(pilot, lambda: agent in app.view.nodes)
            await _until(pilot, lambda: app.view.nodes[agent].state.value == "running")
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
        outcome = app.return_value
        assert outcome is not None and outcome.interrupted and outcome.exit_code == 130
        task = run.client.service.get_task(run.task.id)
        assert task.status is TaskStatus.QUEUED and task.attempts == 0
    finally:
        run.close()
