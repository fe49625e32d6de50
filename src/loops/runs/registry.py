"""The reading side of the run registry: list runs, read one, follow its events, prune.

Everything here only reads (except :func:`prune_runs`) and works while a run is live
and after it ended; there is no daemon, the files are the channel (see
:mod:`loops.runs.recorder` for how they are written).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from loops import errors
from loops.runs import files, layout, process, records


class RunState(enum.StrEnum):
    """Where a registered run stands, as ``loop list`` shows it."""

    RUNNING = "running"
    """Its process is alive (or on another host, so it cannot be checked) and it has not ended."""
    DEAD = "dead"
    """Its process is gone and it never reported an end."""
    PASS = "pass"
    """It ended with the root outcome ``pass``."""
    FAIL = "fail"
    """It ended with ``fail``."""
    ERROR = "error"
    """It ended with ``error``."""
    PAUSED = "paused"
    """It ended paused (a budget ran out); it can be resumed."""
    SKIPPED = "skipped"
    """Its root job was skipped."""

    @property
    def terminal(self) -> bool:
        """Whether the run will not change any more."""
        return self is not RunState.RUNNING


@dataclasses.dataclass(frozen=True, slots=True)
class RunInfo:
    """One registered run, as ``loop list`` shows it.

    Attributes:
        run_id: the run's id.
        state: running, dead or the terminal status.
        title: the root job's name or the prompt.
        iteration: the outermost loop's current iteration (``None`` before the first).
        max_iterations: that loop's ``max``.
        started_at: when it was registered (ISO 8601 UTC).
        updated_at: when its state was last written.
        reason: why it ended (empty while running).
        tokens: tokens spent by finished agent turns.
        cost_usd: their cost.
        pid: its process id; host: the host it runs on.
    """

    run_id: str
    state: RunState
    title: str
    iteration: int | None
    max_iterations: int | None
    started_at: str
    updated_at: str
    reason: str
    tokens: int
    cost_usd: float
    pid: int | None
    host: str

    def age_s(self, now: dt.datetime | None = None) -> float:
        """Seconds since the run started."""
        started = _parse_ts(self.started_at)
        if started is None:
            return 0.0
        return max(0.0, ((now or dt.datetime.now(dt.UTC)) - started).total_seconds())

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``loop list --json``)."""
        body = dataclasses.asdict(self)
        body["state"] = self.state.value
        body["max"] = body.pop("max_iterations")
        return body


@dataclasses.dataclass(frozen=True, slots=True)
class RunStatus:
    """A point-in-time snapshot of one run (``loop status <runId>``).

    Attributes:
        info: the summary line.
        shape: the job tree as ``describe --json`` prints it (``None`` when unknown).
        last_verdict: the latest gate verdict (``path``, ``slot``, ``met``,
            ``confidence``, ``reason``), or ``None``.
        last_outcome: the latest finished job (``path``, ``kind``, ``status``, ``summary``).
        budgets: spending per budgeted scope (``scope``, ``spent``, ``limits``, ``exceeded``).
        nodes: every node of the tree with its state, iteration and verdict.
        cwd: the run's working directory; source: the loop file or prompt.
        events: how many events it emitted so far.
    """

    info: RunInfo
    shape: Mapping[str, Any] | None
    last_verdict: Mapping[str, Any] | None
    last_outcome: Mapping[str, Any] | None
    budgets: tuple[Mapping[str, Any], ...]
    nodes: tuple[Mapping[str, Any], ...]
    cwd: str | None
    source: str | None
    events: int

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``loop status <runId> --json``)."""
        return {
            **self.info.to_dict(),
            "shape": self.shape,
            "last_verdict": self.last_verdict,
            "last_outcome": self.last_outcome,
            "budgets": list(self.budgets),
            "nodes": list(self.nodes),
            "cwd": self.cwd,
            "source": self.source,
            "events": self.events,
        }


def _parse_ts(text: str) -> dt.datetime | None:
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def resolve_home(home: Path | None = None) -> Path:
    """The loops home: ``home`` when given, else the settings' (``LOOPS_HOME``)."""
    if home is not None:
        return home
    from loops import config

    return config.load_settings().home


