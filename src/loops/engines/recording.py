"""Record every agent turn of any engine: a wrapping engine that tees to a directory.

``RecordingEngine(inner, DIR)`` passes each turn through unchanged and writes, per
turn ``N`` (the next free number in ``DIR``, claimed by creating the file exclusively,
so several engines, tasks or processes can record into one directory):

- ``turn-NNNN.jsonl``: one JSON object per line: the request first (``type:
  "request"``: prompt, cwd, system, model, permission, resume session, tools, leaf,
  max turns, timeout; of ``env`` only the names, never the values), then every event
  in :func:`~loops.engines.base.event_to_dict` form, the result last;
- ``turn-NNNN.raw``: the tool's raw output as the engine read it (stdout JSON lines
  of the agent CLIs, the ``data:`` payloads of the ``openai`` engine's streams);
- ``turn-NNNN.files.json``: the files the turn created, changed or deleted in the
  cwd (content as text, or base64 for binary files), so a replay can put the
  workspace in the state the agent left it.

Lines are written as they happen, so a turn cut short is still on disk. The raw
capture works through a context variable (:data:`RAW_SINK`) that the JSON-lines
driver and the ``openai`` engine append to when it is set.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import json
import logging
import os
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TextIO

from loops import errors
from loops.engines import base

log = logging.getLogger(__name__)

#: where raw output lines go during a recorded turn (``None``: not recording)
RAW_SINK: contextvars.ContextVar[Callable[[str], None] | None] = contextvars.ContextVar(
    "loops_engine_raw_sink", default=None
)
#: directories never snapshotted
SKIPPED_DIRS = frozenset({".git", "node_modules", "__pycache__", ".venv", ".mypy_cache"})
#: files larger than this are recorded as changed but without content
MAX_FILE_BYTES = 10 * 1024 * 1024
TURN_FILE = re.compile(r"turn-(\d{4,})\.jsonl")

Snapshot = dict[str, tuple[int, int]]


def raw_sink() -> Callable[[str], None] | None:
    """The raw-line recorder of the current turn, if it is being recorded."""
    return RAW_SINK.get()


def request_record(request: base.TurnRequest, *, index: int, engine: str) -> dict[str, Any]:
    """The JSON record of a request (environment values left out)."""
    return {
        "type": "request",
        "index": index,
        "engine": engine,
        "prompt": request.prompt,
        "cwd": str(request.cwd),
        "system": request.system,
        "model": request.model,
        "permission": request.permission.value,
        "resume_session_id": request.resume_session_id,
        "tools": list(request.tools) if request.tools is not None else None,
        "leaf": request.leaf,
        "max_turns": request.max_turns,
        "timeout_s": request.timeout_s,
        "env_names": sorted(request.env),
    }


class RecordingEngine:
    """Runs ``inner`` and records every turn in ``directory`` (see the module docstring).

    Args:
        inner: the engine to record.
        directory: where the turn files go (created if missing).
        files: also record the files each turn changed in its cwd.
    """

    def __init__(self, inner: base.Engine, directory: Path, *, files: bool = True) -> None:
        self.inner = inner
        self.name = inner.name
        self.capabilities = inner.capabilities
        self.directory = Path(directory)
        self.files = files
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise errors.ConfigError(
                f"cannot create the recording directory {self.directory}: {exc.strerror}"
            ) from exc

    def _claim(self) -> tuple[int, TextIO]:
        """The next free turn number and its events file, created exclusively."""
        existing = [TURN_FILE.fullmatch(p.name) for p in self.directory.iterdir()]
        number = max((int(m.group(1)) for m in existing if m), default=0) + 1
        while True:
            try:
                handle = (self.directory / f"turn-{number:04d}.jsonl").open("x", encoding="utf-8")
            except FileExistsError:
                number += 1
                continue
            return number, handle

    async def run_turn(self, request: base.TurnRequest) -> AsyncIterator[base.TurnEvent]:
        """Run the inner engine's turn and tee it to disk."""
        before = await asyncio.to_thread(snapshot, Path(request.cwd)) if self.files else None
        number, handle = self._claim()
        stem = self.directory / f"turn-{number:04d}"
        with handle as events, stem.with_suffix(".raw").open("w", encoding="utf-8") as raw:
            _write(events, request_record(request, index=number, engine=self.name))
            previous = RAW_SINK.get()

            def keep(line: str) -> None:
                raw.write(line.rstrip("\n") + "\n")

            RAW_SINK.set(keep)
            try:
                async for event in self.inner.run_turn(request):
                    _write(events, base.event_to_dict(event))
                    yield event
            finally:
                RAW_SINK.set(previous)
                if before is not None:
                    changes = await asyncio.to_thread(file_changes, Path(request.cwd), before)
                    stem.with_suffix(".files.json").write_text(json.dumps(changes, indent=1))


