"""The live terminal UI: the run's tree, budgets, and the selected node's agent output.

:class:`LiveRunApp` runs a loop inside the UI (``loop run`` on a terminal) and is one
more consumer of the run's event stream; :class:`WatchApp` draws a supervised run from
its ``events.jsonl`` in another terminal (``loop watch``). Both fold events into one
:class:`~loops.runs.view.RunView` as they arrive (cheap) and redraw on a timer at
:data:`REFRESH_S`, so a burst of thousands of events costs one redraw, and every
buffer is bounded (nodes by the tree, output lines per node).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from rich.text import Text
from textual import on
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Footer, RichLog, Static, Tree
from textual.widgets.tree import TreeNode
from textual.worker import Worker, WorkerState

from loops.flow import events as events_mod
from loops.runs import files, layout, registry
from loops.runs import view as view_mod
from loops.tui import render

#: seconds between two redraws
REFRESH_S = 0.1
#: seconds between two looks at a watched run's files
WATCH_POLL_S = 0.1
#: seconds between two checks that a watched run's process is alive
LIVENESS_S = 1.0
#: least seconds between two jumps of the followed node (many agents talking at once
#: would otherwise make the selection flicker and redraw the output pane every frame)
FOLLOW_HOLD_S = 1.0
#: output lines drawn when a node is selected (the pane keeps more as they arrive)
BACKFILL_LINES = 200

R = TypeVar("R")
#: what a live run's coroutine returns (``runner.RunResult`` for a loop run)
T = TypeVar("T")

#: starts the run with the UI's sink among its sinks
Starter = Callable[[list[events_mod.EventSink]], Coroutine[Any, Any, T]]


class RunTree(Tree[str]):
    """The tree of loops and nodes; tells the app when the user moved the cursor."""

    class Moved(Message):
        """The user moved the selection with a key (which turns follow off)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
    ]

    def action_cursor_down(self) -> None:
        """Move down and report a manual move."""
        super().action_cursor_down()
        self.post_message(self.Moved())

    def action_cursor_up(self) -> None:
        """Move up and report a manual move."""
        super().action_cursor_up()
        self.post_message(self.Moved())


