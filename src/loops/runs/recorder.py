"""The writing side of the run registry: an event sink that records a supervised run.

:func:`open_run` creates ``<home>/runs/<runId>/`` and returns a :class:`RunRecorder`,
which the runner is given as one more sink. For every event it appends the raw event
to ``events.jsonl``, its semantic records to ``semantic.jsonl``, and folds it into the
live ``state.json`` (a small summary) and ``tree.json`` (the tree, budgets, last verdict
and outcome), each replaced atomically, at most every ``state_interval_s`` and always on
the first and final event. ``run.json`` holds what does not change: identity, process, shape.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from loops import errors
from loops.flow import events as events_mod
from loops.runs import files, layout, process, records, view

log = logging.getLogger(__name__)

#: seconds between two writes of ``state.json`` while events stream in
STATE_INTERVAL_S = 0.2
#: event types after which ``state.json`` is written at once
_PROMPT_TYPES = frozenset({"run.started", "run.finished"})


class RunRecorder:
    """An :class:`~loops.flow.events.EventSink` that records one run's files.

    Args:
        run_dir: the run's directory (it exists; see :func:`open_run`).
        header: the fields of ``state.json`` that do not come from events (process,
            host, start time).
        state_interval_s: least seconds between two writes of ``state.json``.
        clock: monotonic seconds (a parameter so tests are exact).
    """

    def __init__(
        self,
        run_dir: Path,
        *,
        header: Mapping[str, Any],
        state_interval_s: float = STATE_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.run_dir = run_dir
        self.view = view.RunView()
        self._header = dict(header)
        self._events = files.LineAppender(run_dir / layout.EVENTS_FILE)
        self._semantic = files.LineAppender(run_dir / layout.SEMANTIC_FILE)
        self._interval_s = state_interval_s
        self._clock = clock
        self._last_write = float("-inf")
        self._flush_pending = False
        self._closed = False

    def emit(self, event: events_mod.Event) -> None:
        """Record ``event``: its line, its semantic records, the live state.

        A registry that can no longer be written (disk full, folder removed) stops
        recording with one warning; the run itself goes on.
        """
        if self._closed:
            return
        try:
            self._record(event)
        except (OSError, errors.StoreError) as exc:
            log.warning("run %s: stopped recording to %s: %s", self.view.run_id, self.run_dir, exc)
            self._closed = True
            self._events.close()
            self._semantic.close()

    def _record(self, event: events_mod.Event) -> None:
        body = event.to_dict()
        self._events.append(
            json.dumps(body, separators=(",", ":"), ensure_ascii=False, default=str) + "\n"
        )
        for record in records.semantic_records_from_event(body):
            self._semantic.append(records.record_line(record))
        self.view.apply(body)
        if body["type"] in _PROMPT_TYPES:
            self.write_state()
        else:
            self._touch_state()
        if body["type"] == events_mod.EventType.RUN_FINISHED.value:
            self.close()

    def _touch_state(self) -> None:
        if self._clock() - self._last_write >= self._interval_s:
            self.write_state()
            return
        if self._flush_pending:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop to flush later on: write now
            self.write_state()
            return
        self._flush_pending = True
        loop.call_later(self._interval_s, self._flush)

    def _flush(self) -> None:
        self._flush_pending = False
        if not self._closed:
            try:
                self.write_state()
            except errors.StoreError as exc:
                log.warning("run %s: cannot write its state: %s", self.view.run_id, exc)

    def write_state(self) -> None:
        """Write ``tree.json`` and then ``state.json`` now."""
        files.write_json_atomic(self.run_dir / layout.TREE_FILE, self.view.detail())
        state = {**self.view.summary(), **self._header, "updated_at": _now_text()}
        files.write_json_atomic(self.run_dir / layout.STATE_FILE, state)
        self._last_write = self._clock()

    def close(self) -> None:
        """Write the final state and close the streams (idempotent)."""
        if self._closed:
            return
        try:
            self.write_state()
        except errors.StoreError as exc:
            log.warning("run %s: cannot write its final state: %s", self.view.run_id, exc)
        self._closed = True
        self._events.close()
        self._semantic.close()


def _now_text() -> str:
    return events_mod.format_ts(dt.datetime.now(dt.UTC))


def open_run(
    run_id: str,
    *,
    home: Path,
    title: str,
    shape: Mapping[str, Any] | None = None,
    cwd: Path | None = None,
    source: str | None = None,
    identity: process.ProcessIdentity | None = None,
    started_at: dt.datetime | None = None,
    state_interval_s: float = STATE_INTERVAL_S,
    resume: bool = False,
) -> RunRecorder:
    """Register a run and return the sink that records it.

    Args:
        run_id: the run's id (the runner must be given the same id).
        home: the loops home (``LOOPS_HOME``); runs live in ``<home>/runs``.
        title: a short title (the root job's name, or the prompt).
        shape: the job tree (``describe --json``), for ``loop status``.
        cwd: the run's working directory.
        source: the loop file or prompt that started it.
        identity: the process running it (default: this one).
        started_at: when it started (default: now).
        state_interval_s: least seconds between two writes of ``state.json``.
        resume: a run with that id may exist (a durable run resumed by another
            process): its events are kept, new ones are appended, and this process
            becomes the one running it.

    Raises:
        InputError: ``run_id`` is not a valid run id, or a run with that id exists
            (and ``resume`` is false).
        StoreError: the registry directory cannot be written.
    """
    layout.check_run_id(run_id)
    run_dir = layout.runs_dir(home) / run_id
    try:
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        run_dir.mkdir(exist_ok=resume)
    except FileExistsError:
        raise errors.InputError(f"run {run_id} is already registered in {run_dir}") from None
    except OSError as exc:
        raise errors.StoreError(f"cannot create {run_dir}: {exc.strerror or exc}") from exc
    who = identity or process.current()
    started = events_mod.format_ts(started_at or dt.datetime.now(dt.UTC))
    header = {
        "run_id": run_id,
        "title": title,
        "pid": who.pid,
        "host": who.host,
        "start_ticks": who.start_ticks,
        "registered_at": started,
    }
    meta = {**header, "cwd": str(cwd) if cwd else None, "source": source, "shape": shape}
    files.write_json_atomic(run_dir / layout.RUN_FILE, meta)
    recorder = RunRecorder(run_dir, header=header, state_interval_s=state_interval_s)
    recorder.view.run_id, recorder.view.title = run_id, title
    if shape:
        recorder.view.seed(shape)
    if resume:
        _replay(recorder, run_dir / layout.EVENTS_FILE)
    recorder.write_state()
    return recorder


def _replay(recorder: RunRecorder, events_file: Path) -> None:
    """Rebuild a resumed run's live view from the events its earlier attempts wrote."""
    try:
        lines = events_file.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise errors.StoreError(f"cannot read {events_file}: {exc.strerror or exc}") from exc
    for line in lines:
        try:
            body = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by the crash
        if isinstance(body, dict) and body.get("type") != events_mod.EventType.RUN_FINISHED.value:
            recorder.view.apply(body)