def _write(handle: TextIO, record: dict[str, Any]) -> None:
    handle.write(json.dumps(record, default=str) + "\n")
    handle.flush()


def snapshot(root: Path) -> Snapshot:
    """Relative path -> (mtime_ns, size) of every file under ``root`` (skipping caches)."""
    found: Snapshot = {}
    if not root.is_dir():
        return found
    for current, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in SKIPPED_DIRS]
        for name in files:
            path = Path(current) / name
            try:
                stat = path.lstat()
            except OSError:
                continue
            found[str(path.relative_to(root))] = (stat.st_mtime_ns, stat.st_size)
    return found


def file_changes(root: Path, before: Snapshot) -> dict[str, Any]:
    """What changed under ``root`` since ``before``: written files' contents, deletions."""
    after = snapshot(root)
    written: dict[str, dict[str, Any]] = {}
    for rel, stamp in sorted(after.items()):
        if before.get(rel) == stamp:
            continue
        path = root / rel
        if path.is_symlink():
            written[rel] = {"symlink": os.readlink(path)}
            continue
        if stamp[1] > MAX_FILE_BYTES:
            log.warning("recording: %s is over %d bytes; content not kept", rel, MAX_FILE_BYTES)
            written[rel] = {"omitted": stamp[1]}
            continue
        try:
            data = path.read_bytes()
        except OSError:
            continue
        try:
            written[rel] = {"text": data.decode("utf-8")}
        except UnicodeDecodeError:
            written[rel] = {"base64": base64.b64encode(data).decode("ascii")}
    deleted = sorted(set(before) - set(after))
    return {"written": written, "deleted": deleted}


def apply_changes(root: Path, changes: dict[str, Any]) -> list[str]:
    """Put recorded file changes into ``root``; returns the paths touched.

    Paths that would leave ``root`` are refused (a recording is input, not trusted).

    Raises:
        ReplayDiverged: a recorded path points outside ``root``.
    """
    touched: list[str] = []
    base_dir = root.resolve()
    for rel, entry in (changes.get("written") or {}).items():
        target = (base_dir / rel).resolve()
        if not target.is_relative_to(base_dir):
            raise errors.ReplayDiverged(f"recorded file {rel!r} is outside the working directory")
        if "omitted" in entry:
            log.warning("replay: %s was too large to record; left as it is", rel)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink() or "symlink" in entry:
            target.unlink(missing_ok=True)
        before_ns = target.stat().st_mtime_ns if target.is_file() else None
        if "symlink" in entry:
            target.symlink_to(entry["symlink"])
        elif "base64" in entry:
            target.write_bytes(base64.b64decode(entry["base64"]))
        else:
            target.write_text(str(entry.get("text", "")), encoding="utf-8")
        if before_ns is not None:
            move_mtime_past(target, before_ns)
        touched.append(rel)
    for rel in changes.get("deleted") or []:
        target = (base_dir / rel).resolve()
        if target.is_relative_to(base_dir) and target.is_file():
            target.unlink()
            touched.append(rel)
    return touched


def move_mtime_past(target: Path, before_ns: int) -> None:
    """Give a rewritten file a modification time in a later whole second than ``before_ns``.

    Scripted and replayed turns rewrite files milliseconds apart, where an agent takes
    seconds. Python trusts a module's cached bytecode while the source's whole-second
    mtime and size are unchanged, so a same-size rewrite within one second would have
    the next check run the previous code.
    """
    second_ns = 1_000_000_000
    if target.stat().st_mtime_ns // second_ns <= before_ns // second_ns:
        later_ns = (before_ns // second_ns + 1) * second_ns
        os.utime(target, ns=(later_ns, later_ns))