class ConfirmStop(ModalScreen[bool]):
    """Asks whether quitting the UI should stop the run."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Stop the run"),
        Binding("n", "answer(False)", "Keep running"),
        Binding("escape", "answer(False)", "Keep running", show=False),
    ]
    DEFAULT_CSS = """
    ConfirmStop { align: center middle; }
    ConfirmStop > Static { width: 60; height: auto; border: thick $error; padding: 1 2;
                           background: $surface; }
    """

    def compose(self) -> ComposeResult:
        """The question."""
        yield Static(
            "The run is still going.\n\nStop it? It will end as interrupted.\n\n"
            "[b]y[/b] stop the run and quit   [b]n[/b] keep it running"
        )

    def action_answer(self, stop: bool) -> None:
        """Close with the answer."""
        self.dismiss(stop)


class RunApp(App[R]):
    """What both UIs share: the layout, the redraw, selection and follow.

    Args:
        run_id: the run's id.
        title: the run's title (empty: the root job's name, from ``run.started``).
        clock: the wall clock for elapsed time (a parameter so screenshots are stable).
    """

    CSS = """
    #header { height: auto; max-height: 3; background: $panel; padding: 0 1; }
    #body { height: 1fr; }
    #tree { width: 50%; border: round $primary; }
    #side { width: 1fr; }
    #budget { height: auto; border: round $secondary; padding: 0 1; }
    #detail { height: auto; max-height: 5; padding: 0 1; }
    #output { height: 1fr; border: round $accent; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "request_quit", "Quit"),
        Binding("ctrl+c", "request_quit", "Quit", show=False, priority=True),
        Binding("f", "toggle_follow", "Follow"),
    ]

    def __init__(
        self,
        *,
        run_id: str,
        title: str = "",
        clock: Callable[[], dt.datetime] = events_mod.utc_now,
    ) -> None:
        super().__init__()
        self.view = view_mod.RunView()
        self.view.run_id, self.view.title = run_id, title
        self.follow = True
        self.selected: str | None = None
        self._clock = clock
        self._tree_nodes: dict[str, TreeNode[str]] = {}
        self._labels: dict[str, Text] = {}
        self._shown_seq = 0
        self._followed_at = float("-inf")

    def compose(self) -> ComposeResult:
        """Header; the tree beside budgets, node detail and output; the key footer."""
        yield Static(id="header")
        with Horizontal(id="body"):
            tree = RunTree("run", id="tree")
            tree.show_root = False
            tree.root.expand()
            yield tree
            with Vertical(id="side"):
                yield Static(id="budget")
                yield Static(id="detail")
                yield RichLog(id="output", max_lines=view_mod.OUTPUT_LINES_PER_NODE, wrap=True)
        yield Footer()

    def on_mount(self) -> None:
        """Start the redraw timer."""
        self.query_one("#tree", RunTree).border_title = "loops"
        self.query_one("#output", RichLog).border_title = "output"
        self.query_one("#budget", Static).border_title = "usage"
        self.redraw()
        self.set_interval(REFRESH_S, self.redraw)

    # -- drawing -------------------------------------------------------------------

    def state_label(self) -> str:
        """The state shown in the header (``dead`` for a watched run whose process is gone)."""
        return self.view.status

    def redraw(self) -> None:
        """Bring every widget up to date with the view."""
        self._sync_tree()
        if (
            self.follow
            and self.view.active_path
            and self.view.active_path != self.selected
            and time.monotonic() - self._followed_at >= FOLLOW_HOLD_S
        ):
            self._follow_to(self.view.active_path)
        if self.selected is None and self.view.order:
            self._select(self.view.order[0])
        now = self._clock()
        self.query_one("#header", Static).update(
            render.header(self.view, now, state=self.state_label())
        )
        self.query_one("#budget", Static).update(render.budget_lines(self.view))
        node = self.view.nodes.get(self.selected) if self.selected else None
        detail = render.node_detail(node)
        if not self.follow:
            detail.append("   (follow off: f)", style="dim")
        self.query_one("#detail", Static).update(detail)
        self._append_output()

    def _sync_tree(self) -> None:
        tree = self.query_one("#tree", RunTree)
        for path in self.view.order:
            if path not in self._tree_nodes:
                parent_path = path.rpartition("/")[0]
                parent = self._tree_nodes.get(parent_path, tree.root)
                self._tree_nodes[path] = parent.add("", data=path, expand=True)
            node = self.view.nodes[path]
            label = render.node_label(node)
            if self._labels.get(path) != label:
                self._labels[path] = label
                self._tree_nodes[path].set_label(label)
                self._tree_nodes[path].allow_expand = bool(node.children)

    def _follow_to(self, path: str) -> None:
        target = self._tree_nodes.get(path)
        if target is None:
            return
        self._followed_at = time.monotonic()
        self.query_one("#tree", RunTree).move_cursor(target)
        self._select(path)

    def _select(self, path: str) -> None:
        if path == self.selected:
            return
        self.selected = path
        log = self.query_one("#output", RichLog)
        log.clear()
        log.border_title = f"output · {path}"
        node = self.view.nodes.get(path)
        recent = list(node.output)[-BACKFILL_LINES:] if node is not None else []
        self._shown_seq = recent[0].seq - 1 if recent else 0
        self._append_output()

    def _append_output(self) -> None:
        node = self.view.nodes.get(self.selected) if self.selected else None
        if node is None or not node.output or node.output[-1].seq <= self._shown_seq:
            return
        log = self.query_one("#output", RichLog)
        for line in node.output:
            if line.seq > self._shown_seq:
                log.write(render.output_line(line))
        self._shown_seq = node.output[-1].seq

    # -- input ---------------------------------------------------------------------

    @on(Tree.NodeHighlighted)
    def _highlighted(self, event: Tree.NodeHighlighted[str]) -> None:
        if event.node.data is not None:
            self._select(event.node.data)

    @on(RunTree.Moved)
    def _moved(self) -> None:
        self.follow = False

    def action_toggle_follow(self) -> None:
        """Follow the node that is producing output, or stop following."""
        self.follow = not self.follow
        self.notify("following the active node" if self.follow else "follow off")
        self.redraw()

    def action_request_quit(self) -> None:
        """Quit (subclasses ask first when quitting would stop a run)."""
        self.exit()


