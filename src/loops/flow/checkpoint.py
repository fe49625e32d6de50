"""Durable runs: checkpoint finished jobs and loop iterations so a retried run resumes.

One interface, :class:`Checkpointer`, loads and saves a run's checkpoint document
(plain JSON); :class:`MemoryCheckpointer` and :class:`FileCheckpointer` serve local
runs, and the worker stores it in the task's ``state`` through the queue client.
:class:`Checkpoints` is what a run holds: the records of the previous attempts, the
rules for restoring them, and a lock so concurrent dag nodes save one after another.

Records are keyed by a job's path in the tree plus the iterations of the loops
around it (``ship/build@2`` is ``build`` in iteration 2 of its loop), so the same
node in two iterations are two records. What is recorded:

- ``jobs``: every job that finished ``pass``, ``fail`` or ``skipped`` (its outcome,
  usage, the attempt that ran it). A ``paused`` or ``error`` job is run again.
- ``loops``: a loop's state after each finished iteration that did not end the loop
  (iterations done, usage, last body outcome, last verdict and review).
- ``run``: the run id (kept across attempts, so milestone commits and landings made
  before a crash are recognised by their trailers) and the attempt number.

A job restored from its record is not run again; its usage is charged to the
enclosing budgets, so budgets continue from what was already spent.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

from loops import errors
from loops.flow.outcome import Finding, Outcome, OutcomeStatus, RevisionRequest, Verdict
from loops.usage import Usage

#: the version of the checkpoint document's layout
VERSION = 1
#: statuses whose outcome is final: a job that ended so is never run again
FINAL = frozenset({OutcomeStatus.PASS, OutcomeStatus.FAIL, OutcomeStatus.SKIPPED})


class Checkpointer(Protocol):
    """Where a run's checkpoint document lives (memory, a file, a task's ``state``)."""

    async def load(self) -> Mapping[str, Any] | None:
        """The saved document, or ``None`` when the run has none yet."""
        ...

    async def save(self, document: Mapping[str, Any]) -> None:
        """Replace the saved document with ``document`` (atomically)."""
        ...


class MemoryCheckpointer:
    """A checkpoint kept in memory (tests, one process resuming a run it paused)."""

    def __init__(self, document: Mapping[str, Any] | None = None) -> None:
        self.document: dict[str, Any] | None = (
            json.loads(json.dumps(document)) if document is not None else None
        )
        self.saves = 0

    async def load(self) -> Mapping[str, Any] | None:
        """A copy of the saved document."""
        return json.loads(json.dumps(self.document)) if self.document is not None else None

    async def save(self, document: Mapping[str, Any]) -> None:
        """Keep a copy of ``document``."""
        self.document = json.loads(json.dumps(document))
        self.saves += 1


class FileCheckpointer:
    """A checkpoint in a JSON file, replaced atomically (write, fsync, rename).

    Args:
        path: the file (created with its folder on first save).
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    async def load(self) -> Mapping[str, Any] | None:
        """The document in the file, ``None`` when there is no file.

        Raises:
            InputError: the file is not a JSON object.
        """
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise errors.InputError(f"checkpoint {self.path} is not JSON: {exc}") from exc
        if not isinstance(document, dict):
            raise errors.InputError(f"checkpoint {self.path} is not a JSON object")
        return document

    async def save(self, document: Mapping[str, Any]) -> None:
        """Write ``document`` to a temporary file beside the target and rename it over."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".checkpoint-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(document, out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


# -- JSON forms of outcomes and verdicts ---------------------------------------------


def _json_safe(data: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``data`` that are JSON (others cannot survive a restart)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            continue
        out[str(key)] = value
    return out


def outcome_record(outcome: Outcome) -> dict[str, Any]:
    """The JSON form of ``outcome``, its JSON-able data included."""
    record = outcome.to_dict()
    record["data"] = _json_safe(outcome.data)
    return record


def _revision(body: Mapping[str, Any] | None) -> RevisionRequest | None:
    if not body:
        return None
    findings = tuple(
        Finding(str(f.get("source", "")), str(f.get("text", "")), str(f.get("severity")))
        for f in body.get("findings") or ()
    )
    return RevisionRequest(body.get("target"), findings, str(body.get("reason", "")))


def outcome_from_record(record: Mapping[str, Any]) -> Outcome:
    """Read back :func:`outcome_record`."""
    return Outcome(
        str(record["status"]),
        str(record.get("summary", "")),
        record.get("data") or {},
        Usage.from_dict(record.get("usage")),
        _revision(record.get("revision")),
    )


def verdict_record(verdict: Verdict | None) -> dict[str, Any] | None:
    """The JSON form of ``verdict`` (with its evidence), ``None`` for none."""
    if verdict is None:
        return None
    return {**verdict.to_dict(), "evidence": verdict.evidence}


def verdict_from_record(record: Mapping[str, Any] | None) -> Verdict | None:
    """Read back :func:`verdict_record`."""
    if not record:
        return None
    confidence = record.get("confidence")
    return Verdict(
        met=bool(record.get("met")),
        reason=str(record.get("reason", "")),
        confidence=None if confidence is None else float(confidence),
        decided_by=str(record.get("decided_by", "")),
        kind=str(record.get("kind", "")),
        dimensions=dict(record.get("dimensions") or {}),
        details=tuple(
            v for v in (verdict_from_record(d) for d in record.get("details") or ()) if v
        ),
        evidence=str(record.get("evidence", "")),
        revision=_revision(record.get("revision")),
    )


def job_key(path: Iterable[str], trail: Iterable[int] = ()) -> str:
    """The record key of a job: its path, then the iterations of its enclosing loops."""
    text = "/".join(path)
    iterations = ".".join(str(i) for i in trail)
    return f"{text}@{iterations}" if iterations else text


#: suffix of the key of a job that runs another at its own path (``isolated``)
WRAPPER = "#wrapper"


def _under(key: str, prefix: str) -> bool:
    """Whether the job at ``key`` is the job at ``prefix`` or runs inside it."""
    path, _, trail = key.removesuffix(WRAPPER).partition("@")
    top, _, top_trail = prefix.partition("@")
    inside = path == top or path.startswith(f"{top}/")
    return inside and (not top_trail or trail == top_trail or trail.startswith(f"{top_trail}."))


class Checkpoints:
    """A run's checkpoint: what earlier attempts finished, saved as this one goes.

    Build with :meth:`open`.

    Attributes:
        store: where the document is saved.
        run_id: the run's id (the first attempt's, kept across attempts).
        attempt: this attempt's number (1 for a fresh run).
        resumed_from: what the earlier attempts left (empty for a fresh run):
            ``{"jobs": [keys], "loops": {key: iterations}}``.
        interrupted: the previous attempt began and never ended (its process died),
            so the events it emitted last may not have reached their sinks.
    """

    def __init__(self, store: Checkpointer, document: Mapping[str, Any]) -> None:
        self.store = store
        run = dict(document.get("run") or {})
        self.run_id: str | None = run.get("run_id")
        self.attempt = int(run.get("attempt") or 0) + 1
        self._jobs: dict[str, dict[str, Any]] = dict(document.get("jobs") or {})
        self._loops: dict[str, dict[str, Any]] = dict(document.get("loops") or {})
        self._extra: dict[str, Any] = dict(document.get("extra") or {})
        self._status: str | None = run.get("status")
        self.interrupted = self._status == "running"
        self.resumed_from: dict[str, Any] = (
            {
                "jobs": sorted(self._jobs),
                "loops": {k: v["iteration"] for k, v in self._loops.items()},
            }
            if self._jobs or self._loops
            else {}
        )
        self._lock = asyncio.Lock()
        self._version = 0
        self._saved = 0

    @classmethod
    async def open(cls, store: Checkpointer, *, retry_failed: bool = False) -> Checkpoints:
        """Load the checkpoint in ``store`` (an empty one when there is none).

        Args:
            store: where the checkpoint lives.
            retry_failed: forget jobs that finished ``fail``, so they run again
                (``loop resume`` of a failed run).

        Raises:
            InputError: the document is not a checkpoint this version can read.
        """
        document = await store.load() or {}
        version = document.get("version", VERSION)
        if version != VERSION:
            raise errors.InputError(
                f"the run's checkpoint has layout version {version!r}; this loops reads {VERSION}"
            )
        made = cls(store, document)
        if retry_failed:
            made._jobs = {k: v for k, v in made._jobs.items() if v["outcome"]["status"] != "fail"}
        return made

    @property
    def resumed(self) -> bool:
        """Whether earlier attempts left anything to resume from."""
        return bool(self.resumed_from)

    def document(self) -> dict[str, Any]:
        """The checkpoint as JSON."""
        return {
            "version": VERSION,
            "run": {"run_id": self.run_id, "attempt": self.attempt, "status": self._status},
            "jobs": self._jobs,
            "loops": self._loops,
            "extra": self._extra,
        }

    async def begin(self, run_id: str) -> None:
        """Note this attempt (and the run id on the first) and save."""
        self.run_id = self.run_id or run_id
        self._status = "running"
        await self._save()

    async def end(self, status: OutcomeStatus) -> None:
        """Note how this attempt ended and save."""
        self._status = status.value
        await self._save()

    def finished(self, key: str) -> tuple[Outcome, int] | None:
        """The outcome of a job finished by an attempt, with that attempt's number."""
        record = self._jobs.get(key)
        if record is None:
            return None
        return outcome_from_record(record["outcome"]), int(record.get("attempt") or 0)

    async def finish(self, key: str, outcome: Outcome) -> None:
        """Record a job's outcome when it is final (pass, fail, skipped), and save."""
        if outcome.status not in FINAL:
            return
        self._jobs[key] = {"outcome": outcome_record(outcome), "attempt": self.attempt}
        await self._save()

    def loop_state(self, key: str) -> dict[str, Any] | None:
        """A loop's state after its last checkpointed iteration, if any."""
        return self._loops.get(key)

    async def save_loop(
        self, key: str, state: Mapping[str, Any], *, done: Iterable[str] = ()
    ) -> None:
        """Record a loop's state after a finished iteration, and save.

        Args:
            key: the loop's key.
            state: its state after the iteration.
            done: keys of the iteration's jobs, whose records the loop state now stands
                for: they are dropped, so a long loop's checkpoint stays small.
        """
        prefixes = list(done)
        self._jobs = {
            k: v for k, v in self._jobs.items() if not any(_under(k, p) for p in prefixes)
        }
        self._loops = {
            k: v for k, v in self._loops.items() if not any(_under(k, p) for p in prefixes)
        }
        self._loops[key] = {**state, "attempt": self.attempt}
        await self._save()

    def extra(self, key: str) -> Any:
        """A value a job stored with :meth:`put_extra` (e.g. a human gate's answer)."""
        return self._extra.get(key)

    async def put_extra(self, key: str, value: Any) -> None:
        """Store a job's own JSON value in the checkpoint (``None`` drops it), and save."""
        if value is None:
            self._extra.pop(key, None)
        else:
            self._extra[key] = value
        await self._save()

    async def forget(self, prefixes: Iterable[str]) -> None:
        """Drop the records of the jobs at or under ``prefixes`` (a kickback re-runs them)."""
        wanted = list(prefixes)
        before = len(self._jobs) + len(self._loops)
        self._jobs = {k: v for k, v in self._jobs.items() if not any(_under(k, p) for p in wanted)}
        self._loops = {
            k: v for k, v in self._loops.items() if not any(_under(k, p) for p in wanted)
        }
        if len(self._jobs) + len(self._loops) != before:
            await self._save()

    async def _save(self) -> None:
        """Save the document with this change; one save covers changes made while it waited.

        Every change bumps the version; a save that finds a later save already wrote
        its version returns at once (concurrent dag nodes finishing together share one
        write, and each still returns only once its record is saved).
        """
        self._version += 1
        wanted = self._version
        async with self._lock:
            if self._saved >= wanted:
                return
            version = self._version
            await self.store.save(self.document())
            self._saved = version
