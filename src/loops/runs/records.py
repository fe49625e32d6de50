"""Semantic records: the decisions a run made, derived from its raw events.

A supervisor reads these instead of the raw event firehose. Five kinds, each with the
path of the job in the loop tree it concerns:

- ``dispatch``: a job or dag node started;
- ``completion``: a job, loop or dag finished (status and summary), or a dag node was
  skipped without running;
- ``surfacing``: a review (or kickback) raised feedback (severity and reason);
- ``revision-emitted``: an outcome asked for another pass;
- ``revision-routed``: that revision was routed to a target (accepted or rejected).

Everything here is pure: :func:`semantic_records_from_event` maps one event to its
records, and :class:`RecordFilter` selects records by kind, path, time and count.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from loops import errors
from loops.flow import events as events_mod


class RecordKind(enum.StrEnum):
    """The kind of a semantic record; the value is the ``kind`` field of the JSON."""

    DISPATCH = "dispatch"
    """A job or dag node started."""
    COMPLETION = "completion"
    """A job finished, or a dag node was skipped without running."""
    SURFACING = "surfacing"
    """A review or kickback raised feedback."""
    REVISION_EMITTED = "revision-emitted"
    """An outcome asked for another pass."""
    REVISION_ROUTED = "revision-routed"
    """A revision was routed to its target (accepted or rejected)."""


#: names accepted by ``--kind`` that stand for several kinds
KIND_ALIASES: Mapping[str, frozenset[RecordKind]] = {
    "revision": frozenset({RecordKind.REVISION_EMITTED, RecordKind.REVISION_ROUTED}),
}


@dataclasses.dataclass(frozen=True, slots=True)
class SemanticRecord:
    """One decision of a run.

    Attributes:
        kind: what kind of decision.
        ts: when, ISO 8601 UTC (the time of the event it came from).
        run_id: the run it belongs to.
        path: the job's place in the loop tree, slash-separated.
        data: the kind's own fields (``status``, ``summary``, ``severity``, ``target``, ...).
    """

    kind: RecordKind
    ts: str
    run_id: str
    path: str
    data: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The flat JSON object: ``kind``, ``ts``, ``run_id``, ``path`` and the data fields."""
        return {
            "kind": self.kind.value,
            "ts": self.ts,
            "run_id": self.run_id,
            "path": self.path,
            **self.data,
        }

    @classmethod
    def from_dict(cls, body: Mapping[str, Any]) -> SemanticRecord:
        """Parse the flat JSON form written by :meth:`to_dict`."""
        rest = {k: v for k, v in body.items() if k not in ("kind", "ts", "run_id", "path")}
        return cls(
            RecordKind(body["kind"]), str(body["ts"]), str(body["run_id"]), str(body["path"]), rest
        )


_Fields = Callable[[Mapping[str, Any]], "list[tuple[RecordKind, dict[str, Any]]]"]


def _dispatch(d: Mapping[str, Any]) -> list[tuple[RecordKind, dict[str, Any]]]:
    return [(RecordKind.DISPATCH, {"job_kind": d.get("kind"), "name": d.get("name")})]


def _completion(d: Mapping[str, Any]) -> list[tuple[RecordKind, dict[str, Any]]]:
    fields = {
        "job_kind": d.get("kind"),
        "name": d.get("name"),
        "status": d.get("status"),
        "summary": d.get("summary", ""),
        "usage": d.get("usage"),
    }
    return [(RecordKind.COMPLETION, fields)]


def _skipped(d: Mapping[str, Any]) -> list[tuple[RecordKind, dict[str, Any]]]:
    fields = {"job_kind": "node", "name": d.get("node"), "status": "skipped"}
    return [(RecordKind.COMPLETION, {**fields, "summary": d.get("reason", "")})]


def _surfacing(d: Mapping[str, Any]) -> list[tuple[RecordKind, dict[str, Any]]]:
    fields = dict(d)
    fields.setdefault("severity", "block")
    fields.setdefault("reason", "")
    return [(RecordKind.SURFACING, fields)]