def run_dir(run_id: str, *, home: Path | None = None) -> Path:
    """The folder of run ``run_id`` (a unique prefix of an id is accepted).

    Raises:
        RunNotFound: no registered run has that id, or the prefix is ambiguous.
    """
    root = layout.runs_dir(resolve_home(home))
    layout.check_run_id(run_id)
    exact = root / run_id
    if (exact / layout.RUN_FILE).is_file() or (exact / layout.STATE_FILE).is_file():
        return exact
    try:
        matches = sorted(name for name in os.listdir(root) if name.startswith(run_id))
    except FileNotFoundError:
        matches = []
    if len(matches) == 1:
        return root / matches[0]
    if len(matches) > 1:
        shown = ", ".join(matches[:5]) + (", ..." if len(matches) > 5 else "")
        raise errors.RunNotFound(f"run id {run_id!r} is ambiguous: it starts {shown}")
    raise errors.RunNotFound(
        f"no supervised run {run_id!r} in {root}; see `loop list` "
        "(runs are registered by `loop run --supervise`)"
    )


def run_events_path(run_id: str, *, home: Path | None = None) -> Path:
    """The path of the run's raw event stream (``events.jsonl``).

    Raises:
        RunNotFound: no registered run has that id.
    """
    return run_dir(run_id, home=home) / layout.EVENTS_FILE


def run_semantic_records_path(run_id: str, *, home: Path | None = None) -> Path:
    """The path of the run's semantic records (``semantic.jsonl``).

    Raises:
        RunNotFound: no registered run has that id.
    """
    return run_dir(run_id, home=home) / layout.SEMANTIC_FILE


def _state_of(state: Mapping[str, Any], host: str) -> RunState:
    status = str(state.get("status") or "running")
    if status != RunState.RUNNING.value:
        try:
            return RunState(status)
        except ValueError:
            return RunState.ERROR
    pid = state.get("pid")
    if not isinstance(pid, int):
        return RunState.DEAD
    ticks = state.get("start_ticks")
    identity = process.ProcessIdentity(
        pid=pid,
        host=str(state.get("host") or ""),
        start_ticks=ticks if isinstance(ticks, int) else None,
    )
    alive = process.is_alive(identity, host=host)
    return RunState.DEAD if alive is False else RunState.RUNNING


def _info(folder: str | Path, host: str) -> tuple[RunInfo, Mapping[str, Any]] | None:
    state = files.read_json(os.path.join(folder, layout.STATE_FILE))
    if not isinstance(state, dict):
        return None
    pid = state.get("pid")
    info = RunInfo(
        run_id=str(state.get("run_id") or os.path.basename(folder)),
        state=_state_of(state, host),
        title=str(state.get("title") or ""),
        iteration=state.get("iteration") if isinstance(state.get("iteration"), int) else None,
        max_iterations=state.get("max") if isinstance(state.get("max"), int) else None,
        started_at=str(state.get("registered_at") or state.get("started_ts") or ""),
        updated_at=str(state.get("updated_at") or ""),
        reason=str(state.get("reason") or ""),
        tokens=int(state.get("tokens") or 0),
        cost_usd=float(state.get("cost_usd") or 0.0),
        pid=pid if isinstance(pid, int) else None,
        host=str(state.get("host") or ""),
    )
    return info, state


def list_runs(*, home: Path | None = None) -> list[RunInfo]:
    """Every registered run, newest first; runs whose process is gone are ``dead``."""
    import socket

    root = layout.runs_dir(resolve_home(home))
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return []
    host = socket.gethostname()
    # string paths, not pathlib: this runs once per registered run
    found = [_info(os.path.join(root, name), host) for name in names if not name.startswith(".")]
    runs = [item[0] for item in found if item is not None]
    runs.sort(key=lambda r: (r.started_at, r.run_id), reverse=True)
    return runs