class LiveRunApp(RunApp[T | None]):
    """Runs a loop (or a prompt run) and draws it; quitting while it runs asks first.

    The app's return value is what the run returned (a ``runner.RunResult`` for a
    loop run), or ``None`` when it was cancelled. ``error`` holds an exception the run
    raised (the caller re-raises it).

    Args:
        start: starts the run with extra sinks (the UI passes its own).
        run_id: the run's id (until ``run.started`` gives the one the run uses).
        title: the run's title (the root job's name, or the prompt).
        shape: the job tree (``job.shape()``), shown as pending nodes before they run.
        stop: asks the run to stop gracefully (a prompt run releases its lease and
            returns); without it, stopping cancels the run.
        exit_on_finish: close the UI when the run ends (default: stay until q).
        clock: the wall clock for elapsed time.
    """

    def __init__(
        self,
        *,
        start: Starter[T],
        run_id: str,
        title: str = "",
        shape: Mapping[str, Any] | None = None,
        stop: Callable[[], None] | None = None,
        exit_on_finish: bool = False,
        clock: Callable[[], dt.datetime] = events_mod.utc_now,
    ) -> None:
        super().__init__(run_id=run_id, title=title, clock=clock)
        if shape:
            self.view.seed(shape)
        self._start = start
        self._stop = stop
        self._exit_on_finish = exit_on_finish
        self._worker: Worker[T] | None = None
        self.result: T | None = None
        self.error: BaseException | None = None
        self._stopping = False

    def on_mount(self) -> None:
        """Start the run beside the UI."""
        super().on_mount()
        sink = events_mod.CallbackSink(lambda event: self.view.apply(event.to_dict()))
        self._worker = self.run_worker(self._start([sink]), name="run", exit_on_error=False)

    @on(Worker.StateChanged)
    def _run_state(self, event: Worker.StateChanged) -> None:
        if event.worker is not self._worker:
            return
        if event.state is WorkerState.SUCCESS:
            self.result = event.worker.result
            self.redraw()
            if self._exit_on_finish or self._stopping:
                self.exit(self.result)
            else:
                self.notify("the run ended; press q to leave", timeout=5)
        elif event.state is WorkerState.ERROR:
            self.error = event.worker.error
            self.exit(None)
        elif event.state is WorkerState.CANCELLED:
            self.exit(None)

    @property
    def running(self) -> bool:
        """Whether the run is still going."""
        return self._worker is not None and self._worker.state in (
            WorkerState.PENDING,
            WorkerState.RUNNING,
        )

    def action_request_quit(self) -> None:
        """Quit; while the run goes on, first ask whether to stop it."""
        if not self.running:
            self.exit(self.result)
            return

        def answered(stop: bool | None) -> None:
            if stop:
                self.stop_run()

        self.push_screen(ConfirmStop(), answered)

    def stop_run(self) -> None:
        """Stop the run (it ends as interrupted); the UI closes when it has."""
        self._stopping = True
        if self._stop is not None:
            self.notify("stopping the run…")
            self._stop()
        elif self._worker is not None:
            self._worker.cancel()


class WatchApp(RunApp[None]):
    """Draws a supervised run from its files, from another process; read-only.

    Args:
        run_id: the registered run's id.
        home: the loops home.
        clock: the wall clock for elapsed time.
    """

    def __init__(
        self,
        *,
        run_id: str,
        home: Path,
        clock: Callable[[], dt.datetime] = events_mod.utc_now,
    ) -> None:
        super().__init__(run_id=run_id, clock=clock)
        self._home = home
        self._folder = registry.run_dir(run_id, home=home)
        self._reader = files.LineReader(self._folder / layout.EVENTS_FILE)
        self._dead = False
        meta = files.read_json(self._folder / layout.RUN_FILE)
        if isinstance(meta, dict):
            self.view.title = str(meta.get("title") or "")  # a prompt run's prompt
            if isinstance(meta.get("shape"), dict):
                self.view.seed(meta["shape"])

    def on_mount(self) -> None:
        """Read what was written so far, then keep reading."""
        self.poll()
        super().on_mount()
        self.set_interval(WATCH_POLL_S, self.poll)
        self.set_interval(LIVENESS_S, self.check_alive)

    def poll(self) -> None:
        """Fold the events written since the last look."""
        for line in self._reader.read_lines():
            event = _parse(line)
            if event is not None:
                self.view.apply(event)

    def check_alive(self) -> None:
        """Mark the run dead when its process is gone without finishing."""
        if self.view.finished or self._dead:
            return
        state = registry.read_run_status(self.view.run_id, home=self._home).info.state
        if state is registry.RunState.DEAD:
            self.poll()
            self._dead = not self.view.finished

    def state_label(self) -> str:
        """``dead`` when the process is gone without an end, else the view's status."""
        return "dead" if self._dead else self.view.status


def _parse(line: str) -> Mapping[str, Any] | None:
    import json

    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