def _revision_fields(d: Mapping[str, Any]) -> dict[str, Any]:
    fields = dict(d)
    fields.setdefault("target", None)
    fields.setdefault("reason", "")
    return fields


def _emitted(d: Mapping[str, Any]) -> list[tuple[RecordKind, dict[str, Any]]]:
    return [(RecordKind.REVISION_EMITTED, _revision_fields(d))]


def _routed(d: Mapping[str, Any]) -> list[tuple[RecordKind, dict[str, Any]]]:
    fields = _revision_fields(d)
    fields.setdefault("accepted", True)
    return [(RecordKind.REVISION_ROUTED, fields)]


#: event type -> the records it yields (a failing review or a kickback emits its own
#: ``surfacing`` and ``revision.*`` events, so ``review`` itself yields nothing)
_DERIVE: Mapping[str, _Fields] = {
    events_mod.EventType.JOB_STARTED.value: _dispatch,
    events_mod.EventType.JOB_FINISHED.value: _completion,
    events_mod.EventType.NODE_SKIPPED.value: _skipped,
    events_mod.EventType.SURFACING.value: _surfacing,
    events_mod.EventType.REVISION_EMITTED.value: _emitted,
    events_mod.EventType.REVISION_ROUTED.value: _routed,
}

_ENVELOPE = ("type", "ts", "run_id", "path")


def semantic_records_from_event(
    event: events_mod.Event | Mapping[str, Any],
) -> list[SemanticRecord]:
    """The semantic records one raw event yields (most yield none).

    Args:
        event: an :class:`~loops.flow.events.Event`, or its flat JSON form as read from
            ``events.jsonl`` (unknown event types are accepted and yield nothing).

    Returns:
        The records, in order; empty for events that decide nothing.
    """
    body = event.to_dict() if isinstance(event, events_mod.Event) else event
    derive = _DERIVE.get(str(body.get("type")))
    if derive is None:
        return []
    data = {k: v for k, v in body.items() if k not in _ENVELOPE}
    ts, run_id, path = str(body.get("ts", "")), str(body.get("run_id", "")), str(body.get("path"))
    return [SemanticRecord(kind, ts, run_id, path, fields) for kind, fields in derive(data)]


def parse_kinds(names: Iterable[str]) -> frozenset[RecordKind] | None:
    """The kinds named by ``--kind`` values (``revision`` is both revision kinds).

    Returns:
        The set, or ``None`` when no name was given (every kind).

    Raises:
        InputError: a name is not a kind, naming the valid ones.
    """
    kinds: set[RecordKind] = set()
    for raw in names:
        for name in (part.strip() for part in raw.split(",")):
            if not name:
                continue
            if name in KIND_ALIASES:
                kinds |= KIND_ALIASES[name]
                continue
            try:
                kinds.add(RecordKind(name))
            except ValueError:
                valid = ", ".join([*(k.value for k in RecordKind), *KIND_ALIASES])
                raise errors.InputError(
                    f"unknown record kind {name!r}; use one of: {valid}"
                ) from None
    return frozenset(kinds) if kinds else None