def read_run_status(run_id: str, *, home: Path | None = None) -> RunStatus:
    """A snapshot of run ``run_id``: state, shape, last verdict and outcome, usage.

    Raises:
        RunNotFound: no registered run has that id.
    """
    import socket

    folder = run_dir(run_id, home=home)
    found = _info(folder, socket.gethostname())
    if found is None:
        raise errors.RunNotFound(f"run {run_id!r} has no readable state in {folder}")
    info, state = found
    meta = files.read_json(folder / layout.RUN_FILE)
    meta = meta if isinstance(meta, dict) else {}
    tree = files.read_json(folder / layout.TREE_FILE)
    tree = tree if isinstance(tree, dict) else {}
    return RunStatus(
        info=info,
        shape=meta.get("shape"),
        last_verdict=tree.get("last_verdict"),
        last_outcome=tree.get("last_outcome"),
        budgets=tuple(tree.get("budgets") or ()),
        nodes=tuple(tree.get("nodes") or ()),
        cwd=meta.get("cwd"),
        source=meta.get("source"),
        events=int(state.get("events") or 0),
    )


def read_records(
    run_id: str, selection: records.RecordFilter, *, home: Path | None = None
) -> list[dict[str, Any]]:
    """The run's semantic records that pass ``selection``, oldest first.

    Raises:
        RunNotFound: no registered run has that id.
    """
    return [json.loads(line) for line in read_record_lines(run_id, selection, home=home)]


def read_record_lines(
    run_id: str, selection: records.RecordFilter, *, home: Path | None = None
) -> list[str]:
    """The run's semantic records that pass ``selection``, as their JSON lines, oldest first.

    Raises:
        RunNotFound: no registered run has that id.
    """
    path = run_semantic_records_path(run_id, home=home)
    return selection.select_lines(files.read_complete_lines(path))


def follow_events(
    run_id: str,
    *,
    home: Path | None = None,
    poll_s: float = 0.2,
    sleep: Callable[[float], None] = time.sleep,
    from_start: bool = True,
) -> Iterator[dict[str, Any]]:
    """Yield the run's events as they are written; stop when it ends or its process dies.

    Waits ``poll_s`` between looks when nothing is new (no busy-waiting).

    Args:
        run_id: the run.
        home: the loops home (default: from settings).
        poll_s: seconds to sleep when nothing new was written.
        sleep: the sleep function (a parameter for tests).
        from_start: replay the events written so far first; else only new ones.

    Raises:
        RunNotFound: no registered run has that id.
    """
    import socket

    folder = run_dir(run_id, home=home)
    path = folder / layout.EVENTS_FILE
    reader = files.LineReader(path, 0 if from_start else _size(path))
    host = socket.gethostname()
    while True:
        lines = reader.read_lines()
        for line in lines:
            event = _parse(line)
            if event is not None:
                yield event
                if event.get("type") == "run.finished":
                    return
        if lines:
            continue
        found = _info(folder, host)
        if found is None or found[0].state.terminal:
            for line in reader.read_lines():  # what was written before the end was seen
                event = _parse(line)
                if event is not None:
                    yield event
            return
        sleep(poll_s)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _parse(line: str) -> dict[str, Any] | None:
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def prune_runs(
    older_than_s: float, *, home: Path | None = None, now: float | None = None
) -> list[str]:
    """Delete runs that ended (or died) and were last updated at least ``older_than_s`` ago.

    A running run is never deleted.

    Returns:
        The ids of the deleted runs.
    """
    import socket

    root = layout.runs_dir(resolve_home(home))
    try:
        names = sorted(os.listdir(root))
    except FileNotFoundError:
        return []
    moment = time.time() if now is None else now
    host = socket.gethostname()
    removed: list[str] = []
    for name in names:
        folder = root / name
        found = _info(folder, host)
        if found is not None and not found[0].state.terminal:
            continue
        try:
            updated = max(p.stat().st_mtime for p in [folder, *folder.iterdir()])
        except (OSError, ValueError):
            continue
        if moment - updated >= older_than_s:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(name)
    return removed