def parse_since(text: str) -> str:
    """An ISO 8601 time as the sortable text records carry (UTC, milliseconds, ``Z``).

    A time without a zone is taken as UTC; a date alone is its midnight.

    Raises:
        InputError: the text is not an ISO 8601 date or time.
    """
    try:
        moment = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise errors.InputError(
            f"invalid time {text!r} for --since; use ISO 8601, e.g. 2026-11-27T09:00:00Z"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return events_mod.format_ts(moment)


def path_matches(path: str, prefix: str) -> bool:
    """Whether ``path`` is ``prefix`` or lies under it, segment by segment.

    ``ship/impl`` matches ``ship/impl`` and ``ship/impl/agent``, not ``ship/implement``.
    """
    prefix = prefix.strip("/")
    if not prefix:
        return True
    return path == prefix or path.startswith(prefix + "/")


@dataclasses.dataclass(frozen=True, slots=True)
class RecordFilter:
    """Which records to keep.

    Attributes:
        kinds: only these kinds (``None``: every kind).
        path: only records at this path or under it (``None``: every path).
        since: only records at or after this time, as :func:`parse_since` text.
        last: only the last N matching records (``None``: all).
    """

    kinds: frozenset[RecordKind] | None = None
    path: str | None = None
    since: str | None = None
    last: int | None = None

    def __post_init__(self) -> None:
        if self.last is not None and self.last < 0:
            raise errors.InputError(f"--last {self.last} is invalid; use a count >= 0")

    def matches(self, record: Mapping[str, Any]) -> bool:
        """Whether one record (its flat JSON form) passes the kind, path and time tests."""
        if self.kinds is not None and record.get("kind") not in self.kinds:
            return False
        if self.path is not None and not path_matches(str(record.get("path", "")), self.path):
            return False
        return self.since is None or str(record.get("ts", "")) >= self.since

    def _header_matches(self, kind: str, ts: str, path: str) -> bool:
        """The kind, time and path tests on a line's header (``path`` still JSON-escaped)."""
        if self.kinds is not None and kind not in self.kinds:
            return False
        if self.since is not None and ts < self.since:
            return False
        if self.path is None:
            return True
        prefix = _escaped(self.path.strip("/"))
        return not prefix or path == prefix or path.startswith(prefix + "/")

    def select_lines(self, lines: Iterable[str]) -> list[str]:
        """The matching lines among JSON ``lines``, verbatim (blank or broken ones skipped).

        Lines written by :func:`record_line` start with ``kind``, ``ts``, ``run_id`` and
        ``path`` in that order, so the tests run on that text without parsing JSON
        (cheap prefix and substring passes first, then the exact header test); any
        other line is parsed.
        """
        if self.last == 0:
            return []
        found = lines if isinstance(lines, list) else list(lines)
        if self.kinds is not None:
            wanted = tuple(f'{_MARK}{kind.value}"' for kind in self.kinds)
            found = [x for x in found if x.startswith(wanted) or not x.startswith(_MARK)]
        prefix = _escaped(self.path.strip("/")) if self.path is not None else ""
        if prefix:
            needle = f'"path":"{prefix}'
            found = [x for x in found if needle in x or not x.startswith(_MARK)]
        if self.since is not None:
            since = self.since
            found = [x for x in found if not x.startswith(_MARK) or _ts_of(x) >= since]
        if prefix or not all(x.startswith(_MARK) for x in found):
            found = [x for x in found if self._line_matches(x)]
        return found[-self.last :] if self.last is not None else found

    def _line_matches(self, line: str) -> bool:
        header = _HEADER.match(line)
        if header is not None:
            return self._header_matches(header[1], header[2], header[3])
        try:
            record = json.loads(line)
        except ValueError:
            return False
        return isinstance(record, dict) and self.matches(record)

    def select(self, lines: Iterable[str]) -> list[dict[str, Any]]:
        """The matching records among JSON ``lines``, parsed."""
        return [json.loads(line) for line in self.select_lines(lines)]


#: the fixed start of a line written by :func:`record_line`: kind, ts, run_id, path
_HEADER = re.compile(
    r'\{"kind":"([^"\\]*)","ts":"([^"\\]*)","run_id":"[^"\\]*(?:\\.[^"\\]*)*",'
    r'"path":"([^"\\]*(?:\\.[^"\\]*)*)"[,}]'
)
#: how a line written by :func:`record_line` starts
_MARK = '{"kind":"'


def _ts_of(line: str) -> str:
    """The ``ts`` of a line written by :func:`record_line` (it follows the kind)."""
    at = line.find('","ts":"', len(_MARK))
    return line[at + 8 : line.find('"', at + 8)] if at > 0 else ""


def _escaped(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)[1:-1]


def record_line(record: SemanticRecord) -> str:
    """One record as its JSON line (compact, newline-terminated)."""
    body = record.to_dict()
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False, default=str) + "\n"
